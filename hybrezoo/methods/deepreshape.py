"""DeepReShape (Jha & Reagen, TMLR 2024, arXiv:2304.10593) as library code: HybReNets for a ReLU budget.

The paper's abstract states the principle: allocate channels so that a network's ReLUs sit in the
order of their criticality, optimising ReLUs and FLOPs together; it names ReLU-equalization,
ReLU-reuse and coarse-grained pruning as its tools. Its algorithm text and tables could not be read
(docs/deepreshape.md), so the steps below are hybrezoo's reading, each stated so it can be checked:

1. **criticality order** of the four stages: measured on a PI-ResNet (ResNet18 by default) exactly
   as DeepReDuce does (:mod:`hybrezoo.methods.criticality`), or given (``order``);
2. **ReLU-equalization** (:func:`relu_equalization`): the lexicographically smallest integer stage
   factors (alpha, beta, gamma) >= 2 for which the ReLU counts of the kept stages are strictly
   ordered like their criticality (most critical stage, most ReLUs). Small factors keep the deep,
   wide stages' FLOPs in check. With ResNet18 depths and the CIFAR-100 order S3 > S2 > S4 > S1 this
   gives (5, 5, 3), the factors of the HybReNet found in public code (PrivCirNet's port; tested);
3. **coarse-grained ReLU pruning** (:data:`LEVELS`), from the mildest: cull the least critical
   stage, thin the remaining stages (one ReLU per block), cull the two least critical stages, then
   **ReLU-reuse** by 2 and by 4 (:class:`~hybrezoo.nn.relu_reuse.ReLUReuse`). The stem ReLU is kept
   while stage 1 is, and removed with it (as in DeepReDuce);
4. **widening**: at each level the base width m is the largest (a multiple of the reuse factor)
   whose network fits the budget; the chosen design is the mildest level whose m reaches
   ``min_width`` (16, the base width of the narrowest published HybReNet) and, if given, whose MACs
   stay within ``max_macs``: wider networks at high budgets, more pruning at low ones;
5. **distillation**: a recipe that trains the design with KD from ResNet18
   (``training/deepreshape/_base/deepreshape.<tag>.yaml``).

``hybrezoo reduce deepreshape --data PATH --budget 50k`` runs them and writes the recipe.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..data.specs import dataset_spec
from ..engine.recipe import Recipe
from ..engine.run import REPO_ROOT
from ..errors import HybrezooError
from .budget import BudgetError, parse_budget, resolve_budget
from .criticality import (ZOO_ORDERS, Criticality, base_config, parse_order, resolve_order, stage_criticality,
                          tagged_entry)
from .deepreduce import add_criticality_options, check_overrides, default_recipe_path, zoo_match
from .recipes import chosen_lines, recipe_text, resolve_recipe, write_recipe
from .resnet_config import ResNetConfig, count

__all__ = ["ZOO_ORDERS", "LEVELS", "Level", "Design", "DeepReshapeResult", "relu_equalization", "stage_weights",
           "hybrenet_design", "hybrenet_designs", "hybrenet_name", "deepreshape", "add_reduce_parser"]

# The reference network whose ReLUs bound a DeepReShape budget (HybReNets are ReLU-reduced designs).
REFERENCE = "pi_resnet18"
# The registered base HybReNet whose entry point (class HybReNet) builds every design.
BUILDER = "hybrenet_m16_553"
MIN_WIDTH = 16
MIN_FACTOR, MAX_FACTOR = 2, 16


@dataclass(frozen=True)
class Level:
    """One step of DeepReShape's coarse-grained ReLU pruning."""

    name: str
    culled: int        # how many of the least critical stages lose all their ReLUs
    thin: bool         # one ReLU per block in the other stages
    reuse: int         # ReLU-reuse factor of every remaining ReLU layer


LEVELS: tuple[Level, ...] = (
    Level("none", 0, False, 1),
    Level("cull1", 1, False, 1),
    Level("cull1+thin", 1, True, 1),
    Level("cull2+thin", 2, True, 1),
    Level("cull2+thin+reuse2", 2, True, 2),
    Level("cull2+thin+reuse4", 2, True, 4),
)


def stage_weights(factors: Sequence[int], depths: Sequence[int]) -> list[float]:
    """Relative ReLUs of stages 1..4: depth x width / (spatial reduction 4 per stage), width 1 for stage 1."""
    a, b, g = factors
    widths = (1, a, a * b, a * b * g)
    return [d * w / 4 ** k for k, (d, w) in enumerate(zip(depths, widths))]


