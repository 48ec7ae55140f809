"""Shared pieces of the families whose ReLUs are chosen position by position (SNL, SENet) and of the
Circa variants: the base networks they start from, budget names, and timm entry points.

An SNL or SENet network *is* its base network plus bool ReLU masks, and the masks exist only in
trained weights. So a registered name builds its base architecture; a freshly built model has every
ReLU (no mask yet), and loading its checkpoint (``pretrained=True`` once weights are published, a run
folder, or ``model.load_state_dict``) attaches the masks, because :class:`~hybrezoo.nn.PIReLU` adopts
mask buffers from a state dict. ``pi_cost`` of a loaded model counts the kept ReLUs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from timm.models import register_model
from torch import nn

from ..registry import resolve_name, zoo_entry
from .pi_resnet import _create_pi_resnet
from .pi_wide_resnet import _create_pi_wide_resnet

__all__ = ["BASES", "MaskedFamily", "budget_label", "make_entry_point", "build_on_base"]

# base name -> (builder, architecture arguments). These are the four baselines of pi_resnet.py and
# pi_wide_resnet.py: SNL's ReLU convention (no stem ReLU; no final WRN ReLU) and SENet's (both kept).
BASES: Dict[str, tuple[Callable[..., nn.Module], Dict[str, Any]]] = {
    "pi_resnet18": (_create_pi_resnet, {}),
    "pi_resnet18_nostem": (_create_pi_resnet, {"stem_relu": False}),
    "pi_wrn22_8": (_create_pi_wide_resnet, {"depth": 22, "widen_factor": 8}),
    "pi_wrn22_8_nofinal": (_create_pi_wide_resnet, {"depth": 22, "widen_factor": 8, "final_relu": False}),
}


def budget_label(budget: int) -> str:
    """15000 -> "15k", 1200000 -> "1200k": the budget as it appears in a model name."""
    if budget % 1000:
        raise ValueError(f"budgets in names are whole thousands, got {budget}")
    return f"{budget // 1000}k"


def make_entry_point(arch: str, module: str, build: Callable[[str, bool, Dict[str, Any]], nn.Module],
                     doc: str) -> Callable[..., nn.Module]:
    """A timm entry point named ``arch`` in ``module`` (so timm finds the module's ``default_cfgs``)."""
    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return build(arch, pretrained, kwargs)

    entry.__name__ = entry.__qualname__ = arch
    entry.__module__ = module
    entry.__doc__ = doc
    return entry


def build_on_base(base: str, variant: str, pretrained: bool, kwargs: Dict[str, Any],
                  extra: Optional[Dict[str, Any]] = None) -> nn.Module:
    create, args = BASES[base]
    return create(variant, pretrained, **dict(args, **(extra or {}), **kwargs))


@dataclass(frozen=True)
class MaskedFamily:
    """A family of names ``<method>_<short>_<budget>``: a base network whose ReLU masks are trained for
    a budget (SNL, SENet). One name per (base, budget) the paper reports, registered on every data set
    where the base has more ReLUs than the budget."""

    method: str                                          # "snl" or "senet" (also the paper key)
    title: str                                           # "SNL", "SENet"
    bases: Dict[str, str]                                # short name ("r18") -> base architecture
    base_titles: Dict[str, str]                          # short name -> human-readable base
    conventions: Dict[str, str]                          # short name -> ReLU convention of the base
    paper_budgets: Dict[tuple[str, str], tuple[int, ...]]  # (short, tag) -> budgets the paper reports
    published: Dict[tuple[str, str], tuple[int, float]]    # (arch, tag) -> (ReLUs, top-1) transcribed
    published_source: str

    @property
    def archs(self) -> Dict[str, tuple[str, int]]:
        """architecture -> (short base name, ReLU budget)"""
        return {f"{self.method}_{short}_{budget_label(budget)}": (short, budget)
                for (short, _), budgets in self.paper_budgets.items() for budget in budgets}

    def tags(self, arch: str) -> tuple[str, ...]:
        short, budget = self.archs[arch]
        return tuple(t for t in ("c100", "tin") if budget < resolve_name(f"{self.bases[short]}.{t}").published_relus)

    @property
    def budgets(self) -> Dict[str, int]:
        """``name.tag`` -> the ReLU budget its recipe trains for"""
        return {f"{arch}.{tag}": budget for arch, (_, budget) in self.archs.items() for tag in self.tags(arch)}

    def _entry(self, arch: str, tag: str):
        short, budget = self.archs[arch]
        relus, top1 = self.published.get((arch, tag), (None, None))
        in_paper = budget in self.paper_budgets.get((short, tag), ())
        return zoo_entry(
            self.method, self.method, f"{self.conventions[short]}; kept ReLUs set by trained masks",
            reduction=8 if short == "r18" else 4, relu_budget=budget,
            published_relus=relus, published_top1=top1, published_source=self.published_source if relus else "",
            description=f"{self.title} {self.base_titles[short]} ({self.bases[short]}) with per-pixel ReLU masks "
                        f"trained for a budget of {budget:,} ReLUs"
                        + ("" if in_paper else f" (a budget {self.title} reports on the other data set)"),
        )

    def entry_for(self, base_name: str, budget: int) -> Optional[str]:
        """The registered ``name.tag`` whose masks are trained on ``base_name`` (``pi_resnet18_nostem.c100``)
        for exactly ``budget`` ReLUs, if there is one."""
        arch, _, tag = base_name.partition(".")
        for name, (short, b) in self.archs.items():
            if self.bases[short] == arch and b == budget and tag in self.tags(name):
                return f"{name}.{tag}"
        return None

    def zoo_table(self) -> Dict[str, Any]:
        """The entries, keyed ``name.tag``, for the family module's ``zoo_cfgs``."""
        return {f"{arch}.{tag}": self._entry(arch, tag) for arch in self.archs for tag in self.tags(arch)}

    def register(self, module: str) -> None:
        """timm entry points for every name (call after the module has set ``default_cfgs``)."""
        for arch, (short, budget) in self.archs.items():
            base = self.bases[short]

            def build(variant: str, pretrained: bool, kwargs: Dict[str, Any], base: str = base) -> nn.Module:
                return build_on_base(base, variant, pretrained, kwargs)

            register_model(make_entry_point(
                arch, module, build,
                f"{self.title} {self.base_titles[short]}, ReLU budget {budget:,}: builds {base}; "
                "the masks come with the weights."))
