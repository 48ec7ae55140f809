"""Circa variants of zoo networks (Ghodsi et al., NeurIPS 2021): the same weights, every kept ReLU a
stochastic ReLU (:class:`~hybrezoo.nn.StochasticReLU`) with the truncation settings below.

``circa_<base>`` builds ``<base>`` and converts it with :func:`hybrezoo.methods.circa.convert`; a
checkpoint of the base network loads as is (stochastic ReLUs keep PIReLU's mask buffer), so masked
networks (SNL) keep their masks. ``pi_cost(model)`` prices them with Circa's protocol, each layer
with its own bit widths.

Which networks: the all-ReLU ResNet18 (Circa's baseline kind of network), a DeepReDuce network (the
abstract's "1.8x additional speedup" is on top of ReLU-reduced networks) and an SNL network (a
per-pixel masked one). Which settings: Circa's per-network truncations could not be read (docs/sources.md),
so we chose one setting for all: f = 12 fractional bits (the simulator's default), k = 8 truncated
bits, a 32-bit ring. Faults then touch only |x| < 2^(k-f) = 1/16, a quarter of the window of the
layer's default k = 10, while the sign-test circuit grows from 73 to 79 AND gates per ReLU under the
cost model (docs/circa.md). Variant ``neg_pass``: small negatives pass (recalled, low confidence, as
the variant Circa found better tolerated; ``hybrezoo eval --circa-variant`` compares both).
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from timm.models import register_model
from torch import nn

from ..registry import resolve_name, zoo_cfgs, zoo_entry
from . import deepreduce, snl
from ._masked import BASES, make_entry_point
from .pi_resnet import _create_pi_resnet

__all__: list[str] = ["SETTINGS", "CIRCA_BASES"]

# Circa's fixed point and truncation for every registered variant (our choice; see the module docstring).
SETTINGS: Dict[str, Any] = {"k": 8, "f": 12, "n": 32, "variant": "neg_pass"}

# circa architecture -> base architecture
CIRCA_BASES: Dict[str, str] = {
    "circa_pi_resnet18": "pi_resnet18",
    "circa_deepreduce_r18_cull1_thin": "deepreduce_r18_cull1_thin",
    "circa_snl_r18_50k": "snl_r18_50k",
}


def _base_builder(base: str) -> tuple[Callable[..., nn.Module], Dict[str, Any]]:
    if base in BASES:
        return BASES[base]
    if base in deepreduce.ARCHS:
        return _create_pi_resnet, deepreduce.ARCHS[base]
    if base in snl.ARCHS:
        return BASES[snl.FAMILY.bases[snl.ARCHS[base][0]]]
    raise KeyError(f"no builder for Circa base {base!r}")


def _entry(arch: str, tag: str):
    base = resolve_name(f"{CIRCA_BASES[arch]}.{tag}")
    masked = base.relu_budget is not None
    s = SETTINGS
    return zoo_entry(
        "circa", "circa", f"as {base.name}: {base.relu_convention}",
        reduction=base.reduction, relu_budget=base.relu_budget,
        published_relus=None if masked else base.published_relus,
        published_source="" if masked else f"ReLU count of {base.name} ({base.published_source})",
        description=f"{base.name} with Circa stochastic ReLUs: k={s['k']} truncated bits, f={s['f']} fractional bits, "
                    f"{s['n']}-bit ring, {s['variant']} faults",
    )


default_cfgs = zoo_cfgs({f"{arch}.{tag}": _entry(arch, tag) for arch in CIRCA_BASES for tag in ("c100", "tin")})


def _to_circa(model: nn.Module) -> nn.Module:
    from ..methods.circa import convert

    return convert(model, k=SETTINGS["k"], f=SETTINGS["f"], variant=SETTINGS["variant"], ring_bits=SETTINGS["n"],
                   seed=0, inplace=True)


def _build(arch: str, pretrained: bool, kwargs: Dict[str, Any]) -> nn.Module:
    # Converted as soon as it is built, before timm loads weights or wraps it for features_only.
    create, args = _base_builder(CIRCA_BASES[arch])
    return create(arch, pretrained, finalize=_to_circa, **dict(args, **kwargs))


for _arch, _base in CIRCA_BASES.items():
    register_model(make_entry_point(
        _arch, __name__, _build,
        f"{_base} with Circa stochastic ReLUs (k={SETTINGS['k']}, f={SETTINGS['f']}, n={SETTINGS['n']}, "
        f"{SETTINGS['variant']})."))
