"""What one inference of a model evaluates: ReLUs, MACs, parameters, and the ops the cost model
cannot price. One forward pass, on the ``meta`` device where possible, so counting a large model
costs no memory and no compute.

How each quantity is obtained:

- ReLUs of :class:`~hybrezoo.nn.PIReLU` layers (and subclasses such as Circa's ``StochasticReLU``)
  come from the layer itself, ``kept_per_sample(feature_shape)``, so masks are honoured; the masks
  are read from the real model, never from the meta copy. Culled ReLUs are ``nn.Identity`` and cost 0.
- Any other op that is a ReLU on its own counts one ReLU per output element: ``relu`` (``nn.ReLU``
  modules of non-zoo models, ``F.relu``), ``threshold(x, 0, 0)``, ``clamp(x, min=0)`` / ``clamp_min(x, 0)``,
  ``maximum(x, 0)`` (against a zero constant), and ReLU6 (``hardtanh(0, 6)``, ``clamp(x, 0, 6)``; Delphi's
  garbled ReLU circuit is in fact a ReLU6).
- MACs and FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per
  multiply-accumulate of convolutions and matrix products; elementwise ops are not counted), in total
  and per module: ``macs = flops / 2``.
- Every other op on an activation is free only if it is known to be linear in the activations or to
  move data (``_FREE_OPS``; products and divisions only by weights or constants, selections only by
  public conditions or indices, batch norm only with running statistics); anything else, known or
  not (GELU, MaxPool, LayerNorm, ``sin``, ``glu``, a ReLU spelled as ``where(x > 0, x, 0)``, ...), is
  listed with the module that ran it. Ops on weights and constants alone run in the clear and are free.
  Ops are seen at the ATen level, so functional calls are caught too.
"""
from __future__ import annotations

import math
import numbers
import types
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules import module as nn_module
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, mm_flop

from ..errors import HybrezooError
from ..nn.relu import PIReLU

__all__ = ["ReluLayer", "LinearOp", "UnpricedOp", "ModelCounts", "count_model", "parse_input_size", "unwrap_model"]

_aten = torch.ops.aten

# ATen ops (overload packets, in-place ``_`` stripped) that are linear in the activations or only move
# data: free under private inference (local on secret shares). Everything else on an activation is priced
# (ReLUs, convolutions, matrix products with weights) or listed as unpriced: never silently dropped.
_FREE_OPS = frozenset({
    # sums and affine maps
    "add", "sub", "rsub", "neg", "sum", "mean", "cumsum", "positive",
    # linear pooling and resampling
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "upsample_nearest1d", "upsample_nearest2d",
    "upsample_nearest3d", "_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
    "upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d", "upsample_bicubic2d",
    # batch norm with running statistics (eval mode; an affine map folded into the convolution)
    "_native_batch_norm_legit_no_training", "_batch_norm_no_update",
    # data movement, copies, views
    "view", "_unsafe_view", "reshape", "_reshape_alias", "view_as", "flatten", "unflatten", "permute",
    "transpose", "t", "expand", "expand_as", "squeeze", "unsqueeze", "slice", "select", "narrow", "split",
    "split_with_sizes", "chunk", "unbind", "cat", "stack", "hstack", "vstack", "clone", "contiguous", "detach",
    "alias", "as_strided", "copy", "_copy_from", "_copy_from_and_resize", "lift_fresh", "lift_fresh_copy",
    "flip", "roll", "repeat", "tile", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
    "native_channel_shuffle", "diagonal", "unfold", "im2col", "col2im", "movedim", "constant_pad_nd",
    "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
    "replication_pad3d", "slice_scatter", "select_scatter", "diagonal_scatter", "as_strided_scatter",
    # dropout masks are public randomness
    "dropout", "native_dropout", "feature_dropout", "alpha_dropout", "bernoulli",
    # metadata
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_contiguous", "is_same_size",
    "_has_compatible_shallow_copy_type", "size", "stride", "numel", "dim",
})
# Ops whose output depends on an activation's shape only, not its values (their outputs are constants).
_SHAPE_ONLY_OPS = frozenset({
    "empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "randint_like",
    "new_empty", "new_empty_strided", "new_zeros", "new_ones", "new_full", "fill", "zero",
})
# Ops that bring a constant into the graph (``torch.tensor(0.)`` in a forward): their outputs are public.
_CONSTANT_OPS = frozenset({"lift_fresh", "lift_fresh_copy", "scalar_tensor"})
_ZERO_FACTORIES = frozenset({"zeros", "zeros_like", "new_zeros", "zero"})
# Data movement keeps a zero tensor zero (torch.zeros(()).expand_as(x) is still a zero).
_ZERO_PRESERVING = frozenset({"view", "_unsafe_view", "reshape", "expand", "expand_as", "clone", "detach", "alias",
                              "_to_copy", "to", "lift_fresh", "lift_fresh_copy", "unsqueeze", "squeeze",
                              "contiguous", "t", "permute", "transpose", "slice", "select", "as_strided"})
