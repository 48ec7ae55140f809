"""ReLU-reuse: a ReLU layer that evaluates 1 in ``factor`` of its channels and lets the others reuse them.

DeepReShape (Jha & Reagen, TMLR 2024, arXiv:2304.10593) names ReLU-reuse as one of the ReLU
optimisations it applies to HybReNets, but its definition could not be read (docs/deepreshape.md);
this layer is hybrezoo's own construction, built so that its private-inference cost is exactly what
:meth:`ReLUReuse.kept_per_sample` says:

- channels are split into groups of ``factor`` consecutive channels; the first channel of each
  group is its *representative* and is the only one that goes through a ReLU (a garbled circuit);
- every channel c of a group reuses its representative r's ReLU *correction*
  ``ReLU(x_r) - x_r``: ``y_c = x_c + ReLU(x_r) - x_r``. For the representative itself this is
  ``ReLU(x_r)``; the other channels keep their own (linear) information and receive the group's
  nonlinearity.

Only additions, subtractions and copies of secret shares are added, which are free (local) in
Delphi-style protocols, so the layer costs ``C / factor * H * W`` ReLUs per sample. Copying the
ReLU *output* instead (``y_c = ReLU(x_r)``) would cost the same but make the layer equivalent to a
narrower one (the non-representative pre-activations would be thrown away); reusing the ReLU
*decision* (``y_c = x_c * [x_r > 0]``) would not save the multiplexer a garbled ReLU needs per
element, so it would not be cheaper than a ReLU under Delphi.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.fx
from timm.layers import register_notrace_function
from torch import nn

from .relu import PIReLU

__all__ = ["ReLUReuse", "apply_relu_reuse", "check_reuse_channels"]


def _channels_error(channels: int, factor: int) -> str:
    return (f"a ReLU-reuse layer with factor {factor} needs a channel count divisible by it, got {channels} "
            f"channels: choose widths that are multiples of {factor}")


@register_notrace_function
def check_reuse_channels(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``x`` unchanged if its (C, H, W) feature maps split into groups of ``factor`` channels, else one
    clear error. A leaf under ``torch.fx`` (its test is on shapes), returning ``x`` to stay in the graph."""
    if x.dim() < 3:
        raise ValueError(f"a ReLU-reuse layer needs (N, C, H, W) or (C, H, W) feature maps, got shape {list(x.shape)}")
    if x.shape[-3] % factor != 0:
        raise ValueError(_channels_error(int(x.shape[-3]), factor))
    return x


torch.fx.wrap("check_reuse_channels")  # a leaf for plain torch.fx too


class ReLUReuse(PIReLU):
    """ReLU on one channel in ``factor``; each group of ``factor`` channels shares its ReLU correction."""

    def __init__(self, factor: int, inplace: bool = False, reduction: int = 0) -> None:
        super().__init__(inplace=False, reduction=reduction)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"the ReLU-reuse factor must be a positive integer, got {factor!r}")
        self.factor = factor

    @torch.jit.ignore
    def set_mask(self, mask: Optional[torch.Tensor]) -> None:
        if mask is not None:
            raise ValueError("a ReLU-reuse layer takes no mask: its kept ReLUs are fixed by its factor "
                             "(use a plain PIReLU for masked linearisation)")
        super().set_mask(None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return torch.relu(x)
        x = check_reuse_channels(x, self.factor)
        grouped = x.unflatten(-3, (-1, self.factor))
        rep = grouped[..., :1, :, :]                          # (.., G, 1, H, W): one representative per group
        correction = torch.relu(rep) - rep                    # the only nonlinear op: G * H * W ReLUs
        return (grouped + correction).flatten(-4, -3)

    @torch.jit.ignore
    def kept_per_sample(self, feature_shape: Tuple[int, ...]) -> int:
        """ReLUs evaluated for one sample of shape (C, H, W): one per group of ``factor`` channels."""
        c, h, w = (int(s) for s in feature_shape[-3:])
        if c % self.factor:
            raise ValueError(_channels_error(c, self.factor))
        return c // self.factor * h * w

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def apply_relu_reuse(model: nn.Module, factor: int) -> nn.Module:
    """Replace every :class:`PIReLU` of ``model`` (in place) by a :class:`ReLUReuse` of ``factor``."""
    if factor == 1:
        return model
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is PIReLU:
                if child.mask is not None:
                    raise ValueError(f"{name + '.' if name else ''}{child_name} has a ReLU mask: "
                                     "ReLU-reuse applies to unmasked ReLU layers only")
                setattr(module, child_name, ReLUReuse(factor, reduction=child.reduction))
    return model
