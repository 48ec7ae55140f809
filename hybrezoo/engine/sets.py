"""Sets of runs: a data set's teacher and students from one command, within a GPU window.

``hybrezoo train A.yaml B.yaml ...`` or ``hybrezoo train training/sets/tin_deepreduce.yaml``:

- **Plan.** Every recipe is read and checked before any work. A run that reads another run's folder
  (``distill.checkpoint``, ``model.init``, a stage's ``distill.checkpoint``) depends on it and runs after
  it; with ``--runs DIR`` such references to a run's default folder (``runs/<method>/<name>``) are
  pointed at ``DIR/<method>/<name>`` (a run of the set, or one finished there earlier: a teacher
  trained in an earlier window). A cycle, an unknown recipe or a missing outside checkpoint is one
  error line.
- **Skip and resume.** A run whose folder holds ``metrics.json`` of the same recipe is finished and
  skipped; one with a checkpoint is continued with ``--resume`` (refused without it, as for one run).
- **Lockstep.** Runs that agree on data, seed, epochs, teacher and runtime
  (:func:`hybrezoo.engine.run.lockstep_key`) train in one process, one batch and one teacher forward per
  step for all, each still exactly what it would be alone (``--no-lockstep`` turns this off).
- **Budget.** ``--time-budget 9m`` stops every run at the first step past the deadline with a
  checkpoint of that step (mid-epoch, see :mod:`hybrezoo.engine.stop`); nothing new starts after it.
- **Sharing a GPU.** ``--jobs N`` runs up to N independent units (a lockstep group or a single run) in
  separate processes at once, each run folder locked by its process.
- **Progress and summary.** A tqdm bar per run (epoch, top-1, time left) while it goes, and one table at
  the end (run, status, top-1, ReLUs, minutes); ``--summary FILE`` also writes it as JSON.

Exit status: 0 when every run is finished, 75 (:data:`~hybrezoo.engine.stop.STOPPED_EXIT`) when the
budget or SIGTERM left work to resume, 2 when a run failed (its error line is printed).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import yaml

from ..errors import HybrezooError
from .checkpoint import CHECKPOINT, UnreadableFile, atomic_write_json, read_torch_file
from .recipe import Recipe, dump_recipe, load_recipe, stage_section
from .run import (REPO_ROOT, RunSpec, _comparable, default_out_dir, find_recipe, lockstep_key, preflight,
                  run_lockstep)
from .runfolder import holder_of
from .stop import STOPPED_EXIT, RunStopped, StopRequest, format_duration

__all__ = ["SetEntry", "PlannedRun", "Unit", "SetPlan", "SetOutcome", "is_set_file", "read_set_file", "plan_set",
           "run_set", "SETS_DIR"]

SETS_DIR = REPO_ROOT / "training" / "sets"
_SET_KEYS = {"description", "runs", "overrides"}
_ENTRY_KEYS = {"recipe", "overrides"}
# runtime keys that change what a run produces: a finished smoke run is not the finished real run
_RESULT_RUNTIME = ("max_steps", "max_eval_batches")


# -- set files -----------------------------------------------------------------------------------------
@dataclass
class SetEntry:
    """One run named on the command line or in a set file."""

    recipe: str
    overrides: list[str] = field(default_factory=list)
    origin: str = "the command line"


def _set_path(item: str) -> Optional[Path]:
    """The set file ``item`` names (a path, or a name under training/sets/), or None."""
    candidates = [Path(item), REPO_ROOT / item]
    if Path(item).suffix not in (".yaml", ".yml") and "." not in item and "/" not in item:
        candidates.append(SETS_DIR / f"{item}.yaml")
    for path in candidates:
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            try:
                data = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                return None
            return path if isinstance(data, dict) and "runs" in data else None
    return None


def is_set_file(item: str) -> bool:
    """True when ``item`` is a set file (a YAML mapping with ``runs:``) rather than a recipe."""
    return _set_path(item) is not None


def read_set_file(path: str | os.PathLike) -> tuple[str, list[SetEntry]]:
    """The description and entries of a set file::

        description: the Tiny ImageNet DeepReDuce set
        overrides: []                       # applied to every run (optional)
        runs:
          - training/baseline/pi_resnet18.tin.yaml
          - {recipe: training/deepreduce/deepreduce_r18_cull1.tin.yaml, overrides: [epochs=10]}
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise HybrezooError(f"set file {path} cannot be read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise HybrezooError(f"set file {path} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise HybrezooError(f"set file {path} must be a mapping with a non-empty list 'runs' of recipes")
    unknown = set(data) - _SET_KEYS
    if unknown:
        raise HybrezooError(f"set file {path}: unknown key(s) {', '.join(sorted(unknown))}; a set file holds "
                            f"{', '.join(sorted(_SET_KEYS))}")
    common = _overrides(data.get("overrides"), f"{path}: overrides")
    entries = []
    for i, item in enumerate(data["runs"]):
        where = f"{path}: runs[{i}]"
        if isinstance(item, str):
            entries.append(SetEntry(item, list(common), where))
        elif isinstance(item, dict) and isinstance(item.get("recipe"), str) and not set(item) - _ENTRY_KEYS:
            entries.append(SetEntry(item["recipe"], [*common, *_overrides(item.get("overrides"), where)], where))
        else:
            raise HybrezooError(f"{where} must be a recipe (path or zoo name) or a mapping {{recipe: ..., "
                                f"overrides: [key=value, ...]}}, got {item!r}")
    return str(data.get("description") or ""), entries


def _overrides(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise HybrezooError(f"{where} must be a list of key=value overrides, got {value!r}")
    return list(value)


def expand(items: Sequence[str], overrides: Sequence[str] = ()) -> list[SetEntry]:
    """Recipes and set files (in the order given) as entries; ``overrides`` apply to every run."""
    entries: list[SetEntry] = []
    for item in items:
        path = _set_path(item)
        if path is not None:
            entries += [SetEntry(e.recipe, [*e.overrides, *overrides], e.origin) for e in read_set_file(path)[1]]
        else:
            entries.append(SetEntry(item, list(overrides)))
    if not entries:
        raise HybrezooError("no recipe given: name recipes, zoo names or a set file (training/sets/*.yaml)")
    return entries


# -- planning ------------------------------------------------------------------------------------------
@dataclass
class PlannedRun:
    """A run of the set: its recipe (overrides applied), folder, dependencies and state on disk."""

    index: int
    label: str                     # <method>/<name>: the run folder under --runs
    given: str                     # the recipe as named
    recipe_path: Path
    overrides: list[str]
    out: Path
    rec: Recipe
    deps: list[int]                # indices of the runs whose folders this one reads
    status: str                    # "done" (finished, skipped), "resume" (checkpoint), "new"
    position: Any = None           # where a checkpoint stands: [stage, epoch, batch]
    epochs: int = 0                # epochs of all stages

    @property
    def model(self) -> str:
        return str(self.rec["model"]["name"])


@dataclass
class Unit:
    """What one process trains at a time: a lockstep group or a single run."""

    runs: list[PlannedRun]

    @property
    def deps(self) -> set[int]:
        mine = {r.index for r in self.runs}
        return {d for r in self.runs for d in r.deps} - mine

    @property
    def label(self) -> str:
        return self.runs[0].label if len(self.runs) == 1 else f"{len(self.runs)} runs in lockstep"


@dataclass
class SetPlan:
    runs: list[PlannedRun]         # in training order (teachers before their students)
    units: list[Unit]
    data: Optional[str]
    runs_dir: Path

    def describe(self) -> str:
        """The plan, for ``--plan`` and logs."""
        lines = [f"{len(self.runs)} runs into {self.runs_dir} ({sum(r.status == 'done' for r in self.runs)} finished "
                 f"already); {len(self.units)} unit(s) to train, in this order:"]
        by_index = {r.index: r for r in self.runs}
        for i, unit in enumerate(self.units, 1):
            after = sorted({by_index[d].label for d in unit.deps})
            lines.append(f"  {i}. {unit.label}" + (f" (after {', '.join(after)})" if after else ""))
            for r in unit.runs:
                lines.append(f"       {r.label}: {r.model}, {r.epochs} epochs, {r.status}")
        for r in self.runs:
            if r.status == "done":
                lines.append(f"  finished, skipped: {r.label} ({r.out})")
        return "\n".join(lines)


def _norm(path: Any) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))


