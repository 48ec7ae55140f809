"""Top-1 / top-5 accuracy over a whole split, summed exactly across DDP processes."""
from __future__ import annotations

import os
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import RunEnv, eval_mode, init_env

__all__ = ["evaluate", "correct_topk", "eval_loader", "precision_of"]


def correct_topk(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at the classes)."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hits = top == labels[:, None]
    return [hits[:, : min(k, k_max)].any(dim=1).sum() for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, env: Optional[RunEnv] = None) -> dict[str, float]:
    """``top1`` and ``top5`` (percent), mean cross-entropy ``loss`` and ``images`` of a loader's split.

    Every process evaluates its share; counts are summed, so the figures are those of the whole
    split whatever the number of processes. Under DDP rank 0's BatchNorm statistics are used.
    """
    env = env or RunEnv(device=next(model.parameters()).device)
    env.broadcast_buffers(model)
    totals = torch.zeros(4, dtype=torch.float64, device=env.device)  # images, top1, top5, loss sum
    with eval_mode(model):
        for images, labels in loader:
            with env.autocast():
                logits = model(images)
            top1, top5 = correct_topk(logits, labels)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum")
            totals += torch.stack([torch.full((), float(len(labels)), device=env.device, dtype=torch.float64),
                                   top1.double(), top5.double(), loss.double()])
    env.all_reduce_sum(totals)
    n, top1, top5, loss = totals.tolist()
    if n == 0:
        return {"top1": float("nan"), "top5": float("nan"), "loss": float("nan"), "images": 0}
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "loss": loss / n, "images": int(n)}


def eval_loader(dataset: str, root: Optional[str | os.PathLike] = None, split: Optional[str] = None,
                device: Optional[str] = None, amp: str = "auto", batch_size: int = 500):
    """The environment, loader and split name that ``hybrezoo eval`` scores a model of ``dataset`` with
    (one place, so that a published card's figures and the eval command's are the same computation)."""
    from ..data import DeviceLoader, data_root, dataset_spec, load_split
    from ..data.sources import eval_split

    spec = dataset_spec(dataset)
    root = data_root(root)
    split = split or eval_split(spec.name)
    env = init_env({"amp": amp, "channels_last": "auto"}, device)
    data = load_split(spec.name, split, root)
    loader = DeviceLoader(data, batch_size=batch_size, mean=spec.mean, std=spec.std, device=env.device,
                          channels_last=env.channels_last)
    return env, loader, split


def precision_of(env: RunEnv) -> str:
    """How the model's arithmetic ran: ``float32`` or ``bfloat16 autocast``."""
    return "float32" if env.amp_dtype is None else f"{str(env.amp_dtype).removeprefix('torch.')} autocast"
