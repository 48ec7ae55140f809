"""Recipes: YAML files that state everything a checkpoint was trained with.

A recipe may name ``base:`` files (a path or a list, relative to the recipe) whose contents it
extends: bases are merged first, in order, then the recipe itself; mappings merge key by key, any
other value (lists included) replaces the base's. Command-line overrides (``epochs=2
optimizer.lr=0.05 stages.0.epochs=1``) are applied last; their values are read as YAML.

Every key is checked against :data:`DEFAULTS` (stage entries against the stage kind's options), so a
misspelt key is an error naming the closest valid one, never a silently ignored setting.
"""
from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence

import yaml

from .._validate import Range
from ..data.arrays import HOLDOUT_RANGE
from ..errors import HybrezooError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "DEFAULTS", "STAGE_SECTIONS", "RANGES", "Recipe", "RecipeError", "load_recipe", "apply_overrides", "deep_merge",
    "resolve", "stage_section", "dump_recipe", "build_recipe_model",
]


class RecipeError(HybrezooError, ValueError):
    """A recipe that cannot be read or names a key that does not exist."""


# Every recipe key with its default. ``None`` defaults accept any value; other defaults fix the type.
DEFAULTS: dict[str, Any] = {
    "description": "",
    "model": {
        "name": None,          # zoo name with tag, e.g. pi_resnet18.c100
        "kwargs": {},          # extra create_model arguments (free-form: drop_rate, ...)
        "init": None,          # starting weights: a run folder, .safetensors or .pt file, or hf-hub:ID
    },
    "data": {
        "dataset": None,       # defaults to the model tag's data set
        "holdout": 0.0,        # training images kept aside for model selection: a count, or a fraction < 1
        "holdout_seed": 0,
        "batch_size": 128,     # global batch: split across DDP processes
        "eval_batch_size": 500,
        "augment": {"crop_padding": 4, "hflip": True, "cutout": 0},
    },
    "seed": 0,
    "epochs": 1,
    "select": "auto",          # weights kept after training: last | best (needs data.holdout) | auto
    "optimizer": {
        "name": "sgd",         # sgd | adamw
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 5e-4,
        "no_decay": [],        # parameter kinds without weight decay: any of norm, bias
        "betas": [0.9, 0.999],
        "eps": 1e-8,
    },
    "schedule": {
        "name": "cosine",      # cosine | step | onecycle | constant
        "warmup_epochs": 0.0,  # linear warm-up (cosine, step, constant)
        "warmup_factor": 0.01, # lr factor at the first warm-up step
        "min_lr": 0.0,         # cosine floor
        "milestones": [],      # step: epochs where the lr is multiplied by gamma
        "gamma": 0.1,
        "pct_start": 0.3,      # onecycle: fraction of the steps spent rising
        "div_factor": 25.0,    # onecycle: start lr = lr / div_factor
        "final_div_factor": 1e4,  # onecycle: final lr = start lr / final_div_factor
    },
    "loss": {"label_smoothing": 0.0},
    "distill": {
        "teacher": None,       # zoo name with tag; None = no distillation
        "checkpoint": None,    # the teacher's run folder or weights file; None = its published weights
        "temperature": 4.0,
        "weight": 1.0,         # loss = CE + weight * T^2 * KL(teacher || student)
    },
    "stages": [{"kind": "train"}],
    "runtime": {
        "device": "auto",      # auto | cpu | cuda | cuda:N
        "amp": "auto",         # auto (bf16 on CUDA) | bf16 | off
        "channels_last": "auto",  # auto (on CUDA) | on | off
        "compile": None,       # None/false: eager; true or a torch.compile mode string
        "sync_bn": False,      # SyncBatchNorm under DDP
        "fused_optimizer": False,  # torch's fused CUDA optimizer kernels (GPU only: CPU runs are unchanged)
        "data_on_device": True,   # hold the uint8 split on the GPU (else pinned host memory)
        "cache_dir": None,     # decoded-data cache; default $HYBREZOO_CACHE or ~/.cache/hybrezoo/data
        "max_steps": None,     # smoke runs: stop each training stage after this many steps
        "max_eval_batches": None,  # smoke runs: evaluate on this many batches only
        "progress": True,      # tqdm progress bar
        "log_every": 20,       # steps between progress-bar updates (each costs a device sync)
    },
}

