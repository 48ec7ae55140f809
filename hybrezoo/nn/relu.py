"""The one ReLU every zoo model uses, so that every PI method and the cost model see the same layer.

Under private inference a ReLU is the expensive operation (a garbled circuit per element), while
identity is free. :class:`PIReLU` is a plain ReLU until a binary mask is attached; positions where
the mask is 0 are *linearised* (they pass the input through). The mask is a buffer, never a
parameter: optimisers do not touch it, it is saved in the state dict and moves with ``.to()``.

A whole ReLU layer that a method removes (DeepReDuce culling) is an ``nn.Identity`` in the model,
not a PIReLU with an all-zero mask, so a culled layer costs nothing, even in memory.

The layer traces with ``torch.fx`` (timm's ``feature_cls="fx"``, torchvision's
``create_feature_extractor``, quantisation and pruning tools): the mask-shape check, which branches on
shapes, is a leaf function (:func:`check_mask_fits`, wrapped for ``torch.fx`` and registered with
timm), and the rest is ``relu`` and ``where``.
"""
from typing import Any, Dict, Optional, Tuple

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

__all__ = ["PIReLU", "relu_layers", "kept_relus", "check_mask_fits"]


def _mask_shape_error(x: torch.Tensor, mask: torch.Tensor, reduction: int) -> str:
    expected = [int(s) for s in mask.shape]
    got = [int(s) for s in x.shape[-3:]]
    if reduction > 0 and expected[1] > 1:
        size = f"{expected[1] * reduction}x{expected[2] * reduction}"
        return (f"this model's ReLU masks were fitted to {size} inputs (feature map {expected}), "
                f"but got a feature map {got}: resize the input to {size}")
    return f"ReLU mask expects feature maps of shape {expected} (C, H, W), got {got}"


@register_notrace_function
def check_mask_fits(x: torch.Tensor, mask: torch.Tensor, reduction: int) -> torch.Tensor:
    """``x`` unchanged if a ReLU mask of shape (C, H, W) or (C, 1, 1) fits its feature maps, else one
    clear error naming the input size the mask was fitted to (``reduction``: the layer's stride).
    A leaf under ``torch.fx`` (its test is on shapes), so it returns ``x`` to stay in the traced graph."""
    if mask.shape[1] != 1 or mask.shape[2] != 1:
        if x.shape[-3:] != mask.shape:
            raise ValueError(_mask_shape_error(x, mask, reduction))
    elif x.dim() < 3 or x.shape[-3] != mask.shape[0]:
        raise ValueError(_mask_shape_error(x, mask, reduction))
    return x


torch.fx.wrap("check_mask_fits")  # a leaf for plain torch.fx too (timm's tracer also has the registration)


class PIReLU(nn.Module):
    """ReLU with an optional binary mask of kept positions (1 = ReLU, 0 = identity).

    The mask has shape (C, H, W) for one decision per element, or (C, 1, 1) for one per channel;
    it broadcasts over the batch. ``reduction`` is the layer's stride relative to the network
    input (set by zoo models), used only to name the expected input size in errors.
    """

    mask: Optional[torch.Tensor]
    __jit_unused_properties__ = ["is_masked", "per_channel"]

    def __init__(self, inplace: bool = False, reduction: int = 0) -> None:
        super().__init__()
        self.inplace = inplace
        self.reduction = reduction
        self.register_buffer("mask", None)

    @property
    def is_masked(self) -> bool:
        return self.mask is not None

    @property
    def per_channel(self) -> bool:
        """True when the mask has one entry per channel (it then fits any spatial size)."""
        return self.mask is not None and self.mask.shape[1] == 1 and self.mask.shape[2] == 1

    @torch.jit.ignore
    def set_mask(self, mask: Optional[torch.Tensor]) -> None:
        """Attach a binary mask of shape (C, H, W) or (C, 1, 1); ``None`` makes this a plain ReLU."""
        if mask is None:
            self.mask = None
            return
        if not isinstance(mask, torch.Tensor) or mask.dim() != 3:
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"a ReLU mask must be a 3-D tensor (C, H, W) or (C, 1, 1); got {shape}")
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError("a ReLU mask must be binary (0 = linearised, 1 = ReLU kept); "
                                 "threshold learned masks before attaching them")
            mask = mask != 0
        device = self.mask.device if self.mask is not None else None
        self.mask = mask.to(device) if device is not None else mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if mask is None:
            return F.relu(x, inplace=self.inplace)
        x = check_mask_fits(x, mask, self.reduction)
        return torch.where(mask, F.relu(x), x)

    @torch.jit.ignore
    def kept_per_sample(self, feature_shape: Tuple[int, ...]) -> int:
        """Number of ReLUs evaluated for one sample whose feature map has shape (C, H, W)."""
        c, h, w = (int(s) for s in feature_shape[-3:])
        if self.mask is None:
            return c * h * w
        kept = int(self.mask.sum())
        return kept * h * w if self.per_channel else kept

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        # A checkpoint may carry a mask for a layer built without one (an SNL/SENet checkpoint loaded
        # into a freshly built architecture): make room for it so the regular copy below fills it.
        key = prefix + "mask"
        if key in state_dict and (self.mask is None or self.mask.shape != state_dict[key].shape):
            self.set_mask(torch.ones(state_dict[key].shape, dtype=torch.bool, device=state_dict[key].device))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        if self.mask is None:
            return "inplace=True" if self.inplace else ""
        kind = "per-channel" if self.per_channel else "per-element"
        return f"mask={kind} {tuple(self.mask.shape)}, kept={int(self.mask.sum())}"


def relu_layers(model: nn.Module) -> Dict[str, PIReLU]:
    """All PIReLU layers of a model by qualified name, in forward-definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PIReLU)}


def kept_relus(model: nn.Module) -> int:
    """Kept mask entries summed over masked layers (per-element masks only; others need a forward).

    Use :func:`hybrezoo.pi_cost` for the full count; this helper is for methods that update masks.
    """
    return sum(int(m.mask.sum()) for m in relu_layers(model).values() if m.mask is not None)
