"""``hybrezoo list`` and ``hybrezoo info``: what the zoo holds."""
from __future__ import annotations

import argparse
import json

from ..registry import METHODS, list_models, model_info, resolve_name


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the zoo's models (name.tag), filtered by method and data set")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--dataset", metavar="{cifar100,tinyimagenet}",
                   help="data set (cifar100 or c100, tinyimagenet or tin)")
    p.add_argument("--pretrained", action="store_true", help="only entries whose weights are published")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_list)

    p = sub.add_parser("info", help="what the zoo knows of one model: paper, published ReLUs, recipe")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_info)


def run_list(args: argparse.Namespace) -> int:
    names = list_models(method=args.method, dataset=args.dataset, pretrained=args.pretrained)
    if args.json:
        print(json.dumps([model_info(n) for n in names], indent=2))
        return 0
    rows = [("name", "method", "dataset", "published ReLUs", "weights")]
    for name in names:
        e = resolve_name(name)
        relus = f"{e.published_relus:,}" if e.published_relus else "-"
        rows.append((name, e.method, e.dataset.name, relus, "yes" if e.has_weights else "recipe"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.rjust(w) if j == 3 else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\n{len(names)} models")
    return 0


def run_info(args: argparse.Namespace) -> int:
    info = model_info(args.name)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key.ljust(width)}  {value if value is not None else '-'}")
    return 0
