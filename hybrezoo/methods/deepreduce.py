"""DeepReDuce (Jha, Ghodsi, Garg, Reagen, ICML 2021, arXiv:2103.01396) as library code.

Given a PI-ResNet and a ReLU budget:

1. **criticality**: train one network per stage with only that stage's ReLUs kept and rank the
   stages (:mod:`hybrezoo.methods.criticality`); the least critical stage is culled first;
2. **candidates**: every combination of *culling* the j least critical stages (j = 0..3),
   *thinning* the rest (one ReLU per block), *channel scaling* alpha and *resolution scaling* rho
   (the stem conv strides by 1/rho, as in the DeepReDuce code), each a regular PI-ResNet
   configuration priced by :func:`hybrezoo.pi_cost`. The stem ReLU is removed in all of them, as
   in every DeepReDuce network (code: the stem ReLU is commented out in the ports);
3. **choice**: the candidate with the most ReLUs within the budget; at equal ReLUs the one with more
   MACs (the larger network), then the one with fewer culled stages. On the ResNet18 cull orders
   of the paper's networks this rule reproduces every published DeepReDuce configuration except the
   one that also changes stage depths (tested);
4. **distillation**: a recipe that trains the chosen network from scratch with knowledge
   distillation from the all-ReLU network (the settings of ``training/_base/deepreduce.yaml``).

``hybrezoo reduce deepreduce --model NAME --data PATH --budget 100k`` runs all four and writes
the recipe (``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..data.specs import dataset_spec
from ..engine.recipe import Recipe
from ..engine.run import REPO_ROOT, default_out_dir
from ..errors import HybrezooError
from ..registry import entries
from .budget import resolve_budget
from .criticality import Criticality, base_config, parse_order, resolve_order, stage_criticality, tagged_entry
from .recipes import BASE_DIR, chosen_lines, recipe_text, resolve_recipe, write_recipe
from .resnet_config import ResNetConfig, count

__all__ = ["ALPHAS", "RHOS", "Candidate", "DeepReduceResult", "deepreduce_candidates", "choose_candidate",
           "deepreduce", "zoo_match", "add_reduce_parser"]

# DeepReDuce's channel (alpha) and resolution (rho) scaling values: the published networks use
# alpha in {1, 0.5} and rho in {1, 0.5} (chart21/flexNN DeepReduce.hpp; docs/sources.md).
ALPHAS = (1.0, 0.5)
RHOS = (1.0, 0.5)


@dataclass(frozen=True)
class Candidate:
    """One DeepReDuce configuration and its price."""

    config: ResNetConfig
    relus: int
    macs: int
    culled: tuple[int, ...]
    thin: bool
    alpha: float
    rho: float

    def label(self) -> str:
        parts = ["cull " + "+".join(f"S{s}" for s in self.culled) if self.culled else "no culling"]
        if self.thin:
            parts.append("thin")
        if self.alpha != 1:
            parts.append(f"alpha {self.alpha:g}")
        if self.rho != 1:
            parts.append(f"rho {self.rho:g}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return dict(label=self.label(), relus=self.relus, macs=self.macs, culled=list(self.culled), thin=self.thin,
                    alpha=self.alpha, rho=self.rho, kwargs=self.config.kwargs())


def deepreduce_candidates(model: str, cull_order: Sequence[int], *, alphas: Sequence[float] = ALPHAS,
                          rhos: Sequence[float] = RHOS, model_kwargs: Optional[Mapping[str, Any]] = None,
                          input_size: Optional[Sequence[int]] = None) -> list[Candidate]:
    """Every culling / thinning / alpha / rho configuration of zoo model ``model``, most ReLUs first."""
    entry = tagged_entry(model)
    cull_order = parse_order(tuple(cull_order))  # the four stages once each (least critical first here)
    size = tuple(input_size) if input_size is not None else entry.dataset.input_size
    base = base_config(model, model_kwargs)
    _check_scales(alphas, rhos, base)
    out = []
    for j in range(0, 4):
        culled = tuple(cull_order[:j])
        for thin in (False, True):
            modes = tuple("cull" if s in culled else ("thin" if thin else "all") for s in range(1, 5))
            for alpha in alphas:
                for rho in rhos:
                    config = replace(base, stage_relus=modes, stem_relu=False, channel_mult=base.channel_mult * alpha,
                                     stem_stride=int(round(base.stem_stride / rho)))
                    try:
                        cost = count(model, config, size)
                    except ValueError:  # e.g. a HybReNet's ReLU-reuse factor no longer divides the widths
                        continue
                    out.append(Candidate(config, cost.relus, cost.macs, tuple(sorted(culled)), thin, alpha, rho))
    return sorted(out, key=_rank)


def _rank(c: Candidate) -> tuple:
    return (-c.relus, -c.macs, len(c.culled), c.thin, -c.alpha, -c.rho)


def _check_scales(alphas: Sequence[float], rhos: Sequence[float], base: ResNetConfig) -> None:
    if not alphas or any(not 0 < a <= 1 for a in alphas):
        raise HybrezooError(f"channel scales alpha must be in (0, 1], e.g. 1,0.5; got {list(alphas)}")
    if not rhos or any(r not in (1, 0.5) for r in rhos):
        raise HybrezooError(f"resolution scales rho must be 1 or 0.5 (a stride-2 stem), got {list(rhos)}")
    if base.stem_stride != 1 and any(r != 1 for r in rhos):
        raise HybrezooError("this network's stem already strides by 2 (rho 0.5): use --rhos 1")


def choose_candidate(candidates: Sequence[Candidate], budget: int) -> Candidate:
    """The candidate with the most ReLUs within ``budget`` (ties: more MACs, then fewer culled stages)."""
    within = sorted((c for c in candidates if c.relus <= budget), key=_rank)
    if not within:
        smallest = min(candidates, key=lambda c: c.relus)
        raise HybrezooError(f"no DeepReDuce configuration fits {budget:,} ReLUs: the smallest has {smallest.relus:,} "
                            f"({smallest.label()}); choose a larger budget or add smaller --alphas (e.g. 1,0.5,0.25)")
    return within[0]


def smallest_candidate(model: str, *, alphas: Sequence[float] = ALPHAS, rhos: Sequence[float] = RHOS,
                       model_kwargs: Optional[Mapping[str, Any]] = None) -> Candidate:
    """The fewest-ReLU configuration over every culling order (one stage left, thinned, smallest scales):
    a budget below it cannot be met whatever the criticality, so it is refused before any training."""
    entry = tagged_entry(model)
    base = base_config(model, model_kwargs)
    alpha, rho = min(alphas), min(rhos)
    best: Optional[Candidate] = None
    for left in range(1, 5):
        culled = tuple(s for s in range(1, 5) if s != left)
        modes = tuple("cull" if s in culled else "thin" for s in range(1, 5))
        config = replace(base, stage_relus=modes, stem_relu=False, channel_mult=base.channel_mult * alpha,
                         stem_stride=int(round(base.stem_stride / rho)))
        cost = count(model, config, entry.dataset.input_size)
        if best is None or cost.relus < best.relus:
            best = Candidate(config, cost.relus, cost.macs, culled, True, alpha, rho)
    assert best is not None
    return best


def zoo_match(config: ResNetConfig, tag: str, methods: Sequence[str] = ("deepreduce", "baseline", "deepreshape")
              ) -> Optional[str]:
    """The registered zoo name (``arch.tag``) that builds exactly ``config``, if there is one."""
    for entry in entries():
        if entry.tag != tag or entry.method not in methods:
            continue
        try:
            if base_config(entry.name).same_network(config):
                return entry.name
        except HybrezooError:  # not a PI-ResNet (e.g. the WRN baselines)
            continue
    return None


def all_relu_teacher(model: str, config: ResNetConfig, tag: str) -> str:
    """The default distillation teacher, an all-ReLU network as DeepReDuce distils from: ``model``
    itself when it keeps every ReLU, else the registered network of the same widths with every ReLU
    (stem included), else the same at full width and resolution, else the zoo's all-ReLU ResNet18."""
    full = replace(config, stem_relu=True, stage_relus=("all",) * len(config.stage_relus), relu_reuse=1)
    if config.same_network(full):
        return model
    for candidate in (full, replace(full, channel_mult=1.0, stem_stride=1)):
        match = zoo_match(candidate, tag, methods=("baseline", "deepreshape"))
        if match is not None:
            return match
    return f"pi_resnet18.{tag}"


