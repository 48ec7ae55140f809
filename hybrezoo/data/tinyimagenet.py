"""Tiny ImageNet from its standard folder (``tiny-imagenet-200/``), classes in ``wnids.txt`` order.

Layout (http://cs231n.stanford.edu/tiny-imagenet-200.zip): ``wnids.txt`` (200 WordNet ids, the
class order), ``words.txt`` (id -> names), ``train/<wnid>/images/*.JPEG`` (500 a class) and
``val/images/*.JPEG`` with ``val/val_annotations.txt`` (file, wnid, box). The unlabelled ``test``
folder is not used: ``val`` is the split models are scored on. Images are 64x64; the few
greyscale ones are converted to RGB.

Decoding runs on every core in worker processes (``fork`` on Linux): a 64x64 JPEG spends most of its
time in Pillow's Python code (header parsing, mode conversion), which holds the GIL, so threads gave no
speed-up. Each worker decodes a contiguous chunk of the file list with the same :func:`_decode`; the
chunks are put back in order, so the arrays are identical to a serial decode. ``HYBREZOO_DECODE_WORKERS``
sets the number of processes (1 = serial, in this process).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import HybrezooError
from .arrays import ImageArrays
from .specs import dataset_spec

__all__ = ["TinyImageNetSource", "decode_files", "decode_workers"]

_SIZE = 64


# Modes whose conversion to 8-bit RGB is exact (alpha, if any, is dropped as every image loader does).
# Anything else (16-bit "I;16", 32-bit "I", float "F") would be clipped to 255 by Image.convert, a
# silently wrong image: such a file is refused. Tiny ImageNet holds 8-bit RGB and greyscale JPEGs only.
_EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}


def _damaged(path: Path, what: str) -> HybrezooError:
    return HybrezooError(f"{path} {what}: this is not the standard Tiny ImageNet (64x64 8-bit RGB JPEGs); "
                         "replace the file or unpack the official tiny-imagenet-200.zip again")


def _decode(path: Path) -> np.ndarray:
    """One image as (64, 64, 3) uint8; a file that is not a 64x64 8-bit image is one line naming it.

    The size is checked from the header, before any pixel is decoded, so a decompression bomb (a small
    file that claims an enormous image) is refused without the memory it asks for."""
    try:
        with Image.open(path) as img:
            if img.size != (_SIZE, _SIZE):
                raise _damaged(path, f"is {img.size[0]}x{img.size[1]}, not {_SIZE}x{_SIZE}")
            if img.mode not in _EIGHT_BIT_MODES:
                depth = "16-bit" if img.mode.startswith("I;16") else f"{img.mode!r}-mode"
                raise _damaged(path, f"is a {depth} image (mode {img.mode}), which 8-bit RGB cannot hold without "
                                     "clipping")
            array = np.asarray(img.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _damaged(path, f"claims an image too large to decode safely, a decompression bomb ({err})") from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise HybrezooError(f"{path} is not a readable image ({type(err).__name__}): the folder is damaged; unpack "
                            "the official tiny-imagenet-200.zip again") from None
    if array.shape != (_SIZE, _SIZE, 3):
        raise _damaged(path, f"decodes to shape {array.shape}, not ({_SIZE}, {_SIZE}, 3)")
    return array


def _decode_chunk(paths: Sequence[str]) -> np.ndarray:
    """Decode consecutive files into one (n, 64, 64, 3) array (runs in a worker process)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        out = np.empty((len(paths), _SIZE, _SIZE, 3), np.uint8)
        for i, path in enumerate(paths):
            out[i] = _decode(Path(path))
    return out


def decode_workers(requested: int = 0) -> int:
    """Processes for decoding: ``requested``, else ``$HYBREZOO_DECODE_WORKERS``, else the usable cores."""
    if requested:
        return max(1, int(requested))
    env = os.environ.get("HYBREZOO_DECODE_WORKERS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise HybrezooError(f"HYBREZOO_DECODE_WORKERS={env!r} is not a whole number: set it to the number of "
                                "decoding processes (1 = serial)") from None
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_POOL_MIN_FILES = 4096


def decode_files(files: Sequence[Path], workers: int = 0, chunk: int = 0) -> np.ndarray:
    """``(len(files), 64, 64, 3)`` uint8: every file through :func:`_decode`, on ``workers`` processes.

    The result does not depend on the number of workers (chunks are consecutive and reassembled in order);
    a damaged file is one :class:`HybrezooError` naming it, whichever process met it."""
    if workers == 0 and len(files) < _POOL_MIN_FILES:
        workers = 1  # starting the pool costs more than decoding a few thousand 64x64 files
    workers = min(decode_workers(workers), max(1, len(files)))
    if workers == 1 or sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return _decode_chunk([str(f) for f in files]) if files else np.empty((0, _SIZE, _SIZE, 3), np.uint8)
    chunk = chunk or max(64, min(2048, -(-len(files) // (workers * 8))))
    parts = [[str(f) for f in files[i:i + chunk]] for i in range(0, len(files), chunk)]
    images = np.empty((len(files), _SIZE, _SIZE, 3), np.uint8)
    # fork: the workers start at once and need nothing but Pillow and NumPy (no CUDA, no torch threads);
    # Python >= 3.12 warns about forking a threaded process, which is safe for this work.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*",
                                category=DeprecationWarning)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        try:
            start = 0
            for array in pool.map(_decode_chunk, parts):
                images[start:start + len(array)] = array
                start += len(array)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return images


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
                if not names:  # a class the model could never learn, scored as if it had been taught
                    raise HybrezooError(f"{folder} holds no .JPEG images: class {wnid} has no training images; "
                                        "unpack the official tiny-imagenet-200.zip again")
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
        # PIL only warns (DecompressionBombWarning) up to twice its pixel limit: _decode_chunk makes that an
        # error in whichever process decodes, so _decode refuses the file.
        images = decode_files(files, workers)
        return ImageArrays(images, np.asarray(labels, np.int64), list(self.wnids), self._descriptions())
