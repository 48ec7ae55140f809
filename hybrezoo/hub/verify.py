"""Weights are checked before timm reads them, and a bad file fails with one line.

:func:`checked_pretrained_load` wraps timm's loading in ``build_zoo_model``, so every way of asking
for weights (a zoo name, ``hf-hub:``, ``local-dir:``, ``pretrained_cfg_overlay=dict(file=...)``,
``torch.hub.load``) passes the same checks before timm's own loader runs:

- the file timm is about to read is located (for the hub: fetched into, or found in, the Hugging
  Face cache with ``hf_hub_download``, exactly as timm fetches it);
- its sha256 is compared with the manifest's when the weights are the manifest's release, else with
  the ``model.safetensors.sha256`` file beside it (every run, export and published folder has one),
  else, for a hub download, with the name of the cache blob: huggingface_hub names an LFS file's blob after
  its ETag, which for LFS files is the sha256 of the content (``huggingface_hub/file_download.py``:
  "An object's ETag is: its git-sha1 if stored in git, or its sha256 if stored in git-lfs", and its
  ``REGEX_SHA256`` cache check);
- a safetensors file's header is parsed and must cover the file (``safetensors.safe_open``), which
  catches truncation even without a hash;
- errors raised while timm reads or applies the state dict become one :class:`WeightsError` line.

:func:`release_weights` picks the copy of a published entry: the hub (pinned commit) when it is
reachable or cached, else the repository's ``weights/<name>/``; both are checked against the manifest.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

from ..errors import HybrezooError
from .manifest import WEIGHTS_FILE, local_folder, published, split_hub_ref

__all__ = ["WeightsError", "HubUnreachableError", "sha256_file", "write_sha256_file", "verify_weights_file",
           "hub_blob_sha256", "checked_pretrained_load", "hub_offline", "verified_hub_file", "release_weights"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class WeightsError(HybrezooError, RuntimeError):
    """A weights file that is missing, truncated, corrupt, or made for another architecture."""


class HubUnreachableError(WeightsError):
    """The hub cannot be reached and the file is not in the Hugging Face cache."""


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (HF_HUB_OFFLINE, read when it was imported)."""
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check()) if callable(check) else bool(constants.HF_HUB_OFFLINE)


