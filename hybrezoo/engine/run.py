"""``run_recipe``: a recipe, end to end, into a run folder (the contract in docs/training.md).

Run folder::

    recipe.yaml        the resolved recipe (bases and overrides applied), written first
    checkpoint.pt      resumable state, replaced atomically after every epoch and every stage
    log.jsonl          one JSON object per epoch;  train.log: the same for people
    model.safetensors  final weights (full state dict, PIReLU masks included)   } timm's Hugging Face
    config.json        architecture, model_args, pretrained_cfg, label names    } format (save_for_hf)
    metrics.json       top-1/top-5 on the eval split, ReLUs, MACs, FLOPs, params, epochs, wall time, ...
    .hybrezoo.lock     held by the process that runs (see runfolder.py): one run per folder at a time
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import timm
import torch
from torch import nn

from ..data import Augment, DeviceLoader, data_root, dataset_spec, holdout_split, load_split, open_source
from ..data.sources import eval_split as eval_split_of
from ..errors import HybrezooError
from ..registry import resolve_name
from .checkpoint import (CHECKPOINT, atomic_write_json, atomic_write_text, load_checkpoint, load_weights,
                         plain_data, save_checkpoint, write_failure)
from .distill import teacher_hint
from .evaluate import evaluate
from .export import model_costs, save_model
from .provenance import source_commit, teacher_of_run
from .recipe import Recipe, build_recipe_model, dump_recipe, load_recipe, stage_section
from .runlog import RunLog
from .runfolder import check_no_links, discard_run, lock_run_folder, remove_leftovers
from .runtime import RngSlot, RunEnv, capture_rng, hardware_info, init_env, restore_rng, seed_everything
from .stages import StageContext, check_stage_name, get_stage
from .stop import StopRequest
from .trainer import RunData, Trainer, resolve_select

__all__ = ["run_recipe", "run_lockstep", "RunSpec", "lockstep_key", "checkpoint_position", "preflight",
           "default_out_dir",
           "build_model", "build_data", "REPO_ROOT", "find_recipe"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def find_recipe(recipe: str | os.PathLike) -> Path:
    """A recipe path as given, relative to the repository, or the recipe of a zoo name."""
    path = Path(recipe)
    if path.is_file():
        return path
    if (REPO_ROOT / path).is_file():
        return REPO_ROOT / path
    if path.suffix not in (".yaml", ".yml"):
        entry = resolve_name(str(recipe))  # a zoo name: its registered recipe (UnknownModelError otherwise)
        if (REPO_ROOT / entry.recipe).is_file():
            return REPO_ROOT / entry.recipe
        raise HybrezooError(f"{entry.name} has no recipe yet (expected {entry.recipe})")
    raise HybrezooError(f"recipe {recipe} not found: give a YAML file (recipes live in training/<method>/)")


def default_out_dir(recipe_path: Path) -> Path:
    """``runs/<method>/<name>`` for ``training/<method>/<name>.yaml``, else ``runs/<name>``."""
    parts = recipe_path.resolve().parts
    if "training" in parts[:-1]:
        rel = parts[len(parts) - 1 - parts[::-1].index("training") + 1:]
        return Path("runs", *rel[:-1], Path(rel[-1]).stem)
    return Path("runs") / recipe_path.stem


def _model_name(recipe: Recipe) -> tuple[str, str]:
    """(model name with tag, data set name) with the tag and data.dataset checked against each other."""
    name, dataset = recipe["model"]["name"], recipe["data"]["dataset"]
    if timm.is_model(name) and "." not in name:
        if dataset is None:
            raise HybrezooError(f"model {name} has no data set tag: write {name}.c100 / {name}.tin or set data.dataset")
        spec = dataset_spec(dataset)
        tagged = f"{name}.{spec.tag}"
        if not timm.is_model(tagged):
            return name, spec.name
        name = tagged
    entry = resolve_name(name)
    if entry.name != name:
        raise HybrezooError(f"model {name!r}: write the data set tag, e.g. {entry.arch}.c100 or {entry.arch}.tin")
    if dataset is not None and dataset_spec(dataset).name != entry.dataset.name:
        raise HybrezooError(f"model {name} is the {entry.dataset.title} variant but data.dataset is {dataset}: "
                            f"use {entry.arch}.{dataset_spec(dataset).tag}")
    return entry.name, entry.dataset.name


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's model, freshly initialised (seed first), with ``model.init`` weights if set."""
    name, dataset = _model_name(recipe)
    kwargs = dict(recipe["model"]["kwargs"])
    if "." not in name:
        kwargs.setdefault("num_classes", dataset_spec(dataset).num_classes)
    spec = dataset_spec(dataset)
    model = build_recipe_model(name, kwargs, spec.num_classes, spec.title)  # model.kwargs checked there
    if recipe["model"]["init"]:
        load_weights(model, recipe["model"]["init"], what="model.init weights")
    return model


