"""SENet: Learning to Linearize Deep Neural Networks for Secure and Efficient Private Inference
(Kundu, Lu, Zhang, Liu, Beerel, ICLR 2023, arXiv:2301.09254).

Three steps for a total ReLU budget B (the paper's abstract: "automatically assigns per-layer ReLU
counts, decides the ReLU locations for each layer's activation map, and trains a model with
significantly fewer ReLUs"). The paper body could not be read; what follows is its group's follow-up
code (RLNet, ``sreetamasarkar/rlnet``, which reuses the pipeline; docs/sources.md)
plus choices of ours, each marked in docs/senet.md:

1. **ReLU sensitivity per layer** (:func:`relu_sensitivity`). The paper derives it from pruning
   sensitivity, inversely. Our measure: prune the trained all-ReLU model's conv/linear weights
   globally by magnitude to a weight ``density``; a ReLU layer's sensitivity is ``1 / d_l``, with
   ``d_l`` the surviving fraction of the layer that produces its input (the last conv or linear
   layer run before it). Layers whose weights prune away easily get more ReLUs. (Choice: the paper
   trains a sparse model; we prune the trained model once.)
2. **Per-layer budget** (:func:`allocate_relus`): ``r_l = min(N_l, c * s_l * N_l)`` with one scale
   ``c`` such that the counts sum to B, exactly (the rule the RLNet sensitivity lists follow).
3. **ReLU positions** (:class:`SENetMaskSearch`, stage ``senet_search``): a partial-ReLU student is
   trained with distillation from the all-ReLU teacher; during each epoch the absolute difference
   between the teacher's and the student's post-ReLU activations is summed per position, and at the
   end of the epoch each layer keeps its ``r_l`` positions of largest difference (RLNet
   ``train_distill_stage1``: ``topkmask`` of the accumulated difference, reset every epoch).
4. **Fine-tune** (stage ``senet_finetune``): masks frozen, loss ``ce_weight * CE + KD + at_weight *
   AT`` with attention transfer on the stage outputs (RLNet ``train_distill_stage2``, README values
   ``gamma = 0.1, alpha = 0.5, beta = 1000``).
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine import Callback, StageContext, register_stage
from ..errors import HybrezooError
from ..nn.relu import PIReLU, relu_layers
from .budget import BudgetError, resolve_budget

__all__ = [
    "relu_sensitivity", "producer_layers", "allocate_relus", "random_masks", "SENetMaskSearch",
    "AttentionTransfer", "attention_maps", "senet_search", "senet_finetune", "add_reduce_parser",
]


# -- 1. sensitivity ---------------------------------------------------------------------------------------
def producer_layers(model: nn.Module, input_size: Sequence[int]) -> Dict[str, Optional[str]]:
    """For every PIReLU, the last conv or linear layer run before it (None if none ran)."""
    from ..cost.counting import count_model

    counts = count_model(model, input_size)  # module_types is in call order
    modules = dict(model.named_modules())
    pirelus = set(relu_layers(model))
    producers: Dict[str, Optional[str]] = {}
    last: Optional[str] = None
    for name in counts.module_types:
        module = modules.get(name)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            last = name
        elif name in pirelus:
            producers[name] = last
    return producers


def relu_sensitivity(model: nn.Module, input_size: Sequence[int], density: float = 0.1) -> Dict[str, float]:
    """ReLU sensitivity of every PIReLU layer of a trained model: ``1 / d_l`` (see the module docstring).

    ``density``: the fraction of all conv and linear weights kept by the global magnitude pruning.
    """
    if not 0.0 < float(density) < 1.0:
        raise ValueError(f"the pruning density must be in (0, 1), got {density}")
    producers = producer_layers(model, input_size)
    weights = {name: m.weight.detach().float().abs().flatten() for name, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))}
    if not weights:
        raise ValueError(f"{type(model).__name__} has no conv or linear layer to measure pruning sensitivity on")
    flat = torch.cat([w.cpu() for w in weights.values()])
    keep = max(1, int(round(float(density) * flat.numel())))
    threshold = torch.kthvalue(flat, flat.numel() - keep + 1).values if keep < flat.numel() else flat.min()
    sensitivity = {}
    for relu, conv in producers.items():
        if conv is None:  # a ReLU before any weight layer: as sensitive as a fully dense layer
            sensitivity[relu] = 1.0
            continue
        w = weights[conv].cpu()
        kept = max(float((w >= threshold).sum()), 0.5)  # a fully pruned layer: half a weight, not zero
        sensitivity[relu] = float(w.numel()) / kept
    return sensitivity


# -- 2. allocation ----------------------------------------------------------------------------------------
def allocate_relus(sizes: Mapping[str, int], sensitivity: Mapping[str, float], budget: int) -> Dict[str, int]:
    """Per-layer ReLU counts ``r_l <= N_l`` proportional to ``sensitivity_l * N_l`` (clipped at ``N_l``)
    that sum to ``budget`` exactly.

    Layers with sensitivity 0 get ReLUs only once every other layer is full.
    """
    names = list(sizes)
    if set(names) != set(sensitivity):
        raise ValueError(f"sensitivity given for {sorted(set(sensitivity) ^ set(names))[:3]}, which are not the "
                         "layers being allocated")
    n = np.array([int(sizes[k]) for k in names], dtype=np.float64)
    s = np.array([float(sensitivity[k]) for k in names], dtype=np.float64)
    if np.any(n < 0) or np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError("layer sizes must be >= 0 and sensitivities finite and >= 0")
    total = int(n.sum())
    budget = int(budget)
    if budget < 0 or budget > total:
        raise BudgetError(f"a ReLU budget of {budget:,} cannot be spread over layers holding {total:,} ReLUs")
    share = np.zeros_like(n)
    active = (s > 0) & (n > 0)
    if n[active].sum() <= budget:          # the sensitive layers fill up; the rest share what is left
        share[active] = n[active]
        rest = (~active) & (n > 0)
        if rest.any():
            share[rest] = _water_fill(n[rest], np.ones(int(rest.sum())), budget - n[active].sum())
    else:
        share[active] = _water_fill(n[active], s[active], float(budget))
    counts = np.floor(share + 1e-9).astype(np.int64)
    counts = np.minimum(counts, n.astype(np.int64))
    deficit = budget - int(counts.sum())
    order = np.argsort(-(share - counts), kind="stable")
    while deficit > 0:                     # largest remainders first, never past a layer's size
        progressed = False
        for i in order:
            if deficit == 0:
                break
            if counts[i] < n[i]:
                counts[i] += 1
                deficit -= 1
                progressed = True
        if not progressed:  # pragma: no cover - budget <= total makes this impossible
            raise BudgetError(f"could not place {deficit} ReLUs")
    while deficit < 0:                     # float round-off gave one too many somewhere
        i = int(np.argmax(counts - share))
        counts[i] -= 1
        deficit += 1
    return {k: int(c) for k, c in zip(names, counts)}


def _water_fill(n: np.ndarray, s: np.ndarray, budget: float) -> np.ndarray:
    """Real-valued ``min(n, c * s * n)`` summing to ``budget`` (bisection on the scale ``c``)."""
    if budget <= 0:
        return np.zeros_like(n)
    lo, hi = 0.0, float(np.max(1.0 / s))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.minimum(n, mid * s * n).sum() < budget:
            lo = mid
        else:
            hi = mid
    return np.minimum(n, hi * s * n)


# -- 3. positions -----------------------------------------------------------------------------------------
def _allowed(relu: PIReLU, shape: Sequence[int]) -> torch.Tensor:
    c, h, w = (int(v) for v in shape[-3:])
    if relu.mask is None:
        return torch.ones((c, h, w), dtype=torch.bool)
    return relu.mask.detach().cpu().expand(c, h, w).clone()


def random_masks(layers: Mapping[str, PIReLU], shapes: Mapping[str, Sequence[int]], allocation: Mapping[str, int],
                 seed: int) -> Dict[str, torch.Tensor]:
    """A random per-pixel mask per layer with exactly its allocated ReLUs (the search's starting point)."""
    masks = {}
    for i, (name, relu) in enumerate(layers.items()):
        allowed = _allowed(relu, shapes[name]).flatten()
        where = allowed.nonzero().flatten()
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0]))
        pick = where[torch.randperm(len(where), generator=g)[: allocation[name]]]
        mask = torch.zeros_like(allowed)
        mask[pick] = True
        masks[name] = mask.view(*shapes[name][-3:])
    return masks


