"""Which hybrezoo source made a run: the commit of the package's own checkout, never another repository's.

A run started from a copy of the code inside some other git repository (a cluster job's scratch
folder, a paper's repository) must not record that repository's commit as hybrezoo's: git answers for
the nearest enclosing repository, so the checkout's top level must be the folder holding the package.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Optional

__all__ = ["SOURCE_ROOT", "source_commit", "resolve_source_commit", "knows_history", "teacher_record", "teacher_of_run"]

SOURCE_ROOT = Path(__file__).resolve().parents[2]   # the folder that holds hybrezoo/


def _git(*args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _in_own_checkout() -> bool:
    top = _git("rev-parse", "--show-toplevel")
    return top is not None and Path(top).resolve() == SOURCE_ROOT and (SOURCE_ROOT / "hybrezoo").is_dir()


# A copy of the checkout without its .git (what a lent GPU machine receives) names its commit here; the
# GPU window script (training/gpu_window.sh) sets it from the commit it checked was clean. Publishing
# still checks that the commit is in hybrezoo's history (hybrezoo.hub.export).
SOURCE_COMMIT_ENV = "HYBREZOO_SOURCE_COMMIT"
_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def source_commit() -> Optional[str]:
    """HEAD of hybrezoo's own checkout; else, for a copy without .git, the commit in
    ``$HYBREZOO_SOURCE_COMMIT`` (40 hex digits); None for an installed copy or a copy inside another
    repository."""
    if _in_own_checkout():
        return _git("rev-parse", "HEAD")
    if _git("rev-parse", "--show-toplevel") is None:  # no repository around this copy at all
        named = os.environ.get(SOURCE_COMMIT_ENV, "").strip().lower()
        return named if _FULL_COMMIT.match(named) else None
    return None


def resolve_source_commit(rev: str) -> Optional[str]:
    """The full id of ``rev`` when it is a commit of hybrezoo's history, else None (also when this copy
    of the package is not a checkout, or a shallow one, and cannot tell: see :func:`knows_history`)."""
    if not _in_own_checkout():
        return None
    return _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")


def knows_history() -> bool:
    """Whether this copy can tell a hybrezoo commit from another repository's: a full checkout."""
    return _in_own_checkout() and _git("rev-parse", "--is-shallow-repository") == "false"


TEACHER_FIELDS = ("model", "top1", "top5", "eval_split", "eval_images", "command", "hardware", "wall_time_s",
                  "finished_at", "git_commit")


def teacher_record(metrics: dict) -> dict:
    """What a student's ``metrics.json`` keeps of its distillation teacher's run (from the teacher's own
    ``metrics.json``), so that a card can name the teacher run and its accuracy."""
    return {key: metrics[key] for key in TEACHER_FIELDS if key in metrics}


def teacher_of_run(recipe) -> Optional[dict]:
    """The record of the teacher a run distilled from (the first stage with one): its run's figures when
    ``distill.checkpoint`` is a run folder, the manifest's evaluation when it is the published entry."""
    import json

    from .recipe import stage_section

    for index in range(len(recipe["stages"])):
        distill = stage_section(recipe, index).get("distill") or {}
        if not distill.get("teacher"):
            continue
        source = distill.get("checkpoint")
        if source is None:
            from ..hub.manifest import published

            release = published(distill["teacher"])
            return {"model": distill["teacher"], "weights": "published",
                    **({"top1": release.top1, "top5": release.top5} if release else {})}
        metrics = Path(str(source)).expanduser() / "metrics.json"
        try:
            record = teacher_record(json.loads(metrics.read_text()))
        except (OSError, ValueError, AttributeError):
            record = {"model": distill["teacher"]}
        return {**record, "checkpoint": str(source)}
    return None
