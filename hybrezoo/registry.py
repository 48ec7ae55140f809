"""The zoo's metadata: one entry per registered ``name.tag``, the single source for timm's pretrained
configs, ``list_models``, ``model_info``, the README table and the model cards.

timm's ``PretrainedCfg`` has no room for a method, a published ReLU count or a recipe, so each family
module declares :class:`ZooEntry` objects and turns them into its ``default_cfgs`` with
:func:`zoo_cfgs`; timm sees ordinary configs, the zoo keeps the rest here.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, Optional

from timm.models import generate_default_cfgs

from .data.specs import DatasetSpec, dataset_spec
from .errors import UnknownModelError
from .hub.manifest import registry_fields

__all__ = [
    "METHODS", "PAPERS", "Paper", "ZooEntry", "zoo_entry", "zoo_cfgs", "get_entry", "entries",
    "list_models", "model_info", "resolve_name",
]

METHODS = ("baseline", "deepreduce", "deepreshape", "snl", "senet", "circa")


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    authors: str
    venue: str
    arxiv: str

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"

    def cite(self) -> str:
        return f"{self.authors}, \"{self.title}\", {self.venue}, arXiv:{self.arxiv}"


PAPERS: dict[str, Paper] = {p.key: p for p in (
    Paper("resnet", "Deep Residual Learning for Image Recognition",
          "He, Zhang, Ren, Sun", "CVPR 2016", "1512.03385"),
    Paper("wrn", "Wide Residual Networks", "Zagoruyko, Komodakis", "BMVC 2016", "1605.07146"),
    Paper("deepreduce", "DeepReDuce: ReLU Reduction for Fast Private Inference",
          "Jha, Ghodsi, Garg, Reagen", "ICML 2021", "2103.01396"),
    Paper("deepreshape", "DeepReShape: Redesigning Neural Networks for Efficient Private Inference",
          "Jha, Reagen", "TMLR 2024", "2304.10593"),
    Paper("snl", "Selective Network Linearization for Efficient Private Inference",
          "Cho, Joshi, Reagen, Garg, Hegde", "ICML 2022", "2202.02340"),
    Paper("senet", "Learning to Linearize Deep Neural Networks for Secure and Efficient Private Inference",
          "Kundu, Lu, Zhang, Liu, Beerel", "ICLR 2023", "2301.09254"),
    Paper("circa", "Circa: Stochastic ReLUs for Private Deep Learning",
          "Ghodsi, Jha, Reagen, Garg", "NeurIPS 2021", "2106.08475"),
)}


@dataclass(frozen=True)
class ZooEntry:
    """Everything the zoo states about one ``name.tag``: what it is, where its numbers come from."""

    arch: str                                # timm model name (entry point)
    tag: str                                 # data set tag: "c100" or "tin"
    method: str                              # one of METHODS
    paper: str                               # key into PAPERS
    relu_convention: str                     # how ReLUs are counted, e.g. "stem ReLU kept"
    reduction: int = 8                       # total stride of the feature extractor
    published_relus: Optional[int] = None    # the count the paper (or its code) states
    published_top1: Optional[float] = None   # the paper's top-1, where one exists
    published_source: str = ""               # where the published figures come from, how sure
    relu_budget: Optional[int] = None        # masks trained for this budget come with the weights (SNL, SENet)
    description: str = ""
    published: bool = False                  # in the manifest (hybrezoo/hub/manifest.json)
    hf_hub_id: Optional[str] = None          # ORG/NAME@commit once pushed to the Hugging Face hub
    weights_file: Optional[str] = None       # the repository's copy, weights/<name>/model.safetensors, if present
    measured_top1: Optional[float] = None    # what `hybrezoo eval` printed for the published weights

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def dataset(self) -> DatasetSpec:
        return dataset_spec(self.tag)

    @property
    def recipe(self) -> str:
        """Path (relative to the repository root) of the recipe that regenerates this checkpoint."""
        return f"training/{self.method}/{self.name}.yaml"

    @property
    def has_weights(self) -> bool:
        return self.published

    def pretrained_cfg(self) -> dict[str, Any]:
        spec = self.dataset
        paper = PAPERS[self.paper]
        pool = spec.input_size[1] // self.reduction
        return dict(
            hf_hub_id=self.hf_hub_id, file=self.weights_file,
            num_classes=spec.num_classes, input_size=spec.input_size, pool_size=(pool, pool),
            fixed_input_size=False, crop_pct=1.0, crop_mode="center", interpolation="bilinear",
            mean=spec.mean, std=spec.std, first_conv="conv1", classifier="fc",
            license="apache-2.0", paper_name=paper.title, paper_ids=f"arXiv:{paper.arxiv}",
            description=self.description or None,
        )


_ENTRIES: dict[str, ZooEntry] = {}


def zoo_entry(method: str, paper: str, relu_convention: str, **kwargs: Any) -> ZooEntry:
    """A draft entry; :func:`zoo_cfgs` fills in its name and tag from the table key."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    return ZooEntry(arch="", tag="", method=method, paper=paper, relu_convention=relu_convention, **kwargs)


