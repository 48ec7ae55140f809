"""Stages: the extension point through which methods run on the engine.

A recipe's ``stages`` list runs in order; each entry names a registered *kind*. A kind is a
function ``fn(ctx: StageContext) -> None`` plus the extra recipe keys it accepts (``options``, with
defaults). The plain ``train`` kind is one line, ``ctx.fit()``; a method adds its own kinds::

    from hybrezoo.engine import Callback, register_stage

    @register_stage("snl_search", options={"budget": None, "l1_weight": 1e-5})
    def snl_search(ctx):
        alphas = attach_alphas(ctx.model)                         # set-up on the stage's start state
        ctx.fit(loss_terms={"l1": lambda step: ctx.section["l1_weight"] * l1(alphas)},
                callbacks=[GrowL1(ctx)])                           # the engine's loop, checkpoints, logs
        binarise(ctx.model)                                        # leave the model in zoo form

Rules that keep every recipe resumable:

- ``ctx.section`` is the stage's settings: the top-level ``epochs``, ``select``, ``optimizer``,
  ``schedule``, ``loss`` and ``distill`` unless the stage entry overrides them, plus its options.
- A stage calls ``ctx.fit`` at most once (split multi-phase work into several stages). On resume
  the stage function runs again on the state the stage started from, so its set-up must be
  deterministic; ``fit`` then restores the model, optimizer, schedule, RNG and ``ctx.state``
  (anything else the stage needs to carry, e.g. a penalty weight it adapts) of the last epoch.
- When a stage returns, the model must be a plain zoo model again (same modules as built from the
  recipe; PIReLU masks are buffers and are fine): the next stage, the checkpoint and the exported
  ``model.safetensors`` all rely on it.

Kinds are registered at import. Method modules under :mod:`hybrezoo.methods` are imported
automatically the first time a recipe names a kind that is not registered yet.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from torch import nn

from ..errors import HybrezooError

if TYPE_CHECKING:  # pragma: no cover
    from .recipe import Recipe
    from .runlog import RunLog
    from .runtime import RunEnv
    from .trainer import FitResult, RunData, Trainer

__all__ = ["StageKind", "StageContext", "register_stage", "get_stage", "stage_kinds", "check_stage_name"]

StageFn = Callable[["StageContext"], None]


@dataclass(frozen=True)
class StageKind:
    name: str
    fn: StageFn
    options: Mapping[str, Any]
    doc: str = ""


_STAGES: dict[str, StageKind] = {}


def register_stage(name: str, options: Optional[Mapping[str, Any]] = None) -> Callable[[StageFn], StageFn]:
    """Register ``fn(ctx)`` as stage kind ``name``, accepting the recipe keys in ``options``."""
    from .recipe import STAGE_SECTIONS

    clash = set(options or {}) & {"kind", "name", *STAGE_SECTIONS}
    if clash:
        raise ValueError(f"stage kind {name!r}: option names {sorted(clash)} are reserved")

    def wrap(fn: StageFn) -> StageFn:
        if name in _STAGES and _STAGES[name].fn is not fn:
            raise ValueError(f"stage kind {name!r} is already registered by {_STAGES[name].fn.__module__}")
        _STAGES[name] = StageKind(name, fn, dict(options or {}), (fn.__doc__ or "").strip())
        return fn
    return wrap


def _discover_methods() -> None:
    try:
        package = importlib.import_module("hybrezoo.methods")
    except ImportError:
        return
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"hybrezoo.methods.{info.name}")


def get_stage(name: str) -> StageKind:
    if name not in _STAGES:
        _discover_methods()
    if name not in _STAGES:
        raise HybrezooError(f"unknown stage kind {name!r}: registered kinds are {', '.join(stage_kinds())}")
    return _STAGES[name]


def stage_kinds() -> list[str]:
    return sorted(_STAGES)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def check_stage_name(name: Any) -> str:
    """``name`` if it is a plain name (letters, digits, ``_ . + -``; no path): stages name files in the
    run folder (e.g. ``senet_allocation.<stage>.json``), so a name must not lead out of it."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or ".." in name:
        raise HybrezooError(f"stage name {name!r} is not a plain name: use up to 100 letters, digits, '_', '-', '.' "
                            "or '+' (no '/', no '..'), e.g. name: finetune")
    return name


@dataclass
class StageContext:
    """What a stage works with. ``fit`` runs the engine's training loop on ``model``."""

    index: int
    name: str
    kind: str
    section: dict[str, Any]        # the stage's resolved settings (see module doc)
    model: nn.Module               # the zoo model, on the run's device
    data: "RunData"                # loaders of the training, selection and evaluation splits
    trainer: "Trainer"
    env: "RunEnv"
    recipe: "Recipe"
    run_dir: Path
    log: "RunLog"
    state: dict[str, Any] = field(default_factory=dict)   # saved with every checkpoint of this stage
    resume: Optional[dict[str, Any]] = None               # set by the runner when continuing this stage
    fitted: bool = False
    result: Optional["FitResult"] = None                  # what fit returned

    def __post_init__(self) -> None:
        check_stage_name(self.name)

    def fit(self, **kwargs: Any) -> "FitResult":
        """The engine's loop (see :meth:`hybrezoo.engine.trainer.Trainer.fit` for the arguments)."""
        return self.trainer.fit(self, **kwargs)

    def evaluate(self, split: str = "select") -> dict[str, float]:
        """Top-1/top-5 of the model on ``select`` (held-out part, or the eval split) or ``eval``."""
        return self.trainer.evaluate(self.model, split)


@register_stage("train")
def train(ctx: StageContext) -> None:
    """Supervised training (with distillation when the section names a teacher)."""
    ctx.fit()
