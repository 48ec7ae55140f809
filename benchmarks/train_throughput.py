"""Training throughput of the engine: ResNet18 on Tiny ImageNet shapes (64x64, 200 classes).

Runs the real training loop (``hybrezoo.engine.Trainer.fit``: device-resident uint8 data, on-device
crop/flip, bf16 autocast and channels_last on GPUs, optional torch.compile) on synthetic uint8
images of the real shape, and prints images/s, seconds per epoch of 100,000 images, the training
FLOPs per image (forward + backward, counted by torch's FlopCounterMode) and, on a known GPU, the
fraction of its dense bf16 peak reached. Target on an H100/H200 (issue 13): one epoch in 3.0 s or less.

    python benchmarks/train_throughput.py                      # CPU: a few steps, extrapolated
    python benchmarks/train_throughput.py --compile            # GPU: two full epochs, the second timed

``--set training/sets/tin_deepreduce.yaml`` measures a whole set instead: every run's training step
(the student with its teacher's forward, random weights, synthetic images of the real shape) one at a
time and, for each lockstep group of the set, all its students together; it prints per run the images/s,
seconds per epoch and fraction of the dense bf16 peak, and for the set the GPU-minutes of its training
steps and the checkpoints per GPU-hour, one run at a time and in lockstep. Evaluation, data decoding and
start-up are not included. On the CPU it times a few steps of a small batch, and every figure is a CPU
extrapolation, not a GPU figure.

    python benchmarks/train_throughput.py --set training/sets/tin_deepreduce.yaml --steps 50   # GPU
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybrezoo.data import Augment, DeviceLoader, ImageArrays, dataset_spec  # noqa: E402
from hybrezoo.engine.recipe import Recipe, resolve, stage_section  # noqa: E402
from hybrezoo.engine.runlog import RunLog  # noqa: E402
from hybrezoo.engine.runtime import init_env  # noqa: E402
from hybrezoo.engine.stages import StageContext  # noqa: E402
from hybrezoo.engine.trainer import RunData, Trainer  # noqa: E402
from hybrezoo.models import create_model  # noqa: E402

EPOCH_IMAGES = 100_000  # Tiny ImageNet's training split
EPOCH_IMAGES_OF = {"tinyimagenet": 100_000, "cifar100": 50_000}

# Dense (no sparsity) BF16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s: H100 SXM5 and
# H200 1,979 with sparsity (989.5 dense); H100 PCIe 1,513 (756); H100 NVL 1,671 (835.5);
# A100 624 (312). Matched on the device name, most specific first.
PEAK_BF16_TFLOPS = (("H100 NVL", 835.5), ("H100 PCIe", 756.0), ("H100", 989.5), ("H200", 989.5),
                    ("A100", 312.0))


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value
    return None


def train_flops_per_image(model_name: str, input_size: tuple[int, int, int]) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of one image, counted on a CPU copy of the model."""
    model = create_model(model_name)
    x = torch.randn(2, *input_size)
    y = torch.zeros(2, dtype=torch.long)
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(x)
    with FlopCounterMode(display=False) as total:
        F.cross_entropy(model(x), y).backward()
    return fwd.get_total_flops() / 2, total.get_total_flops() / 2


def _synthetic(spec, images: int, seed: int = 0) -> ImageArrays:
    rng = np.random.default_rng(seed)
    return ImageArrays(rng.integers(0, 256, (images, *spec.input_size[1:], 3), dtype=np.uint8),
                       rng.integers(0, spec.num_classes, images), [str(i) for i in range(spec.num_classes)])