def sha256_file(path: Union[str, os.PathLike], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sha256_file(weights: Union[str, os.PathLike]) -> str:
    """Write ``<weights>.sha256`` beside a weights file (``sha256sum -c`` reads it); returns the digest."""
    weights = Path(weights)
    digest = sha256_file(weights)
    from ..engine.checkpoint import atomic_write_text  # lazy: the engine imports the registry, which imports us

    atomic_write_text(weights.with_name(weights.name + ".sha256"), f"{digest}  {weights.name}\n")
    return digest


def _sidecar_sha256(path: Path) -> Optional[str]:
    """The digest in ``<path>.sha256`` (``sha256sum`` format), None without one."""
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return None
    fields = sidecar.read_text(errors="replace").split()
    if not fields or not _SHA256.match(fields[0].lower()) or (len(fields) > 1 and fields[1].lstrip("*") != path.name):
        raise WeightsError(f"{sidecar} is not a sha256 line for {path.name} (`<64 hex digits>  {path.name}`): "
                           f"restore it, or delete it to load {path.name} unchecked")
    return fields[0].lower()


def hub_blob_sha256(path: Union[str, os.PathLike]) -> Optional[str]:
    """The sha256 that a Hugging Face cache file must have: its blob's name, when that is an LFS sha256."""
    target = Path(os.path.realpath(path))
    if target.parent.name == "blobs" and _SHA256.match(target.name):
        return target.name
    return None


def verify_weights_file(path: Union[str, os.PathLike], expected_sha256: Optional[str] = None, *,
                        what: str = "weights", expected_from: str = "", fix: str = "") -> None:
    """Raise :class:`WeightsError` unless ``path`` exists, hashes to ``expected_sha256`` (when given,
    else to the digest of the ``.sha256`` file beside it, when there is one) and, for ``.safetensors``,
    has a complete header."""
    path = Path(path)
    fix = fix or "export or download the file again"
    if not path.is_file():
        raise WeightsError(f"{what}: {path} not found: {fix}")
    if expected_sha256 is None:
        expected_sha256 = _sidecar_sha256(path)
        expected_from = path.name + ".sha256" if expected_sha256 else expected_from
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256:
            source = f" (from {expected_from})" if expected_from else ""
            raise WeightsError(f"{what}: {path} is corrupt, truncated or replaced: its sha256 is {actual[:16]}..., "
                               f"expected {expected_sha256[:16]}...{source}; {fix}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except SafetensorError as err:
            raise WeightsError(f"{what}: {path} is not a complete safetensors file ({err}); {fix}") from None


@contextlib.contextmanager
def checked_pretrained_load(name: str, pretrained_cfg: Mapping[str, Any]) -> Iterator[None]:
    """Check the weights ``pretrained_cfg`` points at, then run the ``with`` body (timm's loading) and
    turn its read and fit errors into one :class:`WeightsError` line."""
    what = f"weights of {name}"
    source = _check_source(name, dict(pretrained_cfg), what)
    try:
        yield
    except WeightsError:
        raise
    except Exception as err:  # classified below; anything else propagates unchanged
        message = _load_error(err, what, source)
        if message is None:
            raise
        raise WeightsError(message) from None


def _check_source(name: str, cfg: dict[str, Any], what: str) -> str:
    """Locate and verify the file timm will read; returns a description of it for error messages."""
    from timm.models._builder import _resolve_pretrained_source

    load_from, location = _resolve_pretrained_source(cfg)
    if load_from == "file":
        if not Path(location).is_file():
            raise WeightsError(f"{what}: {location} not found: check the path given as "
                               "pretrained_cfg_overlay=dict(file=...)")
        verify_weights_file(location, what=what)
        return str(location)
    if load_from == "local-dir":
        folder = Path(location)
        if not folder.is_dir():
            raise WeightsError(f"{what}: {folder} is not a folder: give local-dir:DIR with DIR holding "
                               "config.json and model.safetensors")
        if (folder / WEIGHTS_FILE).is_file():
            verify_weights_file(folder / WEIGHTS_FILE, what=what, fix="export the run folder again")
            return str(folder / WEIGHTS_FILE)
        return str(folder)
    if load_from == "hf-hub":
        return _check_hub(name, location, what)
    return load_from or "nowhere"


def _check_hub(name: str, location: Any, what: str) -> str:
    ref, filename = location if isinstance(location, (tuple, list)) else (location, WEIGHTS_FILE)
    path = verified_hub_file(name, ref, filename, what)
    label = _hub_label(*split_hub_ref(ref))
    # no model.safetensors in the repository: timm falls back to pytorch_model.bin
    return label if path is None else f"{label} ({path})"


def _hub_label(repo_id: str, revision: Optional[str]) -> str:
    return f"{repo_id}{'@' + revision if revision else ''}"


def verified_hub_file(name: str, ref: str, filename: str = WEIGHTS_FILE, what: str = "") -> Optional[str]:
    """The cached path of ``filename`` in hub repository ``ref`` (``ORG/NAME[@REVISION]``), fetched if
    needed and allowed, after the checks above; None when the repository has no ``model.safetensors``
    (timm then reads ``pytorch_model.bin``). ``name`` is the zoo name the weights are for."""
    what = what or f"weights of {name}"
    repo_id, revision = split_hub_ref(ref)
    label = _hub_label(repo_id, revision)
    path = _fetch(name, repo_id, revision, filename, label)
    if path is None:
        return None
    release = published(name)
    expected, expected_from = None, ""
    if release is not None and release.hf_hub_id == repo_id and filename == WEIGHTS_FILE:
        expected, expected_from = release.sha256, "the hybrezoo manifest"
    else:
        expected, expected_from = hub_blob_sha256(path), "the hub's LFS sha256"
    real = os.path.realpath(path)
    verify_weights_file(path, expected, what=f"{what} ({label})", expected_from=expected_from,
                        fix=f"delete the cached copy ({real}) and load again to download it afresh")
    return path


def _fetch(name: str, repo_id: str, revision: Optional[str], filename: str, label: str) -> Optional[str]:
    """The cached path of ``filename`` (downloaded if needed and allowed), as timm will read it."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    try:
        return hf_hub_download(repo_id, filename, revision=revision)
    except RepositoryNotFoundError:
        raise WeightsError(f"weights of {name}: Hugging Face repository {repo_id} not found (a private repository "
                           "needs `hf auth login`)") from None
    except RevisionNotFoundError:
        raise WeightsError(f"weights of {name}: revision {revision} not found in {repo_id}") from None
    except LocalEntryNotFoundError:
        if filename == WEIGHTS_FILE and isinstance(try_to_load_from_cache(repo_id, "pytorch_model.bin",
                                                                          revision=revision), str):
            return None
        offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
        raise HubUnreachableError(f"weights of {name}: {label}/{filename} is not in the Hugging Face cache "
                           f"({constants.HF_HUB_CACHE}) and the hub cannot be reached{offline}: load it once with "
                           f"network access, or fetch it with `hf download {repo_id}`") from None
    except EntryNotFoundError:
        if filename == WEIGHTS_FILE:
            return None
        raise WeightsError(f"weights of {name}: {label} has no file {filename}") from None
    except HfHubHTTPError as err:
        raise HubUnreachableError(f"weights of {name}: downloading {label} failed ({_first_line(err)}): check the network, "
                           "or set HF_HUB_OFFLINE=1 to use the cache") from None


def release_weights(name: str) -> str:
    """The file of ``name``'s published weights, checked against the manifest's sha256: from the hub
    (its pinned commit, downloaded or cached) when the release was pushed and the hub answers, else
    the repository's own copy in ``weights/<name>/``."""
    release = published(name)
    if release is None:
        raise WeightsError(f"{name} is not in the hybrezoo manifest: `hybrezoo list --pretrained` lists the "
                           "published entries")
    hub_error: Optional[WeightsError] = None
    if release.hf_hub_id is not None:
        try:
            path = verified_hub_file(name, release.hub_ref)
            if path is not None:
                return path
            hub_error = WeightsError(f"weights of {name}: {release.hub_ref} holds no {WEIGHTS_FILE}")
        except WeightsError as err:
            hub_error = err
    local = local_folder(name) / WEIGHTS_FILE
    if local.is_file():
        verify_weights_file(local, release.sha256, what=f"weights of {name}", expected_from="the hybrezoo manifest",
                            fix=f"restore {local.parent.name}/ from the repository (`git checkout -- weights/{name}`)")
        if hub_error is not None and not isinstance(hub_error, HubUnreachableError):
            warnings.warn(f"{hub_error}; loading the repository's copy {local} instead", stacklevel=3)
        return str(local)
    if hub_error is not None:
        raise hub_error
    raise WeightsError(f"weights of {name} are published in the hybrezoo repository (weights/{name}/), which this "
                       f"installation does not hold: install hybrezoo from a clone (`pip install -e CHECKOUT`)")


def _load_error(err: Exception, what: str, source: str) -> Optional[str]:
    """One line for the errors timm's loader raises on a bad file or a foreign state dict."""
    from safetensors import SafetensorError

    text = str(err)
    if isinstance(err, SafetensorError):
        return f"{what}: {source} is not a complete safetensors file ({_first_line(err)}); export or download it again"
    if isinstance(err, (EOFError, pickle.UnpicklingError)) or (
            isinstance(err, RuntimeError) and ("PytorchStreamReader" in text or "zip archive" in text)):
        return f"{what}: {source} is truncated or corrupt ({type(err).__name__}: {_first_line(err)}); " \
               "export or download it again"
    if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in text:
        detail = next((line.strip() for line in text.splitlines()[1:] if line.strip()), _first_line(err))
        return f"{what} in {source} do not fit this architecture ({detail[:160]}): give weights trained for it"
    return None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__
