"""Calibrate ``pi_cost(..., protocol="cheetah")``: measure micro-networks under SPU's Cheetah, fit the
per-feature costs, and validate the fit on zoo networks.

    python -m hybrezoo.mpc.calibrate micro  --out calibration.json       # measure the micro-networks
    python -m hybrezoo.mpc.calibrate zoo NAME [NAME ...] --out calibration.json  # measure zoo networks
    python -m hybrezoo.mpc.calibrate fit calibration.json                # fit on micro, validate on zoo

Micro-networks isolate the terms of :mod:`hybrezoo.cost.cheetah`: ReLU-heavy ones (ReLU layers on
the input itself, 1 to 4 layers, 4K to 128K ReLUs) and convolution-heavy ones (3x3 convolutions
of various widths and resolutions, no ReLU). Each point is measured in a fresh process
(``--one``), one at a time, with one synthetic image. ``fit`` solves non-negative least squares on
relative error (each point weighs the same whatever its size) and prints the constants for
``hybrezoo/cost/cheetah.py`` and each zoo network's error against the measured run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from ..nn.relu import PIReLU

__all__ = ["MICRO", "micro_network", "fit", "nnls_relative"]

# name -> (input C, H, W, layers: [(out channels, kernel, relu?)]); 0 channels: a ReLU layer alone.
MICRO: Dict[str, Tuple[Tuple[int, int, int], List[Tuple[int, int, bool]]]] = {
    # ReLU-heavy: ReLU layers on the input itself (no convolution), then the pooled classifier
    "relu_4k": ((4, 32, 32), [(0, 0, True)]),
    "relu_16k": ((16, 32, 32), [(0, 0, True)]),
    "relu_64k": ((64, 32, 32), [(0, 0, True)]),
    "relu_128k": ((128, 32, 32), [(0, 0, True)]),
    "relu_4x16k": ((16, 32, 32), [(0, 0, True)] * 4),
    "relu_4x4k": ((4, 32, 32), [(0, 0, True)] * 4),
    # convolution-heavy: 3x3 convolutions of several widths and resolutions, no ReLU
    "conv_16c_32px": ((16, 32, 32), [(16, 3, False)]),
    "conv_32c_16px": ((32, 16, 16), [(32, 3, False)]),
    "conv_64c_16px": ((64, 16, 16), [(64, 3, False)]),
    "conv_128c_8px": ((128, 8, 8), [(128, 3, False)]),
    "conv_256c_4px": ((256, 4, 4), [(256, 3, False)]),
    "conv_3x64c_16px": ((64, 16, 16), [(64, 3, False)] * 3),
    "conv_16to64c_32px": ((16, 32, 32), [(64, 3, False)]),
    "conv_64c_32px": ((64, 32, 32), [(64, 3, False)]),
}


class _Micro(nn.Module):
    """Convolutions (with BN) and ReLUs in sequence; a 1x1-pooled linear head of 10 classes, so the
    network looks like a zoo one (ends with pooling and a classifier)."""

    def __init__(self, in_chans: int, layers: Sequence[Tuple[int, int, bool]]) -> None:
        super().__init__()
        blocks: List[nn.Module] = []
        c = in_chans
        for out, k, relu in layers:
            if out:
                blocks += [nn.Conv2d(c, out, k, padding=k // 2, bias=False), nn.BatchNorm2d(out)]
                c = out
            blocks.append(PIReLU() if relu else nn.Identity())
        self.body = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 10)
        self.num_classes = 10

    def forward(self, x):
        return self.fc(self.pool(self.body(x)).flatten(1))


def micro_network(name: str) -> Tuple[nn.Module, Tuple[int, int, int]]:
    """The micro-network ``name`` of :data:`MICRO` (seeded random weights) and its input size."""
    import torch

    size, layers = MICRO[name]
    torch.manual_seed(0)
    model = _Micro(size[0], layers).eval()
    model.pretrained_cfg = {"architecture": f"micro_{name}", "input_size": size}
    return model, size


def _measure_one(kind: str, name: str, protocol: str) -> Dict[str, Any]:
    from ..cost.cheetah import features
    from ..cost.counting import count_model
    from .measure import measure

    if kind == "micro":
        model, size = micro_network(name)
        weights = "random weights (seed 0)"
    else:
        from ..models import create_model
        from ..registry import resolve_name

        published = resolve_name(name).published
        model = create_model(name, pretrained=published).eval()
        size = tuple(model.pretrained_cfg["input_size"])
        weights = "published weights" if published else "random weights"
    counts = count_model(model, size)
    load_before = os.getloadavg()[0]
    result = measure(model, name=name, protocol=protocol, images=1, weights=weights, check_memory=False)
    return dict(kind=kind, name=name, protocol=protocol, features=features(counts),
                largest_relu_layer=max((r.relus for r in counts.relu_layers), default=0),
                largest_linear_output=max((op.out_numel for op in counts.linear_ops), default=0),
                params=counts.params, wall_s=result.wall_s, cpu_s=result.cpu_s, upload_bytes=result.upload_bytes,
                download_bytes=result.download_bytes, messages=result.messages,
                peak_memory_bytes=result.peak_memory_bytes, top1_agreement=result.top1_agreement,
                max_abs_error=result.max_abs_error, machine=result.machine, versions=result.versions,
                load_average=[round(load_before, 2), round(os.getloadavg()[0], 2)],  # 1-min, before and after
                measured_at=time.strftime("%Y-%m-%d %H:%M:%S"))


def _run_all(kind: str, names: Sequence[str], protocol: str, out: str) -> None:
    points = _load(out)
    for name in names:
        start = time.time()
        proc = subprocess.run([sys.executable, "-m", "hybrezoo.mpc.calibrate", "--one", kind, name,
                               "--protocol", protocol], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        point = json.loads(proc.stdout.strip().splitlines()[-1])
        points = [p for p in points if not (p["name"] == name and p["protocol"] == protocol)] + [point]
        _save(out, points)
        print(f"{name}: {point['wall_s']:.1f} s, {point['upload_bytes'] / 1e6:.1f} MB up, "
              f"{point['download_bytes'] / 1e6:.1f} MB down, peak {point['peak_memory_bytes'] / 2**30:.2f} GiB "
              f"({time.time() - start:.0f} s with start-up)", flush=True)


def _load(path: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return json.load(f)["points"]


def _save(path: str, points: List[Dict[str, Any]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"points": points}, f, indent=1)
    os.replace(tmp, path)


def nnls_relative(x: np.ndarray, y: np.ndarray, names: Sequence[str]) -> Dict[str, float]:
    """Non-negative least squares of ``y ~ x @ beta`` on relative error (rows divided by ``y``): an
    active-set loop over numpy's lstsq, dropping the most negative coefficient until none is."""
    w = 1.0 / np.maximum(np.abs(y), 1e-12)
    active = list(range(x.shape[1]))
    beta = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active] * w[:, None], y * w, rcond=None)
        if (sol >= 0).all():
            beta[:] = 0.0
            beta[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return {n: float(b) for n, b in zip(names, beta)}


TARGETS = ("wall_s", "upload_bytes", "download_bytes", "messages")
MEMORY_TERMS = ("base", "largest_relu_layer", "largest_linear_output", "params")


def _fit_targets(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    from ..cost.cheetah import FEATURES

    x = np.array([[p["features"][f] for f in FEATURES] for p in rows])
    coef = {t: nnls_relative(x, np.array([p[t] for p in rows], dtype=float), FEATURES) for t in TARGETS}
    xm = np.array([[1.0, p["largest_relu_layer"], p["largest_linear_output"], p["params"]] for p in rows])
    coef["memory"] = nnls_relative(xm, np.array([p["peak_memory_bytes"] for p in rows], dtype=float), MEMORY_TERMS)
    return coef


def fit(points: List[Dict[str, Any]], protocol: str = "cheetah") -> Dict[str, Any]:
    """The constants of :mod:`hybrezoo.cost.cheetah`, fitted to every measured point (micro-networks and
    zoo networks), and three checks of them: the error on each point; each zoo network predicted by a
    fit that left that network out (leave-one-out: the validation); each zoo network predicted from the
    micro-networks alone."""
    from ..cost.cheetah import FEATURES

    rows = [p for p in points if p["protocol"] == protocol]
    micro = [p for p in rows if p["kind"] == "micro"]
    zoo = [p for p in rows if p["kind"] == "zoo"]
    if len(rows) < len(FEATURES):
        raise SystemExit(f"{len(rows)} points: measure them first (python -m hybrezoo.mpc.calibrate micro)")
    result: Dict[str, Any] = dict(_fit_targets(rows))

    def errors(coef: Dict[str, Dict[str, float]], p: Dict[str, Any]) -> Dict[str, float]:
        return {t: _predict(coef[t], p) / p[t] - 1.0 for t in ("wall_s", "upload_bytes", "download_bytes")}
    result["fit_errors"] = {p["name"]: errors(result, p) for p in rows}
    result["leave_one_out"] = {p["name"]: errors(_fit_targets([q for q in rows if q is not p]), p) for p in zoo}
    if len(micro) >= len(FEATURES):
        micro_fit = _fit_targets(micro)
        result["micro_only"] = {p["name"]: errors(micro_fit, p) for p in zoo}
    return result


def _predict(coef: Dict[str, float], point: Dict[str, Any]) -> float:
    return sum(coef[k] * point["features"][k] for k in coef)


def _print_fit(result: Dict[str, Any]) -> None:
    for target in TARGETS + ("memory",):
        print(f"{target}: " + ", ".join(f"{k}={v:.6g}" for k, v in result[target].items()))
    for group in ("fit_errors", "leave_one_out", "micro_only"):
        if group not in result:
            continue
        print(group)
        for name, errs in result[group].items():
            print(f"  {name:48s} " + "  ".join(f"{t} {e:+.1%}" for t, e in errs.items()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrezoo.mpc.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--protocol", default="cheetah")
    parser.add_argument("what", nargs="?", choices=("micro", "zoo", "fit"))
    parser.add_argument("names", nargs="*", help="zoo: the networks; micro: a subset of the micro-networks; "
                                                 "fit: the calibration file")
    parser.add_argument("--out", default="calibration.json", help="where measured points are kept (JSON)")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_measure_one(args.one[0], args.one[1], args.protocol)))
        return 0
    if args.what == "micro":
        _run_all("micro", args.names or list(MICRO), args.protocol, args.out)
    elif args.what == "zoo":
        _run_all("zoo", args.names, args.protocol, args.out)
    elif args.what == "fit":
        _print_fit(fit(_load(args.names[0] if args.names else args.out), args.protocol))
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