# The values each numeric key accepts, checked when a recipe is resolved (so every entry point, the CLI,
# the API and the methods' templates alike, refuses a value that would crash deep inside torch or train
# silently wrong: a negative learning rate, zero steps, a class count the data set does not have).
RANGES: dict[str, Range] = {
    "data.holdout": HOLDOUT_RANGE,
    "data.holdout_seed": Range(low=0, whole=True),
    "data.batch_size": Range(low=1, whole=True, note="the global training batch, e.g. 128"),
    "data.eval_batch_size": Range(low=1, whole=True, note="images per evaluation batch, e.g. 500"),
    "data.augment.crop_padding": Range(low=0, whole=True, note="pixels of zero padding; 0 = no random crop"),
    "data.augment.cutout": Range(low=0, whole=True, note="side of the zeroed square; 0 = off"),
    "epochs": Range(low=1, whole=True),
    "optimizer.lr": Range(low=0, low_open=True, note="e.g. 0.1"),
    "optimizer.momentum": Range(low=0, high=1, high_open=True, note="the fraction of the previous update kept, "
                                                                     "e.g. 0.9"),
    "optimizer.weight_decay": Range(low=0, note="e.g. 5e-4; 0 = none"),
    "optimizer.betas": Range(low=0, high=1, high_open=True, length=2, note="AdamW, e.g. [0.9, 0.999]"),
    "optimizer.eps": Range(low=0, low_open=True, note="e.g. 1e-8"),
    "schedule.warmup_epochs": Range(low=0, note="epochs of linear warm-up; 0 = none"),
    "schedule.warmup_factor": Range(low=0, high=1, note="the lr factor of the first warm-up step, e.g. 0.01"),
    "schedule.min_lr": Range(low=0),
    "schedule.milestones": Range(low=0, low_open=True, each=True, note="epochs, e.g. [80, 120]"),
    "schedule.gamma": Range(low=0, low_open=True, note="the lr factor at each milestone, e.g. 0.1"),
    "schedule.pct_start": Range(low=0, high=1, low_open=True, high_open=True, note="e.g. 0.3"),
    "schedule.div_factor": Range(low=0, low_open=True, note="e.g. 25"),
    "schedule.final_div_factor": Range(low=0, low_open=True, note="e.g. 1e4"),
    "loss.label_smoothing": Range(low=0, high=1, note="e.g. 0.1; 0 = none"),
    "distill.temperature": Range(low=0, low_open=True, note="e.g. 4"),
    "distill.weight": Range(low=0, note="the weight of the distillation term, e.g. 1"),
    "runtime.max_steps": Range(low=1, whole=True, none_ok=True, note="training steps of each stage in a smoke run"),
    "runtime.max_eval_batches": Range(low=1, whole=True, none_ok=True, note="batches per evaluation in a smoke run"),
    "runtime.log_every": Range(low=1, whole=True),
}

# Top-level sections a stage entry may override for itself.
STAGE_SECTIONS = ("epochs", "select", "optimizer", "schedule", "loss", "distill")

# Keys whose values are free-form mappings (not checked key by key).
_FREE = {("model", "kwargs")}
# Keys that take a word or a YAML boolean (YAML reads on/off as true/false): checked where used.
_SWITCHES = {("runtime", "amp"), ("runtime", "channels_last"), ("runtime", "compile")}


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``: mappings merge recursively, anything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} not found: give the path of a YAML file "
                          "(recipes live in training/)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"recipe {path}{where} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a YAML mapping of keys, not a {type(data).__name__}")
    return data


def _load_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[Path]]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise RecipeError(f"recipe bases form a cycle: {cycle}")
    data = _read_yaml(path)
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(f"{path}: 'base' must be a path or a list of paths, got {bases!r}")
    merged: dict[str, Any] = {}
    files: list[Path] = []
    for base in bases:
        base_data, base_files = _load_with_bases((path.parent / base), (*chain, path))
        merged = deep_merge(merged, base_data)
        files += base_files
    return deep_merge(merged, data), [*files, path]


def _close(key: str, options: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(options))}"