def teacher_default(name: str) -> Optional[str]:
    """Where the recipe of zoo model ``name`` writes its weights (``runs/<method>/<name>``), if it has one."""
    recipe = REPO_ROOT / tagged_entry(name).recipe
    return str(default_out_dir(recipe)) if recipe.is_file() else None


@dataclass
class DeepReduceResult:
    model: str
    budget: int
    model_relus: int
    criticality: Optional[Criticality]
    cull_order: tuple[int, ...]
    candidates: list[Candidate]
    chosen: Candidate
    zoo_name: Optional[str]
    recipe: Recipe
    recipe_yaml: str
    recipe_path: Optional[Path] = None

    def report(self, show: int = 8) -> str:
        lines = []
        if self.criticality is not None:
            lines += [self.criticality.table(), ""]
        lines.append("culling order (least critical first): " + ", ".join(f"S{s}" for s in self.cull_order))
        within = [c for c in self.candidates if c.relus <= self.budget]
        lines += ["", f"candidates within {self.budget:,} ReLUs (of the model's {self.model_relus:,}), best first:",
                  f"  {'ReLUs':>10} {'MACs':>9}  configuration"]
        for c in within[:show]:
            lines.append(f"  {c.relus:>10,} {c.macs / 1e6:>8.1f}M  {c.label()}")
        if len(within) > show:
            lines.append(f"  ... {len(within) - show} more")
        c = self.chosen
        lines += chosen_lines(c.label(), c.relus, c.macs, c.config.describe(), self.zoo_name, self.recipe,
                              self.recipe_path)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dict(model=self.model, budget=self.budget, model_relus=self.model_relus,
                    criticality=self.criticality.to_dict() if self.criticality else None,
                    cull_order=list(self.cull_order), chosen=self.chosen.to_dict(), zoo_name=self.zoo_name,
                    candidates=[c.to_dict() for c in self.candidates],
                    recipe=str(self.recipe_path) if self.recipe_path else None)


