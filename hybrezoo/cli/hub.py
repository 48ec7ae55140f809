"""``hybrezoo export`` (run folder -> hub folder), ``hybrezoo push`` (hub folder -> Hugging Face) and
``hybrezoo cards`` (model_cards/ and the README zoo table)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import HybrezooError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="turn a finished training run into a Hugging Face hub folder with its model card",
                       description="Copy a run's model.safetensors, config.json, metrics.json, recipe.yaml and "
                                   "log.jsonl into a new folder and write its model card (README.md). The weights "
                                   "are loaded back and priced first; they must reproduce the run's ReLUs, MACs "
                                   "and parameters.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `hybrezoo train`")
    p.add_argument("--out", required=True, metavar="DIR", help="hub folder to create")
    p.add_argument("--repo-id", metavar="ORG/NAME", help="repository the card's examples load from (push sets it too)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing --out folder")
    _release_options(p, data_required=False)
    p.set_defaults(func=run_export)

    p = sub.add_parser("publish", help="publish a finished run as its zoo entry: weights/NAME/, manifest, cards",
                       description="Export a finished run into the repository's weights/NAME/ folder (the Hugging "
                                   "Face hub layout), evaluate the copied weights on the real evaluation split as "
                                   "`hybrezoo eval` does, record the release in hybrezoo/hub/manifest.json and "
                                   "regenerate model_cards/ and the README zoo table. Then "
                                   "timm.create_model(NAME, pretrained=True) loads it, offline, on every clone.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `hybrezoo train`")
    p.add_argument("--overwrite", action="store_true", help="replace the weights of an entry already published")
    p.add_argument("--manifest", metavar="FILE", help="manifest to record into (default: the package's)")
    _release_options(p, data_required=True)
    p.set_defaults(func=run_publish)

    p = sub.add_parser("push", help="upload a hub folder to the Hugging Face hub and record it in the manifest",
                       description="Upload an exported folder in one commit, then record the commit, the weights' "
                                   "sha256 and the card's figures in the manifest (hybrezoo/hub/manifest.json), "
                                   "which publishes the entry: timm.create_model(NAME, pretrained=True).")
    p.add_argument("folder", metavar="DIR", help="folder written by `hybrezoo export`")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="Hugging Face model repository")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded; needs no token or network")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--message", help="commit message")
    p.add_argument("--no-record", action="store_true", help="do not add the release to the manifest")
    p.add_argument("--manifest", metavar="FILE", help="manifest to record into (default: $HYBREZOO_MANIFEST or the "
                                                      "package's hybrezoo/hub/manifest.json)")
    p.set_defaults(func=run_push)

    p = sub.add_parser("cards", help="regenerate model_cards/ and the README zoo table from the registry and manifest")
    p.add_argument("--check", action="store_true", help="only report files that are out of date (exit 1 if any)")
    p.add_argument("--root", metavar="CHECKOUT", help="repository to write into (default: this checkout)")
    p.set_defaults(func=run_cards)


def _release_options(p: argparse.ArgumentParser, data_required: bool) -> None:
    p.add_argument("--data", metavar="PATH", required=data_required,
                   help="data root holding the real data set: the copied weights are scored on its evaluation split "
                        "(eval.json)" + ("" if data_required else "; without it the card shows the run's own figures"))
    p.add_argument("--device", default="cpu", help="device of that evaluation (default cpu)")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="off",
                   help="bf16 autocast during that evaluation (default off: float32, as the weights are stored)")
    p.add_argument("--dtype", choices=("float32", "float16"), help="store the weights in this precision (default: as "
                   "the run saved them, float32); float16 halves the file, and the evaluation and card are of the "
                   "stored copy")
    p.add_argument("--git-commit", metavar="REV", help="the hybrezoo commit the run's code was at, when its "
                   "metrics.json records another repository's (or 'none')")
    p.add_argument("--teacher-run", metavar="DIR", help="the distillation teacher's run folder, to name it on the "
                   "card when the student's metrics.json lacks it")


def run_export(args: argparse.Namespace) -> int:
    from ..hub.export import export_run

    out = export_run(args.run_dir, args.out, overwrite=args.overwrite, repo_id=args.repo_id, data=args.data,
                     device=args.device, amp=args.amp, git_commit=args.git_commit, teacher_run=args.teacher_run,
                     dtype=args.dtype)
    print(f"{out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from ..hub.publish import publish_run

    release = publish_run(args.run_dir, args.data, device=args.device, amp=args.amp, git_commit=args.git_commit,
                          teacher_run=args.teacher_run, overwrite=args.overwrite, manifest=args.manifest,
                          dtype=args.dtype)
    ev = release.evaluation
    print(f"published {release.name}: top-1 {ev['top1']:.2f}  top-5 {ev['top5']:.2f} on {ev['split']} "
          f"({ev['images']:,} images, {ev['device']}, {ev['precision']}); sha256 {release.sha256[:16]}...")
    print(f"commit weights/{release.name}/, hybrezoo/hub/manifest.json, model_cards/ and README.md together")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from ..hub.push import plan_push, push_folder

    if args.dry_run:
        plan = plan_push(args.folder, args.repo_id)
        print(f"dry run: would upload {len(plan.files)} files of {plan.release.name} to {plan.url}")
        width = max(len(name) for name, _ in plan.files)
        for name, size in plan.files:
            note = "  (model card, rendered for this repository)" if name == "README.md" else ""
            print(f"  {name.ljust(width)}  {size:>12,} bytes{note}")
        print(f"  sha256 of model.safetensors: {plan.release.sha256}")
        return 0
    plan = push_folder(args.folder, args.repo_id, private=args.private, message=args.message,
                       record=not args.no_record, manifest=args.manifest)
    print(f"pushed {plan.release.name} to {plan.url} (commit {plan.release.revision})")
    if plan.manifest is not None:
        print(f"recorded in {plan.manifest}: run `hybrezoo cards` and commit both")
    return 0


def run_cards(args: argparse.Namespace) -> int:
    from ..hub.catalog import check_catalog, repository_root, write_catalog

    root = Path(args.root) if args.root else repository_root()
    if not (root / "training").is_dir():
        raise HybrezooError(f"{root} is not a hybrezoo checkout (no training/ folder): give --root CHECKOUT")
    if args.check:
        problems = check_catalog(root)
        for line in problems:
            print(line)
        if problems:
            print("run `hybrezoo cards` to regenerate them", file=sys.stderr)
            return 1
        print("model cards and zoo table are up to date")
        return 0
    written, removed, has_readme = write_catalog(root)
    for path in written:
        print(f"wrote {path.relative_to(root)}")
    for path in removed:
        print(f"removed {path.relative_to(root)} (no such entry)")
    if not written and not removed:
        print("model cards and zoo table were already up to date")
    if not has_readme:
        print("note: README.md has no zoo-table markers; the table is in model_cards/README.md")
    return 0