def _refs(rec: Recipe) -> list[tuple[str, Any]]:
    """The recipe keys that name another run's folder (weights to start from, a teacher), with their values."""
    refs = [("model.init", rec["model"]["init"])]
    for i, stage in enumerate(rec.stages):
        distill = stage_section(rec, i)["distill"]
        if not distill["teacher"]:
            continue  # a checkpoint without a teacher is never read
        own = isinstance(stage.get("distill"), dict) and "checkpoint" in stage["distill"]
        key = f"stages.{i}.distill.checkpoint" if own else "distill.checkpoint"
        if (key, distill["checkpoint"]) not in refs:
            refs.append((key, distill["checkpoint"]))
    return [(k, v) for k, v in refs if v is not None and not str(v).startswith("hf-hub:")]


def _result_view(recipe: dict[str, Any]) -> str:
    """What decides whether a finished run is this recipe's: everything but the runtime settings that leave
    results alone."""
    data = _comparable(recipe)
    runtime = recipe.get("runtime") or {}
    data["runtime"] = {k: runtime.get(k) for k in _RESULT_RUNTIME}
    return json.dumps(data, sort_keys=True, default=str)


def _differs(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(keys) or "runtime"


def _find_cycle(nodes: Iterable[int], deps: dict[int, list[int]]) -> list[int]:
    remaining = set(nodes)
    state: dict[int, int] = {}
    path: list[int] = []

    def visit(n: int) -> Optional[list[int]]:
        state[n] = 1
        path.append(n)
        for d in deps[n]:
            if d not in remaining:
                continue
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        state[n] = 2
        path.pop()
        return None

    for n in sorted(remaining):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return sorted(remaining)


def _under_runs_dir(ref: str, runs_dir: Path) -> Optional[Path]:
    """Where a reference to a default run folder (``runs/<method>/<name>``) lies under another ``--runs
    DIR``; None for any other reference, or when DIR is ``runs`` itself."""
    path = Path(ref)
    if path.is_absolute() or not path.parts or path.parts[0] != "runs" or _norm(runs_dir) == _norm(Path("runs")):
        return None
    return Path(runs_dir) / path.relative_to("runs")


def plan_set(items: Sequence[str], overrides: Sequence[str] = (), runs_dir: str | os.PathLike = "runs",
             data: Optional[str] = None, resume: bool = False, out: Optional[str | os.PathLike] = None,
             lockstep: bool = True, check_data: bool = True, download: bool = False) -> SetPlan:
    """Read, check and order the runs of ``items`` (recipes, zoo names, set files); see the module doc.

    Fails with one line, before any work, on an unknown recipe, a bad key, a cycle of teachers, a missing
    outside checkpoint, a finished run of another recipe, or an unfinished run without ``resume``."""
    from ..data import open_source

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise HybrezooError("a set of runs trains on one device per process: run each recipe under torchrun on its "
                            "own, or run the set without torchrun")
    entries = expand(items, overrides)
    runs_dir = Path(runs_dir)
    if out is not None and len(entries) != 1:
        raise HybrezooError(f"--out names one run folder, and {len(entries)} runs were given: use --runs DIR (each run "
                            "goes to DIR/<method>/<name>)")
    # 1. recipes and run folders
    first: list[tuple[SetEntry, Path, Recipe, Path, Path]] = []
    for e in entries:
        try:
            path = find_recipe(e.recipe)
            rec = load_recipe(path, e.overrides)
        except HybrezooError as err:
            where = "" if e.origin == "the command line" else f"{e.origin}: "
            raise HybrezooError(f"{where}{err}") from None
        default = default_out_dir(path)
        run_out = Path(out) if out is not None else runs_dir / default.relative_to("runs")
        first.append((e, path, rec, default, run_out))
    outs: dict[str, int] = {}
    for i, (e, path, _, _, run_out) in enumerate(first):
        if _norm(run_out) in outs:
            other = first[outs[_norm(run_out)]][0]
            raise HybrezooError(f"{e.recipe} and {other.recipe} both train into {run_out}: name each recipe once")
        outs[_norm(run_out)] = i
    defaults = {_norm(d): i for i, (_, _, _, d, _) in enumerate(first)}
    # 2. references to other runs' folders: dependencies, pointed at this set's folders
    runs: list[PlannedRun] = []
    datasets: set[str] = set()
    for i, (e, path, rec, default, run_out) in enumerate(first):
        deps, extra = [], []
        for key, ref in _refs(rec):
            j = outs.get(_norm(ref), defaults.get(_norm(ref)))
            if j == i:
                raise HybrezooError(f"{e.recipe}: {key}={ref} is its own run folder: a run cannot read its own weights")
            if j is None:
                # a run finished earlier into this set's --runs DIR (a teacher trained in an earlier window)
                moved = _under_runs_dir(ref, runs_dir)
                if moved is not None and moved.exists():
                    extra.append(f"{key}={moved}")
                    continue
                if not Path(ref).exists():
                    raise HybrezooError(f"{e.recipe}: {key}={ref} not found, and no run of this set trains into it: "
                                        f"add the recipe that makes it to the set, or set {key}=DIR")
                continue
            deps.append(j)
            if _norm(ref) != _norm(first[j][4]):
                extra.append(f"{key}={first[j][4]}")
        overrides_i = [*e.overrides, *extra]
        if extra:
            rec = load_recipe(path, overrides_i)
        dataset = preflight(rec, None, teachers=False)
        if check_data and dataset not in datasets:
            open_source(dataset, data, download=download)  # the data folder (fetched first with --download)
            datasets.add(dataset)
        epochs = sum(int(stage_section(rec, k)["epochs"]) for k in range(len(rec.stages)))
        label = default.relative_to("runs").as_posix() if out is None else str(run_out)
        runs.append(PlannedRun(i, label, e.recipe, path, overrides_i, run_out, rec, sorted(set(deps)), "new",
                               epochs=epochs))
    # 3. what is on disk
    unfinished = []
    for r in runs:
        holder = holder_of(r.out)
        if holder is not None:
            raise HybrezooError(f"{r.out} is in use by another hybrezoo run ({holder}): wait for it to end, then run "
                                "the set again")
        current = yaml.safe_load(dump_recipe(r.rec))
        if (r.out / "metrics.json").is_file():
            try:
                finished = yaml.safe_load((r.out / "recipe.yaml").read_text())
            except (OSError, yaml.YAMLError):
                finished = None
            if not isinstance(finished, dict) or _result_view(finished) != _result_view(current):
                how = f"differs in: {_differs(_comparable(finished), _comparable(current))}" \
                    if isinstance(finished, dict) else "its recipe.yaml is missing or unreadable"
                raise HybrezooError(f"{r.out} holds a finished run of another recipe ({how}): train the set into "
                                    "another --runs DIR, or move that run folder away")
            r.status = "done"
        elif (r.out / CHECKPOINT).is_file():
            try:
                ckpt = read_torch_file(r.out / CHECKPOINT, mmap=True)
            except UnreadableFile as err:
                raise HybrezooError(f"{r.out / CHECKPOINT} cannot be resumed: {err.reason}; discard that run with "
                                    f"`hybrezoo train {r.given} --out {r.out} --restart`") from None
            saved = ckpt.get("recipe") if isinstance(ckpt, dict) else None
            if not isinstance(saved, dict) or _comparable(saved) != _comparable(r.rec.data):
                how = _differs(_comparable(saved), _comparable(r.rec.data)) if isinstance(saved, dict) else "format"
                raise HybrezooError(f"{r.out} holds an unfinished run of another recipe (differs in: {how}): train the "
                                    f"set into another --runs DIR, or discard it with `hybrezoo train {r.given} --out "
                                    f"{r.out} --restart`")
            fit = ckpt.get("fit")
            r.position = [ckpt.get("stage_index"), *([fit.get("epoch"), fit.get("batch", 0)] if fit else [None, None])]
            r.status = "resume"
            unfinished.append(r)
    if unfinished and not resume:
        names = ", ".join(r.label for r in unfinished)
        raise HybrezooError(f"{len(unfinished)} run(s) of this set are unfinished ({names}): add --resume to continue "
                            "them where they stopped")
    # 4. order: teachers before their students (stable), then units
    order = _topological(runs)
    units = _units([r for r in order if r.status != "done"], lockstep)
    return SetPlan(order, units, data, runs_dir)


def _topological(runs: list[PlannedRun]) -> list[PlannedRun]:
    deps = {r.index: r.deps for r in runs}
    done: list[int] = []
    placed: set[int] = set()
    while len(done) < len(runs):
        ready = [r.index for r in runs if r.index not in placed and all(d in placed for d in r.deps)]
        if not ready:
            cycle = _find_cycle((r.index for r in runs if r.index not in placed), deps)
            names = " -> ".join(runs[i].given for i in cycle)
            raise HybrezooError(f"the runs form a cycle of teachers (each reads the next one's run folder through "
                                f"distill.checkpoint or model.init): {names}")
        done.append(ready[0])
        placed.add(ready[0])
    return [runs[i] for i in done]


def _units(todo: list[PlannedRun], lockstep: bool) -> list[Unit]:
    ancestors: dict[int, set[int]] = {}
    by_index = {r.index: r for r in todo}

    def above(r: PlannedRun) -> set[int]:
        if r.index not in ancestors:
            found = set(r.deps)
            for d in r.deps:
                if d in by_index:
                    found |= above(by_index[d])
            ancestors[r.index] = found
        return ancestors[r.index]

    units: list[Unit] = []
    keys: list[Optional[str]] = []
    for r in todo:
        key = lockstep_key(r.rec, r.position) if lockstep else None
        home = next((u for u, k in zip(units, keys) if key is not None and k == key
                     and not any(m.index in above(r) for m in u.runs)), None)
        if home is None:
            units.append(Unit([r]))
            keys.append(key)
        else:
            home.runs.append(r)
    return units


# -- running -------------------------------------------------------------------------------------------
@dataclass
class SetOutcome:
    """What happened to each run, the rows of the summary table, and the command's exit status."""

    rows: list[dict[str, Any]]
    wall_time_s: float
    exit_code: int
    errors: list[str]

    def table(self) -> str:
        head = ("run", "status", "top-1", "ReLUs", "minutes")
        body = [(r["run"], r["status"], "" if r["top1"] is None else f"{r['top1']:.2f}",
                 "" if r["relus"] is None else f"{r['relus']:,}",
                 "" if r["minutes"] is None else f"{r['minutes']:.1f}") for r in self.rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:{'>' if i >= 2 else '<'}{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*b) for b in body)]
        done = sum(r["state"] in ("done", "skipped") for r in self.rows)
        lines.append(f"{done}/{len(self.rows)} runs finished; set wall time {self.wall_time_s / 60:.1f} min")
        return "\n".join(lines)