def relu_equalization(order: Sequence[int], depths: Sequence[int] = (2, 2, 2, 2), culled: Sequence[int] = (),
                      min_factor: int = MIN_FACTOR, max_factor: int = MAX_FACTOR) -> tuple[int, int, int]:
    """The smallest integer (alpha, beta, gamma) in lexicographic order, each in [min_factor, max_factor],
    for which the kept stages' ReLU counts fall strictly in ``order`` (most critical first)."""
    order = parse_order(order)
    kept = [s for s in order if s not in set(culled)]
    for factors in itertools.product(range(min_factor, max_factor + 1), repeat=3):
        w = stage_weights(factors, depths)
        if all(w[kept[i] - 1] > w[kept[i + 1] - 1] for i in range(len(kept) - 1)):
            return factors  # type: ignore[return-value]
    raise HybrezooError(f"no stage factors in [{min_factor}, {max_factor}] order the ReLUs of stages "
                        f"{' > '.join(f'S{s}' for s in kept)} with depths {tuple(depths)}: change the depths")


def hybrenet_name(config: ResNetConfig) -> str:
    """``hybrenet_m<m>_<alpha><beta><gamma>[_d<depths>][_cull<stages>][_thin][_reuse<r>]``."""
    factors = [int(f) for f in config.stage_factors]
    sep = "x" if any(f > 9 for f in factors) else ""
    name = f"hybrenet_m{config.base_width}_{sep.join(str(f) for f in factors)}"
    if tuple(config.depths) != (2, 2, 2, 2):
        name += "_d" + "".join(str(d) for d in config.depths)
    if config.culled:
        name += "_cull" + "".join(str(s) for s in config.culled)
    if config.thinned:
        name += "_thin"
    if config.relu_reuse != 1:
        name += f"_reuse{config.relu_reuse}"
    return name


@dataclass(frozen=True)
class Design:
    """A HybReNet at one pruning level, widened to the budget."""

    level: Level
    config: ResNetConfig
    relus: int
    macs: int
    relus_per_width: float     # ReLUs added by one more channel of base width
    feasible: bool
    reason: str = ""

    @property
    def name(self) -> str:
        return hybrenet_name(self.config)

    def to_dict(self) -> dict[str, Any]:
        return dict(name=self.name, level=self.level.name, relus=self.relus, macs=self.macs,
                    base_width=self.config.base_width, stage_factors=list(self.config.stage_factors),
                    feasible=self.feasible, reason=self.reason, kwargs=self.config.kwargs())


def _level_config(level: Level, order: tuple[int, ...], depths: tuple[int, ...], width: int) -> ResNetConfig:
    culled = tuple(reversed(order))[:level.culled]
    factors = relu_equalization(order, depths, culled)
    modes = tuple("cull" if s in culled else ("thin" if level.thin else "all") for s in range(1, 5))
    return ResNetConfig(depths=depths, base_width=width, stage_factors=factors, channel_mult=1, stem_stride=1,
                        stem_relu=1 not in culled, stage_relus=modes, thin_keep="first", relu_reuse=level.reuse)