def deepreduce(model: str, budget: str | int | float, *, data: Optional[str] = None,
               order: Optional[str | Sequence[int] | Criticality] = None, alphas: Sequence[float] = ALPHAS,
               rhos: Sequence[float] = RHOS, epochs: Optional[int] = None, work_dir: Optional[str] = None,
               overrides: Sequence[str] = (), metric: str = "gain_per_log_relu", init: Optional[str] = None,
               model_kwargs: Optional[Mapping[str, Any]] = None, teacher: Optional[str] = None,
               teacher_checkpoint: Optional[str] = None, out: Optional[str] = None, device: Optional[str] = None,
               log: Callable[[str], None] = lambda msg: None) -> DeepReduceResult:
    """DeepReDuce on zoo model ``model`` for a ReLU ``budget`` ("100k", 100000 or a fraction "0.2").

    ``order``: skip the criticality training and cull in this order instead (stages most critical
    first, e.g. "3,2,4,1"; a :class:`Criticality`; the path of an earlier ``criticality.json``; or
    ``"zoo"``, the order DeepReDuce's published networks imply, :data:`~.criticality.ZOO_ORDERS`).
    Otherwise the per-stage networks are trained on ``data`` (see
    :func:`~hybrezoo.methods.criticality.stage_criticality` for ``epochs``, ``work_dir``, ``overrides``,
    ``metric``, ``init``). ``out``: where to write the recipe of the chosen network.
    """
    entry = tagged_entry(model)
    base = base_config(model, model_kwargs)
    total = count(model, base, entry.dataset.input_size).relus
    count_budget = resolve_budget(budget, total)  # bad budgets fail before any training
    _check_scales(alphas, rhos, base)
    teacher = teacher or all_relu_teacher(model, base, entry.tag)
    tagged_entry(teacher)
    if order is None:  # refuse a budget no culling order can meet before training anything
        choose_candidate([smallest_candidate(model, alphas=alphas, rhos=rhos, model_kwargs=model_kwargs)],
                         count_budget)
    crit: Optional[Criticality] = None
    if order is not None:
        crit, most_first = resolve_order(order, entry.tag)
    else:
        crit = stage_criticality(model, data, epochs=epochs, work_dir=work_dir, overrides=overrides, metric=metric,
                                 init=init, model_kwargs=model_kwargs, device=device, log=log)
        most_first = crit.order
    cull_order = tuple(reversed(most_first))
    candidates = deepreduce_candidates(model, cull_order, alphas=alphas, rhos=rhos, model_kwargs=model_kwargs)
    chosen = choose_candidate(candidates, count_budget)
    match = zoo_match(chosen.config, entry.tag) if not model_kwargs else None
    recipe, text = _recipe(model, entry.tag, chosen, match, teacher, teacher_checkpoint, count_budget, model_kwargs)
    result = DeepReduceResult(model, count_budget, total, crit, cull_order, candidates, chosen, match, recipe, text)
    if out is not None:
        result.recipe_path = write_recipe(out, text)
    return result


