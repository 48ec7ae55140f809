"""Checks shared by every entry point (recipes, model builders, the data loaders, ``pi_cost``, the CLI).

:class:`Range` is the one mechanism for numeric limits: a table of ``key -> Range`` states them and
:meth:`Range.check` turns a value outside them into one line that names the key, the value and the
range to use, instead of a traceback deep inside torch or, worse, a run that silently does the wrong
thing (a negative learning rate, zero training steps). :func:`run_folder_config` is the one place that
says whether a folder is a run folder a model can be loaded from.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Type

from .errors import HybrezooError

__all__ = ["Range", "run_folder_config"]


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: ``low``/``high`` bounds (open or closed), whole numbers
    only, ``None`` allowed, a list of ``length`` such numbers; ``note`` says what the value means."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False          # low itself is excluded
    high_open: bool = False         # high itself is excluded
    whole: bool = False             # whole numbers only
    whole_from: Optional[float] = None  # values >= this must be whole (a fraction below, a count above)
    none_ok: bool = False           # None (null) is allowed and means "off"
    length: Optional[int] = None    # the value is a list of this many numbers, each in the range
    each: bool = False              # the value is a list of any length, each number in the range
    note: str = ""                  # appended after the range: what the value means, a usual value

    def describe(self) -> str:
        """The accepted values in words, e.g. ``a number in [0, 1)`` or ``a whole number >= 1``."""
        kind = "a whole number" if self.whole else "a number"
        if self.low is not None and self.high is not None:
            text = (f"{kind} in {'(' if self.low_open else '['}{_fmt(self.low)}, "
                    f"{_fmt(self.high)}{')' if self.high_open else ']'}")
        elif self.low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {_fmt(self.low)}"
        elif self.high is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {_fmt(self.high)}"
        else:
            text = kind
        if self.whole_from is not None and not self.whole:
            text += f", whole from {_fmt(self.whole_from)} up"
        if self.length is not None:
            text = f"a list of {self.length} numbers, each {text.removeprefix('a ')}"
        elif self.each:
            text = f"a list of numbers, each {text.removeprefix('a ')}"
        if self.none_ok:
            text += ", or null (off)"
        return text

    def _ok(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.whole and not float(value).is_integer():
            return False
        if self.whole_from is not None and value >= self.whole_from and not float(value).is_integer():
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def check(self, value: Any, where: str, error: Type[Exception] = HybrezooError) -> None:
        """Raise ``error`` naming ``where`` when ``value`` is outside the range (one line, what to use)."""
        if value is None and self.none_ok:
            return
        if self.length is not None or self.each:
            good = isinstance(value, (list, tuple)) and (self.length is None or len(value) == self.length) \
                and all(self._ok(v) for v in value)
        else:
            good = self._ok(value)
        if not good:
            note = f" ({self.note})" if self.note else ""
            raise error(f"{where}={value!r} is out of range: use {self.describe()}{note}")


def run_folder_config(folder: str | Path, flag: str = "") -> dict[str, Any]:
    """The ``config.json`` of a run folder (what ``hybrezoo train`` and ``save_for_hf`` write), checked
    before timm reads it, so that a folder that is not a run, an unfinished run or an architecture this
    installation does not have is one line saying so, not timm's "Unknown model" or a traceback.
    ``flag`` names the option the folder came from (``--checkpoint``), for the message."""
    import timm

    path = Path(folder).expanduser()
    given = f"{flag} {folder}" if flag else str(folder)
    if not path.exists():
        raise HybrezooError(f"{given} does not exist: give a run folder written by `hybrezoo train` "
                            "(it holds config.json and model.safetensors)")
    if not path.is_dir():
        raise HybrezooError(f"{given} is a file, not a run folder: give the folder that holds config.json and "
                            "model.safetensors")
    config_file = path / "config.json"
    if not config_file.is_file():
        if (path / "checkpoint.pt").is_file():
            raise HybrezooError(f"{given} is an unfinished run (no config.json and model.safetensors yet): finish it "
                                f"with `hybrezoo train RECIPE --out {folder} --resume`, then use the folder")
        if (path / "recipe.yaml").is_file():
            raise HybrezooError(f"{given} is a run that stopped before its first checkpoint (no config.json): train it "
                                f"again with `hybrezoo train RECIPE --out {folder}`, then use the folder")
        raise HybrezooError(f"{given} is not a run folder (it holds no config.json): give a run folder written by "
                            "`hybrezoo train`, or a zoo name such as pi_resnet18.c100")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HybrezooError(f"{config_file} is not readable JSON ({type(err).__name__}): the run folder is damaged; "
                            "train it again or restore config.json") from None
    arch = config.get("architecture") if isinstance(config, dict) else None
    if not isinstance(arch, str) or not arch:
        raise HybrezooError(f"{config_file} names no architecture: it was not written by `hybrezoo train` or timm's "
                            "save_for_hf; restore the file or train the run again")
    if not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=1, cutoff=0.6)
        hint = f" (closest: {close[0]})" if close else ""
        raise HybrezooError(f"{config_file} names architecture {arch!r}, which this installation does not have{hint}: "
                            "use the hybrezoo (or timm) version that wrote the run, or correct 'architecture'")
    return config
