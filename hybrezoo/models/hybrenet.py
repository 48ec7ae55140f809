"""HybReNets: DeepReShape's (Jha & Reagen, TMLR 2024) ResNet18-style networks whose stage widths put
the ReLUs in the order of their criticality.

A HybReNet is a PI-ResNet with base width m, stage factors (alpha, beta, gamma), depths
(phi1..phi4) and, optionally, ReLU-reuse (:class:`~hybrezoo.nn.relu_reuse.ReLUReuse` in every ReLU
layer); the name spells them:
``hybrenet_m<m>_<alpha><beta><gamma>[_d<phi1..phi4>][_cull<stages>][_thin][_reuse<r>]``.

Two kinds of entries are registered:

- the **base networks found in public code** (the PrivCirNet port, ``src/resnet.py``:
  ``cifar100_resnet18_553`` and ``cifar100_resnet18_253``), all ReLUs, the stem ReLU kept as in that
  port; the paper's own tables could not be read (``docs/sources.md``);
- **ReLU-optimised HybReNets designed by hybrezoo** (:mod:`hybrezoo.methods.deepreshape`, our reading of
  the method) for the ReLU budgets of the paper's abstract and of the related work it compares with
  (SNL, SENet): they are ours, not the paper's, and ``docs/deepreshape.md`` says how they were made.

Every count below is derived from the architecture (``pi_cost``; the tests recompute them).
"""
from __future__ import annotations

from typing import Any

from timm.models import register_model

from ..data.specs import dataset_spec
from ..nn.relu_reuse import apply_relu_reuse
from ..registry import zoo_cfgs, zoo_entry
from ._builder import build_zoo_model
from .pi_resnet import PIResNet

__all__ = ["HybReNet"]


