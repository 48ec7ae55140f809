"""The manifest: the one list of published checkpoints, shipped with the package.

``hybrezoo/hub/manifest.json`` maps ``arch.tag`` to a :class:`Release`: the sha256 of its
``model.safetensors``, what ``hybrezoo eval`` printed for it, everything its model card states (the
run's ``metrics.json``, its resolved recipe and its ``pi_cost`` figures) and, once pushed, where it
lives on the Hugging Face hub (repository and pinned commit). The files themselves are in the
repository, one folder per release in the hub's layout: ``weights/<arch.tag>/`` (:func:`local_folder`;
beside the manifest file for any manifest other than the shipped one).
The registry reads the manifest at import, so a published entry gets its weights in timm's pretrained
config; the loader checks every copy (hub or local) against the sha256 here; the model cards and the
README zoo table are rendered from it. ``hybrezoo publish`` and ``hybrezoo push`` write it.

This module imports nothing from the rest of the package, because the registry imports it.
``HYBREZOO_MANIFEST=FILE`` uses another manifest (to try a release before committing it, or a mirror).
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import HybrezooError

__all__ = [
    "FORMAT", "WEIGHTS_FILE", "SHA256_FILE", "WEIGHTS_ROOT", "WEIGHT_DTYPES", "ManifestError", "Release", "Manifest", "manifest_path",
    "load_manifest", "published", "registry_fields", "record_release", "split_hub_ref", "local_folder", "weights_root",
]

FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
SHA256_FILE = "model.safetensors.sha256"   # ``sha256sum`` format, beside the weights in every folder we write
SHIPPED = Path(__file__).with_name("manifest.json")
# Published weights in the repository: <checkout>/weights/<arch.tag>/ (absent from an installed wheel).
WEIGHTS_ROOT = Path(__file__).resolve().parents[2] / "weights"

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# how a published model.safetensors may store its floating tensors (``hybrezoo publish --dtype``)
WEIGHT_DTYPES = ("float32", "float16")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[\w-]+\.[\w-]+$")


class ManifestError(HybrezooError):
    """The manifest file is unreadable or an entry is malformed."""


@dataclass(frozen=True)
class Release:
    """One published checkpoint: where it is, what its file hashes to, and what its card states."""

    name: str                          # zoo name with tag, e.g. "pi_resnet18.c100"
    sha256: str                        # of model.safetensors
    size_bytes: int
    metrics: dict[str, Any]            # the run's metrics.json, unchanged
    recipe_yaml: str                   # the run's resolved recipe.yaml
    cost: dict[str, Any]               # hybrezoo.hub.costs.cost_summary() of the exported weights
    evaluation: Optional[dict[str, Any]] = None  # what `hybrezoo eval` printed for these weights (eval.json)
    hf_hub_id: Optional[str] = None    # "org/name" once pushed
    revision: Optional[str] = None     # the hub commit that holds exactly these files
    weights_dtype: str = "float32"     # how model.safetensors stores its floating tensors (export --dtype)

    @property
    def top1(self) -> float:
        """The top-1 the card states: our eval of the published file, else the run's own last evaluation."""
        return float((self.evaluation or self.metrics)["top1"])

    @property
    def top5(self) -> float:
        return float((self.evaluation or self.metrics)["top5"])

    @property
    def hub_ref(self) -> Optional[str]:
        """timm's ``hf_hub_id`` form: ``org/name@commit`` when the commit is pinned."""
        if self.hf_hub_id is None:
            return None
        return f"{self.hf_hub_id}@{self.revision}" if self.revision else self.hf_hub_id

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("name")
        return out

    @classmethod
    def from_json(cls, name: str, data: Any, where: str = "manifest") -> "Release":
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: entry {name!r} must be a JSON object")
        known = {"sha256", "size_bytes", "metrics", "recipe_yaml", "cost", "evaluation", "hf_hub_id", "revision",
                 "weights_dtype"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ManifestError(f"{where}: entry {name!r} has unknown keys {', '.join(unknown)}")
        missing = sorted({"sha256", "size_bytes", "metrics", "recipe_yaml", "cost", "evaluation"} - set(data))
        if missing:
            raise ManifestError(f"{where}: entry {name!r} lacks {', '.join(missing)}")
        release = cls(name=name, **data)
        release.validate(where, published=True)
        return release

    def validate(self, where: str = "manifest", published: bool = False) -> None:
        """Reject entries that would publish something unverifiable or unloadable; a ``published`` release
        (one in the manifest) must also carry the evaluation its card states."""
        def bad(what: str) -> ManifestError:
            return ManifestError(f"{where}: entry {self.name!r}: {what}")

        if not _NAME.match(self.name):
            raise bad("the key must be a zoo name with its tag, e.g. pi_resnet18.c100")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise bad("sha256 must be 64 lowercase hex digits")
        if not isinstance(self.size_bytes, int) or self.size_bytes <= 0:
            raise bad("size_bytes must be a positive integer")
        if self.hf_hub_id is not None and (not isinstance(self.hf_hub_id, str) or not _REPO_ID.match(self.hf_hub_id)):
            raise bad(f"hf_hub_id {self.hf_hub_id!r} is not ORG/NAME")
        if self.revision is not None and (not isinstance(self.revision, str) or not _COMMIT.match(self.revision)):
            raise bad("revision must be a 40-hex-digit commit id")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise bad(f"weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}, not {self.weights_dtype!r}")
        if not isinstance(self.metrics, dict) or self.metrics.get("model") != self.name:
            raise bad("metrics must be the run's metrics.json, whose 'model' is the entry's name")
        for key in ("top1", "top5"):
            if not isinstance(self.metrics.get(key), (int, float)):
                raise bad(f"metrics.{key} must be a number")
        if not isinstance(self.recipe_yaml, str) or not isinstance(self.cost, dict):
            raise bad("recipe_yaml must be text and cost an object")
        if self.evaluation is None:
            if published:
                raise bad("evaluation is missing: publish with `hybrezoo publish RUN_DIR --data PATH`, which "
                          "evaluates the weights")
            return
        ev = self.evaluation
        if not isinstance(ev, dict) or ev.get("model") != self.name:
            raise bad("evaluation must be the eval.json of these weights, whose 'model' is the entry's name")
        for key in ("top1", "top5"):
            if not isinstance(ev.get(key), (int, float)):
                raise bad(f"evaluation.{key} must be a number")
        if not isinstance(ev.get("images"), int) or ev["images"] <= 0 or not isinstance(ev.get("split"), str):
            raise bad("evaluation must name its split and a positive image count")
        if ev.get("weights_sha256") != self.sha256:
            raise bad("evaluation.weights_sha256 differs from sha256: the evaluation was made on other weights")


@dataclass(frozen=True)
class Manifest:
    path: Path
    releases: dict[str, Release]

    def get(self, name: str) -> Optional[Release]:
        return self.releases.get(name)


def manifest_path() -> Path:
    """``$HYBREZOO_MANIFEST`` when set, else the manifest shipped in the package."""
    override = os.environ.get("HYBREZOO_MANIFEST")
    return Path(override).expanduser() if override else SHIPPED


_CACHE: dict[tuple[str, int, int], Manifest] = {}


def load_manifest(path: Optional[Union[str, os.PathLike]] = None) -> Manifest:
    """The manifest at ``path`` (default :func:`manifest_path`), read once per file version."""
    path = Path(path) if path is not None else manifest_path()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} not found: unset HYBREZOO_MANIFEST or point it at a manifest "
                            "JSON file") from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _read(path)
    return _CACHE[key]