def zoo_cfgs(table: dict[str, ZooEntry]) -> dict[str, Any]:
    """Record a family's entries and return the matching timm ``default_cfgs``."""
    cfgs = {}
    for key, draft in table.items():
        arch, _, tag = key.partition(".")
        dataset_spec(tag)  # fails early on a tag that is not a data set
        entry = replace(draft, arch=arch, tag=tag)
        entry = replace(entry, **registry_fields(entry.name))  # published weights: hybrezoo/hub/manifest.json
        _ENTRIES[entry.name] = entry
        cfgs[entry.name] = entry.pretrained_cfg()
    return generate_default_cfgs(cfgs)


def entries() -> list[ZooEntry]:
    """All registered entries, sorted by name."""
    return [_ENTRIES[k] for k in sorted(_ENTRIES)]


def resolve_name(name: str) -> ZooEntry:
    """The entry for ``name.tag`` (or a bare ``name``: its first tag); unknown names get close matches."""
    if not isinstance(name, str):
        raise UnknownModelError(f"a model name must be a string such as 'pi_resnet18.c100', got {type(name).__name__}")
    if name in _ENTRIES:
        return _ENTRIES[name]
    tagged = sorted(k for k in _ENTRIES if k.split(".")[0] == name)
    if tagged:
        return _ENTRIES[tagged[0]]
    candidates = sorted(set(_ENTRIES) | {k.split(".")[0] for k in _ENTRIES})
    close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.5)
    hint = f"closest registered names: {', '.join(close)}" if close else "run `hybrezoo list` for all names"
    raise UnknownModelError(f"unknown model {name!r}; {hint}")


def get_entry(name: str) -> ZooEntry:
    return resolve_name(name)


def list_models(method: Optional[str] = None, dataset: Optional[str] = None,
                pretrained: bool = False) -> list[str]:
    """timm names with tag (``arch.tag``), filtered by method, data set, and published weights."""
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    tag = dataset_spec(dataset).tag if dataset is not None else None
    return [e.name for e in entries()
            if (method is None or e.method == method)
            and (tag is None or e.tag == tag)
            and (not pretrained or e.has_weights)]


def model_info(name: str) -> dict[str, Any]:
    """What the zoo knows of one model: method, data set, paper, published ReLUs, recipe, weights."""
    entry = resolve_name(name)
    paper = PAPERS[entry.paper]
    return dict(
        name=entry.name, architecture=entry.arch, tag=entry.tag,
        method=entry.method, dataset=entry.dataset.name,
        input_size=entry.dataset.input_size, num_classes=entry.dataset.num_classes,
        paper=paper.cite(), paper_url=paper.url,
        relu_convention=entry.relu_convention, relu_budget=entry.relu_budget,
        published_relus=entry.published_relus, published_top1=entry.published_top1,
        published_source=entry.published_source or None,
        recipe=entry.recipe, pretrained=entry.has_weights, hf_hub_id=entry.hf_hub_id,
        weights_file=entry.weights_file, measured_top1=entry.measured_top1,
        description=entry.description or None,
    )
