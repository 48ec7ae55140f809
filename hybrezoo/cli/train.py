"""``hybrezoo train RECIPE [RECIPE|SET ...] --data PATH [--out DIR] [key=value ...]`` and
``hybrezoo eval NAME --data PATH``.

One recipe without set options is a plain run (:func:`hybrezoo.engine.run_recipe`); several recipes, a set
file (``training/sets/*.yaml``) or any of ``--time-budget``, ``--jobs``, ``--runs``, ``--plan`` train a set
(:mod:`hybrezoo.engine.sets`): ordered, skipping finished runs, students in lockstep, within the budget."""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ..errors import HybrezooError
from ._run import run_recipe_command

_TRAIN_EPILOG = """overrides: key=value pairs after the recipe change any recipe key, e.g.
  epochs=2 optimizer.lr=0.05 data.batch_size=64 stages.0.epochs=1 runtime.max_steps=10
several GPUs: torchrun --nproc_per_node=N -m hybrezoo train RECIPE --data PATH (same recipe)
a set of runs: hybrezoo train training/sets/tin_deepreduce.yaml --data PATH --time-budget 9m
  (teachers first, finished runs skipped, students of one teacher in lockstep; add --resume next time)
exit status: 0 done, 2 error, 75 stopped by --time-budget or SIGTERM with work left (add --resume)"""


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH", help="folder holding cifar-100-python/ or tiny-imagenet-200/ "
                   "(default: $HYBREZOO_DATA)")
    p.add_argument("--out", metavar="DIR",
                   help="run folder (default: runs/<method>/<name> for training/<method>/<name>.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder from its last checkpoint")
    p.add_argument("--restart", action="store_true",
                   help="discard the run in the run folder (checkpoint, logs, weights, metrics) and start it over")
    p.add_argument("--download", action="store_true", help="download CIFAR-100 into --data if it is not there")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--time-budget", metavar="DURATION",
                   help="stop training after this much wall-clock time (90s, 9m, 1.5h) with a checkpoint of the step "
                        "reached; continue with --resume")
    p.add_argument("--runs", metavar="DIR", help="root of a set's run folders: DIR/<method>/<name> (default: runs)")
    p.add_argument("--jobs", type=_positive_int, metavar="N",
                   help="train up to N independent units of a set at once, each in its own process (default 1)")
    p.add_argument("--no-lockstep", action="store_true",
                   help="train every run of a set on its own (default: students of one teacher in lockstep)")
    p.add_argument("--plan", action="store_true",
                   help="print the set's order, lockstep groups and states; train nothing")
    p.add_argument("--summary", metavar="FILE", help="write the set's summary table as JSON to FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress view for a set")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a recipe (or a set of them) end to end into run folders",
                       description="Train a recipe (a YAML file, or a zoo name for its registered recipe) and write "
                                   "model.safetensors, config.json, metrics.json, recipe.yaml, log.jsonl and a "
                                   "resumable checkpoint into the run folder. Several recipes or a set file "
                                   "(training/sets/*.yaml) train a set.",
                       epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _train_options(p)
    p.add_argument("recipe", help="recipe file (training/<method>/<name>.yaml), a zoo name such as pi_resnet18.c100, "
                   "or a set file (training/sets/<name>.yaml); more may follow")
    # Options may follow the recipe among the overrides: REMAINDER keeps argparse from rejecting
    # them, run_train parses them out again.
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="key=value recipe overrides")
    p.set_defaults(func=run_train, _parser=p)

    p = sub.add_parser("eval", help="top-1/top-5 and ReLUs of a model on a data set's evaluation split")
    p.add_argument("name", help="zoo name (published weights unless --checkpoint) or a run folder")
    p.add_argument("--checkpoint", metavar="FILE", help="weights: a run folder, .safetensors or .pt file")
    p.add_argument("--data", metavar="PATH", help="data root (default: $HYBREZOO_DATA)")
    p.add_argument("--split", help="split to score (default: CIFAR-100 test, Tiny ImageNet val)")
    p.add_argument("--batch-size", type=_positive_int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                   help="bf16 autocast: auto (on a GPU that has it), bf16, or off (float32)")
    p.add_argument("--json", action="store_true", help="print JSON")
    from ..methods.circa import add_eval_arguments

    add_eval_arguments(p)
    p.set_defaults(func=run_eval)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def _split_remainder(args: argparse.Namespace) -> None:
    """Move options that followed the recipe out of ``args.overrides``."""
    parser = argparse.ArgumentParser(prog="hybrezoo train", add_help=False)
    _train_options(parser)
    rest = list(args.overrides)
    if rest and rest[0] == "--":
        rest = rest[1:]
    known, leftover = parser.parse_known_args(rest)
    for key, value in vars(known).items():
        if value not in (None, False):
            setattr(args, key, value)
    recipes = [args.recipe]
    overrides = []
    for item in leftover:
        if item in ("-h", "--help"):
            args._parser.print_help()
            raise SystemExit(0)
        if item.startswith("-"):
            raise HybrezooError(f"unknown option {item}: see `hybrezoo train --help`")
        (overrides if "=" in item else recipes).append(item)  # a recipe never holds '=', an override always
    args.recipes = recipes
    args.overrides = overrides


