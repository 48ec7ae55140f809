"""Circa (Ghodsi, Jha, Reagen, Garg, NeurIPS 2021, arXiv:2106.08475): evaluate every kept ReLU of a
network as the protocol's truncated, stochastic sign test.

- :func:`convert` turns every ReLU layer of a model (zoo PIReLUs, masked ones included, and plain
  ``nn.ReLU`` modules) into a :class:`~hybrezoo.nn.StochasticReLU` with the given fixed-point and
  truncation settings; masks are kept, so linearised positions stay free.
- :func:`evaluate_under_faults` scores a converted model over several fault seeds (mean and spread),
  which is what ``hybrezoo eval --circa-seeds N`` prints.
- The stage ``circa_faults`` does the same inside a recipe and writes ``circa_faults.json``.

The faults depend on the layer's random share, so every layer gets its own seed, derived from the
model seed with NumPy's ``SeedSequence``: two layers never repeat each other's fault pattern, and one
model seed reproduces the whole network's faults. Under a seed the faults are a function of the input
(:class:`~hybrezoo.nn.StochasticReLU`): the same batch gets the same faults however often it is run, other
batches other faults, so a score over a data set depends on the seed and the data only, and the spread
over seeds is the spread of the faults.
"""
from __future__ import annotations

import argparse
import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
from torch import nn

from ..engine import StageContext, register_stage
from ..errors import HybrezooError
from ..nn.relu import PIReLU
from ..nn.stochastic_relu import VARIANTS, StochasticReLU, check_circa_params

__all__ = ["CircaSettings", "convert", "reseed", "stochastic_layers", "layer_seed", "FaultEval",
           "evaluate_under_faults", "settings_of", "circa_faults", "add_eval_arguments", "eval_settings"]


@dataclass(frozen=True)
class CircaSettings:
    """Fixed point and truncation of Circa's sign test: ``f`` fractional bits, ``k`` truncated bits,
    ``n``-bit ring, fault ``variant`` (``pos_zero`` or ``neg_pass``)."""

    k: int
    f: int
    variant: str = "pos_zero"
    n: int = 32

    def __post_init__(self) -> None:
        try:
            check_circa_params(int(self.n), int(self.f), int(self.k), str(self.variant))
        except ValueError as err:
            raise HybrezooError(f"Circa settings k={self.k}, f={self.f}, n={self.n}: {err}") from None

    @property
    def fault_window(self) -> float:
        """Inputs with ``|x|`` below this may be evaluated wrongly (``2^(k - f)``)."""
        return 2.0 ** (self.k - self.f)

    def describe(self) -> str:
        return (f"k={self.k} truncated bits, f={self.f} fractional bits, {self.n}-bit ring, {self.variant} "
                f"(faults only for |x| < 2^(k-f) = {self.fault_window:g})")


def layer_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th stochastic layer of a model seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]) >> 1  # numpy 1.x: no uint64 >> int


def stochastic_layers(model: nn.Module) -> Dict[str, StochasticReLU]:
    return {name: m for name, m in model.named_modules() if isinstance(m, StochasticReLU)}