def build_data(recipe: Recipe, root: Optional[str], env: RunEnv, download: bool = False) -> RunData:
    """Loaders of the training split (minus any held-out part), the selection split and the eval split."""
    _, dataset = _model_name(recipe)
    spec = dataset_spec(dataset)
    data_cfg, runtime = recipe["data"], recipe["runtime"]
    cache = runtime.get("cache_dir")
    split = eval_split_of(spec.name)
    if env.is_main:  # decode (or fetch) once; the other processes then read the cache
        open_source(spec.name, root, download=download)
        train_arrays = load_split(spec.name, "train", root, cache_dir=cache)
        test_arrays = load_split(spec.name, split, root, cache_dir=cache)
    env.barrier()
    if not env.is_main:
        train_arrays = load_split(spec.name, "train", root, cache_dir=cache)
        test_arrays = load_split(spec.name, split, root, cache_dir=cache)
    if train_arrays.images.shape[1:3] != spec.input_size[1:]:
        raise HybrezooError(f"{spec.title} images are {train_arrays.images.shape[1:3]}, expected {spec.input_size[1:]}")
    fit_arrays, held = holdout_split(train_arrays, float(data_cfg["holdout"]), int(data_cfg["holdout_seed"]))
    common = dict(mean=spec.mean, std=spec.std, device=env.device, rank=env.rank, world_size=env.world_size,
                  on_device=bool(runtime["data_on_device"]), channels_last=env.channels_last)
    eval_common = dict(common, batch_size=int(data_cfg["eval_batch_size"]), max_batches=runtime["max_eval_batches"])
    train = DeviceLoader(fit_arrays, batch_size=int(data_cfg["batch_size"]), train=True,
                         augment=Augment(**data_cfg["augment"]), seed=int(recipe["seed"]), **common)
    test = DeviceLoader(test_arrays, **eval_common)
    select = DeviceLoader(held, **eval_common) if held is not None else test
    return RunData(spec=spec, train=train, select=select, select_split="holdout" if held is not None else split,
                   eval=test, eval_split=split, train_arrays=fit_arrays, classes=train_arrays.classes,
                   descriptions=train_arrays.descriptions)


def _comparable(recipe: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(recipe))
    out.pop("runtime", None)
    return out


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@dataclass
class RunSpec:
    """One run as :func:`run_recipe` takes it: a recipe (file or zoo name), its overrides and run folder."""

    recipe: str | os.PathLike
    out: Optional[str | os.PathLike] = None
    overrides: Sequence[str] = ()
    resume: bool = False
    restart: bool = False
    command: Optional[str] = None


def run_recipe(recipe: str | os.PathLike, data: Optional[str] = None, out: Optional[str | os.PathLike] = None,
               overrides: Sequence[str] = (), resume: bool = False, download: bool = False,
               device: Optional[str] = None, command: Optional[str] = None, restart: bool = False,
               stop: Optional[StopRequest] = None, quiet: bool = False) -> Path:
    """Train a recipe end to end; returns the run folder (see the module docstring for its files).

    ``resume`` continues the run in the folder from its checkpoint; ``restart`` discards that run
    (checkpoint, logs, weights, metrics) and starts over. The folder is locked for the run's lifetime.
    ``stop`` (a time budget, SIGTERM) ends training at a step with a resumable checkpoint and raises
    :class:`~hybrezoo.engine.stop.RunStopped`; ``quiet`` keeps progress bars and log echoes off."""
    spec = RunSpec(recipe, out, tuple(overrides), resume, restart, command)
    return run_lockstep([spec], data=data, download=download, device=device, stop=stop, quiet=quiet)[0]


