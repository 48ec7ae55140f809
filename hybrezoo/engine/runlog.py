"""A run's logs: ``log.jsonl`` (one JSON object per epoch) and ``train.log`` (the same, for people).

Only the main process writes. On resume ``log.jsonl`` is rewritten from the history stored in the
checkpoint, so it never holds an epoch the checkpoint does not. Appends never follow a symbolic link
(``O_NOFOLLOW``), and a failed write (full disk) is one line saying how to continue.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import HybrezooError
from .checkpoint import atomic_write_text, write_failure
from .runfolder import open_for_append

__all__ = ["RunLog", "LOG_JSONL", "LOG_TEXT"]

LOG_JSONL = "log.jsonl"
LOG_TEXT = "train.log"


_RESUME_FIX = "free disk space, then add --resume to continue from the last complete epoch"


def _json_default(value: Any) -> Any:
    """NumPy and tensor scalars a callback may add to an epoch record."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"an epoch record holds a {type(value).__name__}, which JSON cannot store")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool = True, echo: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.echo = echo

    def info(self, message: str) -> None:
        """A line for the text log (and the terminal, above any progress bar)."""
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._append(LOG_TEXT, f"{stamp} {message}\n")
        if self.echo:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)

    def epoch(self, record: Mapping[str, Any]) -> None:
        """Append one epoch's record to log.jsonl and a summary line to the text log."""
        if not self.enabled:
            return
        self._append(LOG_JSONL, json.dumps(record, default=_json_default) + "\n")
        keys = ("stage", "epoch", "train_loss", "train_top1", "eval_split", "eval_top1", "eval_top5", "lr",
                "images_per_s", "epoch_time_s")
        self.info(" ".join(f"{k}={_fmt(record[k])}" for k in keys if k in record))

    def rewrite(self, history: Iterable[Mapping[str, Any]]) -> None:
        """Replace log.jsonl with ``history`` (on resume: the epochs the checkpoint holds)."""
        if self.enabled:
            atomic_write_text(self.run_dir / LOG_JSONL,
                              "".join(json.dumps(r, default=_json_default) + "\n" for r in history), _RESUME_FIX)

    def _append(self, name: str, text: str) -> None:
        try:
            with open_for_append(self.run_dir / name) as f:
                f.write(text)
        except OSError as err:
            reason = write_failure(err) or err.strerror or err
            raise HybrezooError(f"cannot write {self.run_dir / name}: {reason}; {_RESUME_FIX}") from None
