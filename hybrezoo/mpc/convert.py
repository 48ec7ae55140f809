"""A zoo model (as timm builds it, with its weights and ReLU masks) as a pure JAX function.

SPU runs JAX programs under two-party protocols, so measuring private inference starts here. The
model is traced with ``torch.fx`` (every :class:`~hybrezoo.nn.PIReLU` a leaf) and each node becomes a
JAX step:

- ``Conv2d`` followed by its own ``BatchNorm2d`` is one convolution with the batch norm folded in
  (weights and bias are the server's input); a batch norm on anything else (the pre-activation blocks
  of WRN) is a per-channel affine map with the server's scale and shift;
- a ``PIReLU`` without a mask is the protocol's ReLU on every element; with a mask, only the kept
  positions go through it: they are gathered (public indices), passed through the ReLU, and put back
  in place with the linearised positions by one more gather (a public permutation). Linearised
  positions never enter the protocol's comparison, so the MPC cost is that of the kept ReLUs;
- a ``ReLUReuse`` layer runs the protocol's ReLU on one channel per group and adds its correction
  ``relu(rep) - rep`` to the group, as :class:`~hybrezoo.nn.ReLUReuse` does;
- ``nn.Identity`` (culled ReLUs), dropout (eval), average pooling, flatten/reshape, additions and the
  classifier (``Linear``) carry over;
- anything else is refused with one line naming the op and the layer (:class:`UnsupportedOpError`);
  Circa's stochastic ReLUs are refused with :class:`CircaNotSupportedError`: their protocol (a
  truncated sign test in a garbled circuit) is not one that SPU runs.

The plaintext output of :meth:`ConvertedModel.__call__` equals the PyTorch model's up to float32
rounding (tests/test_mpc_convert.py checks every registered model). JAX is imported only here and in
the runner: the core package does not need it.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..cost.api import _model_label as _label
from ..errors import HybrezooError
from ..nn.relu import PIReLU
from ..nn.relu_reuse import ReLUReuse
from ..nn.stochastic_relu import StochasticReLU

__all__ = ["ConvertedModel", "convert", "UnsupportedOpError", "CircaNotSupportedError", "MissingExtraError",
           "require_jax", "Step"]

Params = Dict[str, Dict[str, np.ndarray]]


class UnsupportedOpError(HybrezooError):
    """The model uses an op the converter does not know (the message names the op and the layer)."""


class CircaNotSupportedError(HybrezooError):
    """A model with Circa's stochastic ReLUs: SPU does not run Circa's protocol."""


class MissingExtraError(HybrezooError):
    """JAX or SPU is not installed."""


def require_jax() -> Tuple[Any, Any]:
    """``(jax, jax.numpy)``, or one line saying how to install them."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise MissingExtraError("converting a model to JAX needs JAX, which hybrezoo's core does not install: "
                                "pip install -e \".[mpc]\" (SPU and JAX) or pip install \"jax[cpu]\"") from None
    return jax, jnp


# hybrezoo's shape checks, leaf functions in FX graphs that return their first argument
_CHECKS = frozenset({"check_image_batch", "check_mask_fits", "check_reuse_channels"})
_KNOWN = ("Conv2d (+BatchNorm2d), BatchNorm2d, Linear, PIReLU (masked or not), ReLUReuse, ReLU, Identity, "
          "Dropout, AvgPool2d, AdaptiveAvgPool2d, Flatten, mean, reshape/flatten/view, +, -")


@dataclass(frozen=True)
class Step:
    """One node of the converted program: ``out = fn(params, *inputs)`` (``fn`` uses jax.numpy)."""

    name: str                      # the layer (module path) or the FX node
    kind: str                      # "conv", "affine", "linear", "relu", "masked_relu", "relu_reuse", ...
    inputs: Tuple[str, ...]        # FX node names it reads
    output: str                    # FX node name it writes
    fn: Callable[..., Any]
    relus: int = 0                 # elements that go through the protocol's ReLU, per sample
    macs: int = 0                  # multiply-accumulates with the server's weights, per sample


