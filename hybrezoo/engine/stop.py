"""Stopping a run on request, at a step, without losing it: a wall-clock budget and SIGTERM.

GPU time comes in windows (a cluster job's wall-time limit, a spot instance, an hour on a shared
GPU). A :class:`StopRequest` is asked after every optimizer step; once it answers yes, the trainer
writes a checkpoint of the exact point it reached (mid-epoch when the stage allows it, see
:class:`hybrezoo.engine.Callback.mid_epoch_safe`) and raises :class:`RunStopped`. ``--resume`` then
continues from that point to the same weights an uninterrupted run ends with (CPU, same threads).

The budget is a deadline on the wall clock (``time.time()``), so the processes of a set share it;
writing the last checkpoint happens after the deadline (seconds for the zoo's models).
"""
from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
import time
from typing import Callable, Iterator, Optional

from ..errors import HybrezooError

__all__ = ["StopRequest", "RunStopped", "parse_duration", "format_duration", "STOPPED_EXIT"]

# Exit status of a command that stopped on its budget (or SIGTERM) with work left to resume: EX_TEMPFAIL
# of sysexits.h, "try again later", so a job script can tell it from success (0) and errors (2).
STOPPED_EXIT = 75

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90s``, ``9m``, ``1.5h``, ``1h30m``; a unit is required (``9`` is refused)."""
    raw = str(text).strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not raw or pos != len(raw) or not math.isfinite(total) or total <= 0:
        raise HybrezooError(f"cannot read the time budget {text!r}: write a positive duration with its unit, e.g. "
                            "90s, 9m, 1.5h or 1h30m")
    return total


def format_duration(seconds: float) -> str:
    """``1:02:03`` (or ``2:03``) for a number of seconds."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RunStopped(HybrezooError):
    """Training stopped on a :class:`StopRequest`; its state is in the run folder's checkpoint."""

    def __init__(self, message: str, run_dirs: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.run_dirs = run_dirs


class StopRequest:
    """A deadline (``time.time()`` seconds) and/or a signal flag that a training loop polls.

    ``clock`` replaces ``time.time`` (tests drive it step by step)."""

    def __init__(self, deadline: Optional[float] = None, clock: Callable[[], float] = time.time) -> None:
        self.deadline = deadline
        self.clock = clock
        self._signalled: Optional[str] = None

    @classmethod
    def within(cls, budget_s: Optional[float], clock: Callable[[], float] = time.time) -> "StopRequest":
        """A request that fires ``budget_s`` seconds from now (never when None)."""
        return cls(None if budget_s is None else clock() + float(budget_s), clock)

    def request(self, reason: str) -> None:
        """Ask the loop to stop at its next step (from a signal handler or another thread)."""
        self._signalled = self._signalled or reason

    def requested(self) -> bool:
        return self._signalled is not None or (self.deadline is not None and self.clock() >= self.deadline)

    def left(self) -> Optional[float]:
        """Seconds left before the deadline (None without one)."""
        return None if self.deadline is None else self.deadline - self.clock()

    @property
    def signalled(self) -> bool:
        """True once :meth:`request` was called (a signal), as opposed to the deadline passing."""
        return self._signalled is not None

    @property
    def reason(self) -> str:
        return self._signalled or "the time budget ended"

    @contextlib.contextmanager
    def on_sigterm(self) -> Iterator["StopRequest"]:
        """Turn SIGTERM (a cluster's wall-time limit, a spot instance's notice) into a stop request for the
        block; the previous handler comes back after it. Only in the main thread (signals go there)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda signum, frame: self.request("SIGTERM arrived"))
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)
