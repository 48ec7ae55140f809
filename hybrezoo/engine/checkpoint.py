"""Checkpoints that are never lost, and loading weights from wherever a user keeps them, safely.

Every file a run writes goes to a temporary file in the same folder first and is then renamed over
the old one (``os.replace`` is atomic on POSIX and Windows), so an interrupted run always leaves
the previous complete checkpoint in place. A write that fails (a full disk, a read-only folder)
becomes one line saying what to do, and leaves the previous file as it was.

Nothing is ever unpickled: ``.pt`` files are read with ``torch.load(weights_only=True)``, which
admits tensors and plain Python data only, so a file whose objects would run code when loaded is
refused with one line instead of running it. Checkpoints therefore hold tensors, numbers, strings,
lists and dicts only (random states included, see :func:`hybrezoo.engine.runtime.capture_rng`).
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import pickle
import re
import shlex
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import HybrezooError

__all__ = [
    "CHECKPOINT", "atomic_path", "atomic_write_text", "atomic_write_json", "save_checkpoint", "load_checkpoint",
    "weights_file", "load_state_dict", "load_weights", "read_torch_file", "UnreadableFile", "write_failure",
    "unfinished_run_message", "resume_command", "plain_data",
]

CHECKPOINT = "checkpoint.pt"
FORMAT = 2            # 2: random states as tensors (weights_only); 1 (pickled numpy states) is refused
RESTART_HINT = "add --restart to discard it and start the run over"

PathLike = Union[str, os.PathLike]


# -- writing ---------------------------------------------------------------------------------------
def write_failure(err: BaseException) -> Optional[str]:
    """The reason (e.g. "No space left on device") when ``err`` is a failed write, else None.

    torch.save reports a failed write as ``RuntimeError ... inline_container.cc`` with the OSError
    as its context; safetensors as ``SafetensorError ... I/O error: ...``."""
    seen: set[int] = set()
    item: Optional[BaseException] = err
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        if isinstance(item, OSError) and not isinstance(item, (FileNotFoundError, BlockingIOError)):
            return item.strerror or str(item) or type(item).__name__
        if isinstance(item, SafetensorError) and "I/O error" in str(item):
            return re.sub(r"\s*\(os error \d+\)$", "", str(item).split("I/O error:", 1)[1].strip())
        item = item.__cause__ or item.__context__
    if isinstance(err, RuntimeError) and ("inline_container" in str(err) or "PytorchStreamWriter" in str(err)):
        return "the write failed (is the disk full?)"
    return None


@contextlib.contextmanager
def atomic_path(path: PathLike, fix: Optional[str] = None) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces ``path`` when the block ends without error.

    A failed write (full disk, read-only folder) raises one :class:`HybrezooError` line ending with
    ``fix``; the previous ``path`` is untouched and the temporary file is removed."""
    path = Path(path)
    fix = fix or "free disk space or choose a writable folder, then run again (the previous file is unchanged)"
    tmp: Optional[str] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except Exception as err:
        reason = write_failure(err)
        if reason is None:
            raise
        raise HybrezooError(f"cannot write {path}: {reason}; {fix}") from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: PathLike, text: str, fix: Optional[str] = None) -> None:
    with atomic_path(path, fix) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: PathLike, data: Any, fix: Optional[str] = None) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n", fix)


