"""Batches of a uint8 split held on the device and augmented there, so a GPU never waits on decoding.

A whole split sits on the device as an (N, H, W, 3) uint8 tensor (Tiny ImageNet's training split is
1.2 GB). Each step gathers one batch with a single indexing operation that performs the random crop
(with zero padding) and the horizontal flip at once, converts to float, normalises, and optionally
applies Cutout. The (N, H, W, 3) layout permuted to NCHW is already channels_last in memory.

Randomness is a pure function of (seed, epoch): the order and the augmentation parameters of a whole
epoch are drawn on the CPU from a generator seeded by both, for the *global* batch, and each DDP rank
takes its slice of every global batch. The same images and augmentations are therefore seen on the
CPU and on a GPU, with one process or eight, and a run resumed at an epoch boundary is exact.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from .._validate import Range
from .arrays import ImageArrays

__all__ = ["Augment", "DeviceLoader", "crop_flip", "cutout", "normalize", "epoch_generator"]


@dataclass(frozen=True)
class Augment:
    """Training augmentation, as a recipe's ``data.augment`` section states it."""

    crop_padding: int = 4      # random crop of the original size from the image padded by this many zeros
    hflip: bool = True         # horizontal flip with probability 1/2
    cutout: int = 0            # side of a square set to zero after normalisation (DeVries & Taylor 2017); 0 = off

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.cutout < 0:
            raise ValueError(f"data.augment values must be >= 0, got crop_padding={self.crop_padding}, "
                             f"cutout={self.cutout}")


def epoch_generator(seed: int, epoch: int, purpose: str = "order") -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, purpose)."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Random crop (zero padding) and horizontal flip of an (B, H, W, C) batch in one gather.

    ``offsets`` (B, 2) are the crop's top-left corner in the padded image, in [0, 2 * padding];
    ``flips`` (B,) says which images are mirrored.
    """
    b, h, w, _ = images.shape
    padded = F.pad(images, (0, 0, padding, padding, padding, padding)) if padding else images
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 (B, H, W, C) -> normalised float (B, C, H, W); channels_last in memory unless told otherwise."""
    x = images.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
    return x if channels_last else x.contiguous()


def cutout(x: torch.Tensor, centers: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square (clipped at the border) around each centre (B, 2) of a (B, C, H, W) batch."""
    h, w = x.shape[-2:]
    top = (centers[:, 0] - size // 2)[:, None]
    left = (centers[:, 1] - size // 2)[:, None]
    ys = torch.arange(h, device=x.device)[None]
    xs = torch.arange(w, device=x.device)[None]
    inside_y = (ys >= top) & (ys < top + size)
    inside_x = (xs >= left) & (xs < left + size)
    erase = inside_y[:, None, :, None] & inside_x[:, None, None, :]
    return x.masked_fill(erase, 0.0)


class DeviceLoader:
    """Iterates over (images, labels) batches of a split held as uint8 on ``device``.

    ``train=True``: shuffled, augmented, incomplete last batch dropped, ``batch_size`` is the global
    batch (each of ``world_size`` ranks gets ``batch_size / world_size`` images of it). ``train=False``:
    in order, not augmented, every image seen exactly once across the ranks (rank r takes r, r + W, ...).
    ``on_device=False`` keeps the split in (pinned) host memory and moves each batch instead.
    """

    def __init__(self, data: ImageArrays, *, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 device: torch.device | str = "cpu", train: bool = False, augment: Optional[Augment] = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, on_device: bool = True,
                 channels_last: bool = True, max_batches: Optional[int] = None) -> None:
        self.device = torch.device(device)
        self.train = train
        self.augment = augment if augment is not None else Augment()
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.max_batches = max_batches
        self.epoch, self.stream, self.start = 0, "", 0
        # data.batch_size / data.eval_batch_size are checked when the recipe loads; this guards direct use
        Range(low=1, whole=True).check(batch_size, "batch_size", ValueError)
        if train and batch_size % world_size:
            raise ValueError(f"data.batch_size={batch_size} is the global batch: it must be divisible by the "
                             f"{world_size} processes")
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size if train else batch_size
        if train and len(data) < batch_size:
            raise ValueError(f"data.batch_size={batch_size} is larger than the {len(data)} training images (after any "
                             f"data.holdout): lower data.batch_size to {len(data)} or less, or use more images")
        store = self.device if on_device else torch.device("cpu")
        images = torch.from_numpy(data.images)
        labels = torch.from_numpy(data.labels)
        if not on_device and self.device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        self.images = images.to(store)
        self.labels = labels.to(store)
        self.num_images = len(data)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255

    def set_epoch(self, epoch: int, stream: str = "", start: int = 0) -> None:
        """Select the epoch (and a stream name, e.g. the stage) whose order and augmentation come next;
        ``start`` skips that many training batches (a run resumed in the middle of an epoch)."""
        self.epoch = epoch
        self.stream = stream
        self.start = start

    def __len__(self) -> int:
        if self.train:
            n = self.num_images // self.batch_size
        else:
            mine = len(range(self.rank, self.num_images, self.world_size))
            n = -(-mine // self.local_batch)
        return min(n, self.max_batches) if self.max_batches else n

    def _gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.images[index], self.labels[index]
        if images.device != self.device:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
        return images, labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._train_batches() if self.train else self._eval_batches()

    def _eval_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        mine = torch.arange(self.rank, self.num_images, self.world_size, device=self.images.device)
        for step in range(len(self)):
            images, labels = self._gather(mine[step * self.local_batch:(step + 1) * self.local_batch])
            yield normalize(images, self.mean, self.std, self.channels_last), labels

    def _train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        aug, n = self.augment, self.num_images
        gen = epoch_generator(self.seed, self.epoch, f"order:{self.stream}")
        order = torch.randperm(n, generator=gen)
        # Augmentation parameters for every position of the epoch, drawn once on the CPU (see module doc).
        offsets = torch.randint(0, 2 * aug.crop_padding + 1, (n, 2), generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5 if aug.hflip else torch.zeros(n, dtype=torch.bool)
        h, w = self.images.shape[1:3]
        centers = torch.stack([torch.randint(0, h, (n,), generator=gen), torch.randint(0, w, (n,), generator=gen)], 1)
        order = order.to(self.images.device)  # indices live where the images are: no per-step copies
        offsets, flips, centers = (t.to(self.device) for t in (offsets, flips, centers))
        for step in range(self.start, len(self)):
            start = step * self.batch_size + self.rank * self.local_batch
            part = slice(start, start + self.local_batch)
            images, labels = self._gather(order[part])
            images = crop_flip(images, offsets[part], flips[part], aug.crop_padding)
            x = normalize(images, self.mean, self.std, self.channels_last)
            if aug.cutout:
                x = cutout(x, centers[part], aug.cutout)
            yield x, labels