def run_lockstep(specs: Sequence[RunSpec], data: Optional[str] = None, download: bool = False,
                 device: Optional[str] = None, stop: Optional[StopRequest] = None, quiet: bool = False) -> list[Path]:
    """Train several runs in lockstep (one process, one data batch and one teacher forward per step for
    all), each into its own locked run folder, each ending exactly as it would alone; one spec is a plain
    run. Several runs must agree on what the batches and steps are made of (:func:`lockstep_key`)."""
    if not specs:
        return []
    sessions = [_Session.plan(spec, data, download) for spec in specs]
    if len(sessions) > 1:
        keys = {lockstep_key(s.rec, s.position()) for s in sessions}
        if None in keys or len(keys) > 1:
            raise HybrezooError("these runs cannot train in lockstep (they differ in data, seed, epochs, teacher, "
                                "runtime or position, or a stage is not a plain train stage): train them one by one")
        dirs = [str(Path(s.run_dir).resolve()) for s in sessions]
        if len(set(dirs)) != len(dirs):
            raise HybrezooError("two runs of one lockstep group write into the same run folder: give each its own "
                                "--out")
    main = os.environ.get("RANK", "0") == "0"
    with contextlib.ExitStack() as stack:
        for s in sessions:
            s.open(stack, main)
        env = init_env(sessions[0].rec["runtime"], device)
        try:
            _run_sessions(sessions, env, stop, quiet)
        finally:
            env.close()
    return [s.run_dir for s in sessions]


def lockstep_key(rec: Recipe, position: Any = None) -> Optional[str]:
    """What runs must share to train in lockstep, as a string (None: this run trains alone).

    A single plain ``train`` stage (a method's stage may do its own set-up), one process, and the same
    data (set, split, batch, augmentation), seed, epochs, stage name, teacher (weights included),
    runtime settings (``progress`` and ``log_every`` aside) and resume position. Optimizer, schedule,
    loss, KD temperature and weight, ``model.init`` and selection may differ."""
    if len(rec.stages) != 1 or rec.stages[0]["kind"] != "train" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    section = stage_section(rec, 0)
    _, dataset = _model_name(rec)
    source = section["distill"]["checkpoint"]
    if source is not None and not str(source).startswith("hf-hub:"):
        source = os.path.abspath(str(source))
    runtime = {k: v for k, v in rec["runtime"].items() if k not in ("progress", "log_every")}
    return json.dumps({"dataset": dataset, "data": rec["data"], "seed": rec["seed"], "epochs": section["epochs"],
                       "stage": rec.stages[0]["name"], "teacher": section["distill"]["teacher"] and
                       [section["distill"]["teacher"], source], "runtime": runtime, "position": position},
                      sort_keys=True, default=str)


def checkpoint_position(run_dir: Path) -> Any:
    """Where the run in ``run_dir`` stands (stage, epoch, batch), from its checkpoint; None if it has none."""
    from .checkpoint import UnreadableFile, read_torch_file

    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        ckpt = read_torch_file(path, mmap=True)
    except UnreadableFile:
        return "unreadable"
    fit = ckpt.get("fit") if isinstance(ckpt, dict) else None
    if not isinstance(ckpt, dict):
        return "unreadable"
    return [ckpt.get("stage_index"), *( [fit.get("epoch"), fit.get("batch", 0)] if fit else [None, None])]


def preflight(rec: Recipe, root: Optional[str], teachers: bool = True) -> str:
    """Check what a run needs before any work (model name, data folder when ``root`` is given, stage names,
    selection rules, plain data, teacher weights when ``teachers``); returns the data set's name."""
    _, dataset = _model_name(rec)
    if root is not None:
        open_source(dataset, root)
    plain_data(rec.data, "recipe")  # it goes into every checkpoint: refuse what torch.load(weights_only) cannot read
    for i, stage in enumerate(rec.stages):
        check_stage_name(stage["name"])
        section = stage_section(rec, i)
        resolve_select(section["select"], float(rec["data"]["holdout"]) > 0, stage["name"])
        teacher, source = section["distill"]["teacher"], section["distill"]["checkpoint"]
        if teachers and teacher and source is not None and not str(source).startswith("hf-hub:") \
                and not Path(source).exists():
            raise HybrezooError(f"stage {stage['name']!r}: teacher {teacher} weights {source} not found; "
                                f"{teacher_hint(teacher)}")
    return dataset


