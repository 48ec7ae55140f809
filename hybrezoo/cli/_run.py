"""How every command that trains (``hybrezoo train``, ``hybrezoo reduce snl|senet``) runs a recipe and
ends: the run folder printed once (rank 0 only under torchrun), and Ctrl-C answered with how to resume
instead of a traceback."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["run_recipe_command"]

INTERRUPTED = 130  # the shell's exit status for SIGINT


def run_recipe_command(recipe: str | Path, **kwargs: Any) -> int:
    """Run ``recipe`` with :func:`hybrezoo.engine.run_recipe` and return the command's exit status."""
    from ..engine import run_recipe
    from ..engine.checkpoint import resume_command

    try:
        run_dir = run_recipe(recipe, **kwargs)
    except KeyboardInterrupt:
        command = kwargs.get("command")
        how = f"`{resume_command(command)}`" if command else "the same command with --resume"
        print(f"hybrezoo: interrupted; the last complete epoch is in the run folder's checkpoint.pt: continue with "
              f"{how}", file=sys.stderr)
        return INTERRUPTED
    if os.environ.get("RANK", "0") == "0":
        print(run_dir)
    return 0