def convert(model: nn.Module, k: int, f: int, variant: str = "pos_zero", seed: Optional[int] = 0,
            ring_bits: int = 32, inplace: bool = False, fresh_faults: bool = False) -> nn.Module:
    """Every kept ReLU of ``model`` becomes a Circa stochastic ReLU (``k`` truncated bits, ``f``
    fractional bits, ``ring_bits``-bit ring, ``variant``); PIReLU masks carry over.

    ``seed``: faults reproducible from it, the same for the same input (``None``: torch's global
    generator); ``fresh_faults=True``: each call draws new faults instead (docs/circa.md). ``inplace=False``
    converts a copy. Layers already stochastic are converted again with the new settings. Culled
    layers (``nn.Identity``) stay free. Raises :class:`HybrezooError` for settings the protocol
    cannot run with and for a model without ReLU layers.
    """
    settings = CircaSettings(k=int(k), f=int(f), variant=str(variant), n=int(ring_bits))
    if not inplace:
        model = copy.deepcopy(model)
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, (PIReLU, nn.ReLU)) and name]
    if not targets:
        raise HybrezooError(f"{type(model).__name__} has no ReLU module to convert (functional relu calls cannot "
                            "be replaced): build it from the zoo, whose networks use PIReLU layers")
    anchor = next(iter(model.parameters()), None)
    for index, (name, old) in enumerate(targets):
        new = StochasticReLU(frac_bits=settings.f, truncated_bits=settings.k, ring_bits=settings.n,
                             variant=settings.variant, seed=None if seed is None else layer_seed(seed, index),
                             reduction=getattr(old, "reduction", 0), fresh_faults=fresh_faults)
        if anchor is not None:
            new.to(anchor.device)  # where the model is (its generator too; a meta model gets one with .to())
        mask = getattr(old, "mask", None)
        if mask is not None:
            new.set_mask(mask.detach().clone())
        model.set_submodule(name, new)
    return model


def reseed(model: nn.Module, seed: Optional[int]) -> nn.Module:
    """Restart every stochastic layer's faults from ``seed`` (the same derivation as :func:`convert`)."""
    layers = stochastic_layers(model)
    if not layers:
        raise HybrezooError("the model has no Circa stochastic ReLU: convert it first (hybrezoo.methods.circa.convert)")
    for index, layer in enumerate(layers.values()):
        layer.reseed(None if seed is None else layer_seed(seed, index))
    return model


@dataclass
class FaultEval:
    """Accuracy of a Circa model over fault seeds: mean, sample standard deviation, min, max."""

    seeds: List[int]
    top1: List[float]
    top5: List[float]
    images: int
    settings: Dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def _stats(values: Sequence[float]) -> Dict[str, float]:
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        return {"mean": mean, "std": std, "min": min(values), "max": max(values)}

    @property
    def top1_stats(self) -> Dict[str, float]:
        return self._stats(self.top1)

    @property
    def top5_stats(self) -> Dict[str, float]:
        return self._stats(self.top5)

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), top1_stats=self.top1_stats, top5_stats=self.top5_stats)

    def summary(self) -> str:
        t1, t5 = self.top1_stats, self.top5_stats
        return (f"top-1 {t1['mean']:.2f} +- {t1['std']:.2f} (min {t1['min']:.2f}, max {t1['max']:.2f})  "
                f"top-5 {t5['mean']:.2f} +- {t5['std']:.2f}  over {len(self.seeds)} fault seeds")


def settings_of(model: nn.Module) -> Dict[str, Any]:
    """The Circa settings of a converted model (one dict if all layers agree, else per layer)."""
    seen = {(m.truncated_bits, m.frac_bits, m.ring_bits, m.variant) for m in stochastic_layers(model).values()}
    if len(seen) == 1:
        k, f, n, variant = seen.pop()
        return {"k": k, "f": f, "n": n, "variant": variant}
    return {name: {"k": m.truncated_bits, "f": m.frac_bits, "n": m.ring_bits, "variant": m.variant}
            for name, m in stochastic_layers(model).items()}


def evaluate_under_faults(model: nn.Module, loader: Iterable, seeds: Sequence[int], env: Any = None) -> FaultEval:
    """Top-1/top-5 of a converted model on a loader's whole split, once per fault seed.

    ``env`` is the engine's :class:`~hybrezoo.engine.RunEnv` (device, autocast, DDP sums); the model
    is reseeded before each pass and left seeded with the first seed afterwards, so scoring it again on
    the same batches gives the first seed's figures (its faults depend on the seed and the input only).
    """
    from ..engine.evaluate import evaluate

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise HybrezooError("give at least one fault seed (--circa-seeds N, N >= 1)")
    top1, top5, images = [], [], 0
    for seed in seeds:
        reseed(model, seed)
        scores = evaluate(model, loader, env)
        top1.append(scores["top1"])
        top5.append(scores["top5"])
        images = scores["images"]
    reseed(model, seeds[0])
    return FaultEval(seeds=seeds, top1=top1, top5=top5, images=images, settings=settings_of(model))


