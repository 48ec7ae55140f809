"""The training loop every stage runs: loss (CE, label smoothing, KD, custom terms), optimizer and
schedule steps, per-epoch evaluation on the selection split, checkpoints and logs."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data.arrays import ImageArrays
from ..data.device_loader import DeviceLoader
from ..data.specs import DatasetSpec
from ..errors import HybrezooError
from .distill import kd_loss, load_teacher
from .evaluate import evaluate
from .optim import create_optimizer, create_scheduler
from .runlog import RunLog
from .runtime import RunEnv, capture_rng, isolated_rng, restore_rng
from .stages import StageContext
from .stop import RunStopped, StopRequest

__all__ = ["RunData", "StepInfo", "Callback", "FitResult", "Trainer", "resolve_select"]


@dataclass
class RunData:
    """The splits of a run as device loaders, and what a method may need to build more."""

    spec: DatasetSpec
    train: DeviceLoader
    select: DeviceLoader           # the held-out part of the training split, or the eval split
    select_split: str              # "holdout" or the eval split's name
    eval: DeviceLoader             # the split models are scored on (CIFAR-100 test, Tiny ImageNet val)
    eval_split: str
    train_arrays: ImageArrays
    classes: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)

    @property
    def has_holdout(self) -> bool:
        return self.select_split == "holdout"


@dataclass
class StepInfo:
    """One training step, as loss terms and callbacks see it."""

    ctx: StageContext
    epoch: int
    step: int                      # optimizer steps so far in this stage
    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    teacher_logits: Optional[torch.Tensor] = None
    loss: Optional[torch.Tensor] = None   # set once all terms are added (for on_step_end)


class Callback:
    """Hooks into :meth:`Trainer.fit`; override what you need. ``on_epoch_end`` may add keys to the
    epoch's record (they go to log.jsonl) and returns True to end the stage early.

    ``mid_epoch_safe``: set True when everything the callback carries within an epoch lives in
    ``ctx.state`` (saved with every checkpoint). A run stopped in the middle of an epoch (time budget,
    SIGTERM) is then saved there and resumed from that batch, without calling ``on_epoch_start`` again;
    otherwise the partial epoch is dropped and ``--resume`` repeats that epoch from its start."""

    mid_epoch_safe: bool = False

    def on_epoch_start(self, ctx: StageContext, epoch: int) -> None:
        pass

    def on_step_end(self, ctx: StageContext, step: StepInfo) -> None:
        pass

    def on_epoch_end(self, ctx: StageContext, epoch: int, record: dict[str, Any]) -> Optional[bool]:
        return None


LossTerm = Callable[[StepInfo], torch.Tensor]


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    select: str                    # "best" or "last"
    chosen_epoch: int              # epoch (1-based) whose weights the model holds after fit
    chosen: dict[str, Any]         # that epoch's selection metrics


def resolve_select(select: str, has_holdout: bool, stage: str) -> str:
    if select == "auto":
        return "best" if has_holdout else "last"
    if select == "best" and not has_holdout:
        raise HybrezooError(f"stage {stage!r}: select=best needs a held-out split (data.holdout > 0); picking the "
                            "best epoch on the test split would overstate accuracy: use select=last")
    return select


class Trainer:
    """Runs :meth:`fit` for the stages of one run; ``save`` writes the checkpoint the runner assembles.

    ``teachers`` may be a dict shared by the trainers of several runs (lockstep: one teacher module, one
    forward per step for all); ``stop`` is polled after every step (time budget, SIGTERM)."""

    def __init__(self, env: RunEnv, data: RunData, log: RunLog, runtime: Mapping[str, Any],
                 save: Callable[[StageContext, dict[str, Any], Optional[dict[str, Any]]], None],
                 teachers: Optional[dict[tuple[str, Optional[str]], nn.Module]] = None,
                 stop: Optional[StopRequest] = None) -> None:
        self.env = env
        self.data = data
        self.log = log
        self.runtime = runtime
        self.save = save
        self.stop = stop
        self._teachers: dict[tuple[str, Optional[str]], nn.Module] = teachers if teachers is not None else {}

    # -- pieces a stage may also use directly --------------------------------------------------------
    def evaluate(self, model: nn.Module, split: str = "select") -> dict[str, float]:
        loader = {"select": self.data.select, "eval": self.data.eval}.get(split)
        if loader is None:
            raise ValueError(f"split must be 'select' or 'eval', got {split!r}")
        return evaluate(model, loader, self.env)

    @staticmethod
    def teacher_key(distill: Mapping[str, Any]) -> Optional[tuple[str, Optional[str]]]:
        """What identifies a teacher module: its zoo name and weights (None without distillation)."""
        if not distill.get("teacher"):
            return None
        source = distill.get("checkpoint")
        return str(distill["teacher"]), None if source is None else str(source)

    def teacher(self, distill: Mapping[str, Any]) -> Optional[nn.Module]:
        key = self.teacher_key(distill)
        if key is None:
            return None
        if key not in self._teachers:
            # building the teacher initialises weights that its checkpoint then replaces: keep that from
            # consuming the run's random stream (the run is then the same alone and in lockstep)
            with isolated_rng():
                teacher = load_teacher(distill, num_classes=self.data.spec.num_classes)
            self._teachers[key] = self.env.prepare(teacher)
        return self._teachers[key]

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self, ctx: StageContext, *, params: Any = None, loss_terms: Optional[Mapping[str, LossTerm]] = None,
            callbacks: Sequence[Callback] = ()) -> FitResult:
        """Train ``ctx.model`` for the stage's epochs and return its per-epoch history.

        ``params``: what the optimizer updates (a module, parameters or param groups; default the
        model with the recipe's weight-decay rules). ``loss_terms``: named functions of a
        :class:`StepInfo` whose values are added to the loss (and logged); they must be pure functions
        of the step. ``callbacks``: :class:`Callback` objects. Resumes from ``ctx.resume`` when the
        runner set it. A solo run is a lockstep group of one (:meth:`fit_lockstep`).
        """
        member = self._member(ctx, params, loss_terms, callbacks, contextlib.nullcontext())
        _fit_members([member])
        assert ctx.result is not None
        return ctx.result

    @staticmethod
    def fit_lockstep(ctxs: Sequence[StageContext], slots: Sequence[Any]) -> list[FitResult]:
        """Train the plain stages of several runs together: one data batch (and one forward of each shared
        teacher) per step feeds every run, and each run's own random states are put in place (``slots``,
        :class:`~hybrezoo.engine.runtime.RngSlot`) while it works, so every run ends exactly as it would
        alone. The runs must share the data loader, epochs, position and stage stream (the runner groups
        only such runs)."""
        members = []
        for ctx, slot in zip(ctxs, slots):
            with slot:
                members.append(ctx.trainer._member(ctx, None, None, (), slot))
        _fit_members(members)
        return [ctx.result for ctx in ctxs]  # type: ignore[misc]

    def _member(self, ctx: StageContext, params: Any, loss_terms: Optional[Mapping[str, LossTerm]],
                callbacks: Sequence[Callback], slot: Any) -> "_Member":
        if ctx.fitted:
            raise HybrezooError(f"stage {ctx.name!r} called fit twice: split the work into two stages")
        ctx.fitted = True
        sec, model = ctx.section, ctx.model
        epochs = int(sec["epochs"])
        if epochs < 1:
            raise HybrezooError(f"stage {ctx.name!r}: epochs must be >= 1, got {epochs}")
        select = resolve_select(sec["select"], self.data.has_holdout, ctx.name)
        optimizer = create_optimizer(sec["optimizer"], model if params is None else params,
                                     fused=self.env.fused_optimizer)
        scheduler = create_scheduler(optimizer, sec["schedule"], epochs, len(self.data.train))
        teacher = self.teacher(sec["distill"])
        terms = dict(loss_terms or {})
        state: dict[str, Any] = {"epoch": 0, "step": 0, "done": False, "history": [], "chosen": None,
                                 "best_model": None, "batch": 0, "partial": None}
        if ctx.resume is not None:
            saved = ctx.resume
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            ctx.state.clear()
            ctx.state.update(saved["state"])
            restore_rng(saved["rng"])
            state.update({k: saved[k] for k in ("epoch", "step", "done", "history", "chosen", "best_model")})
            state.update(batch=int(saved.get("batch") or 0), partial=saved.get("partial"))
            ctx.resume = None
        distill = sec["distill"]
        return _Member(trainer=self, ctx=ctx, model=model, net=self.env.wrap(model), optimizer=optimizer,
                       scheduler=scheduler, teacher=teacher, teacher_key=self.teacher_key(distill), terms=terms,
                       callbacks=list(callbacks), select=select, epochs=epochs, state=state, slot=slot,
                       smoothing=float(sec["loss"]["label_smoothing"]), temperature=float(distill["temperature"]),
                       kd_weight=float(distill["weight"]))

    @staticmethod
    def _check_finite(loss_sum: torch.Tensor, ctx: StageContext, epoch: int) -> None:
        if not math.isfinite(float(loss_sum)):
            raise HybrezooError(f"stage {ctx.name!r}: the loss became {float(loss_sum)} in epoch {epoch + 1}; the last "
                                "complete epoch is kept in the checkpoint: lower optimizer.lr or add warm-up")


@dataclass
class _Member:
    """One run inside :func:`_fit_members`: its model, optimizer, schedule, teacher and loop state."""

    trainer: Trainer
    ctx: StageContext
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    teacher: Optional[nn.Module]
    teacher_key: Optional[tuple[str, Optional[str]]]
    terms: dict[str, LossTerm]
    callbacks: list[Callback]
    select: str
    epochs: int
    state: dict[str, Any]
    slot: Any
    smoothing: float
    temperature: float
    kd_weight: float
    sums: Optional[torch.Tensor] = None
    elapsed_before: float = 0.0

    @property
    def names(self) -> list[str]:
        return ["loss", "correct", "images", *self.terms, *(["kd"] if self.teacher is not None else [])]

    @property
    def active(self) -> bool:
        return not self.state["done"] and self.state["epoch"] < self.epochs

    @property
    def mid_epoch_safe(self) -> bool:
        return all(getattr(cb, "mid_epoch_safe", False) for cb in self.callbacks)

    def step(self, images: torch.Tensor, labels: torch.Tensor, epoch: int,
             teacher_out: dict[Any, torch.Tensor]) -> None:
        """One optimizer step on a batch; a teacher's logits are computed once per batch for the group."""
        env, ctx, state = self.trainer.env, self.ctx, self.state
        with env.autocast():
            logits = self.net(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.smoothing)
            info = StepInfo(ctx, epoch, state["step"], images, labels, logits)
            parts = []
            if self.teacher is not None:
                if self.teacher_key not in teacher_out:
                    with torch.no_grad():
                        teacher_out[self.teacher_key] = self.teacher(images)
                info.teacher_logits = teacher_out[self.teacher_key]
                kd = kd_loss(logits, info.teacher_logits, self.temperature)
                loss = loss + self.kd_weight * kd
            for term in self.terms.values():
                value = term(info)
                parts.append(value.detach())
                loss = loss + value
            if self.teacher is not None:
                parts.append(kd.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        state["step"] += 1
        info.loss = loss.detach()
        n = labels.shape[0]
        stats = [info.loss.double() * n, (logits.detach().argmax(1) == labels).sum().double(),
                 torch.full((), float(n), device=env.device, dtype=torch.float64),  # a fill, not a host copy
                 *[p.double() * n for p in parts]]
        assert self.sums is not None
        self.sums += torch.stack(stats)
        for cb in self.callbacks:
            cb.on_step_end(ctx, info)

    def fit_state(self, record_done: bool) -> dict[str, Any]:
        """The resumable state of the stage (``record_done``: at an epoch's end, else mid-epoch)."""
        state = self.state
        return {"epoch": state["epoch"], "step": state["step"], "done": state["done"], "history": state["history"],
                "chosen": state["chosen"], "best_model": state["best_model"], "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "state": dict(self.ctx.state), "rng": capture_rng(),
                "batch": 0 if record_done else state["batch"], "partial": None if record_done else state["partial"]}


def _stop_now(stop: Optional[StopRequest], env: RunEnv, done: int, log_every: int) -> bool:
    """Whether to stop now; under DDP every process must agree, so they vote at the logging steps."""
    if stop is None:
        return False
    if not env.distributed:
        return stop.requested()
    if done % log_every:
        return False
    flag = torch.tensor([1.0 if stop.requested() else 0.0], device=env.device)
    return float(env.all_reduce_sum(flag)) > 0


def _fit_members(members: Sequence[_Member]) -> None:
    """The training loop for one run or a lockstep group (see :meth:`Trainer.fit_lockstep`)."""
    lead = members[0].trainer
    env, loader = lead.env, lead.data.train
    stream = f"{members[0].ctx.index}:{members[0].ctx.name}"
    for m in members[1:]:
        if m.trainer.data.train is not loader or f"{m.ctx.index}:{m.ctx.name}" != stream or m.epochs != \
                members[0].epochs or m.trainer.runtime.get("max_steps") != lead.runtime.get("max_steps"):
            raise HybrezooError("runs trained in lockstep must share the data loader, stage, epochs and max_steps")
    log_every = max(1, int(lead.runtime.get("log_every") or 20))
    while True:
        active = [m for m in members if m.active]
        if not active:
            break
        epoch, start = active[0].state["epoch"], active[0].state["batch"]
        if any((m.state["epoch"], m.state["batch"]) != (epoch, start) for m in active):
            raise HybrezooError("runs trained in lockstep must stand at the same epoch and batch")
        if start == 0 and _stop_now(lead.stop, env, 0, log_every):
            _stopped(active, epoch, 0, 0, mid_epoch=False)
        for m in active:
            with m.slot:
                if start == 0:  # a resumed epoch already ran these (their effects are in ctx.state)
                    for cb in m.callbacks:
                        cb.on_epoch_start(m.ctx, epoch)
        _train_epoch(active, epoch, start, stream, log_every)
        for m in active:
            with m.slot:
                _end_epoch(m, epoch)
    for m in members:
        with m.slot:
            state = m.state
            if m.select == "best" and state["best_model"] is not None:
                m.model.load_state_dict(state["best_model"])
                m.trainer.log.info(f"stage {m.ctx.name}: kept epoch {state['chosen']['epoch']}, best on the held-out "
                                   f"split (top-1 {state['chosen']['top1']:.2f})")
            m.ctx.result = FitResult(state["history"], m.select, state["chosen"]["epoch"], state["chosen"])


def _train_epoch(active: Sequence[_Member], epoch: int, start: int, stream: str, log_every: int) -> None:
    lead = active[0].trainer
    env, loader, runtime = lead.env, lead.data.train, lead.runtime
    max_steps = runtime.get("max_steps")
    loader.set_epoch(epoch, stream=stream, start=start)
    total = len(loader)
    if max_steps:  # steps of this stage before this epoch: the counter minus the batches already done in it
        total = max(0, min(total, int(max_steps) - (active[0].state["step"] - start)))
    for m in active:
        with m.slot:
            m.net.train()
            if m.teacher is not None:
                m.teacher.eval()
            partial = m.state["partial"] if start else None
            m.sums = torch.zeros(len(m.names), dtype=torch.float64, device=env.device)
            if partial is not None and env.is_main:  # the saved sums are the whole world's: one process holds them
                m.sums += partial["sums"].to(env.device, torch.float64)
            m.elapsed_before = float(partial["elapsed"]) if partial is not None else 0.0
    epochs = active[0].epochs
    group = f" (lockstep, {len(active)} runs)" if len(active) > 1 else ""
    bar = tqdm(total=total, initial=min(start, total), desc=f"{active[0].ctx.name} {epoch + 1}/{epochs}{group}",
               leave=False, dynamic_ncols=True, disable=not (env.is_main and runtime.get("progress", True)))
    t0 = time.perf_counter()
    done = start
    if done < total:
        for images, labels in loader:
            teacher_out: dict[Any, torch.Tensor] = {}
            for m in active:
                with m.slot:
                    m.step(images, labels, epoch, teacher_out)
                    m.state["batch"] = done + 1
            done += 1
            if (done - start) % log_every == 0 or done == total:
                for m in active:
                    assert m.sums is not None
                    Trainer._check_finite(m.sums[0], m.ctx, epoch)
                first = active[0]
                assert first.sums is not None
                seen = float(first.sums[2])
                elapsed = time.perf_counter() - t0
                rate = (done - start) * loader.batch_size / max(elapsed, 1e-9)
                postfix = {} if len(active) > 1 else {"loss": f"{float(first.sums[0]) / seen:.3f}",
                                                      "acc": f"{100 * float(first.sums[1]) / seen:.1f}"}
                bar.update(done - bar.n)
                bar.set_postfix(**postfix, img_s=f"{rate:.0f}", lr=f"{first.optimizer.param_groups[0]['lr']:.3g}",
                                left=_eta(elapsed, done - start, total - start, epochs - epoch - 1, total),
                                refresh=False)
            if done >= total:
                break
            if _stop_now(lead.stop, env, done - start, log_every):
                bar.close()
                for m in active:
                    assert m.sums is not None
                    m.state["partial"] = {"sums": env.all_reduce_sum(m.sums.detach().clone()).cpu(),
                                          "elapsed": m.elapsed_before + time.perf_counter() - t0}
                _stopped(active, epoch, done, total, mid_epoch=True)
    bar.close()
    elapsed = time.perf_counter() - t0
    for m in active:
        assert m.sums is not None
        env.all_reduce_sum(m.sums)
        sums, seen = m.sums, max(float(m.sums[2]), 1.0)
        took = m.elapsed_before + elapsed
        m.state["epoch_stats"] = {
            "train_loss": float(sums[0]) / seen, "train_top1": 100.0 * float(sums[1]) / seen,
            "train_images": int(sums[2]), "lr": m.optimizer.param_groups[0]["lr"],
            "images_per_s": float(sums[2]) / max(took, 1e-9), "epoch_time_s": took,
            **{f"train_{name}": float(sums[i]) / seen for i, name in enumerate(m.names[3:], start=3)}}
        if len(active) > 1:
            m.state["epoch_stats"]["lockstep_runs"] = len(active)


def _end_epoch(m: _Member, epoch: int) -> None:
    """Evaluate, let callbacks see the record, keep the selected weights and write the checkpoint."""
    trainer, ctx, state = m.trainer, m.ctx, m.state
    metrics = evaluate(m.model, trainer.data.select, trainer.env)
    record = {"stage": ctx.name, "epoch": epoch + 1, "epochs": m.epochs, "step": state["step"],
              **state.pop("epoch_stats"), "eval_split": trainer.data.select_split, "eval_top1": metrics["top1"],
              "eval_top5": metrics["top5"], "eval_loss": metrics["loss"]}
    stop = False
    for cb in m.callbacks:
        stop = bool(cb.on_epoch_end(ctx, epoch, record)) or stop
    better = state["chosen"] is None or metrics["top1"] > state["chosen"]["top1"]
    if m.select == "last" or better:
        state["chosen"] = {"epoch": epoch + 1, "split": trainer.data.select_split,
                           "top1": metrics["top1"], "top5": metrics["top5"]}
        if m.select == "best":
            state["best_model"] = {k: v.detach().to("cpu", copy=True) for k, v in m.model.state_dict().items()}
    state["epoch"] = epoch + 1
    state["batch"], state["partial"] = 0, None
    state["history"].append(record)
    max_steps = trainer.runtime.get("max_steps")
    hit_max = bool(max_steps) and state["step"] >= int(max_steps)
    state["done"] = stop or hit_max or state["epoch"] >= m.epochs
    trainer.save(ctx, m.fit_state(record_done=True), record)


def _stopped(active: Sequence[_Member], epoch: int, batch: int, total: int, mid_epoch: bool) -> None:
    """Write what can be resumed exactly, log it in every run, and raise :class:`RunStopped`."""
    lead = active[0].trainer
    assert lead.stop is not None
    reason = lead.stop.reason
    safe = mid_epoch and all(m.mid_epoch_safe for m in active)
    for m in active:
        with m.slot:
            if safe:
                m.trainer.save(m.ctx, m.fit_state(record_done=False), None)
                where = f"in epoch {epoch + 1} after batch {batch}/{total}: saved there"
            elif mid_epoch:
                where = (f"in epoch {epoch + 1} after batch {batch}/{total}: a callback of stage {m.ctx.name} keeps "
                         f"per-epoch state outside ctx.state, so --resume repeats epoch {epoch + 1} from its start")
            else:
                where = f"before epoch {epoch + 1}"
            m.trainer.log.info(f"stopped ({reason}) {where}; continue with --resume")
    runs = tuple(str(m.ctx.run_dir) for m in active)
    raise RunStopped(f"{reason}: stopped {', '.join(runs)} in epoch {epoch + 1}; continue with --resume", runs)


def _eta(elapsed: float, done: int, total: int, epochs_after: int, epoch_steps: Optional[int] = None) -> str:
    if done == 0:
        return "?"
    per_step = elapsed / done
    seconds = per_step * ((total - done) + epochs_after * (epoch_steps if epoch_steps is not None else total))
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