def _recipe(model: str, tag: str, chosen: Candidate, match: Optional[str], teacher: str,
            teacher_checkpoint: Optional[str], budget: int, model_kwargs: Optional[Mapping[str, Any]]
            ) -> tuple[Recipe, str]:
    dataset = dataset_spec(tag).name
    checkpoint = teacher_checkpoint if teacher_checkpoint is not None else teacher_default(teacher)
    extra = {k: v for k, v in dict(model_kwargs or {}).items() if k not in ResNetConfig.__dataclass_fields__}
    name, kwargs = (match, {}) if match else (model, {**extra, **chosen.config.kwargs()})
    data = {"description": f"DeepReDuce on {model} for {budget:,} ReLUs: {chosen.label()} "
                           f"({chosen.relus:,} ReLUs), distilled from {teacher}",
            "model": {"name": name, "kwargs": kwargs},
            "distill": {"teacher": teacher, "checkpoint": checkpoint}}
    recipe = resolve_recipe(data, [BASE_DIR / "deepreduce.yaml", BASE_DIR / f"{dataset}.yaml"])
    header = [f"DeepReDuce ({chosen.label()}) of {model} for a {budget:,}-ReLU budget: {chosen.relus:,} ReLUs, "
              f"{chosen.macs / 1e6:.1f}M MACs.",
              "Written by `hybrezoo reduce deepreduce`; trains the network from scratch with knowledge distillation",
              f"from {teacher} (weights: {checkpoint or 'its published weights'}); settings of "
              "training/_base/deepreduce.yaml (docs/deepreduce.md).",
              "Train: hybrezoo train THIS_FILE --data PATH [--out DIR]"]
    return recipe, recipe_text(recipe, header)


# -- command line ------------------------------------------------------------------------------------

def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers (e.g. 1,0.5)") from None