@dataclass
class ConvertedModel:
    """A zoo model as a JAX program: ``apply(params, x)`` is pure (SPU compiles it); ``params`` holds
    the server's weights (folded), ``x`` is the client's batch (N, C, H, W) float32."""

    name: str
    input_size: Tuple[int, int, int]
    params: Params
    steps: List[Step]
    output: str
    num_classes: int
    torch_model: nn.Module = field(repr=False)

    @property
    def relus(self) -> int:
        """ReLUs per sample that go through the protocol (masked-off positions excluded)."""
        return sum(s.relus for s in self.steps)

    @property
    def relu_layers(self) -> int:
        return sum(1 for s in self.steps if s.relus)

    def apply(self, params: Params, x: Any) -> Any:
        """The network on ``x`` with ``params``, in jax.numpy: what SPU traces and compiles."""
        env: Dict[str, Any] = {"__input__": x}
        for step in self.steps:
            env[step.output] = step.fn(params, *(env[i] for i in step.inputs))
        return env[self.output]

    def __call__(self, x: Any) -> np.ndarray:
        """Plaintext JAX output for a batch (numpy or torch), as float32 numpy."""
        jax, _ = require_jax()
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        out = jax.jit(self.apply)(self.params, np.asarray(x, dtype=np.float32))
        return np.asarray(out)

    @torch.no_grad()
    def reference(self, x: Any) -> np.ndarray:
        """The PyTorch model's output for the same batch (eval mode), as float32 numpy."""
        t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        self.torch_model.eval()
        return self.torch_model(t).float().numpy()


class _Tracer(torch.fx.Tracer):
    """torch.fx tracer with every PIReLU (and subclass) a leaf: converted as one ReLU layer."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, PIReLU) or super().is_leaf_module(m, qualname)


def check_not_circa(model: nn.Module, label: Optional[str] = None) -> None:
    """Refuse a model with Circa's stochastic ReLUs, in one line."""
    layers = [n for n, m in model.named_modules() if isinstance(m, StochasticReLU)]
    if layers:
        label = label or _label(model)
        base = label.removeprefix("circa_") if label.startswith("circa_") else "its base network"
        raise CircaNotSupportedError(
            f"{label} uses Circa's stochastic ReLUs ({len(layers)} layers, first {layers[0]}): Circa's protocol "
            f"(a truncated sign test in a garbled circuit plus a Beaver triple) is not what SPU runs; measure "
            f"{base} instead (same weights, exact ReLUs) and price Circa with pi_cost(..., protocol='circa')")


def convert(model: nn.Module, input_size: Optional[Sequence[int]] = None, name: Optional[str] = None) -> ConvertedModel:
    """Convert ``model`` (eval mode is used; the model is not changed) to a :class:`ConvertedModel`.

    ``input_size``: (C, H, W) of one image; defaults to the model's ``pretrained_cfg`` input size.
    Raises :class:`CircaNotSupportedError` for Circa models and :class:`UnsupportedOpError` (one line:
    op and layer) for anything the converter does not know.
    """
    require_jax()
    label = name or _label(model)
    check_not_circa(model, label)
    size = _input_size(model, input_size, label)
    was_training = model.training
    model.eval()
    try:
        try:
            graph = _Tracer().trace(model)
        except Exception as err:  # data-dependent control flow and the like
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UnsupportedOpError(f"{label} cannot be traced with torch.fx, so it cannot be converted: "
                                     f"{first[:200]}") from None
        gm = torch.fx.GraphModule(model, graph)
        _propagate_shapes(gm, torch.zeros((1, *size), dtype=torch.float32, device=_device(model)), label, size)
        steps, params, output = _build(gm, label)
    finally:
        model.train(was_training)
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    return ConvertedModel(name=label, input_size=size, params=params, steps=steps, output=output,
                          num_classes=num_classes, torch_model=model)


def _propagate_shapes(gm: torch.fx.GraphModule, example: torch.Tensor, label: str, size: Tuple[int, ...]) -> None:
    """Every node's output shape: with fake tensors (no compute), else with one real forward pass."""
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.passes.fake_tensor_prop import FakeTensorProp

        mode = FakeTensorMode(allow_non_fake_inputs=True)
        FakeTensorProp(gm, mode).propagate(mode.from_tensor(example))
        return
    except HybrezooError:
        raise
    except Exception:
        pass
    with torch.no_grad():
        try:
            ShapeProp(gm).propagate(example)
        except HybrezooError:
            raise
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise HybrezooError(f"{label} does not run on a {size} input: {first[:200]}") from None