class _Status:
    """Per-run state shared by the scheduler and the progress view (thread-safe)."""

    def __init__(self, plan: SetPlan) -> None:
        self.lock = threading.Lock()
        self.state = {r.index: ("skipped" if r.status == "done" else "waiting") for r in plan.runs}
        self.note: dict[int, str] = {}

    def set(self, runs: Iterable[PlannedRun], state: str, note: str = "") -> None:
        with self.lock:
            for r in runs:
                self.state[r.index] = state
                if note:
                    self.note[r.index] = note


def _read_log(run_dir: Path) -> list[dict[str, Any]]:
    try:
        text = (run_dir / "log.jsonl").read_text()
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a line being written
    return records


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _Progress:
    """A tqdm bar per run (epochs done, last top-1, time left), refreshed from the run folders by a thread,
    so runs in this process and in worker processes show alike; one line per change when not on a terminal."""

    def __init__(self, plan: SetPlan, status: _Status, enabled: bool, stop: StopRequest) -> None:
        self.plan, self.status, self.enabled, self.stop = plan, status, enabled, stop
        self.tty = enabled and sys.stderr.isatty()
        self.bars: dict[int, Any] = {}
        self.seen: dict[int, tuple] = {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="hybrezoo-set-progress")

    def __enter__(self) -> "_Progress":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._halt.set()
            self._thread.join()
            self.refresh()
            for bar in self.bars.values():
                bar.close()

    def _loop(self) -> None:
        while not self._halt.wait(1.0):
            try:
                self.refresh()
            except Exception:  # the view must never take a training run down
                pass

    def refresh(self) -> None:
        from tqdm import tqdm

        with self.status.lock:
            states = dict(self.status.state)
        for pos, r in enumerate(self.plan.runs):
            state = states[r.index]
            log = _read_log(r.out) if state != "waiting" else []
            epochs_done = len(log)
            top1 = log[-1].get("eval_top1") if log else None
            left = ""
            if state == "running" and log:
                per_epoch = float(log[-1].get("wall_time_s") or 0) / max(epochs_done, 1)
                left = format_duration(per_epoch * max(r.epochs - epochs_done, 0))
            view = (state, epochs_done, top1, left)
            if self.tty:
                bar = self.bars.get(r.index)
                if bar is None:
                    width = max(len(x.label) for x in self.plan.runs)
                    bar = self.bars[r.index] = tqdm(total=r.epochs, desc=r.label.ljust(width), position=pos,
                                                    leave=True, dynamic_ncols=True, unit="ep", file=sys.stderr,
                                                    bar_format="{desc} {bar:20} {n_fmt}/{total_fmt} epochs{postfix}")
                bar.n = min(epochs_done, r.epochs)
                bar.set_postfix_str(", ".join(x for x in (state, f"top-1 {top1:.2f}" if top1 is not None else "",
                                                          f"{left} left" if left else "") if x), refresh=False)
                bar.refresh()
            elif view != self.seen.get(r.index) and state not in ("waiting",):
                self.seen[r.index] = view
                if self.enabled:
                    extra = f", top-1 {top1:.2f}" if top1 is not None else ""
                    extra += f", {left} left" if left else ""
                    print(f"[set] {r.label}: {state}, epoch {epochs_done}/{r.epochs}{extra}", file=sys.stderr,
                          flush=True)


