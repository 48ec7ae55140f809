"""``hybrezoo measure``: run a zoo network under a real two-party protocol (SecretFlow SPU) and print the
measured time, traffic and memory beside ``pi_cost``'s estimate. Needs the ``mpc`` extra; this module
imports neither JAX nor SPU until the command runs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Tuple

from ..errors import HybrezooError

_PROTOCOLS = ("cheetah", "semi2k")  # hybrezoo.mpc.runner.PROTOCOLS (not imported here: it is cheap either way)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="run a network under a real 2PC protocol (SPU: Cheetah or SEMI2K) and print "
                                       "measured time, traffic, memory next to pi_cost's estimate")
    p.add_argument("name", help="zoo name (published weights if there are, else random ones; --checkpoint for "
                                "yours) or a run folder")
    p.add_argument("--checkpoint", metavar="FILE", help="weights: a run folder, .safetensors or .pt file")
    p.add_argument("--protocol", default="cheetah", help=f"one of {', '.join(_PROTOCOLS)} (default cheetah)")
    p.add_argument("--images", type=int, default=1, help="images to run privately, one inference each (default 1)")
    p.add_argument("--data", metavar="PATH", help="take the images from the data set's evaluation split here "
                                                  "(default: seeded synthetic images)")
    p.add_argument("--two-process", action="store_true",
                   help="run the two parties as two processes over TCP on 127.0.0.1 (default: SPU's simulator)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic images (default 0)")
    p.add_argument("--keep-logs", metavar="DIR", help="keep SPU's logs (and, with --two-process, each party's) in DIR; "
                                                      "by default they go to a temporary folder removed after the run")
    p.add_argument("--force", action="store_true", help="run even when the estimated memory exceeds what is available")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_measure)


def _load(args: argparse.Namespace):
    """The model to measure and where its weights come from."""
    import timm

    from ..engine import load_weights
    from ..models import create_model
    from ..registry import resolve_name

    path = Path(args.name)
    if path.is_dir() and ((path / "config.json").is_file() or not timm.is_model(args.name)):
        if args.checkpoint:
            raise HybrezooError("give a run folder or --checkpoint, not both")
        return create_model(f"local-dir:{path}", pretrained=True), str(path), f"weights of run {path}"
    if args.checkpoint:
        model = create_model(args.name)
        load_weights(model, args.checkpoint, what=f"{args.name} weights")
        return model, args.name, f"weights from {args.checkpoint}"
    model = create_model(args.name)  # an unknown name fails here, with the closest names
    entry = resolve_name(args.name)
    if entry.published:
        return create_model(args.name, pretrained=True), args.name, "published weights"
    return model, args.name, "random weights: no published weights yet"


def _images(args: argparse.Namespace, model) -> Tuple[Optional[object], Optional[object]]:
    """(images, labels) from ``--data``, or (None, None) for synthetic images."""
    if not args.data:
        return None, None
    import torch

    from ..data import dataset_spec
    from ..engine.evaluate import eval_loader

    tag = (getattr(model, "pretrained_cfg", None) or {}).get("tag")
    try:
        spec = dataset_spec(tag)
    except (ValueError, KeyError):
        raise HybrezooError(f"{args.name} is not tagged with a zoo data set (tag {tag!r}): --data needs a name such "
                            "as pi_resnet18.c100") from None
    _, loader, _ = eval_loader(spec.name, args.data, None, "cpu", "off", args.images)
    images, labels = next(iter(loader))
    return images[: args.images].float().contiguous(memory_format=torch.contiguous_format).numpy(), \
        labels[: args.images].numpy()


def run_measure(args: argparse.Namespace) -> int:
    if args.protocol not in _PROTOCOLS:
        raise HybrezooError(f"unknown protocol {args.protocol!r}: use one of {', '.join(_PROTOCOLS)}")
    if args.images < 1:
        raise HybrezooError(f"--images must be at least 1, got {args.images}")
    from ..mpc.convert import check_not_circa
    from ..mpc.runner import require_spu

    model, label, weights = _load(args)
    check_not_circa(model, label)      # before anything slow, and whether or not SPU is installed
    require_spu()
    from ..mpc.measure import measure

    images, labels = _images(args, model)
    result = measure(model, name=label, protocol=args.protocol, images=args.images if images is None else images,
                     labels=labels, two_process=args.two_process, weights=weights, check_memory=not args.force,
                     progress=not args.no_progress and not args.json, seed=args.seed, keep_logs=args.keep_logs)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return 0
