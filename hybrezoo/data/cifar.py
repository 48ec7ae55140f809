"""CIFAR-100 from its official "python version" folder (``cifar-100-python/{train,test,meta}``).

The files are Python pickles written by Python 2: ``data`` is (N, 3072) uint8 in channel-major
order (1024 red, 1024 green, 1024 blue values of a 32x32 image), ``fine_labels`` the 100-class
labels, and ``meta`` holds ``fine_label_names`` (see https://www.cs.toronto.edu/~kriz/cifar.html).
Nothing is downloaded unless the user asks (``--download``), and then through torchvision.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HybrezooError
from .arrays import ImageArrays
from .specs import dataset_spec

__all__ = ["Cifar100Source", "download_cifar100"]

_FILES = ("train", "test", "meta")


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles ``bytes`` under protocol 2 (``encode(text, "latin1")``)."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "iso88591") \
            or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is admitted for latin1 byte strings only")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, whichever module holds it
    return {
        **{(module, "_reconstruct"): reconstruct
           for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class _CifarUnpickler(pickle.Unpickler):
    """Reads the official CIFAR pickles and nothing that could run code.

    The files hold dicts, lists, strings, numbers and NumPy arrays; an array is rebuilt by
    ``numpy.core.multiarray._reconstruct(numpy.ndarray, shape, numpy.dtype)`` plus its raw bytes (files
    written by Python 3 under protocol 2 add ``_codecs.encode(text, "latin1")`` for those bytes). Every
    other global, e.g. ``os.system`` in a ``__reduce__`` payload, is refused before it is looked up."""

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-100 file never holds "
                                         "(it could run code)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it holds persistent references, which a CIFAR-100 file never holds")


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            # latin1 turns Python 2 byte strings into str (keys and label names) without touching arrays.
            raw = _CifarUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if "CIFAR-100 file never holds" in str(err) or "admitted for latin1" in str(err):
            raise HybrezooError(f"{path} was refused: {err}; unpack cifar-100-python.tar.gz from "
                                "https://www.cs.toronto.edu/~kriz/cifar.html again") from None
        raise HybrezooError(f"{path} is empty, truncated or not a CIFAR-100 python pickle (UnpicklingError): "
                            "unpack cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                            "again") from None
    except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError, MemoryError,
            OverflowError, RecursionError, UnicodeDecodeError) as err:
        raise HybrezooError(f"{path} is empty, truncated or not a CIFAR-100 python pickle ({type(err).__name__}): "
                            "unpack cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                            "again") from None
    if not isinstance(raw, dict):
        raise HybrezooError(f"{path} is not a CIFAR-100 python pickle (it holds a {type(raw).__name__}): unpack "
                            "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html again")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


class Cifar100Source:
    """Reads one split of CIFAR-100 into uint8 arrays; ``test`` is the split models are scored on."""

    spec = dataset_spec("cifar100")
    splits = ("train", "test")
    eval_split = "test"

    def __init__(self, root: Path) -> None:
        self.dir = root if root.name == self.spec.folder else root / self.spec.folder
        missing = [name for name in _FILES if not (self.dir / name).is_file()]
        if missing:
            raise HybrezooError(
                f"CIFAR-100 not found: expected {self.dir}/{{train,test,meta}} (missing: {', '.join(missing)}), "
                f"the official python version from {self.spec.homepage} unpacked under the data root; "
                "point --data (or HYBREZOO_DATA) at the folder that holds cifar-100-python/, or add --download")

    def source_files(self, split: str) -> list[Path]:
        return [self.dir / split, self.dir / "meta"]

    def read(self, split: str) -> ImageArrays:
        if split not in self.splits:
            raise ValueError(f"CIFAR-100 has splits {self.splits}, not {split!r}")
        batch = _read_pickle(self.dir / split)
        meta = _read_pickle(self.dir / "meta")
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            labels = np.asarray(batch["fine_labels"], dtype=np.int64)
            classes = [str(c.decode() if isinstance(c, bytes) else c) for c in meta["fine_label_names"]]
        except KeyError as err:
            raise HybrezooError(f"{self.dir / split} is not a CIFAR-100 python pickle (no {err.args[0]!r} entry): "
                                f"use the python version from {self.spec.homepage}") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(classes) != self.spec.num_classes:
            raise HybrezooError(f"{self.dir / split} does not hold 32x32 RGB images with 100 classes "
                                f"(data {data.shape}, {len(classes)} class names): use the official CIFAR-100 files")
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return ImageArrays(np.ascontiguousarray(images), labels, classes)


def download_cifar100(root: Path) -> None:
    """Fetch CIFAR-100 into ``root/cifar-100-python`` with torchvision (checksummed); only on --download."""
    from torchvision.datasets import CIFAR100

    import urllib.error

    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            CIFAR100(str(root), train=train, download=True)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise HybrezooError(f"downloading CIFAR-100 into {root} failed ({reason}): check the network, or fetch "
                            "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpack it "
                            f"in {root} and run without --download") from None
