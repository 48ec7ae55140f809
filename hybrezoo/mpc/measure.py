"""``measure``: a zoo model's private inference under SPU, measured, next to ``pi_cost``'s estimate.

The library side of ``hybrezoo measure`` and ``benchmarks/measured_pi.py``: convert the model
(:mod:`.convert`), estimate its memory and refuse one that would not fit this machine, compile it for
the protocol, run N images (:mod:`.runner`), and compare each private output with the plaintext one.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
from torch import nn

from ..errors import HybrezooError
from .convert import check_not_circa, convert
from .runner import PROTOCOLS, SPUProgram, machine_description, require_spu, run_images

__all__ = ["Measurement", "measure", "available_memory_bytes", "synthetic_images", "MEMORY_MARGIN"]

# The memory estimate is at most 21% under a measured peak (the 26 calibration points; docs/mpc.md), so
# a peak reaches 1.27x the estimate: refuse with a margin above that.
MEMORY_MARGIN = 1.3


@dataclass
class Measurement:
    """A measured private inference (per-image means unless named otherwise) and its estimate."""

    model: str
    protocol: str                      # "cheetah" or "semi2k"
    mode: str                          # "simulator" or "two-process (127.0.0.1)"
    images: int
    input_size: List[int]
    relus: int
    macs: int
    wall_s: float                      # mean per image (Runtime.run)
    cpu_s: float                       # CPU time of both parties, mean per image (less sensitive to load)
    upload_bytes: float                # client -> server, mean per image
    download_bytes: float              # server -> client
    messages: float                    # SPU send actions of both parties, mean per image (>= rounds)
    peak_memory_bytes: int             # largest over the images
    top1_agreement: float              # fraction of images whose private top-1 equals the plaintext top-1
    max_abs_error: float               # largest |private logit - plaintext logit|
    compile_s: float
    estimate: Dict[str, Any]           # pi_cost(protocol="cheetah") on this machine class (see docs/mpc.md)
    memory_estimate_bytes: int
    weights: str                       # where the weights came from
    machine: str
    versions: Dict[str, str]
    field: str
    per_image: List[Dict[str, Any]] = field(default_factory=list)
    top1_accuracy: Optional[Dict[str, float]] = None  # with labelled images: private and plaintext top-1
    logs: Optional[str] = None         # the folder SPU's logs were kept in (keep_logs), else None: removed

    @property
    def time_error(self) -> Optional[float]:
        est = self.estimate.get("local_s")
        return None if est is None or self.protocol != "cheetah" else (est - self.wall_s) / self.wall_s

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["time_error"] = self.time_error
        return d

    def summary(self) -> str:
        """The human-readable report ``hybrezoo measure`` prints."""
        from ..cost.result import format_bytes, format_seconds

        est = self.estimate
        proto = {"cheetah": "Cheetah", "semi2k": "SEMI2K (trusted first party deals Beaver triples)"}[self.protocol]
        lines = [f"{self.model} under {proto}, SPU {self.versions.get('spu', '?')} {self.mode}, {self.images} "
                 f"image{'s' if self.images != 1 else ''} ({self.weights})",
                 f"ReLUs {self.relus:,}  MACs {self.macs / 1e6:,.1f}M  input {'x'.join(map(str, self.input_size))}  "
                 f"machine: {self.machine}"]
        rows = [("", "measured / image", "pi_cost cheetah" if self.protocol == "cheetah" else "pi_cost cheetah (ref.)")]

        def pct(measured: float, estimated: Optional[float]) -> str:
            if estimated is None or not measured or self.protocol != "cheetah":  # no error against another protocol
                return ""
            return f" ({(estimated - measured) / measured:+.0%})"
        rows.append(("wall time", format_seconds(self.wall_s),
                     format_seconds(est["local_s"]) + pct(self.wall_s, est["local_s"]) if est.get("local_s") else "-"))
        rows.append(("upload (client->server)", format_bytes(self.upload_bytes),
                     format_bytes(est["upload_bytes"]) + pct(self.upload_bytes, est["upload_bytes"])
                     if est.get("upload_bytes") else "-"))
        rows.append(("download (server->client)", format_bytes(self.download_bytes),
                     format_bytes(est["download_bytes"]) + pct(self.download_bytes, est["download_bytes"])
                     if est.get("download_bytes") else "-"))
        rows.append(("messages (>= rounds)", f"{self.messages:,.0f}",
                     f"{est['messages']:,.0f}" if est.get("messages") else "-"))
        rows.append(("peak memory", format_bytes(self.peak_memory_bytes),
                     format_bytes(self.memory_estimate_bytes) + " (checked before starting)"))
        width = max(len(r[0]) for r in rows) + 2
        w2 = max(len(r[1]) for r in rows) + 2
        lines += [f"  {a:<{width}}{b:<{w2}}{c}" for a, b, c in rows]
        agree = round(self.top1_agreement * self.images)
        lines.append(f"top-1 agreement with plaintext: {agree}/{self.images} ({self.top1_agreement:.0%}); largest "
                     f"|logit error| {self.max_abs_error:.2g}; SPU compile {format_seconds(self.compile_s)}")
        if self.top1_accuracy:
            lines.append(f"top-1 on the labelled images: private {self.top1_accuracy['private']:.1f}%, plaintext "
                         f"{self.top1_accuracy['plaintext']:.1f}%")
        if self.logs:
            lines.append(f"SPU's logs kept in {self.logs}")
        if self.protocol == "semi2k":
            lines.append("pi_cost has no SEMI2K model (it needs a trusted dealer); the Cheetah estimate is shown for "
                         "reference")
        return "\n".join(lines)


def available_memory_bytes() -> Optional[int]:
    """``MemAvailable`` from /proc/meminfo (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def synthetic_images(n: int, input_size: List[int], seed: int = 0) -> np.ndarray:
    """``n`` images of normalised pixels (standard normal), seeded: inputs when no data set is given."""
    return np.random.default_rng(seed).standard_normal((n, *input_size)).astype(np.float32)


def _estimate(model: nn.Module, input_size: List[int], counts: Any) -> Dict[str, Any]:
    from ..cost.api import pi_cost
    from ..cost.cheetah import LOCAL, estimated_messages, local_seconds

    cost = pi_cost(model, tuple(input_size), protocol="cheetah", network=LOCAL, warn=False)
    return dict(local_s=local_seconds(cost), upload_bytes=cost.online_upload_bytes + cost.offline_upload_bytes,
                download_bytes=cost.online_download_bytes + cost.offline_download_bytes,
                messages=estimated_messages(counts), relus=cost.relus, macs=cost.macs)


def measure(model: nn.Module, *, name: Optional[str] = None, protocol: str = "cheetah", images: Any = 1,
            labels: Optional[np.ndarray] = None, two_process: bool = False, weights: str = "given weights",
            check_memory: bool = True, progress: bool = False, seed: int = 0, field: str = "FM64",
            keep_logs: Optional[str] = None) -> Measurement:
    """Run ``images`` (a count: seeded synthetic images; or an (N, C, H, W) array) privately.

    SPU's logs go to a temporary folder removed when the run ends, succeeded or not; ``keep_logs``
    names a folder to keep them in instead (a failed run's error then says where they are).

    Refuses, in one line each: an unknown protocol, a Circa model, an op the converter does not know,
    a missing SPU, and a network whose estimated peak memory exceeds the memory available now
    (``check_memory=False`` tries anyway).
    """
    if protocol not in PROTOCOLS:
        raise HybrezooError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    check_not_circa(model, name)
    require_spu()
    converted = convert(model, name=name)
    size = list(converted.input_size)
    if isinstance(images, (int, np.integer)):
        if images < 1:
            raise HybrezooError(f"--images must be at least 1, got {images}")
        batch = synthetic_images(int(images), size, seed)
    else:
        batch = np.asarray(images, np.float32)
        if batch.ndim != 4 or list(batch.shape[1:]) != size:
            raise HybrezooError(f"images must be (N, {', '.join(map(str, size))}), got {list(batch.shape)}")
    from ..cost.cheetah import peak_memory_bytes
    from ..cost.counting import count_model

    counts = count_model(model, tuple(size))
    memory = int(peak_memory_bytes(counts, protocol=protocol, two_process=two_process))
    available = available_memory_bytes()
    label = converted.name
    if check_memory and available is not None and MEMORY_MARGIN * memory > available:
        raise HybrezooError(
            f"{label} needs about {memory / 2**30:.1f} GiB under {protocol} (estimated from its largest layers, "
            f"+{MEMORY_MARGIN - 1:.0%} margin), and this machine has {available / 2**30:.1f} GiB available: "
            f"measure a smaller network (smaller layers, smaller input) or pass --force to try anyway")
    estimate = _estimate(model, size, counts)
    program = SPUProgram(converted, protocol, field=field, log_dir=keep_logs)
    bar = None
    try:
        reference = converted.reference(batch)
        bar = _Progress(len(batch), estimate["local_s"] if protocol == "cheetah" else None, label) if progress else None
        runs = run_images(program, batch, two_process=two_process,
                          on_image=(lambda i, r: bar.done_one()) if bar else None)
    finally:
        if bar:
            bar.close()
        program.close()
    private = np.concatenate([r.output.reshape(1, -1) for r in runs])
    agree = float(np.mean(private.argmax(1) == reference.argmax(1)))
    accuracy = None
    if labels is not None:
        labels = np.asarray(labels)
        accuracy = dict(private=100.0 * float(np.mean(private.argmax(1) == labels)),
                        plaintext=100.0 * float(np.mean(reference.argmax(1) == labels)))
    import jax
    import spu

    return Measurement(
        model=label, protocol=protocol, mode="two processes over 127.0.0.1" if two_process else "simulator",
        images=len(batch), input_size=size, relus=counts.relus, macs=counts.macs,
        wall_s=float(np.mean([r.wall_s for r in runs])), cpu_s=float(np.mean([r.cpu_s for r in runs])),
        upload_bytes=float(np.mean([r.upload_bytes for r in runs])),
        download_bytes=float(np.mean([r.download_bytes for r in runs])),
        messages=float(np.mean([r.messages for r in runs])),
        peak_memory_bytes=int(max(r.peak_memory_bytes for r in runs)),
        top1_agreement=agree, max_abs_error=float(np.abs(private - reference).max()),
        compile_s=program.compile_s, estimate=estimate, memory_estimate_bytes=memory, weights=weights,
        machine=machine_description(), versions={"spu": str(spu.__version__), "jax": str(jax.__version__)},
        field=field, per_image=[r.to_dict() for r in runs], top1_accuracy=accuracy,
        logs=program.log_dir if program.keep_logs else None)


class _Progress:
    """A tqdm bar over images whose elapsed time ticks during a long image (stderr)."""

    def __init__(self, total: int, seconds_each: Optional[float], label: str) -> None:
        from tqdm.auto import tqdm

        hint = f", about {seconds_each:.0f} s each (pi_cost)" if seconds_each else ""
        self.bar = tqdm(total=total, desc=f"{label}{hint}", unit="image", leave=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.refresh()

    def done_one(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.bar.close()