def _is_set_run(args: argparse.Namespace) -> bool:
    from ..engine.sets import is_set_file

    return len(args.recipes) > 1 or is_set_file(args.recipe) or any(
        getattr(args, k) for k in ("time_budget", "runs", "jobs", "no_lockstep", "plan", "summary"))


def run_train(args: argparse.Namespace) -> int:
    _split_remainder(args)
    if _is_set_run(args):
        return run_train_set(args)
    options = [*(["--data", args.data] if args.data else []), *(["--out", args.out] if args.out else []),
               *(["--resume"] if args.resume else []), *(["--restart"] if args.restart else []),
               *(["--download"] if args.download else []),
               *(["--device", args.device] if args.device else [])]
    command = shlex.join(["hybrezoo", "train", args.recipe, *options, *args.overrides])
    return run_recipe_command(args.recipe, data=args.data, out=args.out, overrides=args.overrides,
                              resume=args.resume, restart=args.restart, download=args.download, device=args.device,
                              command=command)


def run_train_set(args: argparse.Namespace) -> int:
    """Several recipes or a set file: plan, train within the budget, print the summary table."""
    import sys

    from ..engine.sets import plan_set, run_set
    from ..engine.stop import StopRequest, parse_duration

    if args.restart:
        raise HybrezooError("--restart discards one run: give one recipe with --out, without set options "
                            "(a set never discards runs; use another --runs DIR to start a set over)")
    budget = parse_duration(args.time_budget) if args.time_budget else None
    stop = StopRequest.within(budget)  # the clock starts now: planning and data checks count
    options = [*(["--data", args.data] if args.data else []), *(["--out", args.out] if args.out else []),
               *(["--runs", args.runs] if args.runs else []), *(["--resume"] if args.resume else []),
               *(["--device", args.device] if args.device else []),
               *(["--time-budget", args.time_budget] if args.time_budget else []),
               *(["--jobs", str(args.jobs)] if args.jobs else []), *(["--no-lockstep"] if args.no_lockstep else [])]
    command = shlex.join(["hybrezoo", "train", *args.recipes, *options, *args.overrides])
    plan = plan_set(args.recipes, args.overrides, runs_dir=args.runs or "runs", data=args.data, resume=args.resume,
                    out=args.out, lockstep=not args.no_lockstep, download=args.download)
    print(plan.describe(), file=sys.stderr if not args.plan else sys.stdout, flush=True)
    if args.plan:
        return 0
    try:
        outcome = run_set(plan, device=args.device, jobs=args.jobs or 1, stop=stop, progress=not args.no_progress,
                          summary=args.summary, command=command)
    except KeyboardInterrupt:
        print("hybrezoo: interrupted; every run keeps its last complete epoch in its checkpoint.pt: continue with "
              f"`{command if args.resume else command + ' --resume'}`", file=sys.stderr)
        return 130
    print(outcome.table())
    for line in outcome.errors:
        print(f"hybrezoo: error: {line}", file=sys.stderr)
    if outcome.exit_code == 75:
        again = command if args.resume else f"{command} --resume"
        print(f"hybrezoo: {stop.reason if stop.requested() else 'stopped'}: continue with `{again}`", file=sys.stderr)
    return outcome.exit_code


