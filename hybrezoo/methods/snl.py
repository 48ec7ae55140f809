"""SNL: Selective Network Linearization (Cho, Joshi, Reagen, Garg, Hegde, ICML 2022, arXiv:2202.02340).

SNL learns, position by position, which ReLUs a trained network keeps. Every ReLU becomes
``relu(x) * a + (1 - a) * x`` with a learnable ``a`` (initialised to 1); weights and masks are trained
together with cross-entropy, distillation from the all-ReLU model and an L1 penalty on the masks.
The behaviour follows the official code (NYU-DICE-Lab/selective_network_linearization,
``snl_finetune_unstructured.py`` and ``utils.py``; docs/sources.md):

- a position counts as a ReLU when ``a > threshold`` (strict; threshold 1e-2);
- after every epoch the count is taken; the L1 weight (initially 1e-5) is multiplied by 1.1 after
  any epoch that fails to set a new lowest count, except in the first 5 epochs;
- the search stops after the first epoch whose count is at or under the budget;
- the masks are binarised (``a > threshold``) into PIReLU mask buffers and the network is fine-tuned
  with distillation (the recipe's next stage, a plain ``train`` stage).

One addition (the official code has no such case): if the search runs out of epochs above the
budget, binarisation keeps the budget's largest masks, so the result never exceeds the budget; the
run log says so (``snl_forced_to_budget``).

Use it three ways: a recipe stage (``kind: snl_search``), the command ``hybrezoo reduce snl``, or
:class:`SNLSearch` in your own training loop.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..engine import Callback, StageContext, register_stage
from ..nn.learnable_mask import GRANULARITIES, attach_learnable_masks, restore_pirelus
from ..nn.relu import relu_layers
from .budget import BudgetError, resolve_budget

__all__ = ["SNLSearch", "snl_search", "SEARCH_DEFAULTS", "add_reduce_parser"]

# The official code's defaults (argparse and scripts/*.sh): --threshold 1e-2, --alpha 1e-5 (the initial
# L1 weight), x1.1 growth, growth only from epoch index 5 on.
SEARCH_DEFAULTS: Dict[str, Any] = {
    "budget": None,          # ReLU budget: count (50000, "50k") or fraction of the model's ReLUs (0.1)
    "threshold": 1e-2,       # a mask entry counts as a ReLU when alpha > threshold
    "l1_weight": 1e-5,       # initial weight of the L1 penalty on the masks
    "l1_growth": 1.1,        # factor applied after an epoch without a new lowest ReLU count
    "growth_from_epoch": 5,  # epochs before this (0-based) never grow the penalty
    "granularity": "pixel",  # one mask entry per element ("pixel") or per channel ("channel")
}


class SNLSearch(Callback):
    """SNL's mask search on one model: attaches learnable masks, gives the L1 penalty, updates it
    after each epoch, and binarises into PIReLU masks at the end.

    In your own loop::

        search = SNLSearch(model, input_size=(3, 32, 32), budget="50k")
        for epoch in range(max_epochs):
            for x, y in loader:
                loss = ce(model(x), y) + kd(...) + search.penalty()
                ...
            if search.end_epoch(epoch):       # True once the ReLU count is at or under the budget
                break
        result = search.finish()              # the model holds PIReLUs with bool masks again

    ``state`` (the current L1 weight and the lowest count) is a plain dict: keep it with your
    checkpoints to resume (the engine stage does).
    """

    def __init__(self, model: nn.Module, input_size: Sequence[int], budget: Union[str, int, float],
                 threshold: float = 1e-2, l1_weight: float = 1e-5, l1_growth: float = 1.1,
                 growth_from_epoch: int = 5, granularity: str = "pixel",
                 state: Optional[Dict[str, Any]] = None) -> None:
        from ..cost.counting import count_model

        if budget is None:
            raise BudgetError("SNL needs a ReLU budget: a count (50000, 50k) or a fraction of the model's ReLUs (0.1)")
        if granularity not in GRANULARITIES:
            raise ValueError(f"unknown mask granularity {granularity!r}: use one of {', '.join(GRANULARITIES)}")
        if not threshold >= 0 or not l1_weight >= 0 or not l1_growth >= 1:
            raise ValueError(f"SNL needs threshold >= 0, l1_weight >= 0 and l1_growth >= 1; got {threshold}, "
                             f"{l1_weight}, {l1_growth}")
        self.model = model
        self.input_size = tuple(int(s) for s in input_size)
        counts = count_model(model, self.input_size)
        self.total = int(counts.relus)
        self.budget = resolve_budget(budget, self.total)
        self.threshold = float(threshold)
        self.l1_growth = float(l1_growth)
        self.growth_from_epoch = int(growth_from_epoch)
        pirelus = set(relu_layers(model))
        # ReLUs outside PIReLU layers (a non-zoo module) cannot be learned away: they count against the budget.
        self.fixed = self.total - sum(r.relus for r in counts.relu_layers if r.name in pirelus)
        if self.budget < self.fixed:
            raise BudgetError(f"the ReLU budget {self.budget:,} is below the {self.fixed:,} ReLUs outside PIReLU "
                              "layers, which SNL cannot remove")
        shapes = {r.name: tuple(r.shape) for r in counts.relu_layers if r.name in pirelus}
        self.layers = attach_learnable_masks(model, self.input_size, granularity, shapes=shapes)
        self.shapes = {name: tuple(shapes[name][-3:]) for name in self.layers}
        self.state = state if state is not None else {}
        self.state.setdefault("l1_weight", float(l1_weight))
        self.state.setdefault("lowest", self.total)

    # -- the search -----------------------------------------------------------------------------------
    def relus(self) -> int:
        """ReLUs the model would keep now: mask entries above the threshold, plus the fixed ones."""
        return self.fixed + sum(layer.relus(self.threshold, self.shapes[name]) for name, layer in self.layers.items())

    def penalty(self) -> torch.Tensor:
        """``l1_weight * sum_l ||alpha_l||_1`` (the official code's ``torch.norm(alpha, p=1)`` summed)."""
        total = sum(layer.alpha.float().abs().sum() for layer in self.layers.values())
        return self.state["l1_weight"] * total

    def end_epoch(self, epoch: int) -> bool:
        """Count, grow the L1 weight on a plateau (the official rule), and say whether the budget is met."""
        count = self.relus()
        if count < self.state["lowest"]:
            self.state["lowest"] = count
        elif epoch >= self.growth_from_epoch:
            self.state["l1_weight"] *= self.l1_growth
        self.state["relus"] = count
        return count <= self.budget

    def finish(self) -> Dict[str, Any]:
        """Binarise the masks into PIReLU buffers (the model is a plain zoo model again)."""
        masks = {name: layer.kept(self.threshold) for name, layer in self.layers.items()}
        above = self.relus()
        forced = above > self.budget
        if forced:
            masks = self._largest(self.budget - self.fixed)
        restore_pirelus(self.model, masks)
        kept = self.fixed + sum(_kept(m, self.shapes[name]) for name, m in masks.items())
        return {"relus": kept, "budget": self.budget, "total": self.total, "above_threshold": above,
                "forced_to_budget": forced, "l1_weight": self.state["l1_weight"]}

    def _largest(self, target: int) -> Dict[str, torch.Tensor]:
        """The ``target`` ReLUs with the largest mask values (whole channels for per-channel masks)."""
        values, sizes, owners = [], [], []
        for name, layer in self.layers.items():
            a = layer.effective_alpha().detach().float().flatten()
            size = self.shapes[name][-2] * self.shapes[name][-1] if layer.per_channel else 1
            values.append(a)
            sizes.append(torch.full_like(a, float(size)))
            owners.append(name)
        flat = torch.cat(values)
        order = torch.argsort(flat, descending=True, stable=True)
        cost = torch.cat(sizes)[order].cumsum(0)
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[order[(cost <= target) & (flat[order] > self.threshold)]] = True
        masks, start = {}, 0
        for name, v in zip(owners, values):
            masks[name] = chosen[start:start + v.numel()].view_as(self.layers[name].alpha)
            start += v.numel()
        return masks

    # -- the engine's callback hooks ---------------------------------------------------------------------
    def on_epoch_end(self, ctx: StageContext, epoch: int, record: dict[str, Any]) -> Optional[bool]:
        l1_weight = self.state["l1_weight"]
        done = self.end_epoch(epoch)
        record.update(snl_relus=self.state["relus"], snl_budget=self.budget, snl_l1_weight=l1_weight,
                      snl_next_l1_weight=self.state["l1_weight"])
        if done:
            ctx.log.info(f"stage {ctx.name}: {self.state['relus']:,} ReLUs <= budget {self.budget:,} "
                         f"after epoch {epoch + 1}: search done")
        return done


def _kept(mask: torch.Tensor, shape: Tuple[int, ...]) -> int:
    kept = int(mask.sum())
    return kept * shape[-2] * shape[-1] if mask.shape[1] == 1 and mask.shape[2] == 1 else kept


@register_stage("snl_search", options=SEARCH_DEFAULTS)
def snl_search(ctx: StageContext) -> None:
    """SNL's mask search: CE + KD + growing L1 on learnable masks until the ReLU count meets the budget,
    then binarisation into PIReLU masks. Follow it with a ``train`` stage (the fine-tune)."""
    sec = ctx.section
    search = SNLSearch(ctx.model, ctx.data.spec.input_size, sec["budget"], threshold=sec["threshold"],
                       l1_weight=sec["l1_weight"], l1_growth=sec["l1_growth"],
                       growth_from_epoch=sec["growth_from_epoch"], granularity=sec["granularity"], state=ctx.state)
    ctx.log.info(f"stage {ctx.name}: SNL search from {search.total:,} ReLUs to a budget of {search.budget:,}")
    ctx.fit(loss_terms={"l1": lambda step: search.penalty()}, callbacks=[search])
    result = search.finish()
    if result["forced_to_budget"]:
        ctx.log.info(f"stage {ctx.name}: WARNING the search ended with {result['above_threshold']:,} ReLUs above "
                     f"the threshold, over the budget {result['budget']:,}: kept the {result['relus']:,} with the "
                     "largest masks (snl_forced_to_budget); more search epochs let SNL choose them itself")
    ctx.log.info(f"stage {ctx.name}: binarised masks keep {result['relus']:,} ReLUs of {result['total']:,}")


# -- hybrezoo reduce snl ---------------------------------------------------------------------------------
def add_reduce_parser(sub: argparse._SubParsersAction) -> None:
    from ._recipe_cli import add_common_arguments

    p = sub.add_parser(
        "snl", help="SNL (Cho et al., ICML 2022): learn which ReLUs to keep for a budget, then fine-tune",
        description="Learn per-pixel (or per-channel) ReLU masks of a trained zoo model with SNL until the ReLU count "
                    "meets the budget, binarise them and fine-tune with distillation. Runs the recipe "
                    "training/snl/_base/snl.yaml through the training engine; the result is a run folder whose "
                    "model.safetensors carries the masks.",
        epilog="example: hybrezoo reduce snl --model pi_resnet18_nostem.c100 --budget 50k "
               "--init runs/baseline/pi_resnet18_nostem.c100 --data ~/data")
    add_common_arguments(p)
    p.add_argument("--granularity", choices=GRANULARITIES, default="pixel", help="one mask entry per element or channel")
    p.set_defaults(func=_run_reduce)


def _run_reduce(args: argparse.Namespace) -> int:
    from ._recipe_cli import run_template

    from ..models.snl import FAMILY

    return run_template("snl", args, "stages.0.budget", extra=[f"stages.0.granularity={args.granularity}"],
                        registered=FAMILY.entry_for if args.granularity == "pixel" else None)

