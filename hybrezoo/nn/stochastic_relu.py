"""Circa's stochastic ReLU (Ghodsi et al., NeurIPS 2021), simulated exactly in plaintext.

Circa evaluates ReLU(x) = x * [x >= 0] with the sign test inside a garbled circuit and the product
outside it (a Beaver multiplication triple). To shrink the circuit it drops the k low-order bits of
each additive share before the test, so the test sees ``floor(a / 2^k) + floor(b / 2^k)``: the carry
out of the dropped bits is lost and the test can err, but only for values within 2^k of zero.

This layer computes exactly that, per element: the value in fixed point with f fractional bits,
``X = round(x * 2^f)``; a uniformly random share ``a`` of the ring Z_{2^n} and ``b = X - a``; the
truncated test on ``(a >> k) + (b >> k) mod 2^(n-k)``; then ``x * test``. With ``S`` that sum read
as a signed (n-k)-bit number, ``S = (X - c) / 2^k`` where ``c`` (the dropped low bits, 0 <= c < 2^(k+1))
depends on the random share, so:

- ``variant="pos_zero"`` tests ``S >= 0``: negatives are always zeroed, and a positive X < 2^k is
  zeroed with probability ``1 - (X + 1) / 2^k``;
- ``variant="neg_pass"`` tests ``S >= -1``: positives always pass, and a negative X >= -2^k passes
  with probability ``(X + 2^k + 1) / 2^k``.

(:func:`fault_probability` gives these.) Both reduce to one comparison: with ``u`` the k low bits of
the random share ``a`` (uniform on [0, 2^k)), the test passes iff ``X + offset >= u``, offset 0 for
pos_zero and 2^k for neg_pass, that is iff ``v < (X + offset + 1) / 2^k`` for ``v`` uniform on [0, 1).
The layer draws ``v`` and compares, which costs a few elementwise passes and scripts with TorchScript;
:func:`truncated_sign_test` is the protocol's computation on full shares, and the tests check that
the two agree bit for bit on the same shares. We simulate a power-of-two ring; Delphi and Circa
share values in a prime field, whose wrap-around adjustment the circuit handles separately.

**Which faults a call gets.** A seeded layer restarts its generator on every call from a key that
mixes its seed with what identifies the input (its size, smallest and largest values and three probe
elements, all read exactly): the same input gets the same faults, however often and in whatever order
the model is called, while other inputs get other faults (each inference its own shares, as in the
protocol). So a Circa model is a function of its input for a fixed seed: eager, TorchScript and FX
graphs agree, gradient checkpointing recomputes the same faults, and a data set scores the same
whatever ran before. Another seed gives other faults everywhere (accuracy over seeds, docs/circa.md).
``fresh_faults=True`` asks for the protocol's stream instead: the generator advances from call to call
(two calls on one input differ; the sequence repeats from :meth:`StochasticReLU.reseed`).
``seed=None`` draws from torch's global generator, fresh on every call.
"""
import math
from typing import List, Optional

import torch
from timm.layers import register_notrace_module

from .relu import PIReLU, check_mask_fits

__all__ = ["StochasticReLU", "VARIANTS", "fault_probability", "check_circa_params", "truncated_sign_test",
           "fault_key"]

VARIANTS = ("pos_zero", "neg_pass")
_MAX_RING_BITS = 62  # the simulation adds two n-bit shares in int64


