"""The answer of :func:`hybrezoo.pi_cost`: counts, the protocol estimate, and how it was made."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .counting import UnpricedOp

__all__ = ["LayerCost", "PICost", "format_bytes", "format_seconds", "format_count"]


@dataclass(frozen=True)
class LayerCost:
    """One row of the per-layer table: a module that runs ReLUs or linear ops."""

    name: str
    type: str
    shape: Tuple[int, ...]          # output shape of one sample
    relus: int = 0                  # priced nonlinear elements (ReLUs, stochastic ReLUs)
    stochastic: bool = False        # Circa stochastic ReLUs
    macs: int = 0                   # FlopCounterMode MACs of the module's own ops
    he_s: float = 0.0               # offline HE evaluation, one server thread
    gc_bytes: int = 0               # offline garbled-circuit bytes for its ReLUs


@dataclass(frozen=True)
class PICost:
    """Private-inference cost of one model (batch of one), under one protocol and network.

    ``upload`` is client -> server, ``download`` server -> client. MACs are multiply-accumulates of
    convolutions and matrix products; ``flops = 2 * macs`` (FlopCounterMode's convention).
    ``latency_s = offline_s + online_s``: a request served with no precomputed material.
    """

    model: str
    input_size: Tuple[int, ...]
    protocol: str                   # "delphi" or "circa"
    garbler: str                    # "server" (Delphi's) or "client" (Garimella et al.'s)
    network: str                    # e.g. "lan: 3000 Mbit/s each way, RTT 0.3 ms"
    threads: int
    client_threads: int
    relus: int                      # kept ReLUs evaluated per inference (plain + stochastic)
    stochastic_relus: int           # of which Circa stochastic ReLUs
    relu_layers: int
    macs: int
    flops: int
    params: int
    offline_s: float
    online_s: float
    latency_s: float
    offline_upload_bytes: int
    offline_download_bytes: int
    online_upload_bytes: int
    online_download_bytes: int
    client_storage_bytes: int       # kept by the client between offline and online phases
    server_storage_bytes: int
    breakdown: Dict[str, float]     # seconds per step (compute and transfer)
    layers: Tuple[LayerCost, ...]
    unpriced: Tuple[UnpricedOp, ...]
    assumptions: Tuple[str, ...]
    warnings: Tuple[str, ...] = field(default=())

    @property
    def plain_relus(self) -> int:
        return self.relus - self.stochastic_relus

    @property
    def gc_bytes(self) -> int:
        return sum(layer.gc_bytes for layer in self.layers)

    @property
    def total_bytes(self) -> int:
        return (self.offline_upload_bytes + self.offline_download_bytes
                + self.online_upload_bytes + self.online_download_bytes)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["layers"] = [dict(asdict(layer), shape=list(layer.shape)) for layer in self.layers]
        d["unpriced"] = [asdict(u) for u in self.unpriced]
        d["assumptions"] = list(self.assumptions)
        d["warnings"] = list(self.warnings)
        d["plain_relus"] = self.plain_relus
        d["gc_bytes"] = self.gc_bytes
        return d

    def summary_rows(self) -> List[Tuple[str, str]]:
        relus = format_count(self.relus)
        if self.stochastic_relus:
            relus += f" ({format_count(self.stochastic_relus)} stochastic)"
        return [
            ("model", f"{self.model}, input {tuple(self.input_size)}"),
            ("protocol", f"{self.protocol}, {self.garbler}-garbler, {self.threads} server thread(s), "
                         f"{self.client_threads} client thread(s)" if self.garbler != "-" else
                         f"{self.protocol} (SPU, fitted to measured runs; no garbled circuits)"),
            ("network", self.network),
            ("ReLUs", f"{relus} in {self.relu_layers} layers"),
            ("MACs / FLOPs", f"{format_count(self.macs)} / {format_count(self.flops)}"),
            ("params", format_count(self.params)),
            ("offline", format_seconds(self.offline_s)),
            ("online", format_seconds(self.online_s)),
            ("latency (offline + online)", format_seconds(self.latency_s)),
            ("offline traffic", f"{format_bytes(self.offline_upload_bytes)} up, "
                                f"{format_bytes(self.offline_download_bytes)} down"),
            ("online traffic", f"{format_bytes(self.online_upload_bytes)} up, "
                               f"{format_bytes(self.online_download_bytes)} down"),
            ("storage", f"client {format_bytes(self.client_storage_bytes)}, "
                        f"server {format_bytes(self.server_storage_bytes)}"),
        ]

    def __str__(self) -> str:
        rows = self.summary_rows()
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        if self.unpriced:
            lines.append(f"{'not priced'.ljust(width)}  {_unpriced_summary(self.unpriced)}")
        return "\n".join(lines)

    def layer_table(self) -> List[Tuple[str, ...]]:
        header = ("layer", "type", "output", "ReLUs", "MACs", "HE s (1 thr)", "GC bytes")
        rows = [header]
        for layer in self.layers:
            rows.append((layer.name or "(model)", layer.type + (" [stochastic]" if layer.stochastic else ""),
                         "x".join(str(s) for s in layer.shape), format_count(layer.relus) if layer.relus else "",
                         format_count(layer.macs) if layer.macs else "",
                         f"{layer.he_s:.3f}" if layer.he_s else "",
                         format_bytes(layer.gc_bytes) if layer.gc_bytes else ""))
        return rows

    def to_markdown(self, layers: bool = True) -> str:
        lines = ["| quantity | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.summary_rows()]
        if layers and self.layers:
            table = self.layer_table()
            lines += ["", "| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
            lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
        if self.unpriced:
            lines += ["", "Not priced (nonlinear ops the cost model does not know; not in the estimate):", ""]
            lines += [f"- `{u.name or '(model)'}` ({u.type}): {u.op}, {format_count(u.elements)} elements"
                      for u in self.unpriced]
        lines += ["", "Assumptions:", ""] + [f"- {a}" for a in self.assumptions]
        return "\n".join(lines)


def _unpriced_summary(unpriced: Tuple[UnpricedOp, ...]) -> str:
    totals: Dict[str, int] = {}
    for u in unpriced:
        totals[u.op] = totals.get(u.op, 0) + u.elements
    return ", ".join(f"{op} ({format_count(n)} elements)" for op, n in totals.items())


def format_count(n: Optional[float]) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{int(n)}"


def format_bytes(n: float) -> str:
    n = float(n)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def format_seconds(s: float) -> str:
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1000:.1f} ms"