class HybReNet(PIResNet):
    """A PI-ResNet whose ReLU layers may reuse ReLUs across channels (``relu_reuse`` > 1)."""

    def __init__(self, *args: Any, relu_reuse: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(relu_reuse, bool) or not isinstance(relu_reuse, int) or relu_reuse < 1:
            raise ValueError(f"relu_reuse must be a positive integer factor, got {relu_reuse!r}")
        if any(w % relu_reuse for w in self.widths):
            raise ValueError(f"ReLU-reuse by {relu_reuse} needs stage widths divisible by it, got {self.widths}: "
                             f"choose a base width that is a multiple of {relu_reuse}")
        self.relu_reuse = relu_reuse
        apply_relu_reuse(self, relu_reuse)


_PORT = "configuration from the PrivCirNet port of DeepReShape's code; counts derived"
_OURS = ("ours, not a paper figure: designed by hybrezoo.methods.deepreshape for {budget} ReLUs on {data} "
         "(criticality order {order}); ReLUs derived")

# architecture name -> HybReNet arguments
ARCHS: dict[str, dict[str, Any]] = {
    "hybrenet_m16_553": dict(base_width=16, stage_factors=(5, 5, 3), depths=(2, 2, 2, 2)),
    "hybrenet_m32_253": dict(base_width=32, stage_factors=(2, 5, 3), depths=(2, 2, 2, 2)),
    # ReLU-optimised designs (ours): `hybrenet_design(budget, data set, order)` returns exactly these (tested).
    "hybrenet_m24_252_cull14_thin_reuse4": dict(
        base_width=24, stage_factors=(2, 5, 2), depths=(2, 2, 2, 2), stem_relu=False,
        stage_relus=("cull", "thin", "thin", "cull"), relu_reuse=4),
    "hybrenet_m20_252_cull14_thin_reuse2": dict(
        base_width=20, stage_factors=(2, 5, 2), depths=(2, 2, 2, 2), stem_relu=False,
        stage_relus=("cull", "thin", "thin", "cull"), relu_reuse=2),
    "hybrenet_m16_252_cull1_thin": dict(
        base_width=16, stage_factors=(2, 5, 2), depths=(2, 2, 2, 2), stem_relu=False,
        stage_relus=("cull", "thin", "thin", "thin")),
    "hybrenet_m16_252_cull1": dict(
        base_width=16, stage_factors=(2, 5, 2), depths=(2, 2, 2, 2), stem_relu=False,
        stage_relus=("cull", "all", "all", "all")),
    "hybrenet_m30_252_cull1": dict(
        base_width=30, stage_factors=(2, 5, 2), depths=(2, 2, 2, 2), stem_relu=False,
        stage_relus=("cull", "all", "all", "all")),
    "hybrenet_m65_222_cull12_thin": dict(
        base_width=65, stage_factors=(2, 2, 2), depths=(2, 2, 2, 2), stem_relu=False,
        stage_relus=("cull", "cull", "thin", "thin")),
    "hybrenet_m20_263_cull1_thin": dict(
        base_width=20, stage_factors=(2, 6, 3), depths=(2, 2, 2, 2), stem_relu=False,
        stage_relus=("cull", "thin", "thin", "thin")),
    "hybrenet_m16_263_cull1": dict(
        base_width=16, stage_factors=(2, 6, 3), depths=(2, 2, 2, 2), stem_relu=False,
        stage_relus=("cull", "all", "all", "all")),
}

# ReLU-optimised designs: architecture -> (data set it was designed for, ReLU budget, order used).
# CIFAR-100 budgets: SNL's and SENet's CIFAR-100 points (15K, 25K, 50K, 100K; docs/sources.md) and the
# 180K of DeepReShape's earlier abstract (iso-ReLU comparison with SNL). Tiny ImageNet budgets: SNL's and
# SENet's Tiny ImageNet points 200K, 300K, 500K; at 100K the design is exactly DeepReDuce's
# deepreduce_r18_cull12_thin_ch05 (m=32; 2, 2, 2), so it is not registered twice.
DESIGNS: dict[str, tuple[str, int, tuple[int, ...]]] = {
    "hybrenet_m24_252_cull14_thin_reuse4": ("cifar100", 15_000, (3, 2, 4, 1)),
    "hybrenet_m20_252_cull14_thin_reuse2": ("cifar100", 25_000, (3, 2, 4, 1)),
    "hybrenet_m16_252_cull1_thin": ("cifar100", 50_000, (3, 2, 4, 1)),
    "hybrenet_m16_252_cull1": ("cifar100", 100_000, (3, 2, 4, 1)),
    "hybrenet_m30_252_cull1": ("cifar100", 180_000, (3, 2, 4, 1)),
    "hybrenet_m65_222_cull12_thin": ("tinyimagenet", 200_000, (3, 4, 2, 1)),
    "hybrenet_m20_263_cull1_thin": ("tinyimagenet", 300_000, (3, 4, 2, 1)),
    "hybrenet_m16_263_cull1": ("tinyimagenet", 500_000, (3, 4, 2, 1)),
}

# (architecture, tag) -> (ReLUs, MACs) at the data set's input size (derived with pi_cost).
DERIVED: dict[tuple[str, str], tuple[int, int]] = {
    ("hybrenet_m16_553", "c100"): (343_040, 1_053_353_152),
    ("hybrenet_m16_553", "tin"): (1_372_160, 4_213_172_608),
    ("hybrenet_m32_253", "c100"): (372_736, 709_621_504),
    ("hybrenet_m32_253", "tin"): (1_490_944, 2_838_294_016),
    ("hybrenet_m24_252_cull14_thin_reuse4", "c100"): (13_824, 265_689_984),
    ("hybrenet_m24_252_cull14_thin_reuse4", "tin"): (55_296, 1_062_663_936),
    ("hybrenet_m20_252_cull14_thin_reuse2", "c100"): (23_040, 184_605_760),
    ("hybrenet_m20_252_cull14_thin_reuse2", "tin"): (92_160, 738_343_040),
    ("hybrenet_m16_252_cull1_thin", "c100"): (47_104, 118_242_560),
    ("hybrenet_m16_252_cull1_thin", "tin"): (188_416, 472_906_240),
    ("hybrenet_m16_252_cull1", "c100"): (94_208, 118_242_560),
    ("hybrenet_m16_252_cull1", "tin"): (376_832, 472_906_240),
    ("hybrenet_m30_252_cull1", "c100"): (176_640, 414_918_240),
    ("hybrenet_m30_252_cull1", "tin"): (706_560, 1_659_552_960),
    ("hybrenet_m65_222_cull12_thin", "c100"): (49_920, 572_933_920),
    ("hybrenet_m65_222_cull12_thin", "tin"): (199_680, 2_291_631_680),
    ("hybrenet_m20_263_cull1_thin", "c100"): (74_240, 385_751_360),
    ("hybrenet_m20_263_cull1_thin", "tin"): (296_960, 1_542_861_440),
    ("hybrenet_m16_263_cull1", "c100"): (118_784, 246_980_864),
    ("hybrenet_m16_263_cull1", "tin"): (475_136, 987_808_256),
}


def _entry(arch: str, tag: str):
    args = ARCHS[arch]
    a, b, g = args["stage_factors"]
    relus, macs = DERIVED[(arch, tag)]
    if arch in DESIGNS:
        data, budget, order = DESIGNS[arch]
        data = dataset_spec(data).title
        source = _OURS.format(budget=f"{budget:,}", data=data, order=" > ".join(f"S{s}" for s in order))
        convention = "stem ReLU removed with stage 1 (hybrezoo DeepReShape)"
        what = f"ReLU-optimised HybReNet (ours, designed for {budget // 1000}K ReLUs on {data})"
    else:
        source, convention = _PORT, "stem ReLU kept (PrivCirNet port)"
        what = "HybReNet base network from the PrivCirNet port, all ReLUs"
    # No paper figure exists for these networks (docs/deepreshape.md), so published_relus stays empty;
    # where the configuration comes from is in the description.
    return zoo_entry(
        "deepreshape", "deepreshape", convention,
        description=f"{what}: (m={args['base_width']}; {a}, {b}, {g}), depths {tuple(args['depths'])}, "
                    f"{relus:,} ReLUs, {macs / 1e6:.1f}M MACs ({source}).")


default_cfgs = zoo_cfgs({f"{arch}.{tag}": _entry(arch, tag) for arch in ARCHS for tag in ("c100", "tin")})


def _create(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> HybReNet:
    return build_zoo_model(HybReNet, variant, pretrained, **dict(ARCHS[variant], **kwargs))


@register_model
def hybrenet_m16_553(pretrained: bool = False, **kwargs) -> HybReNet:
    """HybReNet (m=16; 5, 5, 3): widths 16, 80, 400, 1200; 343,040 ReLUs at 32x32."""
    return _create("hybrenet_m16_553", pretrained, kwargs)


@register_model
def hybrenet_m32_253(pretrained: bool = False, **kwargs) -> HybReNet:
    """HybReNet (m=32; 2, 5, 3): widths 32, 64, 320, 960; 372,736 ReLUs at 32x32."""
    return _create("hybrenet_m32_253", pretrained, kwargs)


@register_model
def hybrenet_m24_252_cull14_thin_reuse4(pretrained: bool = False, **kwargs) -> HybReNet:
    """Ours, for 15K ReLUs on CIFAR-100: (m=24; 2, 5, 2), stages 1+4 culled, thinned, ReLU-reuse x4; 13,824 ReLUs."""
    return _create("hybrenet_m24_252_cull14_thin_reuse4", pretrained, kwargs)


@register_model
def hybrenet_m20_252_cull14_thin_reuse2(pretrained: bool = False, **kwargs) -> HybReNet:
    """Ours, for 25K ReLUs on CIFAR-100: (m=20; 2, 5, 2), stages 1+4 culled, thinned, ReLU-reuse x2; 23,040 ReLUs."""
    return _create("hybrenet_m20_252_cull14_thin_reuse2", pretrained, kwargs)


@register_model
def hybrenet_m16_252_cull1_thin(pretrained: bool = False, **kwargs) -> HybReNet:
    """Ours, for 50K ReLUs on CIFAR-100: (m=16; 2, 5, 2), stage 1 culled, thinned; 47,104 ReLUs."""
    return _create("hybrenet_m16_252_cull1_thin", pretrained, kwargs)


@register_model
def hybrenet_m16_252_cull1(pretrained: bool = False, **kwargs) -> HybReNet:
    """Ours, for 100K ReLUs on CIFAR-100: (m=16; 2, 5, 2), stage 1 culled; 94,208 ReLUs."""
    return _create("hybrenet_m16_252_cull1", pretrained, kwargs)


@register_model
def hybrenet_m30_252_cull1(pretrained: bool = False, **kwargs) -> HybReNet:
    """Ours, for 180K ReLUs on CIFAR-100: (m=30; 2, 5, 2), stage 1 culled; 176,640 ReLUs."""
    return _create("hybrenet_m30_252_cull1", pretrained, kwargs)


@register_model
def hybrenet_m65_222_cull12_thin(pretrained: bool = False, **kwargs) -> HybReNet:
    """Ours, for 200K ReLUs on Tiny ImageNet: (m=65; 2, 2, 2), stages 1+2 culled, thinned; 199,680 ReLUs."""
    return _create("hybrenet_m65_222_cull12_thin", pretrained, kwargs)


@register_model
def hybrenet_m20_263_cull1_thin(pretrained: bool = False, **kwargs) -> HybReNet:
    """Ours, for 300K ReLUs on Tiny ImageNet: (m=20; 2, 6, 3), stage 1 culled, thinned; 296,960 ReLUs."""
    return _create("hybrenet_m20_263_cull1_thin", pretrained, kwargs)


@register_model
def hybrenet_m16_263_cull1(pretrained: bool = False, **kwargs) -> HybReNet:
    """Ours, for 500K ReLUs on Tiny ImageNet: (m=16; 2, 6, 3), stage 1 culled; 475,136 ReLUs."""
    return _create("hybrenet_m16_263_cull1", pretrained, kwargs)