def _row(r: PlannedRun, state: str, note: str, group: int) -> dict[str, Any]:
    metrics = _read_json(r.out / "metrics.json") if state in ("done", "skipped") else None
    log = _read_log(r.out) if metrics is None else []
    if metrics is not None:
        status = "done" if state == "done" else "finished earlier"
        if group > 1:
            status += f" (lockstep x{group})"
        minutes = float(metrics.get("wall_time_s") or 0) / 60
        return {"run": r.label, "out": str(r.out), "model": r.model, "state": state, "status": status,
                "top1": metrics.get("top1"), "top5": metrics.get("top5"), "relus": metrics.get("relus"),
                "minutes": minutes, "epochs": metrics.get("epochs"), "note": note}
    status = {"stopped": f"stopped at epoch {len(log)}/{r.epochs}", "failed": "failed", "blocked": "blocked",
              "not started": "not started", "waiting": "not started", "running": "interrupted"}.get(state, state)
    minutes = float(log[-1].get("wall_time_s") or 0) / 60 if log else None
    return {"run": r.label, "out": str(r.out), "model": r.model, "state": state, "status": status, "top1": None,
            "top5": None, "relus": None, "minutes": minutes, "epochs": len(log), "note": note}


def _spec(r: PlannedRun) -> RunSpec:
    return RunSpec(str(r.recipe_path), str(r.out), tuple(r.overrides), resume=r.status == "resume")