class SENetMaskSearch(Callback):
    """Moves each layer's ``r_l`` ReLUs to the positions where the student's post-ReLU activations
    differ most from the teacher's, once per epoch (see the module docstring, step 3)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, allocation: Mapping[str, int],
                 shapes: Mapping[str, Sequence[int]], allowed: Optional[Mapping[str, torch.Tensor]] = None,
                 all_reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> None:
        """``allowed``: per layer, the positions that may hold a ReLU (bool, (C, H, W)); default all of them.
        Pass the masks the layers had *before* the search started, not its starting masks."""
        self.layers = relu_layers(student)
        teacher_layers = relu_layers(teacher)
        if list(teacher_layers) != list(self.layers):
            raise HybrezooError("SENet needs a teacher of the student's architecture (same ReLU layers): "
                                "use the all-ReLU model the student was made from")
        if set(allocation) != set(self.layers):
            raise ValueError("the allocation must name every ReLU layer of the student")
        self.allocation = dict(allocation)
        self.shapes = {k: tuple(int(v) for v in shapes[k][-3:]) for k in self.layers}
        self.allowed = {k: torch.ones(self.shapes[k], dtype=torch.bool) if allowed is None or allowed.get(k) is None
                        else allowed[k].detach().cpu().expand(self.shapes[k]).bool() for k in self.layers}
        self.all_reduce = all_reduce
        self.diff: Dict[str, torch.Tensor] = {}
        self._pending: Dict[str, torch.Tensor] = {}
        self._hooks = [m.register_forward_hook(self._student_hook(k)) for k, m in self.layers.items()]
        self._hooks += [m.register_forward_hook(self._teacher_hook(k)) for k, m in teacher_layers.items()]

    def _student_hook(self, name: str):
        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            if module.training:
                self._pending[name] = out.detach()
        return hook

    def _teacher_hook(self, name: str):
        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            student = self._pending.pop(name, None)
            if student is None:
                return
            d = (out.detach().float() - student.float()).abs().sum(0)
            self.diff[name] = self.diff[name] + d if name in self.diff else d
        return hook

    def on_epoch_start(self, ctx: Optional[StageContext], epoch: int) -> None:
        self.diff.clear()
        self._pending.clear()

    def update_masks(self) -> Dict[str, float]:
        """Each layer keeps its ``r_l`` positions of largest summed difference; returns the fraction of
        each layer's positions that changed (RLNet logs this normalised Hamming distance)."""
        changed = {}
        for name, relu in self.layers.items():
            if name not in self.diff:
                continue
            score = self.all_reduce(self.diff[name].contiguous())
            allowed = self.allowed[name].to(score.device)
            score = torch.where(allowed, score, torch.full_like(score, -1.0)).flatten()
            keep = torch.zeros_like(score, dtype=torch.bool)
            keep[torch.topk(score, self.allocation[name]).indices] = True
            mask = keep.view(self.shapes[name])
            old = relu.mask if relu.mask is not None else torch.ones_like(mask)
            changed[name] = float((old.to(mask.device) != mask).float().mean())
            relu.set_mask(mask.to(old.device) if relu.mask is not None else mask)
        self.diff.clear()
        return changed

    def on_epoch_end(self, ctx: Optional[StageContext], epoch: int, record: dict[str, Any]) -> Optional[bool]:
        changed = self.update_masks()
        if changed:
            record["senet_mask_change"] = sum(changed.values()) / len(changed)
        return None

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


