"""Optimizers and learning-rate schedules as recipes state them.

Schedules are stepped after every optimizer step (not every epoch) and are pure functions of the
step number inside ``torch.optim.lr_scheduler.LambdaLR``, so a resumed run continues on exactly the
same curve: the scheduler's state is one integer.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..errors import HybrezooError

__all__ = ["param_groups", "create_optimizer", "create_scheduler", "lr_factor_fn", "NORM_TYPES"]

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
_NO_DECAY_KINDS = ("norm", "bias")

Params = Union[Iterable[nn.Parameter], Sequence[Mapping[str, Any]]]


def param_groups(model: nn.Module, weight_decay: float, no_decay: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Two groups: parameters with ``weight_decay`` and those of the kinds in ``no_decay`` without.

    ``norm`` covers every parameter of a normalisation layer (BatchNorm, GroupNorm, LayerNorm),
    ``bias`` every other parameter named ``bias``. Frozen parameters are left out.
    """
    unknown = set(no_decay) - set(_NO_DECAY_KINDS)
    if unknown:
        raise HybrezooError(f"optimizer.no_decay may hold {', '.join(_NO_DECAY_KINDS)}, not {sorted(unknown)}")
    decay, plain = [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            exempt = ("norm" in no_decay and isinstance(module, NORM_TYPES)) or ("bias" in no_decay and name == "bias")
            (plain if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _on_cuda(params: Any) -> bool:
    for item in params:
        tensors = item["params"] if isinstance(item, Mapping) else [item]
        for p in tensors:
            return bool(p.is_cuda)
    return False


def create_optimizer(cfg: Mapping[str, Any], params: Union[nn.Module, Params],
                     fused: bool = False) -> torch.optim.Optimizer:
    """SGD or AdamW from a recipe's ``optimizer`` section; a module gets :func:`param_groups`.

    ``fused`` (``runtime.fused_optimizer``) asks for torch's fused CUDA kernels (one launch for all
    parameters instead of one per tensor); it applies only to parameters on a GPU, so CPU runs, and
    their results, are unchanged."""
    if isinstance(params, nn.Module):
        params = param_groups(params, float(cfg["weight_decay"]), cfg.get("no_decay") or ())
    params = list(params)
    extra = {"fused": True} if fused and _on_cuda(params) else {}
    name = str(cfg["name"]).lower()
    lr = float(cfg["lr"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg["momentum"]), nesterov=bool(cfg["nesterov"]),
                               weight_decay=float(cfg["weight_decay"]), **extra)
    if name == "adamw":
        betas = tuple(float(b) for b in cfg["betas"])
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=float(cfg["eps"]),
                                 weight_decay=float(cfg["weight_decay"]), **extra)
    raise HybrezooError(f"optimizer.name must be sgd or adamw, got {cfg['name']!r}")


def lr_factor_fn(cfg: Mapping[str, Any], base_lr: float, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The schedule as a function from step (0 = first update) to a multiple of the base lr."""
    total = max(1, epochs * steps_per_epoch)
    name = str(cfg["name"]).lower()
    warmup = int(round(float(cfg["warmup_epochs"]) * steps_per_epoch))
    start = float(cfg["warmup_factor"])
    if warmup >= total and name != "constant":
        raise HybrezooError(f"schedule.warmup_epochs={cfg['warmup_epochs']} covers the whole run of {epochs} epochs: "
                            "shorten the warm-up")

    def warm(step: int) -> float | None:
        if step < warmup:
            return start + (1.0 - start) * step / warmup
        return None

    if name == "constant":
        return lambda step: warm(step) if step < warmup else 1.0
    if name == "cosine":
        floor = float(cfg["min_lr"]) / base_lr if base_lr > 0 else 0.0

        def cosine(step: int) -> float:
            if step < warmup:
                return warm(step)
            t = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
        return cosine
    if name == "step":
        milestones = sorted(int(round(float(m) * steps_per_epoch)) for m in cfg["milestones"])
        gamma = float(cfg["gamma"])
        if not milestones:
            raise HybrezooError("schedule.name=step needs schedule.milestones (epochs), e.g. [80, 120]")

        def step_fn(step: int) -> float:
            if step < warmup:
                return warm(step)
            return gamma ** sum(step >= m for m in milestones)
        return step_fn
    if name == "onecycle":
        if warmup:
            raise HybrezooError("the one-cycle schedule has its own warm-up (schedule.pct_start): "
                                "set schedule.warmup_epochs=0")
        rise = max(1, int(float(cfg["pct_start"]) * total))
        lo = 1.0 / float(cfg["div_factor"])
        end = lo / float(cfg["final_div_factor"])

        def cos_between(a: float, b: float, t: float) -> float:
            return b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

        def onecycle(step: int) -> float:
            if step < rise:
                return cos_between(lo, 1.0, step / rise)
            return cos_between(1.0, end, (step - rise) / max(1, total - rise))
        return onecycle
    raise HybrezooError(f"schedule.name must be cosine, step, onecycle or constant, got {cfg['name']!r}")


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], epochs: int,
                     steps_per_epoch: int) -> LambdaLR:
    """A per-step LambdaLR for the recipe's ``schedule`` section (base lr = each group's lr)."""
    base_lr = optimizer.param_groups[0]["lr"]
    return LambdaLR(optimizer, lr_factor_fn(cfg, base_lr, epochs, steps_per_epoch))