def run_set(plan: SetPlan, device: Optional[str] = None, jobs: int = 1, stop: Optional[StopRequest] = None,
            progress: bool = True, summary: Optional[str | os.PathLike] = None,
            command: Optional[str] = None) -> SetOutcome:
    """Train the units of ``plan`` (see the module doc); returns the outcome with its summary rows."""
    if jobs < 1:
        raise HybrezooError(f"--jobs must be >= 1, got {jobs}")
    stop = stop or StopRequest()
    status = _Status(plan)
    group_size = {r.index: len(u.runs) for u in plan.units for r in u.runs}
    errors: list[str] = []
    started = time.time()
    with stop.on_sigterm(), _Progress(plan, status, progress, stop):
        if jobs == 1:
            _run_here(plan, device, stop, status, errors)
        else:
            _run_workers(plan, device, jobs, stop, status, errors)
    wall = time.time() - started
    rows = [_row(r, status.state[r.index], status.note.get(r.index, ""), group_size.get(r.index, 1))
            for r in plan.runs]
    states = [r["state"] for r in rows]
    code = 2 if "failed" in states else STOPPED_EXIT if any(s not in ("done", "skipped") for s in states) else 0
    outcome = SetOutcome(rows, wall, code, errors)
    if summary is not None:
        atomic_write_json(summary, {"command": command, "wall_time_s": wall, "exit_code": code, "jobs": jobs,
                                    "time_budget_deadline": stop.deadline, "started": started,
                                    "units": [[r.label for r in u.runs] for u in plan.units], "runs": rows})
    return outcome