# -- 4. attention transfer ------------------------------------------------------------------------------
def attention_maps(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis' attention map (arXiv:1612.03928): channel mean of ``|f|^p``, flattened
    and L2-normalised per sample."""
    return F.normalize(features.float().abs().pow(p).mean(1).flatten(1), dim=1)


class AttentionTransfer:
    """Sum over the named modules of ``mean((at(student) - at(teacher))^2)``, as RepDistiller's
    ``Attention`` loss that RLNet's stage 2 uses (weight beta = 1000 in its README)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, modules: Sequence[str], p: float = 2.0) -> None:
        self.p = float(p)
        self.student: Dict[str, torch.Tensor] = {}
        self.teacher: Dict[str, torch.Tensor] = {}
        self._hooks = []
        for name in modules:
            try:
                s, t = student.get_submodule(name), teacher.get_submodule(name)
            except AttributeError:
                raise HybrezooError(f"attention transfer: module {name!r} is not in both the student and the "
                                    "teacher: give at_layers that both have") from None
            self._hooks.append(s.register_forward_hook(self._keep(self.student, name, grad=True)))
            self._hooks.append(t.register_forward_hook(self._keep(self.teacher, name, grad=False)))
        self.modules = list(modules)

    @staticmethod
    def _keep(store: Dict[str, torch.Tensor], name: str, grad: bool):
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if grad and not torch.is_grad_enabled():
                return  # evaluation passes
            store[name] = out if grad else out.detach()
        return hook

    def loss(self) -> torch.Tensor:
        missing = [n for n in self.modules if n not in self.student or n not in self.teacher]
        if missing:
            raise HybrezooError(f"attention transfer: no features from {missing[:2]} in this step; "
                                "the stage needs a distillation teacher (distill.teacher)")
        total = sum(((attention_maps(self.student[n], self.p) - attention_maps(self.teacher[n], self.p)) ** 2).mean()
                    for n in self.modules)
        self.student.clear()
        self.teacher.clear()
        return total

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


def default_at_layers(model: nn.Module) -> List[str]:
    """The stage outputs timm's ``feature_info`` names, without the stem (RLNet: ``feature_eachlayer[1:-1]``)."""
    info = getattr(model, "feature_info", None)
    if not info or len(info) < 2:
        raise HybrezooError(f"{type(model).__name__} has no feature_info: give the stage's at_layers (module names)")
    return [f["module"] for f in info[1:]]


# -- the engine stages ------------------------------------------------------------------------------------
def _teacher(ctx: StageContext, what: str) -> nn.Module:
    teacher = ctx.trainer.teacher(ctx.section["distill"])
    if teacher is None:
        raise HybrezooError(f"stage {ctx.name!r} ({what}) needs the all-ReLU teacher: set distill.teacher "
                            "(and distill.checkpoint) to the trained model the student is made from")
    return teacher


def _ce_term(ctx: StageContext, weight: float) -> Dict[str, Callable]:
    """The engine's loss has CE with weight 1; this term makes it ``weight * CE``."""
    if float(weight) == 1.0:
        return {}
    smoothing = float(ctx.section["loss"]["label_smoothing"])
    return {"ce_adjust": lambda step: (float(weight) - 1.0) * F.cross_entropy(step.logits.float(), step.labels,
                                                                                label_smoothing=smoothing)}


def _plan(ctx: StageContext, teacher: nn.Module) -> Dict[str, Any]:
    """Budget, sizes, sensitivity and allocation of the search stage (deterministic: reruns on resume)."""
    from ..cost.counting import count_model

    sec, model = ctx.section, ctx.model
    input_size = ctx.data.spec.input_size
    counts = count_model(model, input_size)
    budget = resolve_budget(sec["budget"] if sec["budget"] is not None else _missing_budget(), counts.relus)
    layers = relu_layers(model)
    shapes = {r.name: tuple(r.shape[-3:]) for r in counts.relu_layers if r.name in layers}
    allowed = {k: _allowed(m, shapes[k]) for k, m in layers.items()}   # the masks before the search
    sizes = {k: int(a.sum()) for k, a in allowed.items()}
    fixed = int(counts.relus) - sum(sizes.values())
    if budget < fixed:
        raise BudgetError(f"the ReLU budget {budget:,} is below the {fixed:,} ReLUs outside PIReLU layers")
    if sec["sensitivity"] is not None:
        values = sec["sensitivity"]
        if not isinstance(values, list) or len(values) != len(layers):
            raise HybrezooError(f"stage {ctx.name!r}: sensitivity must be a list of {len(layers)} numbers, one per "
                                f"ReLU layer in forward order ({', '.join(list(layers)[:3])}, ...)")
        sensitivity = {k: float(v) for k, v in zip(layers, values)}
    else:
        sensitivity = relu_sensitivity(teacher, input_size, float(sec["density"]))
    allocation = allocate_relus(sizes, sensitivity, budget - fixed)
    return dict(budget=budget, total=int(counts.relus), fixed=fixed, shapes=shapes, allowed=allowed, sizes=sizes,
                sensitivity=sensitivity, allocation=allocation)


def _missing_budget() -> Any:
    raise BudgetError("SENet needs a ReLU budget: set the stage's budget (50000, 50k, or a fraction such as 0.1)")


@register_stage("senet_search", options={"budget": None, "density": 0.1, "sensitivity": None, "ce_weight": 0.5})
def senet_search(ctx: StageContext) -> None:
    """SENet steps 1-3: sensitivity, per-layer allocation, and ReLU positions found while training the
    partial-ReLU student with distillation (masks move to the largest teacher-student differences)."""
    from ..engine.checkpoint import atomic_write_json

    teacher = _teacher(ctx, "ReLU positions are found against the teacher's activations")
    plan = _plan(ctx, teacher)
    layers = relu_layers(ctx.model)
    for name, mask in random_masks(layers, plan["shapes"], plan["allocation"], int(ctx.recipe["seed"])).items():
        layers[name].set_mask(mask.to(next(ctx.model.parameters()).device))
    ctx.log.info(f"stage {ctx.name}: SENet budget {plan['budget']:,} of {plan['total']:,} ReLUs; per layer: "
                 + ", ".join(f"{k} {v:,}" for k, v in plan["allocation"].items()))
    if ctx.env.is_main:
        atomic_write_json(ctx.run_dir / f"senet_allocation.{ctx.name}.json",
                          {k: plan[k] for k in ("budget", "total", "fixed", "sizes", "sensitivity", "allocation")})
    search = SENetMaskSearch(ctx.model, teacher, plan["allocation"], plan["shapes"], allowed=plan["allowed"],
                             all_reduce=ctx.env.all_reduce_sum)
    try:
        ctx.fit(loss_terms=_ce_term(ctx, ctx.section["ce_weight"]), callbacks=[search])
    finally:
        search.close()


@register_stage("senet_finetune", options={"ce_weight": 0.1, "at_weight": 1000.0, "at_p": 2.0, "at_layers": None})
def senet_finetune(ctx: StageContext) -> None:
    """SENet step 4: train the partial-ReLU model (masks frozen) with CE, KD and attention transfer."""
    teacher = _teacher(ctx, "attention transfer needs the teacher's features")
    layers = ctx.section["at_layers"] or default_at_layers(ctx.model)
    at = AttentionTransfer(ctx.model, teacher, layers, p=float(ctx.section["at_p"]))
    weight = float(ctx.section["at_weight"])
    terms = dict(_ce_term(ctx, ctx.section["ce_weight"]))
    if weight > 0:
        terms["at"] = lambda step: weight * at.loss()
    try:
        ctx.fit(loss_terms=terms)
    finally:
        at.close()


# -- hybrezoo reduce senet -------------------------------------------------------------------------------
def add_reduce_parser(sub: argparse._SubParsersAction) -> None:
    from ._recipe_cli import add_common_arguments

    p = sub.add_parser(
        "senet", help="SENet (Kundu et al., ICLR 2023): per-layer ReLU budgets from sensitivity, positions by "
                      "distillation, then fine-tune",
        description="Allocate the ReLU budget over the layers of a trained zoo model by ReLU sensitivity, find each "
                    "layer's ReLU positions while training a partial-ReLU student against the all-ReLU teacher, then "
                    "fine-tune with distillation. Runs training/senet/_base/senet.yaml through the training engine.",
        epilog="example: hybrezoo reduce senet --model pi_resnet18.c100 --budget 50k "
               "--init runs/baseline/pi_resnet18.c100 --data ~/data")
    add_common_arguments(p)
    p.set_defaults(func=_run_reduce)


def _run_reduce(args: argparse.Namespace) -> int:
    from ._recipe_cli import run_template

    from ..models.pi_senet import FAMILY

    return run_template("senet", args, "stages.0.budget", registered=FAMILY.entry_for)