class _Session:
    """One run folder's life: checks before any work, the lock, set-up, stages, and the final files.

    :func:`run_lockstep` drives one session (a plain run) or several that take turns (lockstep)."""

    def __init__(self, spec: RunSpec, recipe_path: Path, rec: Recipe, run_dir: Path, root: Optional[str],
                 command: str, download: bool) -> None:
        self.spec, self.recipe_path, self.rec, self.run_dir = spec, recipe_path, rec, run_dir
        self.root, self.command, self.download = root, command, download
        self.ckpt: Optional[dict[str, Any]] = None
        self.notes: list[str] = []
        self.lockstep_with: list[str] = []

    @classmethod
    def plan(cls, spec: RunSpec, data: Optional[str], download: bool) -> "_Session":
        """Read the recipe and fail before any work on what cannot hold: model name, data folder, stage
        names, selection rules, teachers."""
        if spec.resume and spec.restart:
            raise HybrezooError("give --resume (continue the run) or --restart (discard it and start over), not both")
        recipe_path = find_recipe(spec.recipe)
        overrides = list(spec.overrides)
        rec = load_recipe(recipe_path, overrides)
        run_dir = Path(spec.out) if spec.out else default_out_dir(recipe_path)
        root = (data or os.environ.get("HYBREZOO_DATA") or ".") if download else str(data_root(data))
        command = spec.command
        if command is None:
            command = shlex.join(["hybrezoo", "train", str(spec.recipe), *(["--data", str(data)] if data else []),
                                  "--out", str(run_dir), *(["--resume"] if spec.resume else []),
                                  *(["--restart"] if spec.restart else []), *overrides])
        preflight(rec, root if not download else None)
        return cls(spec, recipe_path, rec, run_dir, root, command, download)

    def position(self) -> Any:
        return checkpoint_position(self.run_dir) if self.spec.resume else None

    def open(self, stack: contextlib.ExitStack, main: bool) -> None:
        """Take the folder's lock (only the main process owns the folder: under torchrun the others follow
        rank 0, and torchrun stops them all when rank 0 fails), clean leftovers, read the checkpoint."""
        run_dir = self.run_dir
        stack.enter_context(lock_run_folder(run_dir, self.command, enabled=main))
        leftovers: list[str] = []
        discarded: list[str] = []
        if main:
            check_no_links(run_dir)
            leftovers = remove_leftovers(run_dir)
            discarded = discard_run(run_dir) if self.spec.restart else []
        if self.spec.resume:
            ckpt = load_checkpoint(run_dir / CHECKPOINT)
            if _comparable(ckpt["recipe"]) != _comparable(self.rec.data):
                changed = sorted(k for k in set(ckpt["recipe"]) | set(self.rec.data) if k != "runtime"
                                 and ckpt["recipe"].get(k) != self.rec.data.get(k))
                raise HybrezooError(f"{run_dir} was trained with a different recipe (differs in: "
                                    f"{', '.join(changed)}): resume with the same recipe and overrides, add --restart "
                                    "to discard that run and start over, or train into another --out")
            self.ckpt = ckpt
        elif not self.spec.restart and os.path.lexists(run_dir / CHECKPOINT):
            raise HybrezooError(f"{run_dir} already holds a run: add --resume to continue it, --restart to discard it "
                                "and start over, or train into another --out")
        if leftovers:
            self.notes.append(f"removed leftover temporary files of an interrupted run: {', '.join(leftovers)}")
        if discarded:
            self.notes.append(f"--restart: discarded the previous run ({', '.join(discarded)})")

    # -- set-up -------------------------------------------------------------------------------------------
    def setup(self, env: RunEnv, data: Optional[RunData], teachers: dict, stop: Optional[StopRequest],
              quiet: bool) -> None:
        rec, ckpt, run_dir = self.rec, self.ckpt, self.run_dir
        if quiet:
            rec.data["runtime"]["progress"] = False
        self.env = env
        self.session_start = time.perf_counter()
        self.prior_wall = float(ckpt["wall_time_s"]) if ckpt else 0.0
        self.first_command = ckpt.get("command") or self.command if ckpt else self.command  # the one that started it
        self.log = RunLog(run_dir, enabled=env.is_main, echo=bool(rec["runtime"]["progress"]))
        if env.is_main:
            atomic_write_text(run_dir / "recipe.yaml", dump_recipe(rec),
                              "free disk space or choose a writable --out, then run the command again")
            self.log.info(f"{'resuming' if ckpt else 'starting'}: {self.command}")
            for note in self.notes:
                self.log.info(note)
        seed_everything(int(rec["seed"]))
        model = build_model(rec)
        self.data = data if data is not None else build_data(rec, self.root, env, self.download)
        self.model = env.prepare(model)
        self.history: list[dict[str, Any]] = list(ckpt["history"]) if ckpt else []
        if ckpt:
            self.log.rewrite(self.history)
        self.run_state: dict[str, Any] = {"stage_index": ckpt["stage_index"] if ckpt else 0,
                                          "stages_done": list(ckpt["stages_done"]) if ckpt else []}
        self.trainer = Trainer(env, self.data, self.log, rec["runtime"],
                               save=lambda ctx, fit_state, record: self.save(fit_state, record),
                               teachers=teachers, stop=stop)

    def save(self, fit_state: Optional[dict[str, Any]], record: Optional[dict[str, Any]],
             stage_start: Optional[dict[str, torch.Tensor]] = None) -> None:
        env, run_state = self.env, self.run_state
        now = self.prior_wall + time.perf_counter() - self.session_start
        if record is not None:
            record = dict(record, wall_time_s=now)
            self.history.append(record)
        if env.is_main:
            save_checkpoint(self.run_dir / CHECKPOINT, {
                "recipe": self.rec.data, "stage_index": run_state["stage_index"],
                "stage_start_model": stage_start if stage_start is not None else run_state["stage_start_model"],
                # the random states the stage at stage_index starts from: resuming at a stage boundary, or
                # re-running a stage's set-up before its last epoch is restored, draws the same numbers
                "stage_start_rng": capture_rng() if stage_start is not None else run_state["stage_start_rng"],
                "fit": fit_state, "history": self.history, "stages_done": run_state["stages_done"],
                "wall_time_s": now, "command": self.first_command,
            }, fix=_RESUME_FIX)
            if record is not None:
                self.log.epoch(record)
        env.barrier()

    # -- stages ---------------------------------------------------------------------------------------------
    def begin_stage(self, index: int) -> Optional[StageContext]:
        """The context of stage ``index`` (model and random states as the stage starts), or None when the
        checkpoint is past it."""
        rec, ckpt, model = self.rec, self.ckpt, self.model
        if ckpt and index < ckpt["stage_index"]:
            return None
        resume_fit = None
        if ckpt and index == ckpt["stage_index"]:
            model.load_state_dict(ckpt["stage_start_model"])
            restore_rng(ckpt["stage_start_rng"])
            resume_fit = ckpt.get("fit")
            self.ckpt = None  # later stages start fresh
        stage = rec.stages[index]
        kind = get_stage(stage["kind"])
        self.run_state["stage_index"] = index
        self.run_state["stage_start_model"] = {k: v.detach().to("cpu", copy=True)
                                               for k, v in model.state_dict().items()}
        self.run_state["stage_start_rng"] = capture_rng()
        ctx = StageContext(index=index, name=stage["name"], kind=kind.name, section=stage_section(rec, index),
                           model=model, data=self.data, trainer=self.trainer, env=self.env, recipe=rec,
                           run_dir=self.run_dir, log=self.log, resume=resume_fit)
        where = ""
        if resume_fit:
            batch = int(resume_fit.get("batch") or 0)
            where = f" resumed at epoch {resume_fit['epoch'] + (1 if batch else 0)}" + \
                (f", batch {batch}" if batch else "")
        self.log.info(f"stage {index + 1}/{len(rec.stages)} {ctx.name} ({kind.name}){where}")
        return ctx

    def end_stage(self, ctx: StageContext) -> None:
        done = {"name": ctx.name, "kind": ctx.kind, "epochs": sum(1 for r in self.history if r["stage"] == ctx.name)}
        if ctx.result is not None:
            done.update(select=ctx.result.select, chosen=ctx.result.chosen)
        self.run_state["stages_done"].append(done)
        self.run_state["stage_index"] = ctx.index + 1
        self.save(None, None, stage_start={k: v.detach().to("cpu", copy=True)
                                           for k, v in self.model.state_dict().items()})

    # -- the run's files --------------------------------------------------------------------------------
    def finish(self) -> None:
        rec, env, model, data, run_dir = self.rec, self.env, self.model, self.data, self.run_dir
        if self.ckpt is not None:  # every stage was already complete: the final state is the last stage's end
            model.load_state_dict(self.ckpt["stage_start_model"])
            restore_rng(self.ckpt["stage_start_rng"])
        final = evaluate(model, data.eval, env)
        wall = self.prior_wall + time.perf_counter() - self.session_start
        if env.is_main:
            try:
                save_model(model, run_dir, data.classes, data.descriptions)
            except Exception as err:
                reason = write_failure(err)
                if reason is None:
                    raise
                raise HybrezooError(f"cannot write the weights into {run_dir}: {reason}; {_RESUME_FIX} (training is "
                                    "complete in checkpoint.pt)") from None
            name, _ = _model_name(rec)
            costs = model_costs(model, data.spec.input_size)
            stages_done = self.run_state["stages_done"]
            last_fit = next((s for s in reversed(stages_done) if "chosen" in s), None)
            metrics = {
                "model": name, "dataset": data.spec.name, "eval_split": data.eval_split,
                "top1": final["top1"], "top5": final["top5"], "eval_loss": final["loss"],
                "eval_images": final["images"],
                **costs, "input_size": list(data.spec.input_size),
                "epochs": len(self.history),
                "train_images": len(data.train_arrays), "batch_size": int(rec["data"]["batch_size"]),
                "selection": {"rule": last_fit["select"], **last_fit["chosen"]} if last_fit else None,
                "wall_time_s": wall, "hardware": hardware_info(env),
                "recipe": _display_path(self.recipe_path), "overrides": list(rec.overrides), "seed": rec["seed"],
                "stages": stages_done,
                "command": self.command, "hybrezoo_version": _version(), "git_commit": source_commit(),
                "teacher": teacher_of_run(rec),
                "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            if self.lockstep_with:
                metrics["lockstep_with"] = list(self.lockstep_with)
            atomic_write_json(run_dir / "metrics.json", metrics, _RESUME_FIX)
            self.log.info(f"done: {name} {data.eval_split} top-1 {final['top1']:.2f} top-5 {final['top5']:.2f}, "
                          f"{costs['relus']:,} ReLUs, {wall:.0f} s -> {run_dir}")
        env.barrier()


def _run_sessions(sessions: Sequence[_Session], env: RunEnv, stop: Optional[StopRequest], quiet: bool) -> None:
    """The stages of one run, or of a lockstep group whose runs take turns, each with its own random
    states (one code path: a plain run is a group of one)."""
    alone = len(sessions) == 1
    slots: list[Any] = [contextlib.nullcontext()] if alone else [RngSlot() for _ in sessions]
    teachers: dict = {}
    data: Optional[RunData] = None
    for s, slot in zip(sessions, slots):
        with slot:
            s.setup(env, data, teachers, stop, quiet)
        data = s.data  # the group shares the data (lockstep_key: same set, split, batch and augmentation)
    if not alone:
        for s in sessions:
            s.lockstep_with = [str(o.run_dir) for o in sessions if o is not s]
            s.log.info(f"lockstep with {len(sessions) - 1} other run(s), one batch and one teacher forward per step "
                       f"for all: {', '.join(s.lockstep_with)}")
    for index in range(len(sessions[0].rec.stages)):
        live = []
        for s, slot in zip(sessions, slots):
            with slot:
                ctx = s.begin_stage(index)
            if ctx is not None:
                live.append((s, slot, ctx))
        if not live:
            continue
        if len(live) == 1:
            s, slot, ctx = live[0]
            with slot:
                get_stage(ctx.kind).fn(ctx)
        else:
            Trainer.fit_lockstep([ctx for _, _, ctx in live], [slot for _, slot, _ in live])
        for s, slot, ctx in live:
            with slot:
                s.end_stage(ctx)
    for s, slot in zip(sessions, slots):
        with slot:
            s.finish()


_RESUME_FIX = "free disk space, then add --resume to the same command to continue from the last complete epoch"


def _version() -> str:
    from .. import __version__

    return __version__
