"""Checkpoints that are never lost, and loading weights from wherever a user keeps them.

Every file a run writes goes to a temporary file in the same folder first and is then renamed over
the old one (``os.replace`` is atomic on POSIX and Windows), so an interrupted run always leaves
the previous complete checkpoint in place.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import HybrezooError

__all__ = [
    "CHECKPOINT", "atomic_path", "atomic_write_text", "atomic_write_json", "save_checkpoint", "load_checkpoint",
    "weights_file", "load_state_dict", "load_weights",
]

CHECKPOINT = "checkpoint.pt"
FORMAT = 1

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces ``path`` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def save_checkpoint(path: PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` of a resumable state, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise HybrezooError(f"no checkpoint to resume at {path}: start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a torn or foreign file: say so instead of a pickle traceback
        raise HybrezooError(f"{path} is not a readable hybrezoo checkpoint ({type(err).__name__}): "
                            "start the run again without --resume") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise HybrezooError(f"{path} is not a hybrezoo training checkpoint (format {FORMAT}): "
                            "start the run again without --resume")
    return state


def weights_file(source: PathLike) -> Path:
    """The weights file of a run folder (model.safetensors) or the file itself."""
    path = Path(source).expanduser()
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", CHECKPOINT):
            if (path / name).is_file():
                return path / name
        raise HybrezooError(f"{path} holds no model.safetensors: give a finished run folder or a weights file")
    if not path.is_file():
        raise HybrezooError(f"weights {path} not found: give a run folder, a .safetensors or a .pt file")
    return path


def load_state_dict(source: PathLike) -> dict[str, torch.Tensor]:
    """A model state dict from a run folder, .safetensors, a plain .pt/.pth/.bin state dict, a
    training checkpoint (its latest model state), or ``hf-hub:ORG/NAME`` (its model.safetensors)."""
    from ..hub.verify import verified_hub_file, verify_weights_file

    if str(source).startswith("hf-hub:"):
        # the same fetch and checks (sha256, complete header) as pretrained=True loading
        ref = str(source).removeprefix("hf-hub:")
        hub_path = verified_hub_file(str(source), ref)
        if hub_path is None:
            raise HybrezooError(f"{source} has no model.safetensors: give a hub repository exported by `hybrezoo export`")
        return load_file(hub_path)
    path = weights_file(source)
    if path.suffix == ".safetensors":
        verify_weights_file(path, what=f"weights {path}", fix="export or copy the file again")
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        fit = state.get("fit") or {}
        return fit.get("model") or state["stage_start_model"]
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HybrezooError(f"{path} does not hold a model state dict")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def load_weights(model: nn.Module, source: PathLike, what: str = "weights",
                 hint: Optional[Callable[[], str]] = None) -> None:
    """Load ``source`` (see :func:`load_state_dict`) into ``model`` strictly, with a one-line error
    when the file is missing or was made for another architecture."""
    try:
        state = load_state_dict(source)
    except HybrezooError as err:
        raise HybrezooError(f"{what}: {err}{'; ' + hint() if hint else ''}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err).splitlines()[0]
        raise HybrezooError(f"{what} in {source} do not fit this architecture ({first.strip()[:160]}): "
                            "give weights trained for the same model") from None