def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device.type == "meta":
            raise HybrezooError("the model lives on the meta device (no weights): build it with real weights "
                                "(random or trained) to convert it")
        return t.device
    return torch.device("cpu")


def _input_size(model: nn.Module, input_size: Optional[Sequence[int]], label: str) -> Tuple[int, int, int]:
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        input_size = cfg.get("input_size")
        if not input_size:
            raise HybrezooError(f"{label} declares no input size: pass input_size=(C, H, W), e.g. (3, 32, 32)")
    size = tuple(int(v) for v in input_size)
    if len(size) != 3 or min(size) < 1:
        raise HybrezooError(f"input_size must be (C, H, W) of one image, got {tuple(input_size)}")
    return size  # type: ignore[return-value]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def _shape(node: torch.fx.Node) -> Tuple[int, ...]:
    meta = node.meta.get("val", node.meta.get("tensor_meta"))
    if meta is None or not hasattr(meta, "shape"):
        raise UnsupportedOpError(f"{node.name} does not produce one tensor, which the converter needs")
    return tuple(int(s) for s in meta.shape)


def _bn_scale_shift(bn: nn.BatchNorm2d) -> Tuple[np.ndarray, np.ndarray]:
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        raise UnsupportedOpError("BatchNorm without running statistics cannot be folded (it normalises by the "
                                 "batch's own statistics)")
    var = _np(bn.running_var)
    scale = 1.0 / np.sqrt(var + bn.eps)
    shift = -_np(bn.running_mean) * scale
    if bn.affine:
        scale = scale * _np(bn.weight)
        shift = shift * _np(bn.weight) + _np(bn.bias)
    return scale, shift