# -- recipe stage -------------------------------------------------------------------------------------------
@register_stage("circa_faults", options={"seeds": 5, "split": "eval"})
def circa_faults(ctx: StageContext) -> None:
    """Accuracy of the (Circa) model over ``seeds`` fault seeds on the eval (or select) split, written to
    ``circa_faults.json``; the model is left seeded with seed 0, so the run's final score is seed 0's."""
    from ..engine.checkpoint import atomic_write_json

    n = int(ctx.section["seeds"])
    split = ctx.section["split"]
    if n < 1:
        raise HybrezooError(f"stage {ctx.name!r}: seeds must be >= 1, got {n}")
    loader = {"eval": ctx.data.eval, "select": ctx.data.select}.get(split)
    if loader is None:
        raise HybrezooError(f"stage {ctx.name!r}: split must be eval or select, got {split!r}")
    result = evaluate_under_faults(ctx.model, loader, range(n), ctx.env)
    ctx.log.info(f"stage {ctx.name}: Circa faults on {ctx.data.eval_split if split == 'eval' else ctx.data.select_split}"
                 f": {result.summary()}")
    if ctx.env.is_main:
        atomic_write_json(ctx.run_dir / "circa_faults.json", dict(result.to_dict(), split=split))


# -- hybrezoo eval options ---------------------------------------------------------------------------------
def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """``hybrezoo eval`` options: score under Circa's faults (converting the model first if asked)."""
    g = p.add_argument_group("Circa (stochastic ReLUs)")
    g.add_argument("--circa-seeds", type=int, metavar="N",
                   help="score over N fault seeds and print mean and spread (default 5 for a model with stochastic "
                        "ReLUs, e.g. a circa_* name)")
    g.add_argument("--circa-k", type=int, metavar="K", help="convert the model's ReLUs first: K truncated bits")
    g.add_argument("--circa-f", type=int, metavar="F", help="fractional bits of the fixed-point values (with --circa-k)")
    g.add_argument("--circa-variant", choices=VARIANTS, help="fault variant (with --circa-k; default pos_zero)")
    g.add_argument("--circa-ring-bits", type=int, metavar="N", default=32, help="ring bit width (default 32)")


def eval_settings(model: nn.Module, args: argparse.Namespace) -> tuple[nn.Module, Optional[List[int]]]:
    """The model to score (converted when ``--circa-k`` is given) and the fault seeds, or None for a
    plain evaluation. Bad combinations fail with one line."""
    k, f = getattr(args, "circa_k", None), getattr(args, "circa_f", None)
    if (k is None) != (f is None):
        raise HybrezooError("give --circa-k and --circa-f together (truncated and fractional bits)")
    if k is None and getattr(args, "circa_variant", None):
        raise HybrezooError("--circa-variant needs --circa-k and --circa-f")
    if k is not None:
        model = convert(model, k=k, f=f, variant=args.circa_variant or "pos_zero",
                        ring_bits=args.circa_ring_bits, inplace=True)
    seeds = getattr(args, "circa_seeds", None)
    stochastic = bool(stochastic_layers(model))
    if seeds is not None and not stochastic:
        raise HybrezooError("--circa-seeds needs a model with stochastic ReLUs: a circa_* zoo name, or convert "
                            "this one with --circa-k K --circa-f F")
    if seeds is not None and seeds < 1:
        raise HybrezooError(f"--circa-seeds must be >= 1, got {seeds}")
    if not stochastic:
        return model, None
    return model, list(range(5 if seeds is None else seeds))
