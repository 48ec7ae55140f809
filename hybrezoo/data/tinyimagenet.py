"""Tiny ImageNet from its standard folder (``tiny-imagenet-200/``), classes in ``wnids.txt`` order.

Layout (http://cs231n.stanford.edu/tiny-imagenet-200.zip): ``wnids.txt`` (200 WordNet ids, the
class order), ``words.txt`` (id -> names), ``train/<wnid>/images/*.JPEG`` (500 a class) and
``val/images/*.JPEG`` with ``val/val_annotations.txt`` (file, wnid, box). The unlabelled ``test``
folder is not used: ``val`` is the split models are scored on. Images are 64x64; the few
greyscale ones are converted to RGB. Decoding runs on threads (Pillow releases the GIL).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import HybrezooError
from .arrays import ImageArrays
from .specs import dataset_spec

__all__ = ["TinyImageNetSource"]

_SIZE = 64


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise HybrezooError(f"{path} is not a readable image ({type(err).__name__}): the folder is damaged; unpack "
                            "the official tiny-imagenet-200.zip again") from None
    if array.shape != (_SIZE, _SIZE, 3):
        raise HybrezooError(f"{path} is {array.shape[1]}x{array.shape[0]}, not 64x64: "
                            "this is not the standard Tiny ImageNet; unpack the official archive again")
    return array


class TinyImageNetSource:
    """Reads one split of Tiny ImageNet into uint8 arrays (labels follow ``wnids.txt``)."""

    spec = dataset_spec("tinyimagenet")
    splits = ("train", "val")
    eval_split = "val"

    def __init__(self, root: Path) -> None:
        self.dir = root if root.name == self.spec.folder else root / self.spec.folder
        expected = ["wnids.txt", "train/<wnid>/images/*.JPEG", "val/images/*.JPEG", "val/val_annotations.txt"]
        problems = []
        if not (self.dir / "wnids.txt").is_file():
            problems.append("wnids.txt")
            self.wnids: list[str] = []
        else:
            self.wnids = [w.strip() for w in (self.dir / "wnids.txt").read_text().split() if w.strip()]
            absent = [w for w in self.wnids if not (self.dir / "train" / w / "images").is_dir()]
            if absent:
                problems.append(f"train/<wnid>/images for {len(absent)} of {len(self.wnids)} classes "
                                f"(e.g. {absent[0]})")
        for rel in ("val/images", "val/val_annotations.txt"):
            if not (self.dir / rel).exists():
                problems.append(rel)
        if problems:
            raise HybrezooError(
                f"Tiny ImageNet not found or incomplete in {self.dir} (missing: {'; '.join(problems)}): expected "
                f"{', '.join(expected)} from {self.spec.homepage} unpacked under the data root; point --data "
                "(or HYBREZOO_DATA) at the folder that holds tiny-imagenet-200/")
        if len(self.wnids) != self.spec.num_classes or len(set(self.wnids)) != len(self.wnids):
            raise HybrezooError(f"{self.dir / 'wnids.txt'} lists {len(self.wnids)} ids ({len(set(self.wnids))} "
                                f"distinct), Tiny ImageNet has {self.spec.num_classes}: unpack the archive again")

    def listing(self, split: str) -> tuple[list[Path], list[int]]:
        """Image files of a split and their labels (indices into ``wnids.txt``), without decoding."""
        index = {w: i for i, w in enumerate(self.wnids)}
        if split == "train":
            files, labels = [], []
            for wnid in self.wnids:
                folder = self.dir / "train" / wnid / "images"
                names = sorted(n for n in os.listdir(folder) if n.endswith(".JPEG"))
                files += [folder / n for n in names]
                labels += [index[wnid]] * len(names)
            return files, labels
        if split == "val":
            files, labels = [], []
            for line in (self.dir / "val" / "val_annotations.txt").read_text().splitlines():
                parts = line.split("\t")
                if len(parts) < 2:
                    continue
                if parts[1] not in index:
                    raise HybrezooError(f"val/val_annotations.txt names class {parts[1]!r}, which is not in "
                                        "wnids.txt: the folder mixes two versions of the data set")
                files.append(self.dir / "val" / "images" / parts[0])
                labels.append(index[parts[1]])
            return files, labels
        raise ValueError(f"Tiny ImageNet has splits {self.splits}, not {split!r}")

    def source_files(self, split: str) -> list[Path]:
        files, _ = self.listing(split)
        extra = [self.dir / "val" / "val_annotations.txt"] if split == "val" else []
        return [self.dir / "wnids.txt", *extra, *files]

    def _descriptions(self) -> dict[str, str]:
        words = self.dir / "words.txt"
        if not words.is_file():
            return {}
        wanted = set(self.wnids)
        out = {}
        for line in words.read_text().splitlines():
            wnid, _, text = line.partition("\t")
            if wnid in wanted:
                out[wnid] = text.strip()
        return out

    def read(self, split: str, workers: int = 0) -> ImageArrays:
        files, labels = self.listing(split)
        if not files:
            raise HybrezooError(f"no {split} images found under {self.dir}: unpack the full archive")
        missing = next((f for f in files if not f.is_file()), None)
        if missing is not None:
            raise HybrezooError(f"{missing} is listed but absent: unpack the full Tiny ImageNet archive again")
        images = np.empty((len(files), _SIZE, _SIZE, 3), np.uint8)
        workers = workers or min(8, (os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(workers) as pool:
            for i, array in enumerate(pool.map(_decode, files, chunksize=256)):
                images[i] = array
        return ImageArrays(images, np.asarray(labels, np.int64), list(self.wnids), self._descriptions())
