"""SPU's own traffic figures and the process's peak memory, read where SPU and Linux report them.

SPU does not expose its link statistics to Python; with ``enable_pphlo_profile`` its runtime logs, at
the end of every run, ``Link details: total send bytes S, recv bytes R, send actions A, recv actions B``
for the party that ran it. We send SPU's log to a file (``libspu.logging.setup_logging``) and read
that line. Peak memory is the kernel's ``VmHWM`` (reset per run through ``/proc/self/clear_refs``),
falling back to ``ru_maxrss``. No hybrezoo import here: the two-process party loads this file alone.
"""
from __future__ import annotations

import os
import re
import resource
from typing import Any, Dict, List, Optional

__all__ = ["setup", "forget", "size", "read_link_details", "reset_peak_memory", "peak_memory_bytes", "LINK_RE"]

LINK_RE = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), "
                     r"recv actions (\d+)")
_configured: Optional[str] = None


def setup(libspu: Any, path: str) -> None:
    """Send SPU's log (profiles included) to ``path`` instead of the console; once per process."""
    global _configured
    if _configured == path:
        return
    options = libspu.logging.LogOptions()
    options.enable_console_logger = False
    options.system_log_path = path
    options.log_level = libspu.logging.LogLevel.INFO
    libspu.logging.setup_logging(options)
    _configured = path


def forget(path: str) -> None:
    """``path`` was removed: the next :func:`setup` with it sets SPU's log up again."""
    global _configured
    if _configured == path:
        _configured = None


def size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def read_link_details(path: str, offset: int = 0) -> List[Dict[str, int]]:
    """Every ``Link details`` line written to ``path`` after ``offset``, in order."""
    try:
        with open(path, "r", errors="replace") as f:
            f.seek(offset)
            text = f.read()
    except OSError:
        return []
    return [dict(sent_bytes=int(a), recv_bytes=int(b), sent_messages=int(c), recv_messages=int(d))
            for a, b, c, d in LINK_RE.findall(text)]


def reset_peak_memory() -> bool:
    """Reset the process's peak resident memory (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_bytes() -> int:
    """Peak resident memory of this process since the last reset (``VmHWM``), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