_FILL_FACTORIES = frozenset({"full", "full_like", "new_full", "fill", "scalar_tensor"})
# Free when the named operands are public (weights, constants): a product by a weight, a division by a
# constant, a selection by a public mask or index. Otherwise listed under the label.
_FREE_IF_PUBLIC = {
    "mul": (("self", "other"), "any", "product of two activations"),
    "div": (("other",), "all", "division by an activation"),
    "true_divide": (("other",), "all", "division by an activation"),
    "addcmul": (("tensor1", "tensor2"), "any", "product of two activations"),
    "addcdiv": (("tensor2",), "all", "division by an activation"),
    "where": (("condition",), "all", "select by an activation"),
    "masked_fill": (("mask",), "all", "select by an activation"),
    "masked_scatter": (("mask",), "all", "select by an activation"),
    "masked_select": (("mask",), "all", "select by an activation"),
    "index": (("indices",), "all", "index by an activation"),
    "_unsafe_index": (("indices",), "all", "index by an activation"),
    "index_put": (("indices",), "all", "index by an activation"),
    "index_select": (("index",), "all", "index by an activation"),
    "gather": (("index",), "all", "index by an activation"),
    "scatter": (("index",), "all", "index by an activation"),
    "scatter_add": (("index",), "all", "index by an activation"),
    "index_add": (("index",), "all", "index by an activation"),
    "index_copy": (("index",), "all", "index by an activation"),
    "index_fill": (("index",), "all", "index by an activation"),
    "take": (("index",), "all", "index by an activation"),
}
# Batch norm ops whose ``training`` argument says whether they normalise by the batch's own statistics.
_BATCH_NORM_OPS = frozenset({"native_batch_norm", "_native_batch_norm_legit", "batch_norm", "cudnn_batch_norm",
                             "miopen_batch_norm", "_batch_norm_impl_index", "_batch_norm_with_update"})
_INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

