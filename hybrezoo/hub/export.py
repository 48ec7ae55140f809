"""``hybrezoo export RUN_DIR --out DIR``: a finished training run becomes a Hugging Face hub folder.

The run folder already holds timm's hub format (``model.safetensors`` + ``config.json``, written by
the engine with ``timm.models.save_for_hf``); the export copies them unchanged with the run's
``metrics.json``, ``recipe.yaml`` and ``log.jsonl``, and adds the model card (``README.md``). Before
anything is written the weights are loaded back through timm (``local-dir:``, masks included) and
priced with ``pi_cost``: the ReLUs, MACs and parameters must equal the run's own figures, so weights
that lost their masks on the way are caught here, not by a user.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import HybrezooError
from ..registry import resolve_name
from .card import render_card
from .costs import cost_summary
from .manifest import WEIGHTS_FILE, Release
from .verify import sha256_file

__all__ = ["HUB_FILES", "SOURCE_FILES", "read_release", "export_run"]

SOURCE_FILES = ("config.json", WEIGHTS_FILE, "metrics.json", "recipe.yaml", "log.jsonl")
HUB_FILES = (*SOURCE_FILES, "README.md")
_CHECKED = ("relus", "macs", "params")

PathLike = Union[str, os.PathLike]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HybrezooError(f"{path} is not readable JSON ({err}): give a folder written by `hybrezoo train`") from None
    if not isinstance(data, dict):
        raise HybrezooError(f"{path} does not hold a JSON object: give a folder written by `hybrezoo train`")
    return data


def read_release(folder: PathLike, repo_id: Optional[str] = None, revision: Optional[str] = None) -> Release:
    """What a finished run folder (or a hub folder made from one) publishes, checked against itself."""
    import timm

    folder = Path(folder)
    if not folder.is_dir():
        raise HybrezooError(f"{folder} is not a folder: give the run folder `hybrezoo train` wrote (its --out)")
    missing = [name for name in SOURCE_FILES if not (folder / name).is_file()]
    if missing:
        hint = ("the run has not finished: continue it with `hybrezoo train RECIPE --out "
                f"{folder} --resume`") if (folder / "checkpoint.pt").is_file() else "give a finished run folder"
        raise HybrezooError(f"{folder} lacks {', '.join(missing)}: {hint}")
    metrics = _read_json(folder / "metrics.json")
    config = _read_json(folder / "config.json")
    tag = (config.get("pretrained_cfg") or {}).get("tag")
    name = f"{config.get('architecture')}.{tag}"
    if metrics.get("model") != name:
        raise HybrezooError(f"{folder}: config.json describes {name} but metrics.json is for {metrics.get('model')}: "
                            "the folder mixes two runs; export the run folder as `hybrezoo train` left it")
    entry = resolve_name(name)
    if entry.name != name:
        raise HybrezooError(f"{folder} holds {name}, which is not a zoo entry: only registered models are published")
    for key in ("top1", "top5", *_CHECKED):
        if not isinstance(metrics.get(key), (int, float)):
            raise HybrezooError(f"{folder}/metrics.json has no number {key!r}: give a run folder written by "
                                "`hybrezoo train`")

    _check_is_the_registered_architecture(folder, name, config.get("model_args") or {})
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)  # verified, masks restored
    cost = cost_summary(model, metrics.get("input_size") or entry.dataset.input_size, label=name)
    differ = [f"{key} {cost[key]:,} vs {metrics[key]:,}" for key in _CHECKED if cost[key] != metrics[key]]
    if differ:
        raise HybrezooError(f"{folder}: the saved weights do not reproduce the run's figures ({'; '.join(differ)} in "
                            "metrics.json): the weights or masks changed after training; export an untouched run")
    _check_masks_fit_the_entry(folder, model, entry, int(cost["relus"]))
    release = Release(name=name, sha256=sha256_file(folder / WEIGHTS_FILE),
                      size_bytes=(folder / WEIGHTS_FILE).stat().st_size, metrics=metrics,
                      recipe_yaml=(folder / "recipe.yaml").read_text(), cost=cost,
                      hf_hub_id=repo_id, revision=revision)
    release.validate(where=str(folder))
    return release


_DATA_ARGS = ("num_classes", "in_chans", "global_pool")


def _architecture(name: str, model_args: dict[str, Any]) -> tuple[tuple[tuple[str, tuple[int, ...]], ...], int]:
    """What identifies an architecture: its parameter and buffer shapes and its ReLUs (built on meta)."""
    import timm
    import torch

    from ..cost.api import count_for_cost

    with torch.device("meta"):
        model = timm.create_model(name, **model_args)
    shapes = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return shapes, count_for_cost(model, None).relus


def _check_is_the_registered_architecture(folder: Path, name: str, model_args: dict[str, Any]) -> None:
    """A run built with architecture arguments (a ``hybrezoo reduce`` result on a base network, say) is
    not the registered entry whose name it carries, and must not be published under that name."""
    args = {k: v for k, v in model_args.items() if k not in _DATA_ARGS}
    if args and _architecture(name, args) != _architecture(name, {}):
        listed = ", ".join(f"{k}={v}" for k, v in args.items())
        raise HybrezooError(f"{folder}: the run built {name} with other architecture arguments ({listed}), so it is "
                            f"not the zoo's {name}; only registered architectures are published: use the zoo name "
                            "the reduce command reported, or register this configuration first")


def _check_masks_fit_the_entry(folder: Path, model: Any, entry: Any, relus: int) -> None:
    """Masked weights go out only under a masked entry (SNL, SENet), and within its ReLU budget."""
    from ..nn import relu_layers

    masked = any(layer.mask is not None for layer in relu_layers(model).values())
    if masked and entry.relu_budget is None:
        raise HybrezooError(f"{folder}: the weights carry trained ReLU masks, but {entry.name} is not a masked "
                            "entry: publish them under the SNL or SENet name for their budget (hybrezoo list --method "
                            "snl), not under the base network's name")
    if entry.relu_budget is not None and relus > entry.relu_budget:
        raise HybrezooError(f"{folder}: the weights keep {relus:,} ReLUs, above {entry.name}'s budget of "
                            f"{entry.relu_budget:,}: train the recipe to the end (its masks meet the budget)")


def export_run(run_dir: PathLike, out: PathLike, overwrite: bool = False, repo_id: Optional[str] = None) -> Path:
    """Write the hub folder of ``run_dir`` into ``out`` (all files, or none); returns ``out``."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and out.resolve() == run_dir.resolve():
        raise HybrezooError("--out must be a new folder, not the run folder itself")
    if out.exists() and not out.is_dir():
        raise HybrezooError(f"--out {out} is a file: give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise HybrezooError(f"{out} is not empty: choose another --out, or add --overwrite to replace its files")
    release = read_release(run_dir, repo_id=repo_id)
    card = render_card(release)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    try:
        for name in SOURCE_FILES:
            shutil.copyfile(run_dir / name, tmp / name)
        if sha256_file(tmp / WEIGHTS_FILE) != release.sha256:
            raise HybrezooError(f"copying {run_dir / WEIGHTS_FILE} changed its content: check the disk and export again")
        (tmp / "README.md").write_text(card)
        umask = os.umask(0)
        os.umask(umask)
        for path in (tmp, *tmp.iterdir()):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        if not out.exists():
            os.replace(tmp, out)  # the whole folder appears at once
        else:
            out.mkdir(exist_ok=True)
            for name in HUB_FILES:
                os.replace(tmp / name, out / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