def _eval_model(args: argparse.Namespace):
    """The model ``hybrezoo eval`` scores and its label: a run folder, or a zoo name with its published
    weights or ``--checkpoint`` (refused when that checkpoint's run is of another architecture)."""
    import timm

    from ..engine import load_weights
    from ..models import create_model

    path = Path(args.name)
    if path.is_dir() and ((path / "config.json").is_file() or not timm.is_model(args.name)):
        if args.checkpoint:
            raise HybrezooError("give a run folder or --checkpoint, not both")
        # not a run folder, an unfinished run, an unknown architecture: one line from create_model
        return create_model(f"local-dir:{path}", pretrained=True), str(path)
    if args.checkpoint:
        model = create_model(args.name)
        _check_same_model(args.name, model, args.checkpoint)
        load_weights(model, args.checkpoint, what=f"{args.name} weights")
        return model, args.name
    return create_model(args.name, pretrained=True), args.name


def _check_same_model(name: str, model, checkpoint: str) -> None:
    """Refuse weights of another model (its run folder's config.json says which) even when the tensor
    shapes happen to fit: scoring one architecture with another's weights is a silently wrong number."""
    from .._validate import run_folder_config

    source = Path(checkpoint)
    folder = source if source.is_dir() else source.parent
    if not (folder / "config.json").is_file():
        return  # a bare weights file: nothing says whose it is
    config = run_folder_config(folder, "--checkpoint")
    theirs = (config["architecture"], (config.get("pretrained_cfg") or {}).get("tag"))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    ours = (cfg.get("architecture"), cfg.get("tag"))
    if theirs[0] != ours[0] or (theirs[1] and ours[1] and theirs[1] != ours[1]):
        trained = ".".join(t for t in theirs if t)
        raise HybrezooError(f"--checkpoint {checkpoint} holds {trained} weights, not {name}: evaluate that run "
                            f"alone (`hybrezoo eval {folder}`) or give its model, `hybrezoo eval {trained} "
                            f"--checkpoint {checkpoint}`")


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from ..data import data_root, dataset_spec
    from ..engine.evaluate import eval_loader, evaluate, precision_of
    from ..engine.export import model_costs
    from ..methods import circa

    root = data_root(args.data)  # fail on a missing data folder before building anything
    model, label = _eval_model(args)
    tag = model.pretrained_cfg.get("tag")
    try:
        spec = dataset_spec(tag)
    except ValueError:
        raise HybrezooError(f"{label} is not tagged with a zoo data set (tag {tag!r}): use a name such as "
                            "pi_resnet18.c100") from None
    if model.num_classes != spec.num_classes:
        raise HybrezooError(f"{label} predicts {model.num_classes} classes, {spec.title} has {spec.num_classes}")
    env, loader, split = eval_loader(spec.name, root, args.split, args.device, args.amp, args.batch_size)
    model, fault_seeds = circa.eval_settings(model, args)
    model = env.prepare(model)
    faults = circa.evaluate_under_faults(model, loader, fault_seeds, env) if fault_seeds else None
    scores = evaluate(model, loader, env) if faults is None else \
        {"images": faults.images, "top1": faults.top1_stats["mean"], "top5": faults.top5_stats["mean"]}
    result = {"model": label, "dataset": spec.name, "split": split, "images": scores["images"],
              "top1": scores["top1"], "top5": scores["top5"], **model_costs(model, spec.input_size),
              "device": str(env.device), "precision": precision_of(env), "threads": torch.get_num_threads()}
    if faults is not None:
        result["circa"] = faults.to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{label} on {spec.title} {split} ({result['images']:,} images): top-1 {result['top1']:.2f}  "
              f"top-5 {result['top5']:.2f}  ReLUs {result['relus']:,}  MACs {result['macs'] / 1e6:,.1f}M  "
              f"({result['device']}, {result['precision']})")
        if faults is not None:
            print(f"Circa faults ({faults.settings}): {faults.summary()}")
    return 0
