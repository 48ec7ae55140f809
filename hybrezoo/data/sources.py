"""Where data sets come from: the data root, the reader of each data set, and cached loading."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from ..errors import HybrezooError
from .arrays import ImageArrays
from .cache import cached
from .cifar import Cifar100Source, download_cifar100
from .specs import dataset_spec
from .tinyimagenet import TinyImageNetSource

__all__ = ["SOURCES", "data_root", "open_source", "load_split", "eval_split"]

SOURCES = {"cifar100": Cifar100Source, "tinyimagenet": TinyImageNetSource}
PathLike = Union[str, os.PathLike]


def data_root(path: Optional[PathLike] = None) -> Path:
    """The data root: ``path`` (``--data``), else ``$HYBREZOO_DATA``; a clear error when neither is set."""
    chosen = path if path not in (None, "") else os.environ.get("HYBREZOO_DATA")
    if not chosen:
        raise HybrezooError("no data folder given: pass --data PATH (the folder holding cifar-100-python/ or "
                            "tiny-imagenet-200/) or set HYBREZOO_DATA")
    root = Path(chosen).expanduser()
    if not root.is_dir():
        raise HybrezooError(f"data folder {root} does not exist: pass --data PATH (the folder holding "
                            "cifar-100-python/ or tiny-imagenet-200/) or set HYBREZOO_DATA")
    return root


def open_source(dataset: str, root: Optional[PathLike] = None, download: bool = False):
    """The reader of ``dataset`` under the data root; ``download`` fetches CIFAR-100 first if absent."""
    spec = dataset_spec(dataset)
    if download:
        if spec.name != "cifar100":
            raise HybrezooError(f"--download is only available for CIFAR-100; get {spec.title} from {spec.homepage}")
        chosen = root if root not in (None, "") else os.environ.get("HYBREZOO_DATA")
        if not chosen:
            raise HybrezooError("--download needs a folder to download into: pass --data PATH or set HYBREZOO_DATA")
        base = Path(chosen).expanduser()
        if not (base / spec.folder / "meta").is_file():
            download_cifar100(base)
        root = base
    return SOURCES[spec.name](data_root(root))


def eval_split(dataset: str) -> str:
    """The split a data set's models are scored on: CIFAR-100 ``test``, Tiny ImageNet ``val``."""
    return SOURCES[dataset_spec(dataset).name].eval_split


def load_split(dataset: str, split: str, root: Optional[PathLike] = None, *, cache_dir: Optional[PathLike] = None,
               use_cache: bool = True, download: bool = False) -> ImageArrays:
    """One split as uint8 arrays, decoded once and cached on disk (see :mod:`hybrezoo.data.cache`)."""
    source = open_source(dataset, root, download=download)
    if split not in source.splits:
        raise ValueError(f"{source.spec.title} has splits {', '.join(source.splits)}, not {split!r}")
    if not use_cache:
        return source.read(split)
    data, _, _ = cached(source.spec.name, split, source.source_files(split), lambda: source.read(split),
                        Path(cache_dir) if cache_dir is not None else None)
    return data