def main_set(args: argparse.Namespace) -> None:
    """``--set``: one-at-a-time vs lockstep training steps of every run of a set (see the module doc)."""
    import copy

    from hybrezoo.data.arrays import holdout_count
    from hybrezoo.engine.run import _model_name
    from hybrezoo.engine.runtime import RngSlot, seed_everything
    from hybrezoo.engine.sets import plan_set
    from hybrezoo.engine.recipe import build_recipe_model

    with tempfile.TemporaryDirectory() as runs:
        plan = plan_set([args.set], runs_dir=runs, check_data=False)
    runtime_cfg = {"device": args.device, "amp": args.amp, "channels_last": args.channels_last,
                   "compile": args.compile, "fused_optimizer": args.fused, "progress": False, "log_every": 10}
    env = init_env(runtime_cfg)
    gpu = env.device.type == "cuda"
    steps = args.steps or (50 if gpu else 2)
    device_name = torch.cuda.get_device_name(env.device) if gpu else "CPU"
    peak = peak_tflops(device_name) if gpu else None
    flops_cache: dict[str, tuple[float, float]] = {}

    def flops(name: str, input_size) -> tuple[float, float]:
        if name not in flops_cache:
            flops_cache[name] = train_flops_per_image(name, input_size)
        return flops_cache[name]

    loaders: dict[tuple, RunData] = {}
    teachers: dict = {}

    def run_data(rec) -> RunData:
        _, dataset = _model_name(rec)
        spec = dataset_spec(dataset)
        batch = args.batch_size or int(rec["data"]["batch_size"])
        key = (spec.name, batch)
        if key not in loaders:
            train = _synthetic(spec, batch * steps)
            held = train.subset(np.arange(min(len(train), 256)))
            common = dict(mean=spec.mean, std=spec.std, device=env.device, channels_last=env.channels_last)
            loaders[key] = RunData(spec=spec, train=DeviceLoader(train, batch_size=batch, train=True, augment=Augment(),
                                                                 **common),
                                   select=DeviceLoader(held, batch_size=256, max_batches=1, **common),
                                   select_split="holdout", eval=DeviceLoader(held, batch_size=256, **common),
                                   eval_split="val", train_arrays=train, classes=train.classes)
        return loaders[key]

    def contexts(runs, tmp):
        ctxs = []
        for r in runs:
            rec = copy.deepcopy(r.rec)
            rec.data["runtime"].update(runtime_cfg)
            data = run_data(rec)
            section = stage_section(rec, 0)
            section.update(epochs=2, select="last")
            distill = section["distill"]
            key = Trainer.teacher_key(distill)
            if key is not None and key not in teachers:  # random weights: only its cost matters here
                teacher = create_model(distill["teacher"]).eval()
                for param in teacher.parameters():
                    param.requires_grad_(False)
                teachers[key] = env.prepare(teacher)
            seed_everything(int(rec["seed"]))
            name, dataset = _model_name(rec)
            model = env.prepare(build_recipe_model(name, rec["model"]["kwargs"], data.spec.num_classes,
                                                   data.spec.title))
            trainer = Trainer(env, data, RunLog(Path(tmp), enabled=False), rec["runtime"], save=lambda *a: None,
                              teachers=teachers)
            ctxs.append(StageContext(index=0, name="bench", kind="train", section=section, model=model, data=data,
                                     trainer=trainer, env=env, recipe=rec, run_dir=Path(tmp), log=trainer.log))
        return ctxs

    def epoch_images(rec) -> int:
        _, dataset = _model_name(rec)
        full = EPOCH_IMAGES_OF[dataset]
        holdout = float(rec["data"]["holdout"])
        return full - (holdout_count(holdout, full) if holdout else 0)

    def step_flops(r) -> tuple[float, float]:
        _, dataset = _model_name(r.rec)
        size = dataset_spec(dataset).input_size
        total = flops(r.model, size)[1]
        teacher = stage_section(r.rec, 0)["distill"]["teacher"]
        return total, (flops(teacher, size)[0] if teacher else 0.0)

    measurable = [r for u in plan.units for r in u.runs
                  if len(r.rec.stages) == 1 and r.rec.stages[0]["kind"] == "train"]
    skipped = [r.label for u in plan.units for r in u.runs if r not in measurable]
    print(f"set                {args.set}: {len(plan.runs)} runs, {len(plan.units)} units "
          f"({sum(len(u.runs) > 1 for u in plan.units)} lockstep groups)")
    amp = str(env.amp_dtype or "off").replace("torch.", "")
    print(f"device             {device_name}  amp {amp}  channels_last {env.channels_last}  compile "
          f"{env.compile_mode or 'off'}  fused optimizer {env.fused_optimizer and gpu}  "
          f"threads {torch.get_num_threads()}")
    print(f"timed              epoch 2 of 2, {steps} steps each (epoch 1 warms up); batch: "
          f"{args.batch_size or 'each recipe'}s own")
    if not gpu:
        print("NOTE               CPU run: every figure below is a CPU extrapolation from a few steps, not a GPU "
              "measurement")
    alone: dict[int, float] = {}     # run index -> images/s alone
    with tempfile.TemporaryDirectory() as tmp:
        for r in measurable:
            (ctx,) = contexts([r], tmp)
            result = ctx.trainer.fit(ctx)
            alone[r.index] = result.history[-1]["images_per_s"]
        group_rate: dict[int, float] = {}   # unit position -> images/s of the group
        for ui, unit in enumerate(plan.units):
            members = [r for r in unit.runs if r in measurable]
            if len(members) < 2:
                continue
            ctxs = contexts(members, tmp)
            results = Trainer.fit_lockstep(ctxs, [RngSlot() for _ in ctxs])
            group_rate[ui] = results[0].history[-1]["images_per_s"]

    width = max(len(r.label) for r in plan.runs) + 1
    header = f"{'run':{width}} {'epochs':>6} {'GFLOP/img':>9} {'img/s alone':>11} {'s/epoch':>8} {'% peak':>7}"
    print(header)
    total_alone = 0.0
    for r in measurable:
        student, teacher = step_flops(r)
        rate = alone[r.index]
        seconds = epoch_images(r.rec) / rate * r.epochs
        total_alone += seconds
        frac = f"{100 * rate * (student + teacher) / 1e12 / peak:.1f}" if peak else "n/a"
        print(f"{r.label:{width}} {r.epochs:>6} {(student + teacher) / 1e9:>9.2f} {rate:>11,.0f} "
              f"{epoch_images(r.rec) / rate:>8.1f} {frac:>7}")
    total_lockstep = 0.0
    for ui, unit in enumerate(plan.units):
        members = [r for r in unit.runs if r in measurable]
        if not members:
            continue
        if ui not in group_rate:
            total_lockstep += epoch_images(members[0].rec) / alone[members[0].index] * members[0].epochs
            continue
        rate = group_rate[ui]
        seconds = epoch_images(members[0].rec) / rate * members[0].epochs
        total_lockstep += seconds
        group_flops = sum(step_flops(r)[0] for r in members) + step_flops(members[0])[1]
        frac = f"{100 * rate * group_flops / 1e12 / peak:.1f}" if peak else "n/a"
        print(f"{'lockstep: ' + str(len(members)) + ' runs':{width}} {members[0].epochs:>6} {group_flops / 1e9:>9.2f} "
              f"{rate:>11,.0f} {epoch_images(members[0].rec) / rate:>8.1f} {frac:>7}   (one batch, one teacher "
              "forward per step)")
    n = len(measurable)
    what = "CPU-minutes (extrapolated)" if not gpu else "GPU-minutes"
    print(f"set, one at a time {total_alone / 60:,.1f} {what} of training steps; {n / (total_alone / 3600):.3g} "
          "checkpoints per hour")
    print(f"set, lockstep      {total_lockstep / 60:,.1f} {what} of training steps; "
          f"{n / (total_lockstep / 3600):.3g} checkpoints per hour")
    if skipped:
        print(f"not measured       {', '.join(skipped)} (stages other than one plain train stage)")
    print("not included       per-epoch evaluation, JPEG decoding, start-up, torch.compile time")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pi_resnet18.tin")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--images", type=int, help="synthetic training images on the device "
                   "(default: 100,000 on a GPU; 8 batches on the CPU)")
    p.add_argument("--epochs", type=int,
                   help="epochs to run; the last one is timed (default: 2 on a GPU, 1 on the CPU)")
    p.add_argument("--compile", nargs="?", const="default", help="torch.compile (optionally a mode)")
    p.add_argument("--amp", default="auto")
    p.add_argument("--channels-last", default="auto")
    p.add_argument("--fused", action="store_true", help="runtime.fused_optimizer (fused CUDA optimizer kernels)")
    p.add_argument("--set", metavar="SET", help="measure a set file (training/sets/*.yaml) instead of one model")
    p.add_argument("--steps", type=int, help="--set: timed steps per run (default 50 on a GPU, 2 on the CPU)")
    args = p.parse_args()
    if args.set:
        if args.batch_size == 256 and not any(a.startswith("--batch-size") for a in sys.argv[1:]):
            args.batch_size = None if torch.cuda.is_available() else 8
        return main_set(args)

    spec = dataset_spec(args.model.rsplit(".", 1)[-1])
    runtime_cfg = {"device": args.device, "amp": args.amp, "channels_last": args.channels_last,
                   "compile": args.compile, "fused_optimizer": args.fused, "progress": False, "log_every": 50}
    env = init_env(runtime_cfg)
    gpu = env.device.type == "cuda"
    images = args.images or (EPOCH_IMAGES if gpu else 8 * args.batch_size)
    epochs = args.epochs or (2 if gpu else 1)

    rng = np.random.default_rng(0)
    train = ImageArrays(rng.integers(0, 256, (images, *spec.input_size[1:], 3), dtype=np.uint8),
                        rng.integers(0, spec.num_classes, images), [str(i) for i in range(spec.num_classes)])
    held = train.subset(np.arange(min(images, 1000 if gpu else 128)))  # per-epoch evaluation, not timed
    common = dict(mean=spec.mean, std=spec.std, device=env.device, channels_last=env.channels_last)
    data = RunData(spec=spec, train=DeviceLoader(train, batch_size=args.batch_size, train=True, augment=Augment(),
                                                 **common),
                   select=DeviceLoader(held, batch_size=500, **common), select_split="holdout",
                   eval=DeviceLoader(held, batch_size=500, **common), eval_split="val", train_arrays=train,
                   classes=train.classes)
    recipe = Recipe(resolve({"model": {"name": args.model}, "epochs": epochs, "select": "last",
                             "data": {"batch_size": args.batch_size},
                             "schedule": {"name": "cosine", "warmup_epochs": 0}, "runtime": runtime_cfg}))
    model = env.prepare(create_model(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(env, data, RunLog(Path(tmp), enabled=False), recipe["runtime"], save=lambda *a: None)
        ctx = StageContext(index=0, name="bench", kind="train", section=stage_section(recipe, 0), model=model,
                           data=data, trainer=trainer, env=env, recipe=recipe, run_dir=Path(tmp), log=trainer.log)
        start = time.perf_counter()
        result = trainer.fit(ctx)
        total = time.perf_counter() - start
    last = result.history[-1]
    img_s = last["images_per_s"]
    fwd_flops, train_flops = train_flops_per_image(args.model, spec.input_size)
    device_name = torch.cuda.get_device_name(env.device) if gpu else "CPU"
    achieved = img_s * train_flops / 1e12
    peak = peak_tflops(device_name) if gpu else None

    print(f"model              {args.model}  input {spec.input_size}  batch {args.batch_size}")
    amp = str(env.amp_dtype or "off").replace("torch.", "")
    print(f"device             {device_name}  amp {amp}  channels_last {env.channels_last}  "
          f"compile {env.compile_mode or 'off'}  threads {torch.get_num_threads()}")
    print(f"timed epoch        {last['train_images']:,} images in {last['epoch_time_s']:.2f} s "
          f"(epoch {last['epoch']} of {epochs}; all epochs with evaluation: {total:.1f} s)")
    print(f"images/s           {img_s:,.0f}")
    scaled = "" if last["train_images"] >= EPOCH_IMAGES else " (extrapolated)"
    print(f"s / epoch          {EPOCH_IMAGES / img_s:,.1f} s for {EPOCH_IMAGES:,} images{scaled}; "
          "target <= 3.0 s on H100/H200")
    print(f"FLOPs / image      {fwd_flops / 1e9:.2f} GFLOP forward, {train_flops / 1e9:.2f} GFLOP forward+backward")
    print(f"achieved           {achieved:,.2f} TFLOP/s" +
          (f" = {100 * achieved / peak:.1f}% of the {peak:g} TFLOP/s dense bf16 peak" if peak else
           " (no peak figure for this device)"))


if __name__ == "__main__":
    main()
