"""SENet networks (Kundu et al., ICLR 2023): ResNet18 and WRN-22-8 with ReLU masks found for a budget.

(This module is not called ``senet.py`` because timm groups models by module name and has a
``senet`` module of its own: ``timm.list_models(module="senet")`` stays timm's.)

Names read ``senet_<base>_<budget>``. SENet's lineage counts ReLUs with the stem ReLU of ResNet18 and
the final BN-ReLU of WRN-22-8 (RLNet ``models/customresnet.py``, ``models/custom_wrn.py``; 557,056
and 1,392,640 ReLUs on CIFAR-100), so the bases are ``pi_resnet18`` and ``pi_wrn22_8``. The budgets
are the issue's list (CIFAR-100: ResNet18 25k, 50k, 100k, 120k, WRN-22-8 240k, 300k; Tiny ImageNet:
ResNet18 150k, 300k), each registered for both data sets.

A freshly built model is the base network; its checkpoint carries the masks (see
:mod:`hybrezoo.models._masked`). ``training/senet/<name>.<tag>.yaml`` makes it with
:mod:`hybrezoo.methods.senet`.
"""
from __future__ import annotations

from typing import Dict

from ..registry import zoo_cfgs
from ._masked import MaskedFamily

__all__: list[str] = ["FAMILY", "ARCHS", "BUDGETS"]

FAMILY = MaskedFamily(
    method="senet", title="SENet",
    bases={"r18": "pi_resnet18", "wrn22_8": "pi_wrn22_8"},
    base_titles={"r18": "ResNet18 with the stem ReLU", "wrn22_8": "WRN-22-8 with the final BN-ReLU"},
    conventions={"r18": "stem ReLU kept (SENet lineage, pi_resnet18)",
                 "wrn22_8": "final BN-ReLU kept (SENet lineage, pi_wrn22_8)"},
    paper_budgets={
        ("r18", "c100"): (25_000, 50_000, 100_000, 120_000),
        ("wrn22_8", "c100"): (240_000, 300_000),
        ("r18", "tin"): (150_000, 300_000),
    },
    # (architecture, tag) -> (ReLUs, top-1 %): third-party transcriptions with low confidence (ReLUPruner,
    # AAAI 2026, which swaps the SNL and SENet citations; docs/sources.md).
    published={
        ("senet_r18_25k", "c100"): (24_600, 70.59),
        ("senet_r18_50k", "c100"): (49_600, 75.28),
        ("senet_r18_150k", "tin"): (142_000, 58.9),
        ("senet_r18_300k", "tin"): (298_000, 64.96),
    },
    published_source=("transcribed by a third party (ReLUPruner, AAAI 2026, whose citations of SNL and SENet "
                      "are swapped); low confidence, unchecked against the paper"),
)
ARCHS: Dict[str, tuple[str, int]] = FAMILY.archs     # architecture -> (base short name, ReLU budget)
BUDGETS: Dict[str, int] = FAMILY.budgets             # "name.tag" -> ReLU budget its recipe trains for

default_cfgs = zoo_cfgs(FAMILY.zoo_table())
FAMILY.register(__name__)
