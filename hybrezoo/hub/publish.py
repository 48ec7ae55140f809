"""``hybrezoo publish RUN_DIR --data PATH``: a finished run becomes a published zoo entry, offline.

One step from a run folder to ``timm.create_model(NAME, pretrained=True)`` on every clone:

1. export the run (every check of :func:`~hybrezoo.hub.export.read_release`: a real, complete run of a
   registered architecture whose weights reproduce its figures) into ``weights/<NAME>/``, the
   repository's copy in the Hugging Face hub layout, evaluating the copied weights on the real
   evaluation split as ``hybrezoo eval`` does (``eval.json``: the accuracy the card states);
2. record the release (sha256, evaluation, metrics, recipe, cost) in the manifest;
3. regenerate ``model_cards/`` and the README zoo table.

Commit ``weights/<NAME>/``, the manifest and the cards together. ``hybrezoo push weights/<NAME>
--repo-id ORG/NAME`` later adds the hub copy (then preferred when reachable) to the same release.
"""
from __future__ import annotations

import os
from typing import Optional, Union

from ..errors import HybrezooError
from .export import export_run, read_release
from .manifest import Release, load_manifest, local_folder, manifest_path, record_release

__all__ = ["publish_run"]

PathLike = Union[str, os.PathLike]


def publish_run(run_dir: PathLike, data: PathLike, *, device: str = "cpu", amp: str = "off",
                git_commit: Optional[str] = None, teacher_run: Optional[PathLike] = None, overwrite: bool = False,
                manifest: Optional[PathLike] = None, cards: bool = True, dtype: Optional[str] = None) -> Release:
    """Publish ``run_dir`` as its zoo entry (see the module docstring); returns the recorded release."""
    from .catalog import repository_root, write_catalog

    root = repository_root()  # publishing writes into a checkout, never into an installed copy
    first = read_release(run_dir, git_commit=git_commit, teacher_run=teacher_run)  # fail before writing anything
    # the manifest to extend (a broken one is refused here, before anything is written)
    previous = load_manifest(manifest if manifest is not None else manifest_path()).get(first.name)
    folder = local_folder(first.name, manifest)
    if previous is not None and not overwrite:
        raise HybrezooError(f"{first.name} is already published (weights/{first.name}/): add --overwrite to replace "
                            "its weights with this run's")
    export_run(run_dir, folder, overwrite=True, data=data, device=device, amp=amp, git_commit=git_commit,
               teacher_run=teacher_run, in_zoo=True, dtype=dtype)
    release = read_release(folder)
    if previous is not None and previous.sha256 == release.sha256:
        # the same weights again: keep where the hub holds them
        from dataclasses import replace

        release = replace(release, hf_hub_id=previous.hf_hub_id, revision=previous.revision)
        from ..engine.checkpoint import atomic_write_text
        from .card import render_card

        atomic_write_text(folder / "README.md", render_card(release, in_zoo=True))
    record_release(release, manifest)
    if cards and manifest is None:
        write_catalog(root)
    return release