def _waits_for(unit: Unit, status: _Status, plan: SetPlan) -> tuple[Optional[str], str]:
    """("failed", runs) when a run this unit reads failed, ("unfinished", runs) when one stopped or never
    started (budget), ("running", runs) while one is still waiting or training, else (None, "")."""
    by_index = {r.index: r for r in plan.runs}
    states = {d: status.state[d] for d in unit.deps}
    for kind, wanted in (("running", ("waiting", "running")), ("failed", ("failed", "blocked")),
                         ("unfinished", ("stopped", "not started"))):
        names = sorted(by_index[d].label for d, s in states.items() if s in wanted)
        if names:
            return kind, ", ".join(names)
    return None, ""


def _settle(unit: Unit, status: _Status, plan: SetPlan, stop: StopRequest) -> bool:
    """Mark a unit that cannot start (a teacher failed or is unfinished, or the budget ended); True if it can."""
    kind, names = _waits_for(unit, status, plan)
    if kind == "failed":
        status.set(unit.runs, "blocked", f"needs {names}, which failed")
    elif kind == "unfinished":
        status.set(unit.runs, "not started", f"needs {names}, which is unfinished")
    elif stop.requested():
        status.set(unit.runs, "not started", stop.reason)
    else:
        return True
    return False


def _run_here(plan: SetPlan, device: Optional[str], stop: StopRequest, status: _Status, errors: list[str]) -> None:
    """Units one after the other in this process."""
    for unit in plan.units:
        if not _settle(unit, status, plan, stop):
            continue
        status.set(unit.runs, "running")
        try:
            run_lockstep([_spec(r) for r in unit.runs], data=plan.data, device=device, stop=stop, quiet=True)
        except RunStopped as err:
            status.set(unit.runs, "stopped", str(err))
        except HybrezooError as err:
            status.set(unit.runs, "failed", str(err))
            errors.append(f"{unit.label}: {err}")
        else:
            status.set(unit.runs, "done")


