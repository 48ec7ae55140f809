"""Measured vs estimated private inference for a fixed list of zoo networks, as a table.

Each network runs one synthetic image under SPU's Cheetah in SPU's simulator (both parties on this
machine), in a fresh process, one network at a time (``python -m hybrezoo.mpc.calibrate zoo``); the
measurements are kept in ``hybrezoo/mpc/calibration.json`` next to the micro-network points the
Cheetah model is fitted to, so the table can be printed again without re-running (no ``--run``).
Needs the ``mpc`` extra for ``--run`` (docs/mpc.md); printing needs only the core package.

    python benchmarks/measured_pi.py                      # the table from the stored measurements
    python benchmarks/measured_pi.py --run                # measure the list below (11 min on 2 idle cores)
    python benchmarks/measured_pi.py --run --names NAME.. # measure these instead
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "hybrezoo", "mpc", "calibration.json")

# Smallest to largest: every ReLU optimisation of the zoo (culling, thinning, channel and resolution
# scaling, ReLU-reuse), the published network, and the all-ReLU ResNet18s: 7K to 557K ReLUs, 21M to
# 710M MACs.
NETWORKS = [
    "deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100",
    "deepreduce_r18_cull1_thin_ch05_rho05.c100",
    "hybrenet_m24_252_cull14_thin_reuse4.c100",
    "deepreduce_r18_cull14_thin_rho05.c100",
    "hybrenet_m16_252_cull1_thin.c100",
    "deepreduce_r18_cull1_thin_ch05_rho05.tin",
    "hybrenet_m16_252_cull1.c100",
    "deepreduce_r18_cull1_thin.c100",
    "deepreduce_r18_cull1.c100",
    "hybrenet_m32_253.c100",
    "pi_resnet18_nostem.c100",
    "pi_resnet18.c100",
]


def table(protocol: str = "cheetah") -> str:
    """The markdown table of the stored zoo measurements, each next to pi_cost's current estimate."""
    sys.path.insert(0, ROOT)
    from hybrezoo.cost.cheetah import FIT
    from hybrezoo.cost.result import format_bytes

    with open(DATA) as f:
        points = [p for p in json.load(f)["points"] if p["kind"] == "zoo" and p["protocol"] == protocol]
    points.sort(key=lambda p: p["features"]["relus"])

    def est(coef, p):
        return sum(coef[k] * p["features"][k] for k in coef)

    rows = ["| network | ReLUs | MACs | measured time | estimate | error | measured up / down | estimate up / down "
            "| peak memory | top-1 agrees |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|"]
    for p in points:
        t = est(FIT.seconds, p)
        up, down = est(FIT.upload, p), est(FIT.download, p)
        rows.append(f"| {p['name']} | {p['features']['relus']:,.0f} | {p['features']['macs'] / 1e6:,.1f}M | "
                    f"{p['wall_s']:.1f} s | {t:.1f} s | {(t - p['wall_s']) / p['wall_s']:+.1%} | "
                    f"{format_bytes(p['upload_bytes'])} / {format_bytes(p['download_bytes'])} | "
                    f"{format_bytes(up)} / {format_bytes(down)} | {p['peak_memory_bytes'] / 2**30:.2f} GiB | "
                    f"{'yes' if p['top1_agreement'] == 1.0 else 'no'} |")
    machine = points[0]["machine"] if points else "?"
    rows.append("")
    rows.append(f"Measured with SPU {points[0]['versions']['spu'] if points else '?'} ({protocol}, simulator, one "
                f"synthetic image, random weights unless published) on {machine}, no other job running.")
    if protocol == "cheetah" and points:
        from hybrezoo.mpc.calibrate import fit

        with open(DATA) as f:
            loo = fit(json.load(f)["points"], protocol)["leave_one_out"]
        rows += ["", "| network | leave-one-out error: time | upload | download |", "|---|--:|--:|--:|"]
        for p in points:
            e = loo[p["name"]]
            rows.append(f"| {p['name']} | {e['wall_s']:+.1%} | {e['upload_bytes']:+.1%} | {e['download_bytes']:+.1%} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="measure the networks (needs the mpc extra)")
    parser.add_argument("--names", nargs="+", default=NETWORKS, help="networks to measure with --run")
    parser.add_argument("--protocol", default="cheetah", choices=("cheetah", "semi2k"))
    args = parser.parse_args()
    if args.run:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run([sys.executable, "-m", "hybrezoo.mpc.calibrate", "zoo", *args.names, "--out", DATA,
                        "--protocol", args.protocol], cwd=ROOT, env=env, check=True)
    print(table(args.protocol))


if __name__ == "__main__":
    main()
