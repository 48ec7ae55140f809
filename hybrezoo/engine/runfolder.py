"""Guarding a run folder: one process at a time, no writing through links, no stale temporary files.

- **Lock.** ``hybrezoo train`` holds an exclusive ``flock`` on ``RUN/.hybrezoo.lock`` for the whole
  run (the main process only; under torchrun the other processes follow rank 0). The file names the
  holder (pid, host, command), so a second process into the same folder, or a ``--resume`` while the
  run still goes, stops with one line naming the first instead of mixing results. The kernel drops
  the lock when the holder dies, even by kill -9, so a crash never leaves the folder locked.
- **Links.** A file of the run that is a symbolic link is refused: the run would write through it
  to wherever it points. Logs are appended with ``O_NOFOLLOW`` as well.
- **Leftovers.** A kill between a temporary file's creation and its rename leaves
  ``.NAME.XXXXXXXX.tmp`` files and ``.export-XXXXXXXX`` folders; once the lock is held they can
  only be such leftovers, and are removed (only these patterns, only directly inside a folder that
  a run has written to).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator, Optional

from ..errors import HybrezooError
from .checkpoint import CHECKPOINT

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RUN_FILES", "lock_run_folder", "check_no_links", "remove_leftovers", "discard_run",
           "open_for_append", "is_leftover"]

LOCK_FILE = ".hybrezoo.lock"
# what a run writes into its folder; removed by --restart (the checkpoint last: a restart killed
# half-way leaves an unfinished run, never weights without their checkpoint's run)
RUN_FILES = ("model.safetensors.sha256", "model.safetensors", "config.json", "metrics.json", "log.jsonl", "train.log",
             "recipe.yaml", CHECKPOINT)
_TEMP_FILE = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")      # atomic_path's tempfile.mkstemp names
_EXPORT_DIR = re.compile(r"\.export-[a-z0-9_]{8}")      # save_model's tempfile.TemporaryDirectory names


def _no_link(path: Path) -> None:
    if path.is_symlink():
        raise HybrezooError(f"{path} is a symbolic link: hybrezoo does not write through links in a run folder; "
                            "remove the link, or train into another --out")


def _os_error(err: OSError, run_dir: Path) -> HybrezooError:
    if err.errno == errno.ELOOP:
        return HybrezooError(f"{err.filename} is a symbolic link: hybrezoo does not write through links in a run "
                             "folder; remove the link, or train into another --out")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return HybrezooError(f"cannot write in the run folder {run_dir} ({err.strerror}): choose a writable --out")
    return HybrezooError(f"cannot use the run folder {run_dir} ({err.strerror}): free disk space or choose another "
                         "--out")


def open_for_append(path: Path):
    """``open(path, "a")`` that refuses to follow a symbolic link."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        raise _os_error(err, path.parent) from None
    return os.fdopen(fd, "a")


def check_no_links(run_dir: Path) -> None:
    """Refuse a run folder in which a file the run writes is a symbolic link."""
    for name in (*RUN_FILES, LOCK_FILE):
        _no_link(run_dir / name)


def _make_folder(run_dir: Path) -> None:
    if run_dir.is_symlink() and not run_dir.exists():
        raise HybrezooError(f"--out {run_dir} is a broken symbolic link: remove it or give another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise HybrezooError(f"--out {run_dir} is a file, not a folder: give a folder for the run")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise HybrezooError(f"--out {run_dir}: a part of the path is a file, not a folder: give another --out") \
            from None
    except OSError as err:
        raise HybrezooError(f"cannot create the run folder {run_dir} ({err.strerror}): choose a writable --out") \
            from None


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    started = f", since {info['started']}" if info.get("started") else ""
    return f"pid {info['pid']} on {info.get('host', '?')}{started}: {info.get('command', '?')}"


@contextlib.contextmanager
def lock_run_folder(run_dir: Path, command: str, enabled: bool = True) -> Iterator[None]:
    """Create ``run_dir`` and hold its lock for the block (see the module docstring)."""
    _make_folder(run_dir)
    if not enabled or fcntl is None:
        yield
        return
    _no_link(run_dir / LOCK_FILE)
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        raise _os_error(err, run_dir) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HybrezooError(f"{run_dir} is in use by another hybrezoo run ({_holder(fd)}): wait for it to end "
                                "(then add --resume to continue it), or train into another --out") from None
        except OSError as err:
            raise _os_error(err, run_dir) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as err:
            raise _os_error(err, run_dir) from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # the holder is gone; the lock itself goes with the descriptor
    finally:
        os.close(fd)


def is_leftover(name: str) -> bool:
    """True for the names of the package's own temporary files and folders."""
    return bool(_TEMP_FILE.fullmatch(name) or _EXPORT_DIR.fullmatch(name))


def remove_leftovers(run_dir: Path) -> list[str]:
    """Remove temporary files a killed run left in ``run_dir`` (hold the lock first); returns their names.

    Only in a folder a run has written to (it holds recipe.yaml or checkpoint.pt): an ``--out`` that
    is some other folder is left alone."""
    removed: list[str] = []
    if not any((run_dir / name).is_file() for name in ("recipe.yaml", CHECKPOINT)):
        return removed
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        return removed
    for entry in entries:
        if entry.is_symlink() or not is_leftover(entry.name):
            continue
        try:
            if _TEMP_FILE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
            elif _EXPORT_DIR.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                continue
        except OSError as err:
            raise _os_error(err, run_dir) from None
        removed.append(entry.name)
    return sorted(removed)


def discard_run(run_dir: Path) -> list[str]:
    """Remove the files of the run in ``run_dir`` (``--restart``; hold the lock first); returns their names."""
    removed = []
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_symlink() or path.is_file():
            try:
                path.unlink()
            except OSError as err:
                raise _os_error(err, run_dir) from None
            removed.append(name)
        elif path.exists():
            raise HybrezooError(f"{path} is not a file: remove it yourself, or train into another --out")
    return removed


def holder_of(run_dir: Path) -> Optional[str]:
    """Who holds the lock of ``run_dir`` now, or None (for messages of other commands)."""
    if fcntl is None or not (run_dir / LOCK_FILE).is_file() or (run_dir / LOCK_FILE).is_symlink():
        return None
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