# Readable names of the unpriced ops seen most often (any other is listed under its ATen name).
_LABELS = {
    "gelu": "GELU", "silu": "SiLU", "sigmoid": "Sigmoid", "tanh": "Tanh", "hardswish": "Hardswish",
    "hardsigmoid": "Hardsigmoid", "hardtanh": "Hardtanh", "leaky_relu": "LeakyReLU", "elu": "ELU",
    "celu": "CELU", "selu": "SELU", "softplus": "Softplus", "mish": "Mish", "_prelu_kernel": "PReLU",
    "prelu": "PReLU", "rrelu_with_noise": "RReLU", "log_sigmoid_forward": "LogSigmoid", "glu": "GLU",
    "threshold": "Threshold", "hardshrink": "Hardshrink", "softshrink": "Softshrink",
    "max_pool1d": "MaxPool", "max_pool2d": "MaxPool", "max_pool3d": "MaxPool",
    "max_pool2d_with_indices": "MaxPool", "max_pool3d_with_indices": "MaxPool",
    "adaptive_max_pool1d": "AdaptiveMaxPool", "adaptive_max_pool2d": "AdaptiveMaxPool",
    "adaptive_max_pool3d": "AdaptiveMaxPool", "fractional_max_pool2d": "MaxPool",
    "_softmax": "Softmax", "_safe_softmax": "Softmax", "_log_softmax": "LogSoftmax", "softmax": "Softmax",
    "log_softmax": "LogSoftmax", "logsumexp": "logsumexp",
    "gt": "comparison", "ge": "comparison", "lt": "comparison", "le": "comparison", "eq": "comparison",
    "ne": "comparison",
    "native_layer_norm": "LayerNorm", "native_group_norm": "GroupNorm", "_fused_rms_norm": "RMSNorm",
    "clamp": "clamp", "clamp_min": "clamp", "clamp_max": "clamp", "amax": "max", "amin": "min",
    "bmm": "matmul of two activations", "baddbmm": "matmul of two activations",
    "_scaled_dot_product_flash_attention_for_cpu": "attention",
    "_scaled_dot_product_efficient_attention": "attention",
    "_scaled_dot_product_flash_attention": "attention", "_scaled_dot_product_cudnn_attention": "attention",
    "_local_scalar_dense": "value read in the clear (data-dependent control flow)",
    "_to_copy": "cast to an integer type",
}
_LABELS.update({name: "BatchNorm with batch statistics" for name in _BATCH_NORM_OPS})


@dataclass(frozen=True)
class ReluLayer:
    """One call of a priced nonlinear layer: how many ReLUs it evaluates for one input."""

    name: str                       # qualified module name ("layer1.0.act1")
    type: str                       # module class ("PIReLU", "StochasticReLU", "ReLU", ...)
    shape: Tuple[int, ...]          # feature shape of one sample (C, H, W)
    relus: int                      # elements evaluated as (stochastic) ReLUs
    elements: int                   # all elements of the feature map (relus + linearised ones)
    stochastic: bool = False        # Circa's stochastic ReLU (a truncated sign test)
    ring_bits: Optional[int] = None       # Circa: bit width n of the additive shares
    truncated_bits: Optional[int] = None  # Circa: low bits k dropped before the sign test
    frac_bits: Optional[int] = None       # Circa: fractional bits f of the fixed-point encoding


@dataclass(frozen=True)
class LinearOp:
    """A convolution or matrix product with weights: priced with homomorphic encryption offline."""

    name: str
    type: str                       # module class that ran it
    kind: str                       # "conv" or "fc"
    in_channels: int                # conv: C_in; fc: input features
    out_channels: int               # conv: C_out; fc: output features
    spatial: Tuple[int, ...]        # conv: input spatial size (H, W); fc: ()
    kernel: Tuple[int, ...]         # conv: kernel size; fc: ()
    stride: Tuple[int, ...]
    groups: int
    rows: int                       # fc: rows multiplied (tokens); conv: 1
    in_numel: int                   # elements of the input of one sample
    out_numel: int                  # elements of the output of one sample
    macs: int                       # torch's FLOP formula / 2


@dataclass(frozen=True)
class UnpricedOp:
    """An op on an activation that is neither priced nor known to be free (reported, not included in
    the estimate): a nonlinearity the cost model has no circuit for, or an op it does not know."""

    name: str                       # module that ran it
    type: str                       # that module's class
    op: str                         # what it is ("GELU", "MaxPool", ...)
    aten: str                       # the ATen op seen
    elements: int                   # output elements of one sample