def _build(gm: torch.fx.GraphModule, label: str) -> Tuple[List[Step], Params, str]:
    _, jnp = require_jax()
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    users = {n: list(n.users) for n in nodes}
    folded: Dict[str, str] = {}         # batch-norm node -> the conv node it is folded into
    alias: Dict[str, str] = {}          # node -> node whose value it is (identity ops)
    steps: List[Step] = []
    params: Params = {}
    output = ""

    def src(arg: Any, where: str) -> str:
        if not isinstance(arg, torch.fx.Node):
            raise UnsupportedOpError(f"{label}: a constant operand {arg!r} at {where} (the converter handles "
                                     f"operations between activations and weights only)")
        name = arg.name
        while name in alias:
            name = alias[name]
        return name

    def layer_of(node: torch.fx.Node) -> str:
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack")
        if stack:
            return str(list(stack.values())[-1][0]) if isinstance(list(stack.values())[-1], tuple) else node.name
        return node.name

    def unsupported(node: torch.fx.Node, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{label}: the converter does not know {what} (layer {layer_of(node)}); it "
                                  f"converts {_KNOWN}")

    # conv -> bn pairs to fold: the bn is the conv's only user
    for node in nodes:
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), nn.BatchNorm2d):
            arg = node.args[0] if node.args else None
            if (isinstance(arg, torch.fx.Node) and arg.op == "call_module"
                    and isinstance(modules.get(str(arg.target)), nn.Conv2d) and len(users[arg]) == 1):
                folded[node.name] = arg.name

    conv_bn = {v: k for k, v in folded.items()}  # conv node -> bn node
    for node in nodes:
        if node.op == "placeholder":
            if steps or alias:
                raise unsupported(node, f"a second input ({node.name})")
            alias[node.name] = "__input__"
            continue
        if node.op == "get_attr":
            raise unsupported(node, f"a tensor attribute used as an operand ({node.target})")
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node):
                raise unsupported(node, "an output that is not one tensor")
            output = src(out, "output")
            continue
        if node.op == "call_module":
            mod = modules[str(node.target)]
            target = str(node.target)
            shape_in = _shape(node.args[0]) if node.args and isinstance(node.args[0], torch.fx.Node) else ()
            shape_out = _shape(node)
            if node.name in folded:       # this bn lives in its conv
                alias[node.name] = folded[node.name]
                continue
            if isinstance(mod, StochasticReLU):  # (caught earlier; kept for models converted in between)
                raise CircaNotSupportedError(f"{label}: layer {target} is a Circa stochastic ReLU, whose protocol "
                                             f"SPU does not run")
            if isinstance(mod, nn.Conv2d):
                steps.append(_conv_step(node, mod, modules.get(str(_bn_target(conv_bn, node, nodes))),
                                        src(node.args[0], target), shape_out, params, jnp, unsupported))
            elif isinstance(mod, nn.BatchNorm2d):
                scale, shift = _bn_scale_shift(mod)
                params[target] = {"scale": scale.astype(np.float32), "shift": shift.astype(np.float32)}

                def affine(p: Params, x: Any, t: str = target) -> Any:
                    return x * p[t]["scale"][None, :, None, None] + p[t]["shift"][None, :, None, None]
                steps.append(Step(target, "affine", (src(node.args[0], target),), node.name, affine))
            elif isinstance(mod, nn.Linear):
                w = _np(mod.weight).T.astype(np.float32)
                b = (_np(mod.bias) if mod.bias is not None else np.zeros(mod.out_features)).astype(np.float32)
                params[target] = {"w": w, "b": b}
                rows = int(np.prod(shape_in[1:-1])) if len(shape_in) > 2 else 1

                def linear(p: Params, x: Any, t: str = target) -> Any:
                    return x @ p[t]["w"] + p[t]["b"]
                steps.append(Step(target, "linear", (src(node.args[0], target),), node.name, linear,
                                  macs=rows * mod.in_features * mod.out_features))
            elif isinstance(mod, ReLUReuse):
                steps.append(_reuse_step(target, mod, src(node.args[0], target), node.name, shape_in, jnp))
            elif type(mod) is PIReLU:
                steps.append(_pirelu_step(target, mod, src(node.args[0], target), node.name, shape_in, jnp))
            elif isinstance(mod, nn.ReLU):
                steps.append(Step(target, "relu", (src(node.args[0], target),), node.name, _relu_fn(),
                                  relus=int(np.prod(shape_in[1:]))))
            elif isinstance(mod, (nn.Identity, nn.Dropout)) or (
                    isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1 and len(shape_in) <= 2):
                alias[node.name] = src(node.args[0], target)
            elif isinstance(mod, nn.Flatten):
                if mod.start_dim != 1 or mod.end_dim != -1:
                    raise unsupported(node, f"Flatten(start_dim={mod.start_dim}, end_dim={mod.end_dim})")
                steps.append(Step(target, "reshape", (src(node.args[0], target),), node.name,
                                  lambda p, x: x.reshape(x.shape[0], -1)))
            elif isinstance(mod, nn.AdaptiveAvgPool2d):
                steps.append(_adaptive_pool_step(node, target, src(node.args[0], target), shape_in, shape_out,
                                                 jnp, unsupported))
            elif isinstance(mod, nn.AvgPool2d):
                steps.append(_avg_pool_step(node, mod, target, src(node.args[0], target), unsupported))
            else:
                raise unsupported(node, f"the module {type(mod).__name__}")
            continue
        # call_function / call_method
        fn = node.target
        fname = getattr(fn, "__name__", str(fn))
        where = layer_of(node)
        ours = str(getattr(fn, "__module__", "")).startswith("hybrezoo")
        if node.op == "call_function" and fname in _CHECKS and ours:
            alias[node.name] = src(node.args[0], where)
            continue
        if node.op == "call_function" and fn in (operator.add, operator.iadd, torch.add) \
                or node.op == "call_method" and fname in ("add", "add_"):
            if len(node.args) != 2 or node.kwargs:
                raise unsupported(node, f"{fname} with arguments {node.args[2:]} {node.kwargs}")
            a, b = src(node.args[0], where), src(node.args[1], where)
            steps.append(Step(where, "add", (a, b), node.name, lambda p, x, y: x + y))
            continue
        if node.op == "call_function" and fn in (operator.sub, torch.sub):
            a, b = src(node.args[0], where), src(node.args[1], where)
            steps.append(Step(where, "sub", (a, b), node.name, lambda p, x, y: x - y))
            continue
        if node.op == "call_function" and fn in (torch.relu, torch.nn.functional.relu) \
                or node.op == "call_method" and fname in ("relu", "relu_"):
            shape_in = _shape(node.args[0])
            steps.append(Step(where, "relu", (src(node.args[0], where),), node.name, _relu_fn(),
                              relus=int(np.prod(shape_in[1:]))))
            continue
        if fname in ("flatten", "reshape", "view") and (node.op == "call_method" or fn is torch.flatten):
            shape_out = _shape(node)
            if shape_out[0] != _shape(node.args[0])[0]:
                raise unsupported(node, f"a {fname} that mixes the batch dimension")
            tail = tuple(shape_out[1:])
            steps.append(Step(where, "reshape", (src(node.args[0], where),), node.name,
                              lambda p, x, tail=tail: x.reshape((x.shape[0],) + tail)))
            continue
        if node.op == "call_method" and fname == "mean":
            shape_in = _shape(node.args[0])
            raw = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            keep = bool(node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False))
            if raw is None:
                raise unsupported(node, "a mean over every dimension")
            dims = tuple(int(d) % len(shape_in) for d in (raw if isinstance(raw, (tuple, list)) else (raw,)))
            if 0 in dims:
                raise unsupported(node, "a mean over the batch dimension")
            steps.append(Step(where, "mean", (src(node.args[0], where),), node.name,
                              lambda p, x, d=dims, k=keep: jnp.mean(x, axis=d, keepdims=k)))
            continue
        if node.op == "call_method" and fname in ("contiguous", "clone", "detach"):
            alias[node.name] = src(node.args[0], where)
            continue
        raise unsupported(node, f"the op {fname}")
    if not output:
        raise UnsupportedOpError(f"{label}: the traced graph has no output")
    return steps, params, output