def _coerce(value: Any, default: Any, where: str) -> Any:
    """``value`` checked against the type of ``default`` (YAML reads 5e-4 as text: accept it as a number)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RecipeError(f"recipe key {where} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                raise RecipeError(f"recipe key {where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"recipe key {where} must be a number, got {value!r}")
        if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
            raise RecipeError(f"recipe key {where} must be a whole number, got {value!r}")
        return type(default)(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise RecipeError(f"recipe key {where} must be text, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise RecipeError(f"recipe key {where} must be a list, got {value!r}")
        return value
    return value


def check_keys(data: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``data`` with every key checked against ``schema`` (types coerced); unknown keys are errors."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in schema:
            raise RecipeError(f"unknown recipe key {where!r}{_close(key, schema)}")
        default = schema[key]
        if tuple(where.split(".")) in _SWITCHES:
            out[key] = value
        elif isinstance(default, dict) and tuple(where.split(".")) not in _FREE:
            if not isinstance(value, Mapping):
                raise RecipeError(f"recipe key {where} must be a mapping of keys, got {value!r}")
            out[key] = check_keys(value, default, f"{where}.")
        elif isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise RecipeError(f"recipe key {where} must be a mapping, got {value!r}")
            out[key] = dict(value)
        else:
            out[key] = _coerce(value, default, where)
    return out


def stage_schema(options: Mapping[str, Any]) -> dict[str, Any]:
    """The keys a stage entry may hold: kind, name, the overridable sections and the kind's options."""
    schema = {"kind": "", "name": ""}
    schema.update({k: DEFAULTS[k] for k in STAGE_SECTIONS})
    schema.update(options)
    return schema