@dataclass(frozen=True)
class ModelCounts:
    """Counts of one inference (batch of one) of a model."""

    input_size: Tuple[int, ...]
    relus: int                                  # all priced ReLUs (plain + stochastic)
    stochastic_relus: int                       # of which Circa stochastic ReLUs
    macs: int                                   # multiply-accumulates (FlopCounterMode / 2)
    flops: int                                  # FLOPs as FlopCounterMode counts them (= 2 x MACs)
    params: int
    relu_layers: Tuple[ReluLayer, ...]
    linear_ops: Tuple[LinearOp, ...]
    unpriced: Tuple[UnpricedOp, ...]
    module_macs: Dict[str, int]                 # MACs of each module's own ops (not its children's)
    module_types: Dict[str, str]                # class name of every module that ran, in call order
    module_shapes: Dict[str, Tuple[int, ...]]   # output shape (one sample) of every module that ran
    num_outputs: int                            # elements of the model's output (the prediction)
    device: str                                 # "meta" or the device of the fallback real forward

    @property
    def plain_relus(self) -> int:
        return self.relus - self.stochastic_relus


def parse_input_size(value: Any) -> Tuple[int, ...]:
    """(C, H, W) from a sequence or a "3,32,32" string; one clear error otherwise."""
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise HybrezooError(f"input size {value!r} is not a list of integers: write it as C,H,W, e.g. 3,32,32")
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or not value or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        raise HybrezooError(f"input_size must be a sequence of integers (C, H, W) for one sample, e.g. (3, 32, 32); "
                            f"got {value!r}")
    if any(v < 1 for v in value):
        raise HybrezooError(f"input_size must be positive, got {tuple(value)}")
    return tuple(int(v) for v in value)


# ----------------------------------------------------------------------------------------------
# the forward pass

