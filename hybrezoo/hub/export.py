"""``hybrezoo export RUN_DIR --out DIR``: a finished training run becomes a Hugging Face hub folder.

The run folder already holds timm's hub format (``model.safetensors`` + ``config.json``, written by
the engine with ``timm.models.save_for_hf``); the export copies them unchanged with the run's
``metrics.json``, ``recipe.yaml`` and ``log.jsonl``, writes ``model.safetensors.sha256``, and adds the
model card (``README.md``). With ``--data`` it also scores the copied weights on the real evaluation
split exactly as ``hybrezoo eval`` does and keeps what it printed in ``eval.json``: the accuracy a
published card states. Before anything is written the weights are loaded back through timm
(``local-dir:``, masks included) and priced with ``pi_cost``: the ReLUs, MACs and parameters must equal
the run's own figures, so weights that lost their masks on the way are caught here, not by a user.

Only real checkpoints go out: a run cut short (``runtime.max_steps``, ``max_eval_batches``), trained or
scored on fewer images than the real data set has, with NaN or non-floating weights, a head that does
not match its config, or a ``git_commit`` that is not one of hybrezoo's is refused. (The Python API's
``real_data=False`` lets development runs through :func:`export_run` for a look at their card; push and
publish never pass it.)
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ..errors import HybrezooError
from ..registry import ZooEntry, resolve_name
from .card import render_card
from .costs import cost_summary
from .manifest import SHA256_FILE, WEIGHT_DTYPES, WEIGHTS_FILE, Release
from .verify import sha256_file, write_sha256_file

__all__ = ["HUB_FILES", "SOURCE_FILES", "EVAL_FILE", "read_release", "export_run", "evaluate_weights", "stored_dtype",
           "cast_weights_file"]

SOURCE_FILES = ("config.json", WEIGHTS_FILE, "metrics.json", "recipe.yaml", "log.jsonl")
EVAL_FILE = "eval.json"
HUB_FILES = (*SOURCE_FILES, SHA256_FILE, "README.md")   # plus EVAL_FILE when the weights were evaluated
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


def read_release(folder: PathLike, repo_id: Optional[str] = None, revision: Optional[str] = None, *,
                 git_commit: Optional[str] = None, teacher_run: Optional[PathLike] = None,
                 real_data: bool = True) -> Release:
    """What a finished run folder (or a hub folder made from one) publishes, checked against itself.

    ``git_commit`` replaces the run's recorded commit (``"none"`` drops it); ``teacher_run`` (the
    distillation teacher's run folder) adds its record to a run that lacks it; ``real_data=False``
    skips the checks that the run is a complete one on the real data set (development runs only)."""
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
    recipe_yaml = (folder / "recipe.yaml").read_text()
    if real_data:
        _check_is_a_real_run(folder, metrics, recipe_yaml, entry)
    metrics = _checked_commit(folder, metrics, git_commit)
    if teacher_run is not None:
        metrics = _with_teacher(metrics, recipe_yaml, Path(teacher_run))

    _check_is_the_registered_architecture(folder, name, config.get("model_args") or {})
    _check_tensors(folder, name, config, entry)
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)  # verified, masks restored
    cost = cost_summary(model, metrics.get("input_size") or entry.dataset.input_size, label=name)
    differ = [f"{key} {cost[key]:,} vs {metrics[key]:,}" for key in _CHECKED if cost[key] != metrics[key]]
    if differ:
        raise HybrezooError(f"{folder}: the saved weights do not reproduce the run's figures ({'; '.join(differ)} in "
                            "metrics.json): the weights or masks changed after training; export an untouched run")
    _check_masks_fit_the_entry(folder, model, entry, int(cost["relus"]))
    sha256 = sha256_file(folder / WEIGHTS_FILE)
    evaluation = _read_json(folder / EVAL_FILE) if (folder / EVAL_FILE).is_file() else None
    if evaluation is not None and real_data:
        _check_full_evaluation(folder / EVAL_FILE, evaluation, entry)
    release = Release(name=name, sha256=sha256, size_bytes=(folder / WEIGHTS_FILE).stat().st_size, metrics=metrics,
                      recipe_yaml=recipe_yaml, cost=cost, evaluation=evaluation, hf_hub_id=repo_id, revision=revision,
                      weights_dtype=stored_dtype(folder / WEIGHTS_FILE))
    release.validate(where=str(folder))
    return release


def _check_is_a_real_run(folder: Path, metrics: dict[str, Any], recipe_yaml: str, entry: ZooEntry) -> None:
    """A smoke or development run (cut short, or on a stand-in data set) is not a checkpoint."""
    try:
        recipe = yaml.safe_load(recipe_yaml) or {}
    except yaml.YAMLError:
        raise HybrezooError(f"{folder}/recipe.yaml is not readable YAML: export the run folder as `hybrezoo train` "
                            "left it") from None
    runtime = recipe.get("runtime") or {}
    for key in ("max_steps", "max_eval_batches"):
        if runtime.get(key) not in (None, 0):
            raise HybrezooError(f"{folder} is a smoke run (runtime.{key}={runtime[key]}), not a checkpoint: train the "
                                "recipe without it to publish")
    from ..data.arrays import holdout_count

    spec = entry.dataset
    held = holdout_count(float((recipe.get("data") or {}).get("holdout") or 0), spec.train_images)
    expected = {"train_images": spec.train_images - held, "eval_images": spec.eval_images}
    for key, count in expected.items():
        if metrics.get(key) != count:
            raise HybrezooError(f"{folder} was {'trained' if key == 'train_images' else 'scored'} on "
                                f"{metrics.get(key)} images where {spec.title} has {count:,}: a run on a stand-in or "
                                "partial data set is not a checkpoint; train on the real data set to publish")


def _check_full_evaluation(path: Path, evaluation: dict[str, Any], entry: ZooEntry) -> None:
    from ..data.sources import eval_split

    spec = entry.dataset
    if evaluation.get("images") != spec.eval_images or evaluation.get("split") != eval_split(spec.name):
        raise HybrezooError(f"{path} scores {evaluation.get('images')} images of split {evaluation.get('split')!r}; "
                            f"a published card needs {spec.title}'s {eval_split(spec.name)} split "
                            f"({spec.eval_images:,} images): export again with --data pointing at the real data set")


def _checked_commit(folder: Path, metrics: dict[str, Any], git_commit: Optional[str]) -> dict[str, Any]:
    """The run's metrics with a ``git_commit`` that is hybrezoo's (or none): a commit of another
    repository would send readers of the card to the wrong code."""
    from ..engine.provenance import knows_history, resolve_source_commit

    if git_commit is not None:
        if git_commit.lower() == "none":
            return {k: v for k, v in metrics.items() if k != "git_commit"}
        full = resolve_source_commit(git_commit)
        if full is None:
            raise HybrezooError(f"--git-commit {git_commit} is not a commit of this hybrezoo checkout: give the "
                                "commit the run's code was at, or none")
        return dict(metrics, git_commit=full)
    recorded = metrics.get("git_commit")
    if recorded and knows_history() and resolve_source_commit(str(recorded)) is None:
        raise HybrezooError(f"{folder}/metrics.json records git_commit {str(recorded)[:12]}, which is not a hybrezoo "
                            "commit (the run's code sat inside another repository): give the commit the code was at "
                            "with --git-commit REV, or --git-commit none")
    return metrics


def _with_teacher(metrics: dict[str, Any], recipe_yaml: str, teacher_run: Path) -> dict[str, Any]:
    from ..engine.provenance import teacher_record

    teacher = (yaml.safe_load(recipe_yaml).get("distill") or {}).get("teacher")
    if not teacher:
        raise HybrezooError(f"--teacher-run given, but {metrics.get('model')}'s run was not distilled")
    record = teacher_record(_read_json(teacher_run / "metrics.json"))
    if record.get("model") != teacher:
        raise HybrezooError(f"{teacher_run} is a run of {record.get('model')}, but the student was distilled from "
                            f"{teacher}: give the teacher's run folder")
    return dict(metrics, teacher=record)


def _check_tensors(folder: Path, name: str, config: dict[str, Any], entry: ZooEntry) -> None:
    """Weights a user can trust: finite floating-point tensors where the model has them, and a head
    whose classes agree with config.json and the data set."""
    import torch
    from safetensors import safe_open

    from .verify import verify_weights_file

    weights = folder / WEIGHTS_FILE
    verify_weights_file(weights, what=f"weights of {name}", fix="export the run again")
    spec = entry.dataset
    labels = config.get("label_names")
    if config.get("num_classes") != spec.num_classes or (labels is not None and len(labels) != spec.num_classes):
        raise HybrezooError(f"{folder}/config.json gives {config.get('num_classes')} classes"
                            f"{f' and {len(labels)} label names' if labels is not None else ''} where {spec.title} "
                            f"has {spec.num_classes}: export a run of {name} as `hybrezoo train` left it")
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            tensor = f.get_tensor(key)
            if key.endswith(("num_batches_tracked", ".mask")):
                continue
            if not tensor.is_floating_point():
                raise HybrezooError(f"{weights}: tensor {key} is {tensor.dtype}, not floating point: export the "
                                    "weights as training saved them")
            if not bool(torch.isfinite(tensor).all()):
                raise HybrezooError(f"{weights}: tensor {key} holds NaN or infinite values: the run diverged; "
                                    "train it again")
            if key == f"{entry.pretrained_cfg()['classifier']}.weight" and tensor.shape[0] != config.get("num_classes"):
                raise HybrezooError(f"{weights}: the classifier has {tensor.shape[0]} outputs but config.json says "
                                    f"{config.get('num_classes')} classes: the folder mixes two runs")


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


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def stored_dtype(weights: PathLike) -> str:
    """How a weights file stores its floating tensors: ``float32``, ``float16``, ... (read from the
    safetensors header, no tensor loaded). A file mixing them is refused: publish one precision."""
    from safetensors import safe_open

    found: set[str] = set()
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            dtype = _SAFETENSORS_DTYPES.get(f.get_slice(key).get_dtype())
            if dtype is not None:
                found.add(dtype)
    if len(found) != 1:
        raise HybrezooError(f"{weights} stores its floating tensors as {' and '.join(sorted(found)) or 'nothing'}: "
                            f"export the run again with --dtype {WEIGHT_DTYPES[0]} or --dtype {WEIGHT_DTYPES[1]}")
    return found.pop()


def cast_weights_file(weights: PathLike, dtype: str) -> None:
    """Rewrite ``weights`` (safetensors) with its floating tensors in ``dtype``; integer tensors and the
    boolean ReLU masks stay as they are. A value that ``dtype`` cannot hold (float16 overflows above
    65504) is refused: the cast would change what the network computes, not just round it."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    if dtype not in WEIGHT_DTYPES:
        raise HybrezooError(f"--dtype {dtype}: choose one of {', '.join(WEIGHT_DTYPES)}")
    target = getattr(torch, dtype)
    weights = Path(weights)
    tensors = {}
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
        for key in f.keys():
            tensor = f.get_tensor(key)
            if tensor.is_floating_point():
                cast = tensor.to(target)
                if not bool(torch.isfinite(cast).all()) and bool(torch.isfinite(tensor).all()):
                    raise HybrezooError(f"{weights}: tensor {key} holds values beyond {dtype}'s range (largest "
                                        f"|x| {tensor.abs().max().item():.4g}): publish it with --dtype float32")
                tensor = cast
            tensors[key] = tensor.contiguous()
    tmp = weights.with_name(f".{weights.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, weights)
    finally:
        tmp.unlink(missing_ok=True)


def evaluate_weights(folder: PathLike, data: PathLike, device: str = "cpu", amp: str = "off",
                     batch_size: int = 500) -> dict[str, Any]:
    """Score ``folder``'s weights (loaded as a user loads them) on its data set's evaluation split, as
    ``hybrezoo eval --device DEVICE --amp AMP`` does, and say how: the contents of ``eval.json``."""
    import timm
    import torch

    from .. import __version__
    from ..engine.evaluate import eval_loader, evaluate, precision_of
    from ..engine.provenance import source_commit

    folder = Path(folder)
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    name = f"{model.pretrained_cfg.get('architecture')}.{model.pretrained_cfg.get('tag')}"
    spec = resolve_name(name).dataset
    env, loader, split = eval_loader(spec.name, data, None, device, amp, batch_size)
    scores = evaluate(env.prepare(model), loader, env)
    return {"model": name, "dataset": spec.name, "split": split, "images": int(scores["images"]),
            "top1": scores["top1"], "top5": scores["top5"], "loss": scores["loss"],
            "device": str(env.device), "amp": amp, "precision": precision_of(env),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "hybrezoo_version": __version__,
            "git_commit": source_commit(), "weights_sha256": sha256_file(folder / WEIGHTS_FILE),
            "evaluated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def export_run(run_dir: PathLike, out: PathLike, overwrite: bool = False, repo_id: Optional[str] = None, *,
               data: Optional[PathLike] = None, device: str = "cpu", amp: str = "off",
               git_commit: Optional[str] = None, teacher_run: Optional[PathLike] = None, real_data: bool = True,
               in_zoo: bool = False, dtype: Optional[str] = None) -> Path:
    """Write the hub folder of ``run_dir`` into ``out`` (all files, or none); returns ``out``.

    With ``data`` (the data root) the copied weights are evaluated into ``eval.json``. With ``dtype``
    (``float16``) the copy stores its weights in that precision (half the download, and what a
    float32 run folder of ResNet18's size needs to stay a small file); every check, the evaluation
    and the card are then of the stored copy, never of the run's float32 file."""
    if dtype is not None and dtype not in WEIGHT_DTYPES:
        raise HybrezooError(f"--dtype {dtype}: choose one of {', '.join(WEIGHT_DTYPES)}")
    run_dir, out = Path(run_dir), Path(out)
    if out.is_symlink() and not out.exists():
        raise HybrezooError(f"--out {out} is a symbolic link to nothing: remove it or choose another folder")
    if out.exists() and out.resolve() == run_dir.resolve():
        raise HybrezooError("--out must be a new folder, not the run folder itself")
    if out.exists() and not out.is_dir():
        raise HybrezooError(f"--out {out} is a file: give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise HybrezooError(f"{out} is not empty: choose another --out, or add --overwrite to replace its files")
    release = read_release(run_dir, repo_id=repo_id, git_commit=git_commit, teacher_run=teacher_run,
                           real_data=real_data)

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-{os.getpid()}-"))
    try:
        for name in SOURCE_FILES:
            shutil.copyfile(run_dir / name, tmp / name)
        if release.metrics != _read_json(run_dir / "metrics.json"):
            # the corrected commit or the teacher's record
            (tmp / "metrics.json").write_text(json.dumps(release.metrics, indent=2) + "\n")
        if write_sha256_file(tmp / WEIGHTS_FILE) != release.sha256:
            raise HybrezooError(f"copying {run_dir / WEIGHTS_FILE} changed its content: check the disk and export again")
        if dtype is not None and dtype != release.weights_dtype:
            cast_weights_file(tmp / WEIGHTS_FILE, dtype)
            write_sha256_file(tmp / WEIGHTS_FILE)
            # every check again, on the stored copy (the metrics already carry the commit and teacher)
            release = read_release(tmp, repo_id=repo_id, real_data=real_data)
        names = list(HUB_FILES)
        if data is not None:
            evaluation = evaluate_weights(tmp, data, device=device, amp=amp)
            if real_data:
                _check_full_evaluation(tmp / EVAL_FILE, evaluation, resolve_name(release.name))
            (tmp / EVAL_FILE).write_text(json.dumps(evaluation, indent=2) + "\n")
            release = replace(release, evaluation=evaluation)
            names.append(EVAL_FILE)
        (tmp / "README.md").write_text(render_card(release, in_zoo=in_zoo))
        umask = os.umask(0)
        os.umask(umask)
        for path in (tmp, *tmp.iterdir()):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        if not out.exists():
            os.replace(tmp, out)  # the whole folder appears at once
        else:
            out.mkdir(exist_ok=True)
            (out / EVAL_FILE).unlink(missing_ok=True)  # an old evaluation is of other weights
            for name in names:
                os.replace(tmp / name, out / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _remove_leftovers(out: Path) -> None:
    """Temporary folders of earlier exports to ``out`` whose process is gone (killed before the rename)."""
    for stale in out.parent.glob(f".{out.name}.export-*-*"):
        pid = stale.name[len(f".{out.name}.export-"):].split("-", 1)[0]
        if stale.is_dir() and not stale.is_symlink() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