def add_criticality_options(p: argparse.ArgumentParser,
                            zoo_order: str = "the order DeepReDuce's published ResNet18 networks imply") -> None:
    """Options shared by the methods that measure stage criticality."""
    p.add_argument("--data", metavar="PATH", help="data root for the criticality training (default $HYBREZOO_DATA)")
    p.add_argument("--order", metavar="ORDER",
                   help="skip the criticality training: stages from the most to the least critical (e.g. 3,2,4,1), "
                        f"the criticality.json of an earlier run, or 'zoo' ({zoo_order})")
    p.add_argument("--criticality-epochs", type=int, default=None, metavar="N",
                   help="epochs of each per-stage network (default 20)")
    p.add_argument("--metric", default="gain_per_log_relu", choices=("gain_per_log_relu", "gain"),
                   help="criticality metric (default gain_per_log_relu; see docs/deepreduce.md)")
    p.add_argument("--init", metavar="RUN", help="fine-tune the per-stage networks from these weights")
    p.add_argument("--work-dir", metavar="DIR",
                   help="run folders of the per-stage networks (default runs/criticality/<model>); reused when rerun")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides for the per-stage networks, e.g. data.batch_size=128 runtime.max_steps=10")


def check_overrides(overrides: Sequence[str]) -> None:
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise HybrezooError(f"cannot read {bad[0]!r}: criticality overrides are key=value (e.g. optimizer.lr=0.05)")


def add_reduce_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deepreduce", help="DeepReDuce: stage criticality, culling, thinning, alpha/rho scaling for a ReLU budget",
        description="Rank the stages of a PI-ResNet by ReLU criticality (one short training per stage), enumerate "
                    "culling / thinning / channel / resolution configurations, choose the one with the most ReLUs "
                    "within the budget, and write a recipe that trains it with distillation from the all-ReLU "
                    "network.")
    p.add_argument("--model", required=True, help="zoo PI-ResNet with its data set tag, e.g. pi_resnet18.c100")
    p.add_argument("--budget", required=True, help="ReLU budget: 100k, 1.2M, 49152, or a fraction of the model's (0.2)")
    p.add_argument("--out", metavar="FILE.yaml",
                   help="where to write the recipe (default runs/recipes/deepreduce_<arch>_<budget>.<tag>.yaml)")
    p.add_argument("--alphas", type=_floats, default=ALPHAS, metavar="A,A", help="channel scales (default 1,0.5)")
    p.add_argument("--rhos", type=_floats, default=RHOS, metavar="R,R", help="resolution scales (default 1,0.5)")
    p.add_argument("--teacher", help="distillation teacher (default: the model itself when it keeps every ReLU, "
                                     "else the registered all-ReLU network of its widths, e.g. pi_resnet18)")
    p.add_argument("--teacher-checkpoint", metavar="RUN",
                   help="teacher weights (default: the run folder its recipe writes, runs/<method>/<name>)")
    add_criticality_options(p)
    p.set_defaults(func=run_deepreduce)


def default_recipe_path(prefix: str, arch: str, budget: int, tag: str) -> Path:
    return Path("runs", "recipes", f"{prefix}_{arch}_{_budget_label(budget)}.{tag}.yaml")


def _budget_label(budget: int) -> str:
    if budget % 1_000_000 == 0:
        return f"{budget // 1_000_000}m"
    return f"{budget // 1000}k" if budget % 1000 == 0 else str(budget)


def run_deepreduce(args: argparse.Namespace) -> int:
    check_overrides(args.overrides)
    entry = tagged_entry(args.model)
    total = count(args.model, base_config(args.model), entry.dataset.input_size).relus
    budget = resolve_budget(args.budget, total)
    out = args.out or default_recipe_path("deepreduce", entry.arch, budget, entry.tag)
    log = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    result = deepreduce(args.model, budget, data=args.data, order=args.order, alphas=args.alphas, rhos=args.rhos,
                        epochs=args.criticality_epochs, work_dir=args.work_dir, overrides=args.overrides,
                        metric=args.metric, init=args.init, teacher=args.teacher,
                        teacher_checkpoint=args.teacher_checkpoint, out=out, device=args.device, log=log)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.report())
    return 0
