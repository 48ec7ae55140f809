"""``hybrezoo cost`` (one model, per-layer table) and ``hybrezoo zoo`` (the whole zoo, Pareto plot)."""
from __future__ import annotations

import argparse
import json
import re
import time
import warnings
from typing import List, Sequence

from ..cost.counting import parse_input_size
from ..cost.networks import NETWORKS
from ..cost.protocol import CLIENT_DEVICES, GARBLERS, PROTOCOLS
from ..cost.result import format_count
from ..errors import HybrezooError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="private-inference cost of one model: ReLUs, MACs, latency, traffic, per layer")
    p.add_argument("name", help="registered model, e.g. pi_resnet18.c100 (built without weights), or a run folder "
                                "(its weights and ReLU masks are read)")
    p.add_argument("--input-size", type=_input_size, default=None, metavar="C,H,W",
                   help="input of one sample (default: the model's pretrained_cfg input size)")
    p.add_argument("--protocol", default="delphi", help=f"one of {', '.join(PROTOCOLS)} (default delphi)")
    p.add_argument("--garbler", default="server", help=f"one of {', '.join(GARBLERS)} (default server)")
    p.add_argument("--network", default="lan", help=f"one of {', '.join(NETWORKS)} (default lan)")
    p.add_argument("--bandwidth", type=_bandwidth, default=None, metavar="MBPS[,DOWN]",
                   help="replace the preset's bandwidth: one figure, or upload,download in Mbit/s")
    p.add_argument("--rtt", type=float, default=None, metavar="MS", help="replace the preset's round-trip time")
    p.add_argument("--threads", type=int, default=1, help="server threads (default 1)")
    p.add_argument("--client-threads", type=int, default=None, help="client threads (default: --threads)")
    p.add_argument("--client-device", default="embedded", help=f"one of {', '.join(CLIENT_DEVICES)}")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--no-layers", action="store_true", help="leave out the per-layer table")
    p.set_defaults(func=run_cost)

    p = sub.add_parser("zoo", help="every registered model: ReLUs, MACs, PI latency on LAN/WAN, top-1; Pareto plot")
    p.add_argument("--dataset", choices=("cifar100", "tinyimagenet", "c100", "tin"))
    p.add_argument("--protocol", default="delphi", help=f"one of {', '.join(PROTOCOLS)} (default delphi)")
    p.add_argument("--plot", metavar="FILE", help="write a Pareto plot (.png, .svg or .pdf)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_zoo)


def _input_size(text: str):
    try:
        return parse_input_size(text)
    except HybrezooError as err:
        raise argparse.ArgumentTypeError(str(err))


def _bandwidth(text: str):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bandwidth {text!r} is not a number of Mbit/s (or up,down)")
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError("give one bandwidth, or upload,download")
    return values[0] if len(values) == 1 else tuple(values)


# pi_cost's parameters and the flags that set them: an error reached from the command line names the
# flag, not the Python argument (underscored names are unambiguous; bare words only where they lead).
_FLAGS = [(r"\binput_size=?\s?\(C, H, W\)", "--input-size C,H,W"), (r"\binput_size\b=?", "--input-size"),
          (r"\bbandwidth_mbps\b=?", "--bandwidth"), (r"\brtt_ms\b=?", "--rtt"),
          (r"\bclient_threads\b=?", "--client-threads"), (r"\bclient_device\b=?", "--client-device"),
          (r"^threads\b", "--threads"), (r"^bandwidth\b", "--bandwidth")]


def as_flags(message: str) -> str:
    """``message`` with pi_cost's parameter names (``bandwidth_mbps=``) replaced by the CLI's flags."""
    for pattern, flag in _FLAGS:
        message = re.sub(pattern, flag, message)
    return message


def run_cost(args: argparse.Namespace) -> int:
    from ..cost.api import UnpricedOpWarning, pi_cost

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpricedOpWarning)  # printed below, once
        try:
            result = pi_cost(args.name, args.input_size, protocol=args.protocol, garbler=args.garbler,
                             network=args.network, bandwidth_mbps=args.bandwidth, rtt_ms=args.rtt,
                             threads=args.threads, client_threads=args.client_threads,
                             client_device=args.client_device)
        except HybrezooError as err:
            raise HybrezooError(as_flags(str(err))) from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result)
    if not args.no_layers and result.layers:
        print()
        _print_table(result.layer_table(), numeric=(3, 4, 5, 6))
    for message in result.warnings:
        print(f"\nwarning: {message}")
    print("\nassumptions:")
    for line in result.assumptions:
        print(f"  - {line}")
    return 0


def run_zoo(args: argparse.Namespace) -> int:
    from ..cost.api import check_options
    from ..cost.zoo import zoo_rows

    check_options(args.protocol, "server", 1, None, "embedded")
    if args.plot:
        from ..cost.plot import check_plot_path
        check_plot_path(args.plot)
    start = time.perf_counter()
    rows = zoo_rows(args.dataset, protocol=args.protocol)
    elapsed = time.perf_counter() - start
    plot_kind = None
    if args.plot:
        from ..cost.plot import plot_zoo
        plot_kind = plot_zoo(rows, args.plot, title=f"hybrezoo ({args.protocol}, server-garbler, 1 thread)")
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    table = [("name", "method", "ReLUs", "MACs", "params", "LAN s", "WAN s", "top-1")]
    for r in rows:
        bound = "<=" if r.relus_bound else ""
        table.append((r.name, r.method, bound + format_count(r.relus), format_count(r.macs), format_count(r.params),
                      f"{bound}{r.lan_s:.1f}", f"{bound}{r.wan_s:.1f}", f"{r.top1:.2f}" if r.top1 is not None else "-"))
    _print_table(table, numeric=(2, 3, 4, 5, 6, 7))
    circa_rows = " (circa for models with stochastic ReLUs)" if args.protocol != "circa" and any(
        r.stochastic_relus for r in rows) else ""
    print(f"\n{len(rows)} models in {elapsed:.2f} s. Latency = offline + online, {args.protocol}{circa_rows} "
          f"server-garbler, 1 thread; LAN {NETWORKS['lan'].describe().split(': ')[1]}, "
          f"WAN {NETWORKS['wan'].describe().split(': ')[1]}. top-1: measured on published weights.")
    if any(r.relus_bound for r in rows):
        print("<=: SNL/SENet masks come with trained weights, none published yet; the row prices the recipe's "
              "ReLU budget, an upper bound (the architecture as built keeps every ReLU of its base).")
    mismatched = [r for r in rows if r.published_relus is not None
                  and (r.published_relus > r.relus if r.relus_bound else r.published_relus != r.relus)]
    for r in mismatched:
        print(f"note: {r.name} counts {r.relus:,} ReLUs; its paper states {r.published_relus:,}")
    unpriced = [r for r in rows if r.unpriced]
    for r in unpriced:
        print(f"note: {r.name} has {r.unpriced:,} nonlinear elements the cost model does not price")
    if plot_kind:
        print(f"plot ({plot_kind}) written to {args.plot}")
    return 0


def _print_table(rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        cells: List[str] = []
        for j, (cell, width) in enumerate(zip(row, widths)):
            cells.append(str(cell).rjust(width) if j in numeric and i > 0 else str(cell).ljust(width))
        print("  ".join(cells).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))