def _warm_cache(plan: SetPlan) -> None:
    """Decode each data set once before the workers start (they would all decode it at the same time)."""
    from ..data import load_split
    from ..data.sources import eval_split
    from .run import _model_name

    seen = set()
    for unit in plan.units:
        rec = unit.runs[0].rec
        _, dataset = _model_name(rec)
        cache = rec["runtime"].get("cache_dir")
        if (dataset, cache) in seen:
            continue
        seen.add((dataset, cache))
        for split in ("train", eval_split(dataset)):
            load_split(dataset, split, plan.data, cache_dir=cache)


def _run_workers(plan: SetPlan, device: Optional[str], jobs: int, stop: StopRequest, status: _Status,
                 errors: list[str]) -> None:
    """Up to ``jobs`` units at once, each in its own process (``python -m hybrezoo.engine.sets``)."""
    _warm_cache(plan)
    pending = list(plan.units)
    running: dict[int, tuple[Unit, subprocess.Popen, Any]] = {}
    forwarded = False
    try:
        while pending or running:
            for unit in list(pending):
                if _waits_for(unit, status, plan)[0] == "running":
                    continue  # a run it reads is not settled yet
                if not _settle(unit, status, plan, stop):
                    pending.remove(unit)
                    continue
                if len(running) >= jobs:
                    break
                pending.remove(unit)
                proc, err_file = _start_worker(unit, plan, device, stop)
                running[id(unit)] = (unit, proc, err_file)
                status.set(unit.runs, "running")
            if stop.signalled and not forwarded:  # SIGTERM: every worker checkpoints and stops too
                forwarded = True
                for _, proc, _ in running.values():
                    proc.terminate()
            time.sleep(0.2)
            for key, (unit, proc, err_file) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[key]
                err_file.seek(0)
                lines = [line.strip() for line in err_file.read().decode(errors="replace").splitlines() if line.strip()]
                err_file.close()
                if code == 0:
                    status.set(unit.runs, "done")
                elif code == STOPPED_EXIT or (forwarded and code in (-signal.SIGTERM, 128 + signal.SIGTERM)):
                    # a worker still starting when SIGTERM came has nothing new to save: its folder is as it was
                    status.set(unit.runs, "stopped", lines[-1] if lines else "SIGTERM")
                else:
                    message = next((line.removeprefix("hybrezoo: error: ") for line in reversed(lines)
                                    if line.startswith("hybrezoo: error: ")), lines[-1] if lines else f"exit {code}")
                    status.set(unit.runs, "failed", message)
                    errors.append(f"{unit.label}: {message}")
    except KeyboardInterrupt:
        for _, proc, _ in running.values():
            proc.wait()
        raise


