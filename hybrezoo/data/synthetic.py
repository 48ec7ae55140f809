"""Small stand-ins for the real data sets, written in the real on-disk formats.

They exist so that every recipe can be run end to end in seconds (tests, smoke checks of a new
recipe) without the real data: the loaders read them exactly as they read CIFAR-100 and Tiny
ImageNet. The images are noise plus a per-class colour shift, so a model can learn them a little.
The default sizes (300 CIFAR-100 and 400 Tiny ImageNet training images) hold at least one batch of
every shipped recipe (``data.batch_size`` 256 at most), so a recipe runs on them unchanged
(with ``runtime.max_steps`` for speed); smaller sets need a smaller ``data.batch_size``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_fake_cifar100", "write_fake_tinyimagenet"]


def _images(rng: np.random.Generator, labels: np.ndarray, size: int, classes: int) -> np.ndarray:
    base = rng.integers(0, 256, (len(labels), size, size, 3))
    shift = (np.stack([labels * 37 % 256, labels * 101 % 256, labels * 53 % 256], 1) - 128)[:, None, None, :]
    return np.clip(base // 2 + 64 + shift // 2, 0, 255).astype(np.uint8)


def write_fake_cifar100(root: Path, train_per_class: int = 3, test_per_class: int = 1, seed: int = 0) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` as the official pickles (100 classes)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), per_class)
        images = _images(rng, labels, 32, 100)
        batch = {"data": images.transpose(0, 3, 1, 2).reshape(len(labels), -1), "fine_labels": labels.tolist(),
                 "coarse_labels": (labels // 5).tolist(), "filenames": [f"img_{i}.png" for i in range(len(labels))],
                 "batch_label": f"fake {split} batch"}
        with open(folder / split, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class_{i:03d}" for i in range(100)],
                     "coarse_label_names": [f"super_{i:02d}" for i in range(20)]}, f)
    return folder


def write_fake_tinyimagenet(root: Path, train_per_class: int = 2, val_per_class: int = 1, seed: int = 0,
                            classes: int = 200) -> Path:
    """``root/tiny-imagenet-200`` in the standard layout (wnids.txt, train/<wnid>/images, val/...)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{10000000 + 7919 * i:08d}" for i in range(classes)]
    rng.shuffle(wnids)  # wnids.txt order is not sorted order: the loader must follow the file
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(w + "\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tthing number {i}\n" for i, w in enumerate(wnids)))
    for label, wnid in enumerate(wnids):
        images_dir = folder / "train" / wnid / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        for j, image in enumerate(_images(rng, np.full(train_per_class, label), 64, classes)):
            Image.fromarray(image).save(images_dir / f"{wnid}_{j}.JPEG", quality=95)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    val_labels = np.repeat(np.arange(classes), val_per_class)
    for i, (label, image) in enumerate(zip(val_labels, _images(rng, val_labels, 64, classes))):
        Image.fromarray(image).save(folder / "val" / "images" / f"val_{i}.JPEG", quality=95)
        lines.append(f"val_{i}.JPEG\t{wnids[label]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return folder
