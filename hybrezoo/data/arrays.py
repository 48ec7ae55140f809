"""A decoded data split as plain uint8 arrays: the form that is cached on disk and moved to the GPU.

Holding whole splits as ``(N, H, W, 3)`` uint8 arrays (1.2 GB for Tiny ImageNet's training split)
is what lets the loaders augment on the device instead of decoding JPEGs every epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .._validate import Range

__all__ = ["ImageArrays", "holdout_count", "holdout_split", "HOLDOUT_RANGE"]

HOLDOUT_RANGE = Range(low=0, whole_from=1, note="a fraction of the training split below 1, or a whole count of "
                                                "images; 0 = none")


@dataclass
class ImageArrays:
    """One split: ``images`` (N, H, W, 3) uint8, ``labels`` (N,) int64, class names in label order."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)  # class name -> human-readable name

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be a uint8 (N, H, W, 3) array, got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")
        self.labels = self.labels.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: np.ndarray) -> "ImageArrays":
        return ImageArrays(self.images[index], self.labels[index], self.classes, self.descriptions)


def holdout_count(holdout: float, size: int) -> int:
    """Images ``data.holdout`` takes from a training split of ``size``: a count (>= 1) or a fraction (< 1).

    A negative value or a fractional count (2.5) is refused, not read as "none" or rounded silently."""
    HOLDOUT_RANGE.check(holdout, "data.holdout", ValueError)
    if holdout == 0:
        return 0
    return int(round(holdout * size)) if holdout < 1 else int(holdout)


def holdout_split(data: ImageArrays, holdout: float, seed: int) -> tuple[ImageArrays, Optional[ImageArrays]]:
    """Split off a held-out part of a training split for model selection.

    ``holdout`` is a count (>= 1) or a fraction (< 1) of the images; every class gives its share
    (stratified, rounded so that the total is exact), the images chosen by ``seed`` only, so the split
    does not depend on the run.
    Returns ``(train, held_out)``; ``held_out`` is None when ``holdout`` is 0.
    """
    HOLDOUT_RANGE.check(holdout, "data.holdout", ValueError)
    if holdout == 0:
        return data, None
    count = holdout_count(holdout, len(data))
    if not 0 < count < len(data):
        raise ValueError(f"data.holdout={holdout} keeps {count} of {len(data)} training images: "
                         "use a fraction in (0, 1) or a count below the split size")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(data.labels == label) for label in range(data.num_classes)]
    # Per-class shares of exactly `count` images: floors first, the remainder to the largest fractions.
    exact = np.array([count * len(m) / len(data) for m in members])
    take = np.floor(exact).astype(int)
    order = np.lexsort((rng.random(len(members)), -(exact - take)))
    take[order[: count - take.sum()]] += 1
    held_index = np.sort(np.concatenate([rng.permutation(m)[:k] for m, k in zip(members, take)]))
    keep = np.ones(len(data), bool)
    keep[held_index] = False
    return data.subset(np.flatnonzero(keep)), data.subset(held_index)