def check_circa_params(ring_bits: int, frac_bits: int, truncated_bits: int, variant: str) -> None:
    """Reject settings the protocol cannot run with, in one line each."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Circa variant {variant!r}: use one of {', '.join(VARIANTS)}")
    if not 8 <= ring_bits <= _MAX_RING_BITS:
        raise ValueError(f"ring_bits must be between 8 and {_MAX_RING_BITS}, got {ring_bits}")
    if frac_bits < 0 or truncated_bits < 0:
        raise ValueError(f"frac_bits and truncated_bits must be >= 0, got f={frac_bits}, k={truncated_bits}")
    if truncated_bits >= ring_bits - 1:
        raise ValueError(f"k = {truncated_bits} truncated bits leave no sign bit in a {ring_bits}-bit ring: "
                         f"use k <= {ring_bits - 2}")
    if frac_bits + truncated_bits >= ring_bits - 1:
        raise ValueError(f"f + k = {frac_bits + truncated_bits} overflows the {ring_bits}-bit ring "
                         f"(values of magnitude 1 would not survive the test): use f + k <= {ring_bits - 2}")


def fault_probability(x: torch.Tensor, frac_bits: int, truncated_bits: int, variant: str) -> torch.Tensor:
    """Probability that the truncated sign test errs on x (exact, for the ring simulated here)."""
    big_x = torch.round(x.double() * 2.0 ** frac_bits)
    span = 2.0 ** truncated_bits
    if variant == "pos_zero":
        p = 1.0 - (big_x + 1.0) / span
        return torch.where((big_x >= 0) & (big_x < span), p, torch.zeros_like(p)).clamp(min=0.0)
    if variant == "neg_pass":
        p = (big_x + span + 1.0) / span
        return torch.where((big_x < 0) & (big_x >= -span), p, torch.zeros_like(p)).clamp(max=1.0)
    raise ValueError(f"unknown Circa variant {variant!r}: use one of {', '.join(VARIANTS)}")


def truncated_sign_test(fixed: torch.Tensor, share_a: torch.Tensor, ring_bits: int, truncated_bits: int,
                        variant: str) -> torch.Tensor:
    """The protocol's test on shares: ``fixed`` (int64 fixed-point values) is split into ``share_a``
    (uniform on [0, 2^n)) and ``b = fixed - a mod 2^n``; each loses its k low bits; the sum's sign bit
    decides. Returns True where the ReLU passes its input."""
    n, k = ring_bits, truncated_bits
    share_b = (fixed - share_a) & (2 ** n - 1)
    total = ((share_a >> k) + (share_b >> k)) & (2 ** (n - k) - 1)
    if variant == "neg_pass":
        total = (total + 1) & (2 ** (n - k) - 1)
    return total < 2 ** (n - k - 1)


def fault_key(seed: int, probes: List[float], numel: int, frac_bits: int) -> int:
    """The generator seed of one call of a seeded layer: ``seed`` mixed with the input's size and
    probe values (in fixed point, floored), so that one input always gets the same faults and another
    input other ones. Integer arithmetic below 2^63 that eager Python and TorchScript compute alike."""
    scale = 2.0 ** frac_bits
    parts = [seed, numel]
    for value in probes:
        fixed = value * scale
        parts.append(math.floor(fixed) if abs(fixed) <= 1e18 else 0)  # NaN and inf probes key as 0
    a = 1
    b = 7
    for v in parts:
        for piece in [v & 2147483647, (v >> 31) & 2147483647, (v >> 62) & 3]:
            a = (a * 1000003 + piece) % 2147483647
            b = (b * 48271 + piece + 1) % 2147483647
    return a * 2147483648 + b


@register_notrace_module  # a leaf for torch.fx: data-dependent (its faults, the ring-overflow check)
class StochasticReLU(PIReLU):
    """A PIReLU whose kept positions are evaluated with Circa's truncated sign test.

    Masked-off positions stay linear, as in :class:`PIReLU`. With a ``seed`` the layer owns a
    generator and its faults are a function of the seed and the input (module docstring): the same
    input, the same faults; ``fresh_faults=True`` lets them advance from call to call instead
    (restart with :meth:`reseed`). ``seed=None`` draws from torch's global generator.
    """

    generator: Optional[torch.Generator]
    call_generator: Optional[torch.Generator]
    seed: Optional[int]

    def __init__(self, frac_bits: int = 12, truncated_bits: int = 10, ring_bits: int = 32,
                 variant: str = "pos_zero", seed: Optional[int] = None, reduction: int = 0,
                 fresh_faults: bool = False) -> None:
        super().__init__(inplace=False, reduction=reduction)
        check_circa_params(ring_bits, frac_bits, truncated_bits, variant)
        self.frac_bits = frac_bits
        self.truncated_bits = truncated_bits
        self.ring_bits = ring_bits
        self.variant = variant
        self.fresh_faults = bool(fresh_faults)
        self.seed = seed
        self.generator = None       # holds the seed (and, with fresh_faults, the stream of draws)
        self.call_generator = None  # restarted on every call from the seed and the input
        # Tells which device the layer lives on (it has no parameters); not saved in the state dict.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self.reseed(seed)

    @torch.jit.ignore
    def reseed(self, seed: Optional[int]) -> None:
        """Faults from ``seed`` on (None: torch's global generator); with ``fresh_faults``, restart the stream."""
        self.seed = seed
        if seed is None or self._anchor.is_meta:  # a meta layer draws nothing; its generator comes with .to()
            self.generator = self.call_generator = None
            return
        if self.generator is None or self.generator.device != self._anchor.device:
            self.generator = torch.Generator(device=self._anchor.device)
            self.call_generator = torch.Generator(device=self._anchor.device)
        # The same objects, so a scripted copy follows the reseed (it reads the seed from the generator).
        self.generator.manual_seed(seed)

    def _apply(self, fn, *args, **kwargs):
        module = super()._apply(fn, *args, **kwargs)
        if self.seed is not None and (self.generator is None or self.generator.device != self._anchor.device):
            self.reseed(self.seed)
        return module

    def sign_test(self, x: torch.Tensor) -> torch.Tensor:
        """The protocol's truncated test [x >= 0] (bool), with its faults."""
        n, k, f = self.ring_bits, self.truncated_bits, self.frac_bits
        # float32 holds the fixed-point values and the k-bit draw exactly while they stay below 2^24;
        # beyond that only the sign matters, except for wide truncations, which need float64.
        work = x.detach().double() if k > 22 else x.detach().float()
        if work.is_meta or work.numel() == 0:  # shapes only (meta-device passes) or nothing to test
            return torch.ones(work.shape, dtype=torch.bool, device=work.device)
        flat = work.reshape(-1)
        low, high = torch.aminmax(flat)
        # one transfer: the extremes (the overflow check) and three probes (the fault key)
        probe = torch.stack([low, high, flat[0], flat[flat.numel() // 2], flat[-1]]).double().cpu()
        probes = [float(probe[i]) for i in range(5)]
        largest = max(-probes[0], probes[1])
        if largest * float(1 << f) >= float((1 << (n - 1)) - (1 << (k + 1))):
            raise ValueError(f"a value of magnitude {largest} overflows the {n}-bit ring with {f} "
                             f"fractional bits: raise ring_bits or lower frac_bits")
        generator = self.generator
        if generator is not None and not self.fresh_faults:
            seed = generator.initial_seed()  # the layer's seed (set by reseed, shared with scripted copies)
            generator = self.call_generator
            if generator is not None:
                generator.manual_seed(fault_key(seed, probes, flat.numel(), f))
        offset = (1 << k) if self.variant == "neg_pass" else 0
        threshold = torch.round(work * float(1 << f)).add_(float(offset + 1)).mul_(1.0 / float(1 << k))
        draw = torch.rand(work.shape, generator=generator, dtype=work.dtype, device=work.device)
        return draw < threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if mask is not None:
            x = check_mask_fits(x, mask, self.reduction)
        kept_value = torch.where(self.sign_test(x), x, 0.0)
        if mask is None:
            return kept_value
        return torch.where(mask, kept_value, x)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        circa = f"f={self.frac_bits}, k={self.truncated_bits}, n={self.ring_bits}, variant={self.variant}"
        if self.fresh_faults:
            circa += ", fresh_faults=True"
        return f"{circa}, {base}" if base else circa