def _start_worker(unit: Unit, plan: SetPlan, device: Optional[str], stop: StopRequest) -> tuple[subprocess.Popen, Any]:
    spec = {"runs": [{"recipe": str(r.recipe_path), "out": str(r.out), "overrides": list(r.overrides),
                      "resume": r.status == "resume"} for r in unit.runs],
            "data": plan.data, "device": device, "deadline": stop.deadline}
    err_file = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "hybrezoo.engine.sets", json.dumps(spec)],
                            stdout=subprocess.DEVNULL, stderr=err_file, cwd=os.getcwd())
    return proc, err_file


def _worker(argv: Sequence[str]) -> int:
    """One unit in its own process: exit 0 (finished), 75 (stopped; resumable), 2 (error line on stderr)."""
    spec = json.loads(argv[0])
    stop = StopRequest(spec.get("deadline"))
    runs = [RunSpec(r["recipe"], r["out"], tuple(r["overrides"]), resume=bool(r["resume"])) for r in spec["runs"]]
    try:
        with stop.on_sigterm():
            run_lockstep(runs, data=spec.get("data"), device=spec.get("device"), stop=stop, quiet=True)
    except RunStopped as err:
        print(f"hybrezoo: stopped: {err}", file=sys.stderr)
        return STOPPED_EXIT
    except HybrezooError as err:
        print(f"hybrezoo: error: {err}", file=sys.stderr)
        return 2
    return 0


def set_command(items: Sequence[str], options: Sequence[str], overrides: Sequence[str]) -> str:
    return shlex.join(["hybrezoo", "train", *items, *options, *overrides])


if __name__ == "__main__":  # the worker of run_set(jobs > 1)
    sys.exit(_worker(sys.argv[1:]))
