"""Shared pieces of the zoo's model families: the timm builder call and the input checks."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
from timm.layers import register_notrace_function
from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

from .._validate import Range
from ..errors import NoWeightsError
from ..registry import resolve_name

__all__ = ["build_zoo_model", "check_image_batch"]

ModelT = TypeVar("ModelT", bound=nn.Module)

# Arguments the zoo's families share, checked before building: timm would take a negative class count or
# dropout rate and build a model that silently does something else (engine/recipe.py holds the recipe's).
_ARG_RANGES = {
    "num_classes": Range(low=0, whole=True, note="classifier outputs; 0 = no classifier"),
    "in_chans": Range(low=1, whole=True),
    "drop_rate": Range(low=0, high=1, high_open=True, note="dropout probability; 0 = none"),
    "block_drop_rate": Range(low=0, high=1, high_open=True, note="dropout probability; 0 = none"),
    "drop_path_rate": Range(low=0, high=1, high_open=True, note="stochastic depth probability; 0 = none"),
}


def build_zoo_model(model_cls: Callable[..., ModelT], variant: str, pretrained: bool = False,
                    **kwargs: Any) -> ModelT:
    """timm's ``build_model_with_cfg``, except that asking for weights that are not published fails
    with the command that makes them instead of timm's warning and a randomly initialised model, that
    a published entry's weights come from the hub or the repository's copy (``release_weights``), and
    that the weights are checked (sha256, completeness) before timm loads them (``hybrezoo.hub.verify``)."""
    for key, allowed in _ARG_RANGES.items():
        if kwargs.get(key) is not None:
            allowed.check(kwargs[key], key)
    if pretrained:
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                     pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
        name = f"{variant}.{cfg.tag}" if cfg.tag else variant
        from ..hub.verify import checked_pretrained_load, release_weights

        source = cfg.to_dict()
        if _is_the_release(name, cfg):
            source["file"] = release_weights(name)  # the hub's copy or the repository's, checked
            kwargs["pretrained_cfg_overlay"] = dict(kwargs.get("pretrained_cfg_overlay") or {}, file=source["file"])
        elif not cfg.has_weights and cfg.state_dict is None:
            from ..hub.manifest import load_manifest

            load_manifest()  # a broken manifest is the reason: say so (one line) rather than "not published"
            recipe = resolve_name(name).recipe
            raise NoWeightsError(
                f"{name} has no published weights yet (`hybrezoo list --pretrained` lists those that have): train "
                f"them with `hybrezoo train {recipe} --data PATH`, then load the run folder with "
                f"timm.create_model('local-dir:RUN_DIR', pretrained=True)")
        with checked_pretrained_load(name, source):
            return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)


def _is_the_release(name: str, cfg: Any) -> bool:
    """Whether the weights asked for are the published release's, not a source the caller chose
    (``hf-hub:``, ``local-dir:``, ``pretrained_cfg_overlay=dict(file=...)``, a state dict)."""
    try:
        entry = resolve_name(name)
    except Exception:
        return False
    return (entry.name == name and entry.published and not cfg.source and cfg.state_dict is None
            and cfg.file == entry.weights_file and cfg.hf_hub_id == entry.hf_hub_id)


@register_notrace_function
def check_image_batch(x: torch.Tensor, in_chans: int, min_size: int) -> torch.Tensor:
    """``x`` unchanged if it is an image batch the network can take, else one clear error (instead of a
    shape mismatch deep inside the network). The checks branch on shapes, so under ``torch.fx`` this is
    a leaf (registered with timm; model modules also ``torch.fx.wrap`` it) and returns ``x`` so that
    the check stays in traced graphs."""
    if x.dim() != 4:
        raise ValueError(f"expected a 4-D image batch of shape (N, {in_chans}, H, W), "
                         f"got a {x.dim()}-D tensor of shape {list(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"expected {in_chans} input channels, shape (N, {in_chans}, H, W); "
                         f"got shape {list(x.shape)}")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(f"input {x.shape[2]}x{x.shape[3]} is too small for this network: it needs at least "
                         f"{min_size}x{min_size} (its total stride); the zoo's data sets use 32x32 and 64x64")
    return x
