"""Recipes that the methods generate: built on the repository's shared bases, checked by the engine's
recipe loader, and written self-contained (every key resolved), so that a generated recipe trains the
same network wherever the file is moved."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from ..engine.checkpoint import atomic_write_text
from ..engine.recipe import Recipe, load_recipe
from ..engine.run import REPO_ROOT
from ..errors import HybrezooError

__all__ = ["BASE_DIR", "resolve_recipe", "recipe_text", "write_recipe", "chosen_lines"]

BASE_DIR = REPO_ROOT / "training" / "_base"


def resolve_recipe(data: Mapping[str, Any], bases: Sequence[Path] = (), overrides: Sequence[str] = ()) -> Recipe:
    """``data`` on top of ``bases`` (recipe files), with ``overrides``, resolved and checked by the engine."""
    for base in bases:
        if not Path(base).is_file():
            raise HybrezooError(f"recipe base {base} not found: run from a hybrezoo checkout (training/_base/)")
    content = dict(data, base=[str(Path(b).resolve()) for b in bases])
    fd, tmp = tempfile.mkstemp(prefix=".hybrezoo-recipe-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(content, f, sort_keys=False)
        recipe = load_recipe(tmp, overrides)
    finally:
        os.unlink(tmp)
    recipe.path = None
    return recipe


def recipe_text(recipe: Recipe, header: Sequence[str] = ()) -> str:
    """The resolved recipe as YAML without its ``runtime`` section (which never changes the result)."""
    data = {k: v for k, v in recipe.data.items() if k != "runtime"}
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header)
    return lines + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)


def write_recipe(path: str | os.PathLike, text: str) -> Path:
    """Write a recipe atomically (a temporary file, then ``os.replace``)."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise HybrezooError(f"the recipe file {path} must end in .yaml")
    atomic_write_text(path, text)
    return path


def chosen_lines(label: str, relus: int, macs: int, described: str, zoo_name: Optional[str],
                 recipe: Mapping[str, Any], recipe_path: Optional[Path]) -> list[str]:
    """The end of a method's report: the chosen network, how to build it, and how to train it."""
    lines = ["", f"chosen: {label}: {relus:,} ReLUs, {macs / 1e6:.1f}M MACs ({described})"]
    if zoo_name:
        lines.append(f"  this is the zoo's {zoo_name}")
    name, kwargs = recipe["model"]["name"], recipe["model"]["kwargs"]
    args = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    lines.append(f"  hybrezoo.create_model({name!r}{args})")
    if recipe_path is not None:
        lines.append(f"recipe: {recipe_path}  (train: hybrezoo train {recipe_path} --data PATH)")
    return lines
