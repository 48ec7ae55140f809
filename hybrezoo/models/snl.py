"""SNL networks (Cho et al., ICML 2022): ResNet18 and WRN-22-8 with ReLU masks learned for a budget.

Names read ``snl_<base>_<budget>``: ``snl_r18_50k`` is ResNet18 in SNL's convention (no stem ReLU,
``pi_resnet18_nostem``) with at most 50,000 ReLUs; ``snl_wrn22_8_240k`` is WRN-22-8 without the final
ReLU (``pi_wrn22_8_nofinal``). The budgets are the issue's list of the paper's operating points
(CIFAR-100: ResNet18 15k-180k, WRN-22-8 120k-300k; Tiny ImageNet: ResNet18 100k-500k); every name is
registered for both data sets, so a budget of one data set can be trained on the other too, except
``snl_r18_500k``: 500,000 is more than the 491,520 ReLUs of the network on CIFAR-100 (Tiny ImageNet only).

A freshly built model is the base network (masks exist only in trained weights); loading its
checkpoint restores the masks (see :mod:`hybrezoo.models._masked`). The recipe
``training/snl/<name>.<tag>.yaml`` makes the checkpoint with :mod:`hybrezoo.methods.snl`.
"""
from __future__ import annotations

from typing import Dict

from ..registry import zoo_cfgs
from ._masked import MaskedFamily

__all__: list[str] = ["FAMILY", "ARCHS", "BUDGETS"]

FAMILY = MaskedFamily(
    method="snl", title="SNL",
    bases={"r18": "pi_resnet18_nostem", "wrn22_8": "pi_wrn22_8_nofinal"},
    base_titles={"r18": "ResNet18 without the stem ReLU", "wrn22_8": "WRN-22-8 without the final ReLU"},
    conventions={"r18": "stem ReLU removed (SNL's pi_resnet18_nostem)",
                 "wrn22_8": "final ReLU removed (SNL's pi_wrn22_8_nofinal)"},
    # (base, tag) -> the budgets SNL reports for it (the list).
    paper_budgets={
        ("r18", "c100"): (15_000, 25_000, 30_000, 40_000, 50_000, 70_000, 100_000, 150_000, 180_000),
        ("wrn22_8", "c100"): (120_000, 150_000, 180_000, 240_000, 300_000),
        ("r18", "tin"): (100_000, 200_000, 300_000, 500_000),
    },
    # (architecture, tag) -> (ReLUs, top-1 %) as third parties transcribed SNL's tables (not checked
    # against the paper; docs/sources.md). Only rows whose network is unambiguous: the CIFAR-100 rows
    # from 60K up could be ResNet18 or WRN-22-8.
    published={
        ("snl_r18_15k", "c100"): (14_900, 67.17),
        ("snl_r18_25k", "c100"): (25_000, 70.05),
        ("snl_r18_30k", "c100"): (29_800, 70.18),
        ("snl_r18_40k", "c100"): (40_000, 72.35),
        ("snl_r18_50k", "c100"): (49_400, 73.75),
        ("snl_r18_100k", "tin"): (99_600, 58.94),
        ("snl_r18_200k", "tin"): (198_100, 63.39),
        ("snl_r18_300k", "tin"): (298_800, 64.04),
    },
    published_source=("transcribed by third parties from SNL's tables (listed in docs/sources.md; ReLUPruner, "
                      "AAAI 2026), unchecked against the paper"),
)
ARCHS: Dict[str, tuple[str, int]] = FAMILY.archs     # architecture -> (base short name, ReLU budget)
BUDGETS: Dict[str, int] = FAMILY.budgets             # "name.tag" -> ReLU budget its recipe trains for

default_cfgs = zoo_cfgs(FAMILY.zoo_table())
FAMILY.register(__name__)
