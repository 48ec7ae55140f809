"""What the zoo needs to know about each data set before any data is loaded.

These facts feed the models' pretrained configs (input size, classes, normalisation) and the
loaders; they are the single place where a data set's tag (``.c100``, ``.tin``) is defined.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetSpec", "DATASETS", "dataset_spec", "dataset_for_tag"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str                      # the name used by APIs and the CLI ("cifar100")
    tag: str                       # timm pretrained tag ("c100")
    title: str                     # human-readable name
    input_size: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    folder: str                    # folder expected under the data root
    homepage: str                  # where users get the data (never fetched without --download)
    hf_dataset: str                # Hugging Face dataset id, for model cards
    train_images: int              # size of the official training split
    eval_images: int               # size of the official split models are scored on (test / val)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="cifar100", tag="c100", title="CIFAR-100",
            input_size=(3, 32, 32), num_classes=100,
            # Per-channel statistics of the 50,000 CIFAR-100 training images (the values used by
            # the SNL, SENet and DeepReDuce code releases).
            mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
            folder="cifar-100-python",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            hf_dataset="uoft-cs/cifar100",
            train_images=50_000, eval_images=10_000,
        ),
        DatasetSpec(
            name="tinyimagenet", tag="tin", title="Tiny ImageNet",
            input_size=(3, 64, 64), num_classes=200,
            # Per-channel statistics of the 100,000 Tiny ImageNet training images.
            mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821),
            folder="tiny-imagenet-200",
            homepage="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            hf_dataset="zh-plus/tiny-imagenet",
            train_images=100_000, eval_images=10_000,
        ),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a data set by name ("cifar100", "tinyimagenet") or tag ("c100", "tin")."""
    for spec in DATASETS.values():
        if name in (spec.name, spec.tag):
            return spec
    known = ", ".join(f"{s.name} ({s.tag})" for s in DATASETS.values())
    raise ValueError(f"unknown data set {name!r}: use one of {known}")


def dataset_for_tag(tag: str) -> DatasetSpec:
    return dataset_spec(tag)
