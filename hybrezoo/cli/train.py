"""``hybrezoo train RECIPE --data PATH [--out DIR] [key=value ...]`` and ``hybrezoo eval NAME --data PATH``."""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ..errors import HybrezooError
from ._run import run_recipe_command

_TRAIN_EPILOG = """overrides: key=value pairs after the recipe change any recipe key, e.g.
  epochs=2 optimizer.lr=0.05 data.batch_size=64 stages.0.epochs=1 runtime.max_steps=10
several GPUs: torchrun --nproc_per_node=N -m hybrezoo train RECIPE --data PATH (same recipe)"""


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH", help="folder holding cifar-100-python/ or tiny-imagenet-200/ "
                   "(default: $HYBREZOO_DATA)")
    p.add_argument("--out", metavar="DIR",
                   help="run folder (default: runs/<method>/<name> for training/<method>/<name>.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder from its last checkpoint")
    p.add_argument("--download", action="store_true", help="download CIFAR-100 into --data if it is not there")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a recipe end to end into a run folder",
                       description="Train a recipe (a YAML file, or a zoo name for its registered recipe) and write "
                                   "model.safetensors, config.json, metrics.json, recipe.yaml, log.jsonl and a "
                                   "resumable checkpoint into the run folder.",
                       epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _train_options(p)
    p.add_argument("recipe", help="recipe file (training/<method>/<name>.yaml) or a zoo name such as pi_resnet18.c100")
    # Options may follow the recipe among the overrides: REMAINDER keeps argparse from rejecting
    # them, run_train parses them out again.
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="key=value recipe overrides")
    p.set_defaults(func=run_train, _parser=p)

    p = sub.add_parser("eval", help="top-1/top-5 and ReLUs of a model on a data set's evaluation split")
    p.add_argument("name", help="zoo name (published weights unless --checkpoint) or a run folder")
    p.add_argument("--checkpoint", metavar="FILE", help="weights: a run folder, .safetensors or .pt file")
    p.add_argument("--data", metavar="PATH", help="data root (default: $HYBREZOO_DATA)")
    p.add_argument("--split", help="split to score (default: CIFAR-100 test, Tiny ImageNet val)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")
    from ..methods.circa import add_eval_arguments

    add_eval_arguments(p)
    p.set_defaults(func=run_eval)


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
    for item in leftover:
        if item in ("-h", "--help"):
            args._parser.print_help()
            raise SystemExit(0)
        if item.startswith("-"):
            raise HybrezooError(f"unknown option {item}: see `hybrezoo train --help`")
        if "=" not in item:
            raise HybrezooError(f"cannot read {item!r}: overrides are key=value (e.g. epochs=2); give one recipe only")
    args.overrides = leftover


def run_train(args: argparse.Namespace) -> int:
    _split_remainder(args)
    options = [*(["--data", args.data] if args.data else []), *(["--out", args.out] if args.out else []),
               *(["--resume"] if args.resume else []), *(["--download"] if args.download else []),
               *(["--device", args.device] if args.device else [])]
    command = shlex.join(["hybrezoo", "train", args.recipe, *options, *args.overrides])
    return run_recipe_command(args.recipe, data=args.data, out=args.out, overrides=args.overrides,
                              resume=args.resume, download=args.download, device=args.device, command=command)


def _eval_model(args: argparse.Namespace):
    from ..engine import load_weights
    from ..models import create_model

    path = Path(args.name)
    if path.is_dir() and (path / "config.json").is_file():
        if args.checkpoint:
            raise HybrezooError("give a run folder or --checkpoint, not both")
        import timm

        return timm.create_model(f"local-dir:{path}", pretrained=True), str(path)
    if args.checkpoint:
        model = create_model(args.name)
        load_weights(model, args.checkpoint, what=f"{args.name} weights")
        return model, args.name
    return create_model(args.name, pretrained=True), args.name


def run_eval(args: argparse.Namespace) -> int:
    from ..data import DeviceLoader, data_root, dataset_spec, load_split
    from ..data.sources import eval_split
    from ..engine.evaluate import evaluate
    from ..engine.export import model_costs
    from ..engine.runtime import init_env
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
    split = args.split or eval_split(spec.name)
    env = init_env({"amp": "auto", "channels_last": "auto"}, args.device)
    data = load_split(spec.name, split, root)
    loader = DeviceLoader(data, batch_size=args.batch_size, mean=spec.mean, std=spec.std, device=env.device,
                          channels_last=env.channels_last)
    model, fault_seeds = circa.eval_settings(model, args)
    model = env.prepare(model)
    faults = circa.evaluate_under_faults(model, loader, fault_seeds, env) if fault_seeds else None
    scores = evaluate(model, loader, env) if faults is None else \
        {"images": faults.images, "top1": faults.top1_stats["mean"], "top5": faults.top5_stats["mean"]}
    result = {"model": label, "dataset": spec.name, "split": split, "images": scores["images"],
              "top1": scores["top1"], "top5": scores["top5"], **model_costs(model, spec.input_size)}
    if faults is not None:
        result["circa"] = faults.to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{label} on {spec.title} {split} ({result['images']:,} images): top-1 {result['top1']:.2f}  "
              f"top-5 {result['top5']:.2f}  ReLUs {result['relus']:,}  MACs {result['macs'] / 1e6:,.1f}M")
        if faults is not None:
            print(f"Circa faults ({faults.settings}): {faults.summary()}")
    return 0