def _bn_target(conv_bn: Dict[str, str], conv_node: torch.fx.Node, nodes: List[torch.fx.Node]) -> Optional[str]:
    bn_name = conv_bn.get(conv_node.name)
    if bn_name is None:
        return None
    for n in nodes:
        if n.name == bn_name:
            return str(n.target)
    return None


def _conv_step(node: torch.fx.Node, conv: nn.Conv2d, bn: Optional[nn.Module], source: str,
               shape_out: Tuple[int, ...], params: Params, jnp: Any, unsupported: Callable[..., Exception]) -> Step:
    target = str(node.target)
    if conv.padding_mode != "zeros":
        raise unsupported(node, f"Conv2d with padding_mode={conv.padding_mode!r}")
    if isinstance(conv.padding, str):
        raise unsupported(node, f"Conv2d with padding={conv.padding!r}")
    w = _np(conv.weight)
    b = _np(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels)
    if isinstance(bn, nn.BatchNorm2d):
        scale, shift = _bn_scale_shift(bn)
        w = w * scale[:, None, None, None]
        b = b * scale + shift
    params[target] = {"w": w.astype(np.float32), "b": b.astype(np.float32)}
    stride, padding, dilation, groups = tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups
    kh, kw = conv.kernel_size
    macs = int(np.prod(shape_out[1:])) * (conv.in_channels // groups) * kh * kw

    def fn(p: Params, x: Any, t: str = target) -> Any:
        from jax import lax

        y = lax.conv_general_dilated(x, p[t]["w"], window_strides=stride,
                                     padding=[(padding[0], padding[0]), (padding[1], padding[1])],
                                     rhs_dilation=dilation, feature_group_count=groups,
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + p[t]["b"][None, :, None, None]
    kind = "conv+bn" if bn is not None else "conv"
    return Step(target, kind, (source,), node.name, fn, macs=macs)


def _relu_fn() -> Callable[..., Any]:
    def fn(p: Params, x: Any) -> Any:
        import jax

        return jax.nn.relu(x)
    return fn


def _pirelu_step(target: str, mod: PIReLU, source: str, out: str, shape_in: Tuple[int, ...], jnp: Any) -> Step:
    c, h, w = (int(s) for s in shape_in[-3:])
    if mod.mask is None:
        return Step(target, "relu", (source,), out, _relu_fn(), relus=c * h * w)
    mask = mod.mask.detach().to("cpu").bool().numpy()
    full = np.broadcast_to(mask, (c, h, w)).reshape(-1)
    kept = np.flatnonzero(full).astype(np.int32)
    linear = np.flatnonzero(~full).astype(np.int32)
    if kept.size == 0:
        return Step(target, "identity", (source,), out, lambda p, x: x, relus=0)
    if linear.size == 0:
        return Step(target, "relu", (source,), out, _relu_fn(), relus=c * h * w)
    # out = concat([relu(x[kept]), x[linear]])[inverse]: public gathers only, the ReLU on kept positions only
    order = np.concatenate([kept, linear])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size, dtype=np.int32)

    def fn(p: Params, x: Any) -> Any:
        import jax

        flat = x.reshape(x.shape[0], -1)
        kept_vals = jax.nn.relu(jnp.take(flat, kept, axis=1))
        joined = jnp.concatenate([kept_vals, jnp.take(flat, linear, axis=1)], axis=1)
        return jnp.take(joined, inverse, axis=1).reshape(x.shape)
    return Step(target, "masked_relu", (source,), out, fn, relus=int(kept.size))


def _reuse_step(target: str, mod: ReLUReuse, source: str, out: str, shape_in: Tuple[int, ...], jnp: Any) -> Step:
    c, h, w = (int(s) for s in shape_in[-3:])
    f = int(mod.factor)
    if f == 1:
        return Step(target, "relu", (source,), out, _relu_fn(), relus=c * h * w)
    if c % f:
        raise UnsupportedOpError(f"ReLU-reuse layer {target}: {c} channels are not a multiple of its factor {f}")

    def fn(p: Params, x: Any) -> Any:
        import jax

        n = x.shape[0]
        grouped = x.reshape(n, c // f, f, h, w)
        rep = grouped[:, :, :1]
        return (grouped + (jax.nn.relu(rep) - rep)).reshape(n, c, h, w)
    return Step(target, "relu_reuse", (source,), out, fn, relus=c // f * h * w)


def _adaptive_pool_step(node: torch.fx.Node, target: str, source: str, shape_in: Tuple[int, ...],
                        shape_out: Tuple[int, ...], jnp: Any, unsupported: Callable[..., Exception]) -> Step:
    h, w = shape_in[-2:]
    oh, ow = shape_out[-2:]
    if h % oh or w % ow:
        raise unsupported(node, f"AdaptiveAvgPool2d from {h}x{w} to {oh}x{ow} (uneven windows)")
    kh, kw = h // oh, w // ow

    def fn(p: Params, x: Any) -> Any:
        n, c = x.shape[0], x.shape[1]
        return jnp.mean(x.reshape(n, c, oh, kh, ow, kw), axis=(3, 5))
    return Step(target, "avg_pool", (source,), node.name, fn)


def _avg_pool_step(node: torch.fx.Node, mod: nn.AvgPool2d, target: str, source: str,
                   unsupported: Callable[..., Exception]) -> Step:
    def pair(v: Any) -> Tuple[int, int]:
        return (int(v), int(v)) if not isinstance(v, (tuple, list)) else (int(v[0]), int(v[1]))
    k, s, pad = pair(mod.kernel_size), pair(mod.stride or mod.kernel_size), pair(mod.padding)
    if mod.ceil_mode or (pad != (0, 0) and not mod.count_include_pad) or mod.divisor_override:
        raise unsupported(node, "AvgPool2d with ceil_mode, count_include_pad=False or divisor_override")

    def fn(p: Params, x: Any) -> Any:
        from jax import lax

        summed = lax.reduce_window(x, 0.0, lax.add, (1, 1) + k, (1, 1) + s,
                                   [(0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])])
        return summed / float(k[0] * k[1])
    return Step(target, "avg_pool", (source,), node.name, fn)