def _first_tensor(value: Any) -> Optional[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        for v in value.values():
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _per_sample(shape: Sequence[int]) -> Tuple[int, ...]:
    return tuple(int(s) for s in shape[1:])


class _Tracer:
    """Module stack and call records, fed by global forward hooks while the count runs."""

    def __init__(self, names: Dict[int, str]) -> None:
        self.names = names
        self.stack: List[nn.Module] = []
        self.types: Dict[str, str] = {}
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        self.pirelu_calls: List[Tuple[nn.Module, str, Tuple[int, ...]]] = []

    def name_of(self, module: nn.Module) -> str:
        name = self.names.get(id(module))
        if name is None:  # a module created inside forward: name it after the module that called it
            caller = next((self.names[id(m)] for m in reversed(self.stack) if id(m) in self.names), "")
            name = f"{caller}.<{type(module).__name__}>" if caller else f"<{type(module).__name__}>"
        return name

    def pre_hook(self, module: nn.Module, args: Any) -> None:
        self.stack.append(module)
        self.types.setdefault(self.name_of(module), type(module).__name__)

    def post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        name = self.name_of(module)
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        out = _first_tensor(output)
        if out is not None:
            self.shapes.setdefault(name, _per_sample(out.shape))
        if isinstance(module, PIReLU):
            inp = _first_tensor(args)
            shape = _per_sample(inp.shape) if inp is not None else self.shapes.get(name, ())
            self.pirelu_calls.append((module, name, shape))

    def inside_pirelu(self) -> bool:
        return any(isinstance(m, PIReLU) for m in self.stack)

    def current(self) -> Tuple[str, str]:
        if not self.stack:
            return "", "model"
        module = self.stack[-1]
        return self.name_of(module), type(module).__name__


class _OpRecorder(TorchDispatchMode):
    """Sees every ATen op of the forward: linear ops with weights, ReLUs outside PIReLUs, and every
    other op on an activation that is not known to be free (:data:`_FREE_OPS`), which it lists.

    Tensors are *public* (weights, buffers, constants, and what is computed from them alone) or
    activations; ops on public tensors alone run in the clear and are free. Which tensors are public
    is tracked by identity, so their references are kept for the pass."""

    def __init__(self, tracer: _Tracer, weight_ids: set, meta: bool) -> None:
        super().__init__()
        self.tracer = tracer
        self.public = set(weight_ids)
        self.zeros: set = set()         # public tensors known to be all zeros (maximum(x, 0) is a ReLU)
        self.meta = meta                # activations live on the meta device: a real tensor is a constant
        self._keep: List[torch.Tensor] = []
        self.linear: List[LinearOp] = []
        self.relus: List[ReluLayer] = []
        self.unpriced: List[UnpricedOp] = []

    def _tracked(self, t: torch.Tensor, ids: set) -> bool:
        seen = t
        while seen is not None:
            if id(seen) in ids:
                return True
            seen = getattr(seen, "_base", None)
        return False

    def _is_public(self, value: Any) -> bool:
        """Python scalars, None, weights, constants and tensors computed from them alone."""
        if isinstance(value, (list, tuple)):
            return all(self._is_public(v) for v in value)
        if not isinstance(value, torch.Tensor):
            return True
        if self.meta and not value.is_meta:
            return True
        return self._tracked(value, self.public)

    def _is_zero(self, value: Any) -> bool:
        if isinstance(value, bool) or value is None:
            return False
        if isinstance(value, numbers.Number):
            return value == 0
        if not isinstance(value, torch.Tensor):
            return False
        if self._tracked(value, self.zeros):
            return True
        return self._is_public(value) and _reads_zero(value)

    def _mark_public(self, out: Any, zero: bool) -> None:
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._keep.append(t)
                self.public.add(id(t))
                if zero:
                    self.zeros.add(id(t))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            self._record(func, args, kwargs, out)
        except HybrezooError:
            raise
        except Exception as err:  # an op we misread: fail loudly rather than count it wrong
            name, mtype = self.tracer.current()
            raise HybrezooError(f"pi_cost could not account for {func} in {name or 'the model'} ({mtype}): "
                                f"{type(err).__name__}: {err}; please report this model") from err
        return out

    def _record(self, func, args, kwargs, out) -> None:
        tracer = self.tracer
        if tracer.inside_pirelu():
            return  # priced as a whole by the layer's kept_per_sample
        packet = func.overloadpacket.__name__
        packet = packet[:-1] if packet.endswith("_") and not packet.endswith("__") else packet  # in place: silu_
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if packet in _SHAPE_ONLY_OPS or packet in _CONSTANT_OPS or all(self._is_public(t) for t in inputs):
            self._mark_public(out, zero=self._zero_output(func, packet, args, kwargs, inputs))
            return  # computed in the clear from public values (or from an activation's shape only)
        result = _first_tensor(out)
        if func in (_aten.convolution.default, _aten._convolution.default):
            self._record_conv(args, result)
            return
        if func in (_aten.addmm.default, _aten.mm.default):
            a, b = (args[1], args[2]) if func is _aten.addmm.default else (args[0], args[1])
            self._record_mm(a, b)
            return
        name, mtype = tracer.current()
        bound = _bind(func, args, kwargs)
        if self._is_relu(func, packet, bound):
            self.relus.append(_relu_record(name, mtype, result))
            return
        label = self._unpriced_label(func, packet, bound)
        if label is not None:
            elements = _numel(_per_sample(result.shape)) if result is not None else 1
            self.unpriced.append(UnpricedOp(name=name, type=mtype, op=label, aten=str(func), elements=elements))

    def _zero_output(self, func, packet: str, args, kwargs, inputs: List[torch.Tensor]) -> bool:
        if packet in _ZERO_FACTORIES:
            return True
        bound = _bind(func, args, kwargs)
        if packet in _FILL_FACTORIES:
            value = next((bound[k] for k in ("fill_value", "value", "s") if k in bound), None)
            return self._is_zero(value)
        if packet in _CONSTANT_OPS:
            return bool(inputs) and _reads_zero(inputs[0])
        return packet in _ZERO_PRESERVING and bool(inputs) and self._is_zero(inputs[0])

    def _is_relu(self, func, packet: str, bound: Dict[str, Any]) -> bool:
        """Ops that are a ReLU (or ReLU6, Delphi's circuit) by themselves: one garbled ReLU per element."""
        if packet == "relu":
            return True
        if packet == "hardtanh":
            return _number(bound.get("min_val", -1.0)) == 0.0 and _number(bound.get("max_val", 1.0)) == 6.0
        if packet == "threshold":
            return _number(bound.get("threshold")) == 0.0 and _number(bound.get("value")) == 0.0
        if packet in ("clamp", "clamp_min"):
            high = bound.get("max")
            return self._is_zero(bound.get("min")) and (high is None or _number(high) == 6.0)
        if packet in ("maximum", "fmax") or func is _aten.max.other:
            a, b = bound.get("self"), bound.get("other")
            return (self._is_zero(b) and not self._is_public(a)) or (self._is_zero(a) and not self._is_public(b))
        return False

    def _unpriced_label(self, func, packet: str, bound: Dict[str, Any]) -> Optional[str]:
        """None for an op known to be free on activations; otherwise what to list it as."""
        if packet in ("_to_copy", "to"):  # a cast rounds to integers (a nonlinearity) or keeps the value
            return _LABELS["_to_copy"] if bound.get("dtype") in _INTEGER_DTYPES else None
        if packet in _FREE_OPS:
            return None
        if packet in _FREE_IF_PUBLIC:
            names, mode, label = _FREE_IF_PUBLIC[packet]
            public = [self._is_public(bound.get(n)) for n in names]
            if packet in ("div", "true_divide") and bound.get("rounding_mode") is not None:
                return "rounding division"
            return None if (any(public) if mode == "any" else all(public)) else label
        if packet in _BATCH_NORM_OPS:
            return None if bound.get("training", True) is False else _LABELS[packet]
        if packet in ("bmm", "baddbmm"):
            a, b = (bound.get("batch1"), bound.get("batch2")) if packet == "baddbmm" else (bound.get("self"),
                                                                                          bound.get("mat2"))
            if self._is_public(a) or self._is_public(b):
                return "batched matmul with weights (HE cost not modelled)"
        return _LABELS.get(packet, packet)

    def _record_conv(self, args, result) -> None:
        x, w = args[0], args[1]
        stride, transposed, groups = tuple(args[3]), bool(args[6]), int(args[8])
        name, mtype = self.tracer.current()
        if transposed or not self._is_public(w):
            op = "transposed convolution" if transposed else "convolution by an activation"
            self.unpriced.append(UnpricedOp(name=name, type=mtype, op=op, aten="aten.convolution",
                                            elements=_numel(_per_sample(result.shape))))
            return
        flops = conv_flop_count(list(x.shape), list(w.shape), list(result.shape), transposed=False)
        self.linear.append(LinearOp(
            name=name, type=mtype, kind="conv", in_channels=int(x.shape[1]), out_channels=int(w.shape[0]),
            spatial=tuple(int(s) for s in x.shape[2:]), kernel=tuple(int(s) for s in w.shape[2:]),
            stride=tuple(int(s) for s in stride), groups=groups, rows=1,
            in_numel=_numel(_per_sample(x.shape)), out_numel=_numel(_per_sample(result.shape)),
            macs=int(flops) // 2))

    def _record_mm(self, a, b) -> None:
        name, mtype = self.tracer.current()
        if not self._is_public(a) and not self._is_public(b):
            self.unpriced.append(UnpricedOp(name=name, type=mtype, op="matmul of two activations",
                                            aten="aten.mm", elements=int(a.shape[0]) * int(b.shape[1])))
            return
        flops = mm_flop(list(a.shape), list(b.shape))
        rows, n_in, n_out = int(a.shape[0]), int(a.shape[1]), int(b.shape[1])
        self.linear.append(LinearOp(
            name=name, type=mtype, kind="fc", in_channels=n_in, out_channels=n_out, spatial=(), kernel=(),
            stride=(), groups=1, rows=rows, in_numel=rows * n_in, out_numel=rows * n_out, macs=int(flops) // 2))


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(shape)) if shape else 1


def _bind(func, args: Sequence[Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """An op's arguments by their schema names (``self``, ``other``, ``min``, ``training``, ...)."""
    bound = dict(zip((a.name for a in func._schema.arguments), args))
    bound.update(kwargs)
    return bound


def _reads_zero(t: torch.Tensor) -> bool:
    """A real one-element tensor holding 0 (a constant's value can be read; a meta tensor's cannot)."""
    return not t.is_meta and t.numel() == 1 and float(t) == 0.0


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, numbers.Number) and not isinstance(value, bool) else None


def _relu_record(name: str, mtype: str, result: Optional[torch.Tensor]) -> ReluLayer:
    shape = _per_sample(result.shape) if result is not None else ()
    n = _numel(shape)
    return ReluLayer(name=name, type=mtype, shape=shape, relus=n, elements=n)


@contextmanager
def _global_hooks(tracer: _Tracer) -> Iterator[None]:
    pre = nn_module.register_module_forward_pre_hook(tracer.pre_hook)
    post = nn_module.register_module_forward_hook(tracer.post_hook)
    try:
        yield
    finally:
        pre.remove()
        post.remove()


@contextmanager
def _meta_safe_relus(model: nn.Module) -> Iterator[None]:
    """Run every PIReLU (and subclass) with PIReLU's own forward while counting.

    Subclasses may simulate their protocol with data-dependent ops (Circa's fault sampling) that
    cannot run on the meta device; the count needs only their input shape, and PIReLU's forward
    keeps the mask-shape checks (so a wrong input size still fails with the layer's clear message).
    """
    patched = []
    for m in model.modules():
        if isinstance(m, PIReLU) and type(m).forward is not PIReLU.forward:
            m.forward = types.MethodType(PIReLU.forward, m)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def _module_names(model: nn.Module) -> Dict[int, str]:
    names: Dict[int, str] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), name)
    return names


def _own_macs(flop_counts: Dict[str, Dict[Any, int]], root: str) -> Dict[str, int]:
    """MACs of each module's own ops, from FlopCounterMode's per-module totals (which include children)."""
    totals = {}
    for key, per_op in flop_counts.items():
        if key == "Global":
            continue
        name = key.split(".", 1)[1] if key.startswith(root + ".") else ("" if key == root else key)
        totals[name] = totals.get(name, 0) + sum(per_op.values())
    own = {}
    for name, total in totals.items():
        prefix = name + "." if name else ""
        children = [n for n in totals if n != name and n.startswith(prefix)
                    and "." not in n[len(prefix):]]
        rest = total - sum(totals[c] for c in children)
        if rest > 0:
            own[name] = rest // 2
    return own


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile, DataParallel or DistributedDataParallel wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def _check_masks_readable(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, PIReLU) and m.mask is not None and m.mask.is_meta:
            raise HybrezooError(f"the ReLU mask of {name or 'the model'} is on the meta device, so its kept ReLUs "
                                f"cannot be counted: build the model on the CPU (or load its checkpoint) first")


def count_model(model: nn.Module, input_size: Sequence[int]) -> ModelCounts:
    """Count one inference of ``model`` on one input of shape ``input_size`` (C, H, W).

    The model is not changed (its parameters are replaced by meta tensors for the pass, its train/eval
    mode is restored). Raises :class:`~hybrezoo.errors.HybrezooError` with one line on bad input.
    """
    if not isinstance(model, nn.Module):
        raise HybrezooError(f"expected a torch.nn.Module or a zoo model name, got {type(model).__name__}")
    model = unwrap_model(model)
    size = parse_input_size(input_size)
    _check_masks_readable(model)
    params = sum(p.numel() for p in model.parameters())
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        try:
            return _count(model, size, params, device="meta")
        except HybrezooError:
            raise
        except Exception:  # data-dependent control flow or an op without a meta kernel: run it for real
            try:
                return _count(model, size, params, device=None)
            except HybrezooError:
                raise
            except Exception as err:
                raise _rejected(size, err) from err
    finally:
        for m, mode in was_training.items():
            m.training = mode


def _rejected(size: Tuple[int, ...], err: BaseException) -> HybrezooError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return HybrezooError(f"the model rejected an input of shape {size} ({type(err).__name__}: {first}); "
                         f"pass the input_size (C, H, W) it expects")


def _count(model: nn.Module, size: Tuple[int, ...], params: int, device: Optional[str]) -> ModelCounts:
    tracer = _Tracer(_module_names(model))
    weights: Dict[str, torch.Tensor] = {}
    if device == "meta":
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            weights[name] = torch.empty_like(t, device="meta")
        x = torch.zeros((1,) + size, device="meta", dtype=_float_dtype(model))
        weight_ids = {id(t) for t in weights.values()}
        run = lambda: torch.func.functional_call(model, weights, (x,))  # noqa: E731
    else:
        first = next(iter(model.parameters()), None)
        dev = first.device if first is not None else torch.device("cpu")
        device = str(dev)
        x = torch.zeros((1,) + size, device=dev, dtype=_float_dtype(model))
        weight_ids = {id(t) for t in list(model.parameters()) + list(model.buffers())}
        run = lambda: model(x)  # noqa: E731

    recorder = _OpRecorder(tracer, weight_ids, meta=device == "meta")
    flop_counter = FlopCounterMode(display=False)
    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(_meta_safe_relus(model))
        stack.enter_context(_global_hooks(tracer))
        stack.enter_context(flop_counter)
        stack.enter_context(recorder)
        output = run()

    relu_layers = list(recorder.relus)
    for module, name, shape in tracer.pirelu_calls:
        relu_layers.append(_pirelu_record(module, name, shape))
    order = {name: i for i, name in enumerate(tracer.types)}
    relu_layers.sort(key=lambda r: order.get(r.name, len(order)))
    relu_layers = tuple(relu_layers)

    flops = int(flop_counter.get_total_flops())
    out = _first_tensor(output)
    return ModelCounts(
        input_size=size,
        relus=sum(r.relus for r in relu_layers),
        stochastic_relus=sum(r.relus for r in relu_layers if r.stochastic),
        macs=flops // 2, flops=flops, params=params,
        relu_layers=relu_layers, linear_ops=tuple(recorder.linear), unpriced=tuple(recorder.unpriced),
        module_macs=_own_macs(flop_counter.get_flop_counts(), type(model).__name__),
        module_types=dict(tracer.types), module_shapes=dict(tracer.shapes),
        num_outputs=_numel(_per_sample(out.shape)) if out is not None and out.dim() > 0 else 1,
        device=device or "meta",
    )


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _pirelu_record(module: PIReLU, name: str, shape: Tuple[int, ...]) -> ReluLayer:
    elements = _numel(shape)
    if len(shape) >= 3:
        kept = int(module.kept_per_sample(shape))
    elif module.mask is None:
        kept = elements
    else:  # PIReLU.forward rejects this before we get here; keep the count honest regardless
        raise HybrezooError(f"{name}: a masked ReLU layer needs (C, H, W) feature maps, got {shape}")
    stochastic = hasattr(module, "truncated_bits") and hasattr(module, "ring_bits")
    return ReluLayer(
        name=name, type=type(module).__name__, shape=shape, relus=kept, elements=elements,
        stochastic=stochastic,
        ring_bits=int(module.ring_bits) if stochastic else None,
        truncated_bits=int(module.truncated_bits) if stochastic else None,
        frac_bits=int(getattr(module, "frac_bits", 0)) if stochastic else None,
    )