def _check_stages(stages: Any, stage_options) -> list[dict[str, Any]]:
    if not isinstance(stages, list) or not stages:
        raise RecipeError("recipe key 'stages' must be a non-empty list of stages such as [{kind: train}]")
    out = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, Mapping) or not isinstance(stage.get("kind"), str):
            raise RecipeError(f"stages.{i} must be a mapping with a 'kind' (e.g. kind: train), got {stage!r}")
        options = stage_options(stage["kind"])
        checked = check_keys(stage, stage_schema(options), f"stages.{i}.")
        checked.setdefault("name", stage["kind"] if len(stages) == 1 else f"{i}-{stage['kind']}")
        for key, default in options.items():  # the kind's options a stage leaves out take their defaults
            checked.setdefault(key, copy.deepcopy(default))
        out.append(checked)
    names = [s["name"] for s in out]
    if len(set(names)) != len(names):
        raise RecipeError(f"stage names must be distinct, got {names}")
    return out


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key or key.startswith("-"):
        raise RecipeError(f"cannot read override {text!r}: write key=value, e.g. epochs=2 or optimizer.lr=0.05")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``data`` with ``key.path=value`` overrides applied (stage keys by index: ``stages.0.epochs=1``).

    Keys are not checked here: :func:`resolve` checks the result, so a misspelt override fails like
    a misspelt recipe key, naming the closest valid one.
    """
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = _parse_override(text)
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            where = ".".join(path[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(f"override {text!r}: {'.'.join(path[:depth])} has {len(node)} entries, "
                                      f"address one by index 0 to {len(node) - 1} (e.g. stages.0.epochs=1)")
                node = node[int(part)]
            elif isinstance(node, dict):
                if part == "stages" and "stages" not in node:
                    node["stages"] = copy.deepcopy(DEFAULTS["stages"])
                node = node.setdefault(part, {})
            else:
                raise RecipeError(f"override {text!r}: {where!r} is not a section of keys")
        if isinstance(node, list):
            raise RecipeError(f"override {text!r}: set keys of one entry, e.g. stages.0.epochs=1")
        if not isinstance(node, dict):
            raise RecipeError(f"override {text!r}: {'.'.join(path[:-1])!r} is not a section of keys")
        node[path[-1]] = value
    return data


@dataclass
class Recipe:
    """A resolved recipe: every key present (defaults filled in), bases and overrides applied."""

    data: dict[str, Any]
    path: Optional[Path] = None
    files: list[Path] = field(default_factory=list)  # the recipe and its bases, bases first
    overrides: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, dotted: str) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    @property
    def stages(self) -> list[dict[str, Any]]:
        return self.data["stages"]


def _default_stage_options(kind: str) -> dict[str, Any]:
    from .stages import get_stage  # the stage registry knows each kind's options

    return get_stage(kind).options


def resolve(data: Mapping[str, Any], stage_options=None) -> dict[str, Any]:
    """Fill in defaults and check every key of a merged recipe mapping."""
    stage_options = stage_options or _default_stage_options
    data = dict(data)
    stages = data.pop("stages", copy.deepcopy(DEFAULTS["stages"]))
    checked = check_keys(data, {k: v for k, v in DEFAULTS.items() if k != "stages"})
    full = deep_merge({k: v for k, v in DEFAULTS.items() if k != "stages"}, checked)
    full["stages"] = _check_stages(stages, stage_options)
    if not full["model"]["name"]:
        raise RecipeError("the recipe names no model: set model.name (e.g. pi_resnet18.c100)")
    if full["select"] not in ("auto", "last", "best"):
        raise RecipeError(f"select must be auto, last or best, got {full['select']!r}")
    check_ranges(full)
    return full


def _lookup(data: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_ranges(data: Mapping[str, Any]) -> None:
    """Check every key of :data:`RANGES` in a resolved recipe and in each stage that overrides it,
    naming the key as the user writes it (``stages.1.optimizer.lr``)."""
    for dotted, allowed in RANGES.items():
        found, value = _lookup(data, dotted)
        if found:
            allowed.check(value, f"recipe key {dotted}", RecipeError)
    for i, stage in enumerate(data.get("stages") or []):
        for dotted, allowed in RANGES.items():
            if dotted.split(".")[0] in STAGE_SECTIONS:
                found, value = _lookup(stage, dotted)
                if found:
                    allowed.check(value, f"recipe key stages.{i}.{dotted}", RecipeError)


def build_recipe_model(name: str, kwargs: Mapping[str, Any], num_classes: int, dataset_title: str) -> "nn.Module":
    """``create_model(name, **kwargs)`` for a run, with ``model.kwargs`` checked: a class count other than
    the data set's (which would fail mid-training with "Target 37 is out of bounds") and arguments the
    architecture does not take or rejects are one line naming ``model.kwargs`` and what to do."""
    from ..models import create_model

    kwargs = dict(kwargs)
    if "num_classes" in kwargs and kwargs["num_classes"] != num_classes:
        raise RecipeError(f"model.kwargs.num_classes={kwargs['num_classes']!r}, but {dataset_title} has "
                          f"{num_classes} classes: remove num_classes from model.kwargs (the data set sets it)")
    try:
        return create_model(name, **kwargs)
    except HybrezooError as err:
        if not any(key in str(err) for key in kwargs):  # not about the kwargs (or there are none)
            raise
        raise RecipeError(f"model.kwargs of {name}: {err}") from None
    except Exception as err:  # the architecture's own argument checks: TypeError, AssertionError, ValueError ...
        if not kwargs:
            raise
        accepted = _model_arguments(name)
        if accepted is None:  # the model does not build even without the kwargs: not their fault
            raise
        unknown = sorted(set(kwargs) - set(accepted)) if "**" not in accepted else []
        if isinstance(err, TypeError) and unknown:
            raise RecipeError(f"model.kwargs: {name} takes no argument {', '.join(map(repr, unknown))}: remove it "
                              f"(its arguments: {', '.join(a for a in accepted if a != '**')})") from None
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RecipeError(f"model.kwargs {dict(kwargs)!r} rejected by {name} ({type(err).__name__}: {reason}): "
                          "correct or remove them") from None


def _model_arguments(name: str) -> Optional[list[str]]:
    """The keyword arguments ``name``'s model class takes (``'**'`` if it takes any), or None when the
    model cannot be built even without extra arguments."""
    import inspect

    import torch

    from ..models import create_model

    try:
        with torch.device("meta"):
            model = create_model(name)
    except Exception:  # an initialiser without a meta kernel: build it for real
        try:
            model = create_model(name)
        except Exception:
            return None
    params = list(inspect.signature(type(model).__init__).parameters.values())[1:]
    return [("**" if p.kind is p.VAR_KEYWORD else p.name) for p in params if p.kind is not p.VAR_POSITIONAL]


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = (), stage_options=None) -> Recipe:
    """Read a recipe file with its bases, apply ``overrides``, fill in defaults and check every key."""
    path = Path(path)
    merged, files = _load_with_bases(path)
    merged = apply_overrides(merged, overrides)
    return Recipe(resolve(merged, stage_options), path=path, files=files, overrides=list(overrides))


def stage_section(recipe: Recipe | Mapping[str, Any], index: int) -> dict[str, Any]:
    """Stage ``index`` with the top-level sections it does not override filled in."""
    data = recipe.data if isinstance(recipe, Recipe) else recipe
    stage = data["stages"][index]
    section = {k: copy.deepcopy(data[k]) for k in STAGE_SECTIONS}
    return deep_merge(section, stage)


def dump_recipe(recipe: Recipe | Mapping[str, Any]) -> str:
    """The resolved recipe as YAML (key order kept), as written to a run's recipe.yaml."""
    data = recipe.data if isinstance(recipe, Recipe) else recipe
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
