"""Cheetah (Huang et al., USENIX Security 2022) as SecretFlow SPU 0.9.5 runs it, fitted to measured runs.

Unlike the Delphi model, whose constants come from Garimella et al.'s EPYC measurements, this model is
fitted to private inferences we measured with ``hybrezoo.mpc`` on one machine class (2 shared CPU
cores, both parties on the machine: SPU's simulator), so it predicts what ``hybrezoo measure`` will
see here. Its terms follow what SPU's Cheetah does per op (the per-op profile SPU writes to the log of
every measured run):

- **setup**: a fixed cost per inference (silent-OT and HE key setup of a fresh runtime);
- **per ReLU**: the millionaires' comparison (``msb_a2b``, silent OT) and the bit-times-share product
  (``mul_a1b``) of every kept ReLU, plus a cost per ReLU layer (its round trips);
- **per MAC**: the HE products of convolutions and FC layers (``mmul_aa``: both the weights and the
  image are secret shares in SPU);
- **per linear output element**: the fixed-point truncation after every product (``trunc_a``, OT).

Traffic is fitted the same way. ``latency_s`` adds the transfer of that traffic over the ``network``
chosen (none for :data:`LOCAL`, the measured setting) and one one-way delay per message SPU sent,
which over-counts rounds (SPU pipelines some messages): an upper bound off this machine. The fit, its
data and its error are in docs/cost-model.md §10; :data:`FIT` holds the constants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

from .counting import ModelCounts
from .networks import NetworkSpec
from .result import LayerCost, PICost

__all__ = ["CheetahFit", "FIT", "LOCAL", "estimate_cheetah", "local_seconds", "features", "peak_memory_bytes",
           "estimated_messages",
           "FEATURES", "LOCAL_KEYS"]

# The measured setting: both parties on one machine, no network between them.
LOCAL = NetworkSpec("local", math.inf, math.inf, 0.0, "both parties on this machine (how the fit was measured)")

FEATURES = ("setup", "relus", "relu_layers", "macs", "linear_outputs", "linear_layers")
# breakdown entries that are computation on this machine class (the rest is network transfer)
LOCAL_KEYS = ("setup", "relu", "linear")


@dataclass(frozen=True)
class CheetahFit:
    """Per-feature costs: seconds, upload bytes, download bytes, messages; and memory terms."""

    seconds: Dict[str, float]
    upload: Dict[str, float]
    download: Dict[str, float]
    messages: Dict[str, float]
    memory_base: float                   # bytes of a process running both parties, before the network
    memory_per_relu: float               # bytes per element of the largest ReLU layer
    memory_per_linear_output: float      # bytes per output element of the largest linear layer
    memory_per_param: float              # bytes per weight (secret-shared, both parties)
    machine: str
    source: str


# Fitted by `python -m hybrezoo.mpc.calibrate fit hybrezoo/mpc/calibration.json` (non-negative least squares
# on relative error over the 14 micro-networks and 12 zoo networks stored there; docs/cost-model.md §10).
FIT = CheetahFit(
    seconds={"setup": 1.0241779, "relus": 1.2993212e-05, "relu_layers": 0.12068864, "macs": 6.609438e-08,
             "linear_outputs": 2.850665e-05, "linear_layers": 0.53910868},
    upload={"setup": 10374120, "relus": 23.661236, "relu_layers": 0, "macs": 0.034091874,
            "linear_outputs": 34.278575, "linear_layers": 569198.47},
    download={"setup": 10582629, "relus": 65.148042, "relu_layers": 0, "macs": 0.043765971,
              "linear_outputs": 36.422729, "linear_layers": 546393.46},
    messages={"setup": 6773.8835, "relus": 0.0059321004, "relu_layers": 225.70308, "macs": 0, "linear_outputs": 0,
              "linear_layers": 46.361308},
    memory_base=2.38149e+09, memory_per_relu=2737.6553,
    memory_per_linear_output=21338.104, memory_per_param=207.67703,
    machine="AMD EPYC, 2 cores, no other job running (load average about 2: the measured run itself)",
    source="SPU 0.9.5 simulator, one synthetic image per run, measured 2026-12-04",
)


def features(counts: ModelCounts) -> Dict[str, float]:
    """The quantities the model is linear in, for one inference of a counted model."""
    return {
        "setup": 1.0,
        "relus": float(counts.relus),
        "relu_layers": float(sum(1 for r in counts.relu_layers if r.relus > 0)),
        "macs": float(counts.macs),
        "linear_outputs": float(sum(op.out_numel for op in counts.linear_ops)),
        "linear_layers": float(len(counts.linear_ops)),
    }


def _dot(coef: Dict[str, float], feats: Dict[str, float]) -> float:
    return sum(coef.get(k, 0.0) * v for k, v in feats.items())


def peak_memory_bytes(counts: ModelCounts, protocol: str = "cheetah", two_process: bool = False,
                      fit: CheetahFit = FIT) -> float:
    """Peak resident memory of a measured run, from the largest ReLU and linear layers (SPU runs layer by
    layer and frees what it no longer needs) and the weights. Fitted on Cheetah runs; used for SEMI2K too
    (its measured peaks stayed below Cheetah's, docs/mpc.md)."""
    largest_relu = max((r.relus for r in counts.relu_layers), default=0)
    largest_linear = max((op.out_numel for op in counts.linear_ops), default=0)
    return (fit.memory_base + fit.memory_per_relu * largest_relu + fit.memory_per_linear_output * largest_linear
            + fit.memory_per_param * counts.params)


def estimate_cheetah(counts: ModelCounts, model_name: str, *, network: NetworkSpec, threads: int,
                     client_threads: int, fit: CheetahFit = FIT) -> PICost:
    """Price counted inference under SPU's Cheetah with the fitted per-feature costs."""
    f = features(counts)
    setup_s = fit.seconds.get("setup", 0.0)
    relu_s = sum(fit.seconds.get(k, 0.0) * f[k] for k in ("relus", "relu_layers"))
    linear_s = sum(fit.seconds.get(k, 0.0) * f[k] for k in ("macs", "linear_outputs", "linear_layers"))
    up = max(0.0, _dot(fit.upload, f))
    down = max(0.0, _dot(fit.download, f))
    messages = max(0.0, _dot(fit.messages, f))
    breakdown = {
        "setup": setup_s,
        "relu": relu_s,
        "linear": linear_s,
        "upload": network.upload_seconds(up),
        "download": network.download_seconds(down),
        "latency": messages * network.one_way_s,
    }
    online_s = relu_s + linear_s + breakdown["upload"] + breakdown["download"] + breakdown["latency"]
    layers = _layer_rows(counts)
    return PICost(
        model=model_name, input_size=tuple(counts.input_size), protocol="cheetah", garbler="-",
        network=network.describe(), threads=threads, client_threads=client_threads,
        relus=counts.relus, stochastic_relus=counts.stochastic_relus,
        relu_layers=sum(1 for r in counts.relu_layers if r.relus > 0),
        macs=counts.macs, flops=counts.flops, params=counts.params,
        offline_s=setup_s, online_s=online_s, latency_s=setup_s + online_s,
        offline_upload_bytes=0, offline_download_bytes=0,
        online_upload_bytes=int(up), online_download_bytes=int(down),
        client_storage_bytes=0, server_storage_bytes=0,
        breakdown=breakdown, layers=layers, unpriced=counts.unpriced,
        assumptions=_assumptions(counts, network, fit),
        warnings=_warnings(counts),
    )


def estimated_messages(counts: ModelCounts, fit: CheetahFit = FIT) -> float:
    """SPU's send actions of both parties for one inference (an upper bound on rounds)."""
    return max(0.0, _dot(fit.messages, features(counts)))


def local_seconds(cost: PICost) -> float:
    """The computation part of a Cheetah estimate: what a run with both parties on this machine takes."""
    return sum(cost.breakdown.get(k, 0.0) for k in LOCAL_KEYS)


def _layer_rows(counts: ModelCounts) -> Tuple[LayerCost, ...]:
    relus: Dict[str, int] = {}
    for r in counts.relu_layers:
        relus[r.name] = relus.get(r.name, 0) + r.relus
    names = [n for n in counts.module_types if n in relus or counts.module_macs.get(n)]
    return tuple(LayerCost(name=n, type=counts.module_types.get(n, "op"), shape=tuple(counts.module_shapes.get(n, ())),
                           relus=relus.get(n, 0), macs=int(counts.module_macs.get(n, 0))) for n in names)


def _warnings(counts: ModelCounts) -> Tuple[str, ...]:
    notes = []
    if counts.stochastic_relus:
        notes.append(f"{counts.stochastic_relus:,} Circa stochastic ReLUs are priced as exact ReLUs: Cheetah has no "
                     f"truncated sign test (SPU runs no Circa protocol)")
    if counts.unpriced:
        ops = sorted({u.op for u in counts.unpriced})
        notes.append(f"the cost model does not price these nonlinear ops, so the estimate leaves them out: "
                     f"{', '.join(ops)}")
    return tuple(notes)


def _assumptions(counts: ModelCounts, network: NetworkSpec, fit: CheetahFit) -> Tuple[str, ...]:
    s = fit.seconds
    return (
        f"Cheetah as SecretFlow SPU 0.9.5 runs it (FM64 ring, 18 fractional bits), weights and image both secret "
        f"shares; fitted to runs measured on {fit.machine or 'this machine class'} with both parties on one machine "
        f"({fit.source})",
        f"per inference: {s.get('setup', 0):.2f} s setup + {s.get('relus', 0) * 1e6:.1f} us per ReLU + "
        f"{s.get('relu_layers', 0) * 1e3:.0f} ms per ReLU layer + {s.get('macs', 0) * 1e9:.2f} ns per MAC + "
        f"{s.get('linear_outputs', 0) * 1e6:.1f} us per linear output element + "
        f"{s.get('linear_layers', 0) * 1e3:.0f} ms per linear layer",
        f"network {network.describe()}: traffic at its bandwidth plus one one-way delay per message SPU sent (an "
        f"upper bound on rounds); threads are not modelled (SPU used the machine's cores)",
        "no offline phase: setup is reported as offline_s, everything else online",
    )
