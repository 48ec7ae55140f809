"""What ``hybrezoo reduce snl`` and ``hybrezoo reduce senet`` share: run a method's template recipe on
any zoo model, budget and starting weights, through the training engine (run folder, resume, DDP).

A reduction is a recipe like any other: ``training/<method>/_base/<method>.yaml`` holds the method's
stages and settings, the command line fills in the model, its weights, the teacher and the budget as
recipe overrides, so ``recipe.yaml`` in the run folder says exactly what ran.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..engine.run import REPO_ROOT
from ..errors import HybrezooError
from .budget import resolve_budget

__all__ = ["add_common_arguments", "run_template", "architecture_relus"]


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="NAME",
                   help="zoo model with its data set tag, e.g. pi_resnet18.c100 (any zoo network works)")
    p.add_argument("--budget", required=True,
                   help="ReLU budget: a count (50000, 50k, 1.2M) or a fraction of the model's ReLUs (0.1)")
    p.add_argument("--init", metavar="WEIGHTS",
                   help="trained weights of MODEL to start from: a run folder, .safetensors/.pt file or hf-hub:ID "
                        "(default: the model's published weights)")
    p.add_argument("--teacher", metavar="NAME", help="distillation teacher (default: the model at --init)")
    p.add_argument("--teacher-checkpoint", metavar="WEIGHTS", help="teacher weights (default: --init)")
    p.add_argument("--data", metavar="PATH", help="data root holding cifar-100-python/ or tiny-imagenet-200/ "
                                                  "(default: $HYBREZOO_DATA)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/reduce/<method>/<model>_<budget>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--restart", action="store_true",
                   help="discard the run in --out (checkpoint, logs, weights, metrics) and start it over")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. stages.1.epochs=20 data.batch_size=256 runtime.max_steps=10")


def architecture_relus(name: str) -> int:
    """ReLUs of the freshly built architecture (an upper bound once weights bring masks)."""
    from ..cost import pi_cost

    return int(pi_cost(name, warn=False).relus)


def _published_weights(name: str) -> Optional[str]:
    from ..registry import resolve_name

    entry = resolve_name(name)
    return f"hf-hub:{entry.hf_hub_id}" if entry.hf_hub_id else None


def run_template(method: str, args: argparse.Namespace, budget_key: str, extra: Sequence[str] = (),
                 registered: Optional[Callable[[str, int], Optional[str]]] = None) -> int:
    """Run ``training/<method>/_base/<method>.yaml`` for ``args`` (see :func:`add_common_arguments`).

    ``registered(base_name, budget)`` names the zoo entry this run produces, when there is one (the SNL
    or SENet name for that base and budget): the run is then built and saved under that name, so it
    exports and publishes as that entry; otherwise under the base network's name."""
    from ..cli._run import run_recipe_command
    from ..registry import resolve_name

    entry = resolve_name(args.model)
    if entry.name != args.model:
        raise HybrezooError(f"give the data set tag: --model {entry.arch}.c100 or {entry.arch}.tin")
    budget = resolve_budget(args.budget, architecture_relus(entry.name))  # above the model's ReLUs fails here
    model_name = (registered(entry.name, budget) if registered else None) or entry.name
    init = args.init or _published_weights(entry.name)
    if init is None:
        raise HybrezooError(f"{method} starts from trained weights and {entry.name} has none published: train it "
                            f"with `hybrezoo train {entry.recipe} --data PATH` and pass --init RUN_DIR")
    for flag, source in (("--init", args.init), ("--teacher-checkpoint", args.teacher_checkpoint)):
        if source is not None and not str(source).startswith("hf-hub:") and not Path(source).expanduser().exists():
            raise HybrezooError(f"{flag} {source} not found: give a run folder, a .safetensors or .pt file, or "
                                "hf-hub:ORG/NAME")
    teacher, teacher_ckpt = args.teacher, args.teacher_checkpoint
    if teacher is None and teacher_ckpt is None and (Path(init) / "config.json").is_file():
        # the starting run folder itself, architecture arguments (model.kwargs) included
        teacher = f"local-dir:{Path(init).resolve()}"
    elif teacher is None:
        teacher, teacher_ckpt = entry.name, teacher_ckpt or init
    for item in args.overrides:
        if "=" not in item:
            raise HybrezooError(f"cannot read {item!r}: overrides are key=value (e.g. stages.1.epochs=20)")
    budget_label = str(args.budget).replace(".", "p")
    out = Path(args.out) if args.out else Path("runs", "reduce", method, f"{entry.name}_{budget_label}")
    overrides = [f"model.name={model_name}", f"model.init={init}", f"distill.teacher={teacher}",
                 f"distill.checkpoint={'null' if teacher_ckpt is None else teacher_ckpt}",
                 f"{budget_key}={args.budget}", *extra, *args.overrides]
    template = REPO_ROOT / "training" / method / "_base" / f"{method}.yaml"
    command = shlex.join(["hybrezoo", "reduce", method, "--model", entry.name, "--budget", str(args.budget),
                          *(["--init", str(args.init)] if args.init else []),
                          *(["--teacher", args.teacher] if args.teacher else []),
                          *(["--teacher-checkpoint", str(args.teacher_checkpoint)] if args.teacher_checkpoint else []),
                          *(["--data", str(args.data)] if args.data else []), "--out", str(out),
                          *(["--resume"] if args.resume else []), *(["--restart"] if args.restart else []),
                          *(["--device", args.device] if args.device else []),
                          *args.overrides])
    return run_recipe_command(template, data=args.data, out=out, overrides=overrides, resume=args.resume,
                              restart=args.restart, device=args.device, command=command)