def _read(path: Path) -> Manifest:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ManifestError(f"manifest {path} is not readable JSON ({err}): restore it from the repository") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("models"), dict):
        raise ManifestError(f"manifest {path} is not a hybrezoo manifest (format {FORMAT} with a 'models' object)")
    releases = {name: Release.from_json(name, entry, where=f"manifest {path}")
                for name, entry in data["models"].items()}
    return Manifest(path=path, releases=releases)


def published(name: str) -> Optional[Release]:
    """The release of ``arch.tag`` in the manifest in use, or None."""
    return load_manifest().get(name)


def weights_root(manifest: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Where the published folders of a manifest live: the checkout's ``weights/`` for the shipped
    manifest, ``<folder of FILE>/weights/`` for any other (a mirror or a trial release is a folder
    holding ``manifest.json`` and ``weights/``)."""
    path = Path(manifest) if manifest is not None else manifest_path()
    return WEIGHTS_ROOT if path.resolve() == SHIPPED.resolve() else path.parent / "weights"


def local_folder(name: str, manifest: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The published folder of ``arch.tag`` (it may be absent: an installed wheel ships no weights)."""
    return weights_root(manifest) / name


_WARNED: set[str] = set()


def registry_fields(name: str) -> dict[str, Any]:
    """What the registry takes from the manifest for one entry (empty when nothing is published).

    A broken manifest must not break every command (``hybrezoo list`` needs no weights): it is
    reported once as a warning here, and again as the error of any load that needs it."""
    try:
        release = published(name)
    except ManifestError as err:
        if str(err) not in _WARNED:
            _WARNED.add(str(err))
            # one line (no source line: this is the user's file, not the package's code)
            warnings.warn_explicit(f"{err}; no published weights are available until it is fixed", UserWarning,
                                   filename="hybrezoo", lineno=0)
        return {}
    if release is None:
        return {}
    local = local_folder(name) / WEIGHTS_FILE
    return {"published": True, "hf_hub_id": release.hub_ref,
            "weights_file": str(local) if local.is_file() else None, "measured_top1": release.top1}


def split_hub_ref(ref: str) -> tuple[str, Optional[str]]:
    """``org/name@rev`` -> (``org/name``, ``rev``), timm's convention."""
    repo, _, rev = ref.partition("@")
    return repo, rev or None


def record_release(release: Release, path: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Add or replace ``release`` in the manifest file, atomically; returns the file written."""
    release.validate(published=True)
    path = Path(path) if path is not None else manifest_path()
    data: dict[str, Any] = {"format": FORMAT, "models": {}}
    if path.exists():
        _read(path)  # refuse to rewrite a manifest that is already broken
        data = json.loads(path.read_text())
    data["models"][release.name] = release.to_json()
    data["models"] = dict(sorted(data["models"].items()))
    from ..engine.checkpoint import atomic_write_json  # lazy: the engine imports the registry, which imports us

    atomic_write_json(path, data)
    _CACHE.clear()
    return path
