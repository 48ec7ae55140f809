"""``create_model``: timm's factory with the zoo's error for names that do not exist."""
from __future__ import annotations

from typing import Any

import timm
from torch import nn

from .._validate import run_folder_config
from ..registry import entries, resolve_name

__all__ = ["create_model"]

_SOURCES = ("hf-hub:", "local-dir:")


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a zoo model (``arch.tag`` or a bare ``arch``), any timm model, or an ``hf-hub:`` /
    ``local-dir:`` checkpoint. Unknown names raise :class:`~hybrezoo.errors.UnknownModelError`
    naming the closest registered ones, where timm would only say "Unknown model"."""
    if isinstance(name, str) and name.startswith("local-dir:"):
        run_folder_config(name[len("local-dir:"):])  # not a run folder, unknown architecture: one line
    if isinstance(name, str) and (name.startswith(_SOURCES) or timm.is_model(name)):
        if "." in name and not name.startswith(_SOURCES) and name.split(".")[0] in {e.arch for e in entries()}:
            resolve_name(name)  # a zoo architecture with a tag it lacks (snl_r18_500k.c100): name those it has
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    return timm.create_model(resolve_name(name).name, pretrained=pretrained, **kwargs)