def hybrenet_designs(budget: int, dataset: str = "cifar100", order: Sequence[int] = ZOO_ORDERS["cifar100"], *,
                     depths: Sequence[int] = (2, 2, 2, 2), min_width: int = MIN_WIDTH,
                     max_macs: Optional[int] = None, levels: Sequence[Level] = LEVELS) -> list[Design]:
    """The HybReNet of every pruning level for ``budget`` ReLUs on ``dataset``, mildest level first."""
    spec = dataset_spec(dataset)
    order, depths = parse_order(order), tuple(int(d) for d in depths)
    if len(depths) != 4 or min(depths) < 1:
        raise HybrezooError(f"depths must be four stage depths >= 1, e.g. 2,2,2,2; got {depths}")
    builder = f"{BUILDER}.{spec.tag}"
    designs = []
    for level in levels:
        step = level.reuse  # widths stay multiples of the reuse factor
        unit = count(builder, _level_config(level, order, depths, step), spec.input_size)
        per_width = unit.relus / step
        width = int(budget // (per_width * step)) * step
        reason = ""
        if width < max(min_width, step):
            feasible, reason = False, f"the budget allows base width {width} < {max(min_width, step)}"
            width = max(width, step)
        else:
            feasible = True
        config = _level_config(level, order, depths, width)
        cost = count(builder, config, spec.input_size)
        if feasible and max_macs is not None and cost.macs > max_macs:
            # MACs grow with the width: the widest multiple of the step within the cap, by bisection
            low, high = -(-max(min_width, step) // step), width // step - 1  # in steps; high is the last candidate
            while low <= high:
                mid = (low + high) // 2
                if count(builder, _level_config(level, order, depths, mid * step), spec.input_size).macs <= max_macs:
                    width, low = mid * step, mid + 1
                else:
                    high = mid - 1
            config = _level_config(level, order, depths, width)
            cost = count(builder, config, spec.input_size)
        if feasible and max_macs is not None and cost.macs > max_macs:
            feasible, reason = False, f"{cost.macs / 1e6:.0f}M MACs > max {max_macs / 1e6:.0f}M at base width {width}"
        if feasible and cost.relus > budget:  # ReLUs are linear in the width: a guard, never expected
            raise HybrezooError(f"internal error: {hybrenet_name(config)} has {cost.relus:,} ReLUs > {budget:,}")
        designs.append(Design(level, config, cost.relus, cost.macs, per_width, feasible, reason))
    return designs


def hybrenet_design(budget: int, dataset: str = "cifar100", order: Sequence[int] = ZOO_ORDERS["cifar100"],
                    **kwargs: Any) -> Design:
    """The mildest feasible design of :func:`hybrenet_designs` (see the module docstring)."""
    designs = hybrenet_designs(budget, dataset, order, **kwargs)
    for design in designs:
        if design.feasible:
            return design
    last = designs[-1]
    min_width = kwargs.get("min_width", MIN_WIDTH)
    needed = int(max(min_width, last.level.reuse) * last.relus_per_width)
    raise BudgetError(f"a {budget:,}-ReLU budget is too small for a HybReNet: the most pruned one "
                      f"({last.level.name}) needs {needed:,} ReLUs at base width {min_width} ({last.reason}); "
                      "choose a larger budget or lower --min-width")


def check_feasible(budget: int, dataset: str, *, depths: Sequence[int] = (2, 2, 2, 2), min_width: int = MIN_WIDTH,
                   max_macs: Optional[int] = None) -> None:
    """Refuse, before any criticality training, a budget that no criticality order can meet."""
    needed = []
    for first, second in itertools.permutations(range(1, 5), 2):  # the most pruned level keeps two stages
        order = (first, second, *sorted(set(range(1, 5)) - {first, second}))
        design = hybrenet_designs(budget, dataset, order, depths=depths, min_width=min_width, max_macs=max_macs,
                                  levels=LEVELS[-1:])[0]
        if design.feasible:
            return
        needed.append(int(max(min_width, design.level.reuse) * design.relus_per_width))
    cap = " or raise --max-macs" if max_macs is not None else ""
    raise BudgetError(f"a {budget:,}-ReLU budget is too small for a HybReNet: whatever the criticality order, the "
                      f"most pruned one ({LEVELS[-1].name}) needs at least {min(needed):,} ReLUs at base width "
                      f"{min_width}; choose a larger budget, lower --min-width{cap}")


@dataclass
class DeepReshapeResult:
    dataset: str
    budget: int
    order: tuple[int, ...]
    criticality: Optional[Criticality]
    designs: list[Design]
    chosen: Design
    zoo_name: Optional[str]
    recipe: Recipe
    recipe_yaml: str
    recipe_path: Optional[Path] = None

    def report(self) -> str:
        lines = []
        if self.criticality is not None:
            lines += [self.criticality.table(), ""]
        lines.append("criticality order (most critical first): " + " > ".join(f"S{s}" for s in self.order))
        lines += ["", f"HybReNets for {self.budget:,} ReLUs on {dataset_spec(self.dataset).title}, per pruning level:",
                  f"  {'level':<19}{'(m; a, b, g)':<16}{'ReLUs':>10}{'MACs':>10}  "]
        for d in self.designs:
            a, b, g = (int(f) for f in d.config.stage_factors)
            mark = "  <- chosen" if d is self.chosen else ("" if d.feasible else f"  ({d.reason})")
            lines.append(f"  {d.level.name:<19}{f'({d.config.base_width}; {a}, {b}, {g})':<16}{d.relus:>10,}"
                         f"{d.macs / 1e6:>9.1f}M{mark}")
        c = self.chosen
        lines += chosen_lines(c.name, c.relus, c.macs, c.config.describe(), self.zoo_name, self.recipe,
                              self.recipe_path)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dict(dataset=self.dataset, budget=self.budget, order=list(self.order),
                    criticality=self.criticality.to_dict() if self.criticality else None,
                    designs=[d.to_dict() for d in self.designs], chosen=self.chosen.to_dict(),
                    zoo_name=self.zoo_name, recipe=str(self.recipe_path) if self.recipe_path else None)


def reference_relus(dataset: str) -> int:
    """ReLUs of the all-ReLU ResNet18 on ``dataset`` (557,056 on CIFAR-100): the largest DeepReShape budget."""
    spec = dataset_spec(dataset)
    name = f"{REFERENCE}.{spec.tag}"
    return count(name, base_config(name), spec.input_size).relus


def check_budget(budget: str | int | float, dataset: str) -> int:
    """The budget as a count; more than ResNet18's ReLUs (or 0, or unreadable) is a one-line error."""
    parsed = parse_budget(budget)  # unreadable or non-positive budgets: parse_budget's own message
    total = reference_relus(dataset)
    if not isinstance(parsed, float) and parsed > total:
        raise BudgetError(f"the ReLU budget {parsed:,} exceeds the {total:,} ReLUs of ResNet18 on "
                          f"{dataset_spec(dataset).title}, the network DeepReShape's designs reduce: choose a budget "
                          f"up to {total:,} (or a fraction of it such as 0.1)")
    return resolve_budget(budget, total)


def deepreshape(budget: str | int | float, dataset: str = "cifar100", *, data: Optional[str] = None,
                order: Optional[str | Sequence[int] | Criticality] = None, model: Optional[str] = None,
                depths: Sequence[int] = (2, 2, 2, 2), min_width: int = MIN_WIDTH, max_macs: Optional[int] = None,
                epochs: Optional[int] = None, work_dir: Optional[str] = None, overrides: Sequence[str] = (),
                metric: str = "gain_per_log_relu", init: Optional[str] = None,
                model_kwargs: Optional[Mapping[str, Any]] = None, out: Optional[str] = None,
                device: Optional[str] = None, log: Callable[[str], None] = lambda msg: None) -> DeepReshapeResult:
    """DeepReShape for a ReLU ``budget`` on ``dataset``: criticality, equalization, pruning, recipe.

    ``order``: the stage criticality order (most critical first, e.g. "3,2,4,1"; "zoo" for
    :data:`ZOO_ORDERS`; a :class:`Criticality` or the path of a ``criticality.json``); when None it is
    measured on ``model`` (default ``pi_resnet18.<tag>``) with
    :func:`~hybrezoo.methods.criticality.stage_criticality`.
    """
    spec = dataset_spec(dataset)
    count_budget = check_budget(budget, spec.name)
    if isinstance(min_width, bool) or int(min_width) < 1:
        raise HybrezooError(f"min_width must be a positive integer, got {min_width!r}")
    crit: Optional[Criticality] = None
    if order is not None:
        crit, most_first = resolve_order(order, spec.name)
    else:
        check_feasible(count_budget, spec.name, depths=depths, min_width=int(min_width), max_macs=max_macs)
        name = model or f"{REFERENCE}.{spec.tag}"
        if tagged_entry(name).tag != spec.tag:
            raise HybrezooError(f"{name} is not a {spec.title} model: use one tagged .{spec.tag}")
        crit = stage_criticality(name, data, epochs=epochs, work_dir=work_dir, overrides=overrides, metric=metric,
                                 init=init, model_kwargs=model_kwargs, device=device, log=log)
        most_first = crit.order
    designs = hybrenet_designs(count_budget, spec.name, most_first, depths=depths, min_width=int(min_width),
                               max_macs=max_macs)
    chosen = next((d for d in designs if d.feasible), None)
    if chosen is None:
        chosen = hybrenet_design(count_budget, spec.name, most_first, depths=depths, min_width=int(min_width),
                                 max_macs=max_macs)  # raises the explanation
    match = zoo_match(chosen.config, spec.tag, methods=("deepreshape",))
    recipe, text = _recipe(spec.tag, chosen, match, count_budget, most_first)
    result = DeepReshapeResult(spec.name, count_budget, tuple(most_first), crit, designs, chosen, match, recipe, text)
    if out is not None:
        result.recipe_path = write_recipe(out, text)
    return result


def recipe_base(tag: str) -> Path:
    """The shared settings of every DeepReShape recipe on a data set (KD from ResNet18)."""
    return REPO_ROOT / "training" / "deepreshape" / "_base" / f"deepreshape.{tag}.yaml"


def _recipe(tag: str, chosen: Design, match: Optional[str], budget: int, order: Sequence[int]) -> tuple[Recipe, str]:
    name, kwargs = (match, {}) if match else (f"{BUILDER}.{tag}", chosen.config.kwargs())
    data = {"description": f"DeepReShape HybReNet {chosen.name} for {budget:,} ReLUs ({chosen.relus:,}), "
                           "distilled from ResNet18",
            "model": {"name": name, "kwargs": kwargs}}
    recipe = resolve_recipe(data, [recipe_base(tag)])
    distill = recipe["distill"]
    header = [f"DeepReShape HybReNet {chosen.name} for a {budget:,}-ReLU budget: {chosen.relus:,} ReLUs, "
              f"{chosen.macs / 1e6:.1f}M MACs",
              f"(criticality order {' > '.join(f'S{s}' for s in order)}; pruning level {chosen.level.name}).",
              "Written by `hybrezoo reduce deepreshape`; trains from scratch with knowledge distillation from "
              f"{distill['teacher']} (weights: {distill['checkpoint']});",
              "settings of training/deepreshape/_base/ (docs/deepreshape.md).",
              "Train: hybrezoo train THIS_FILE --data PATH [--out DIR]"]
    return recipe, recipe_text(recipe, header)


# -- command line ------------------------------------------------------------------------------------

def _depths(text: str) -> tuple[int, ...]:
    try:
        depths = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not four stage depths such as 2,2,2,2") from None
    if len(depths) != 4 or min(depths) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not four stage depths >= 1 such as 2,2,2,2")
    return depths


def _macs(text: str) -> int:
    try:
        value = parse_budget(text)
    except BudgetError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a MAC count such as 500M") from None
    if isinstance(value, float):
        raise argparse.ArgumentTypeError(f"{text!r} is not a MAC count such as 500M")
    return value


def add_reduce_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deepreshape", help="DeepReShape: HybReNets for a ReLU budget (ReLU-equalization, pruning, ReLU-reuse)",
        description="Measure (or take) the stage criticality order, allocate stage widths so the ReLUs follow it "
                    "(ReLU-equalization), apply the mildest coarse-grained pruning / ReLU-reuse that keeps the "
                    "network at least --min-width wide within the budget, and write a recipe that trains it with "
                    "distillation from ResNet18.")
    p.add_argument("--budget", required=True, help="ReLU budget: 50k, 180000, or a fraction of ResNet18's (0.1)")
    p.add_argument("--dataset", default="cifar100", choices=("cifar100", "tinyimagenet", "c100", "tin"),
                   help="data set the HybReNet is for (default cifar100)")
    p.add_argument("--model", help="network whose stage criticality is measured (default pi_resnet18.<tag>)")
    p.add_argument("--depths", type=_depths, default=(2, 2, 2, 2), metavar="D,D,D,D",
                   help="stage depths (default 2,2,2,2)")
    p.add_argument("--min-width", type=int, default=MIN_WIDTH, metavar="M",
                   help=f"narrowest base width accepted before pruning more (default {MIN_WIDTH})")
    p.add_argument("--max-macs", type=_macs, default=None, metavar="N", help="MAC cap, e.g. 500M (default none)")
    p.add_argument("--out", metavar="FILE.yaml",
                   help="where to write the recipe (default runs/recipes/deepreshape_<design>_<budget>.<tag>.yaml)")
    add_criticality_options(p, zoo_order="the order the zoo's HybReNets were designed with")
    p.set_defaults(func=run_deepreshape)


def run_deepreshape(args: argparse.Namespace) -> int:
    check_overrides(args.overrides)
    spec = dataset_spec(args.dataset)
    budget = check_budget(args.budget, spec.name)
    log = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    result = deepreshape(budget, spec.name, data=args.data, order=args.order, model=args.model, depths=args.depths,
                         min_width=args.min_width, max_macs=args.max_macs, epochs=args.criticality_epochs,
                         work_dir=args.work_dir, overrides=args.overrides, metric=args.metric, init=args.init,
                         device=args.device, log=log)
    out = args.out or default_recipe_path("deepreshape", result.chosen.name, budget, spec.tag)
    result.recipe_path = write_recipe(out, result.recipe_yaml)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.report())
    return 0