def plain_data(obj: Any, where: str) -> Any:
    """``obj`` as data ``torch.load(weights_only=True)`` reads back: tensors, numbers, strings, bytes,
    None, lists, tuples and dicts (NumPy values become Python numbers or tensors)."""
    if obj is None or isinstance(obj, (bool, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (int, float)):
        return obj if type(obj) in (int, float) else (int(obj) if isinstance(obj, int) else float(obj))
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, torch.Size):
        return obj
    if isinstance(obj, (dict, collections.OrderedDict)):
        return {plain_data(k, where): plain_data(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain_data(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(plain_data(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise HybrezooError(f"{where} holds a {type(obj).__name__}, which a checkpoint cannot store safely: use "
                        "tensors, numbers, strings, lists and mappings (in recipes, ctx.state and epoch records)")


def save_checkpoint(path: PathLike, state: Mapping[str, Any], fix: Optional[str] = None) -> None:
    """``torch.save`` of a resumable state (plain data and tensors only), atomically."""
    data = plain_data({"format": FORMAT, **state}, "checkpoint")
    with atomic_path(path, fix) as tmp:
        with open(tmp, "wb") as f:  # a file object: a failed write surfaces its OSError (ENOSPC, ...)
            torch.save(data, f)


# -- reading ---------------------------------------------------------------------------------------
class UnreadableFile(Exception):
    """A ``.pt`` file ``torch.load(weights_only=True)`` cannot read; ``unsafe`` when it holds objects
    that would run code."""

    def __init__(self, reason: str, unsafe: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.unsafe = reason, unsafe


def read_torch_file(path: PathLike, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain data, never code.

    Raises :class:`UnreadableFile` with a short reason for an empty, truncated, foreign or unsafe file."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UnreadableFile("the file is empty")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notes from the weights-only unpickler
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except UnreadableFile:
        raise
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise UnreadableFile(f"it holds Python objects ({found.group(1)}), and loading objects can run code; "
                                 "hybrezoo loads tensors and plain data only", unsafe=True) from None
        detail = next((line.strip() for line in reversed(text.splitlines()) if line.strip()
                       and "weights_only" not in line and "documentation" not in line), "")
        raise UnreadableFile(f"not a PyTorch file, or corrupt{f' ({detail[:120]})' if detail else ''}") from None
    except (EOFError, RuntimeError, ValueError, TypeError, AttributeError, IndexError, KeyError, OSError,
            UnicodeDecodeError, OverflowError, MemoryError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:120]
        raise UnreadableFile(f"truncated or corrupt ({type(err).__name__}: {first})") from None


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """The resumable state in ``path`` (read with weights_only; see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise HybrezooError(f"no checkpoint to resume in {path.parent}: run the command without --resume to start "
                            "the run")
    try:
        state = read_torch_file(path)
    except UnreadableFile as err:
        raise HybrezooError(f"{path} cannot be resumed: {err.reason}; {RESTART_HINT} "
                            f"(instead of --resume), or train into another --out") from None
    if not isinstance(state, dict) or "format" not in state:
        raise HybrezooError(f"{path} is not a hybrezoo training checkpoint: {RESTART_HINT} (instead of --resume), "
                            "or train into another --out")
    if state["format"] != FORMAT:
        raise HybrezooError(f"{path} is a hybrezoo checkpoint of format {state['format']}, this version resumes "
                            f"format {FORMAT}: {RESTART_HINT} (instead of --resume), or train into another --out")
    return state


def resume_command(command: str) -> str:
    """``command`` (as a run recorded it) turned into the command that continues the run."""
    try:
        words = [w for w in shlex.split(command) if w != "--restart"]
    except ValueError:
        return f"{command} --resume"
    return shlex.join(words if "--resume" in words else [*words, "--resume"])


def unfinished_run_message(run_dir: PathLike) -> str:
    """How to finish the run in ``run_dir``, which holds a checkpoint but no weights yet."""
    from .runfolder import holder_of

    run_dir = Path(run_dir)
    holder = holder_of(run_dir)
    if holder is not None:
        return (f"{run_dir} is a run still in progress ({holder}): wait for it to end, or give "
                f"{run_dir / CHECKPOINT} to use its latest weights")
    command = None
    try:
        state = read_torch_file(run_dir / CHECKPOINT, mmap=True)
        command = state.get("command") if isinstance(state, dict) else None
    except (UnreadableFile, OSError):
        pass
    if isinstance(command, str) and command:
        how = f"`{resume_command(command)}`"
    else:
        how = f"the command that started it with --resume (see {run_dir / 'train.log'})"
    return (f"{run_dir} is an unfinished run (checkpoint.pt, no model.safetensors yet): finish it with {how}, "
            f"or give {run_dir / CHECKPOINT} to use its latest weights")


def weights_file(source: PathLike, what: str = "weights") -> Path:
    """The weights file of a run folder (model.safetensors) or the file itself."""
    path = Path(source).expanduser()
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return path / name
        if (path / CHECKPOINT).is_file():
            raise HybrezooError(f"{what}: {unfinished_run_message(path)}")
        raise HybrezooError(f"{what}: {path} holds no model.safetensors: give a finished run folder or a weights file")
    if not path.is_file():
        raise HybrezooError(f"{what}: {path} not found: give a run folder, a .safetensors or a .pt file")
    return path


def load_state_dict(source: PathLike, what: str = "weights") -> dict[str, torch.Tensor]:
    """A model state dict from a run folder, .safetensors, a plain .pt/.pth/.bin state dict, a
    training checkpoint (its latest model state), or ``hf-hub:ORG/NAME`` (its model.safetensors).

    ``.pt`` files are read with weights_only: one that holds code is refused, never run."""
    from ..hub.verify import verified_hub_file, verify_weights_file

    if str(source).startswith("hf-hub:"):
        # the same fetch and checks (sha256, complete header) as pretrained=True loading
        ref = str(source).removeprefix("hf-hub:")
        hub_path = verified_hub_file(str(source), ref, what=what)
        if hub_path is None:
            raise HybrezooError(f"{what}: {source} has no model.safetensors: give a hub repository exported by "
                                "`hybrezoo export`")
        return load_file(hub_path)
    path = weights_file(source, what)
    if path.suffix == ".safetensors":
        verify_weights_file(path, what=what, fix="export or copy the file again")
        try:
            return load_file(str(path))
        except SafetensorError as err:
            raise HybrezooError(f"{what}: {path} is not a complete safetensors file ({err}); export or copy the "
                                "file again") from None
    try:
        state = read_torch_file(path)
    except UnreadableFile as err:
        if err.unsafe:
            raise HybrezooError(f"{what}: {path} was refused: {err.reason}; save the weights as a plain state dict "
                                "(torch.save(model.state_dict(), FILE)) or as .safetensors") from None
        raise HybrezooError(f"{what}: {path} cannot be read: {err.reason}; give a run folder, a .safetensors file "
                            "or a .pt state dict saved with torch.save") from None
    if isinstance(state, dict) and "format" in state and "stage_start_model" in state:  # a training checkpoint
        fit = state.get("fit") or {}
        state = fit.get("model") or state["stage_start_model"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HybrezooError(f"{what}: {path} does not hold a model state dict (a mapping of names to tensors): give "
                            "a run folder, a .safetensors file or torch.save(model.state_dict(), FILE)")
    return {str(k).removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def load_weights(model: nn.Module, source: PathLike, what: str = "weights",
                 hint: Optional[Callable[[], str]] = None) -> None:
    """Load ``source`` (see :func:`load_state_dict`) into ``model`` strictly, with a one-line error
    when the file is missing, unreadable, unsafe or was made for another architecture."""
    try:
        state = load_state_dict(source, what=what)
    except HybrezooError as err:
        raise HybrezooError(f"{err}{'; ' + hint() if hint else ''}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err).splitlines()[0]
        raise HybrezooError(f"{what} in {source} do not fit this architecture ({first.strip()[:160]}): "
                            "give weights trained for the same model") from None
