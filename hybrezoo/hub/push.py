"""``hybrezoo push DIR --repo-id ORG/NAME``: upload a hub folder with huggingface_hub, then record it.

The folder is read and checked exactly as the export checked it (:func:`read_release`), its card is
rendered again with the repository id (so the card shows how to load it from there), and the files
in :data:`HUB_FILES` are uploaded in one commit. The commit id, the sha256 of the weights and the
card's figures then go into the manifest, which makes ``timm.create_model("<name>", pretrained=True)``
resolve to exactly that commit. ``--dry-run`` lists what would be uploaded and touches nothing.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import HybrezooError
from .card import hub_url, render_card
from .export import EVAL_FILE, HUB_FILES, read_release
from .manifest import Release, published, record_release

PUSHED_FILES = (*HUB_FILES, EVAL_FILE)

__all__ = ["PushPlan", "plan_push", "push_folder"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PushPlan:
    folder: Path
    repo_id: str
    release: Release                     # revision set once pushed
    card: str                            # README.md as it will be uploaded
    files: tuple[tuple[str, int], ...]   # (name, bytes) of every file uploaded
    manifest: Optional[Path] = None      # where the release was recorded

    @property
    def url(self) -> str:
        return hub_url(self.repo_id)


def plan_push(folder: Union[str, os.PathLike], repo_id: str) -> PushPlan:
    """Check the folder and say what a push would upload; writes nothing."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise HybrezooError(f"--repo-id {repo_id!r} is not ORG/NAME (letters, digits, '-', '_', '.'), "
                            "e.g. my-org/pi_resnet18.c100")
    folder = Path(folder)
    release = read_release(folder, repo_id=repo_id)
    if release.evaluation is None:
        raise HybrezooError(f"{folder} has no {EVAL_FILE}, so its card has no accuracy measured on these weights: "
                            f"publish the run first (`hybrezoo publish RUN_DIR --data PATH`) and push "
                            f"weights/{release.name}, or export it with --data PATH")
    known = published(release.name)
    card = render_card(release, in_zoo=known is not None and known.sha256 == release.sha256)
    sizes = [(name, len(card.encode()) if name == "README.md" else (folder / name).stat().st_size)
             for name in PUSHED_FILES]
    return PushPlan(folder=folder, repo_id=repo_id, release=release, card=card, files=tuple(sizes))


def _network_errors() -> tuple[type[BaseException], ...]:
    """huggingface_hub's HTTP errors and the transport errors of the HTTP client it uses."""
    from huggingface_hub.utils import HfHubHTTPError

    found: list[type[BaseException]] = [HfHubHTTPError, OSError]
    # the HTTP client's own base error (httpx's transport errors are not OSErrors; requests' are)
    found += [base for base in HfHubHTTPError.__mro__[1:] if base.__name__ == "HTTPError"]
    return tuple(found)


def push_folder(folder: Union[str, os.PathLike], repo_id: str, *, private: bool = False,
                message: Optional[str] = None, record: bool = True,
                manifest: Optional[Union[str, os.PathLike]] = None, api: Any = None) -> PushPlan:
    """Upload ``folder`` to ``repo_id`` and record the release in the manifest (unless ``record=False``)."""
    from huggingface_hub import HfApi, get_token

    from .verify import hub_offline

    plan = plan_push(folder, repo_id)
    if hub_offline():
        raise HybrezooError("cannot push while HF_HUB_OFFLINE is set: unset it (use --dry-run to only list the files)")
    token = get_token()
    if api is None and not token:
        raise HybrezooError("no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token that may write "
                            f"to {repo_id.split('/')[0]} (use --dry-run to only list the files)")
    api = api or HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        readme = plan.folder / "README.md"
        if not readme.is_file() or readme.read_text() != plan.card:
            from ..engine.checkpoint import atomic_write_text

            atomic_write_text(readme, plan.card)  # the card now names the repository it lives in
        commit = api.upload_folder(folder_path=str(plan.folder), repo_id=repo_id, allow_patterns=list(PUSHED_FILES),
                                   commit_message=message or f"{plan.release.name}: weights, config and model card "
                                                             "(hybrezoo push)")
    except _network_errors() as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise HybrezooError(f"push to {repo_id} failed ({type(err).__name__}: {first}): check the network and that "
                            "your token may write there") from None
    release = replace(plan.release, revision=commit.oid)
    written = record_release(release, manifest) if record else None
    return replace(plan, release=release, manifest=written)
