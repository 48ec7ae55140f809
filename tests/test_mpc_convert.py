"""The JAX converter (hybrezoo.mpc.convert): its plaintext output equals the PyTorch model's for every
registered architecture, only kept ReLU positions reach the ReLU, and bad models get one clear line.

Plain JAX on the CPU, no SPU: ``jax[cpu]`` is in the ``dev`` extra, so these run in CI."""
from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest
import timm
import torch
from torch import nn

import hybrezoo
from conftest import one_entry_per_arch
from hybrezoo.mpc import CircaNotSupportedError, UnsupportedOpError, convert
from hybrezoo.nn import PIReLU, relu_layers
from hybrezoo.registry import entries

# One name per distinct structure (105 names would take ~9 min on every landing): the first tag of every
# architecture (tags differ only in input size and classes) and one name per SNL/SENet base network
# (names differ only in the budget their masks are trained for: the test draws its own masks), plus every
# published checkpoint's name, which brings one 64x64 (Tiny ImageNet) input.
_NAMES = list(dict.fromkeys([f"{e.arch}.{e.tag}" for e in one_entry_per_arch() if e.method != "circa"]
                            + [f"{e.arch}.{e.tag}" for e in entries() if e.published and e.method != "circa"]))


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics and affine terms (a fresh model's are the identity and zero-init residuals,
    which would hide a wrong fold), random masks on SNL/SENet names (their checkpoints carry masks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _attach_random_masks(model: nn.Module, input_size, seed: int) -> None:
    """Per-element masks on even layers, per-channel on odd ones, about half the positions kept; one
    layer fully linearised and one fully kept, so every branch of the converter runs."""
    from hybrezoo.nn.learnable_mask import relu_input_shapes

    shapes = relu_input_shapes(model, input_size)
    g = torch.Generator().manual_seed(seed)
    for i, (name, relu) in enumerate(relu_layers(model).items()):
        c, h, w = shapes[name][-3:]
        shape = (c, h, w) if i % 2 == 0 else (c, 1, 1)
        mask = torch.rand(shape, generator=g) < 0.5
        if i == 1:
            mask = torch.zeros(shape, dtype=torch.bool)
        elif i == 2:
            mask = torch.ones(shape, dtype=torch.bool)
        relu.set_mask(mask)


def _jax_output(converted, x) -> np.ndarray:
    """``converted(x)``, compiled by XLA without its LLVM optimisations: the same program and results
    (within float rounding), half the compile time, which is most of this test's."""
    compiled = jax.jit(converted.apply).lower(converted.params, x).compile(
        compiler_options={"xla_backend_optimization_level": 0})
    return np.asarray(compiled(converted.params, x))


@pytest.mark.parametrize("name", _NAMES)
def test_registry_model_matches_pytorch(name):
    torch.manual_seed(0)
    model = _randomize(timm.create_model(name), seed=1)
    size = tuple(model.pretrained_cfg["input_size"])
    if name.startswith(("snl_", "senet_")):
        _attach_random_masks(model, size, seed=2)
    converted = convert(model)
    x = np.random.default_rng(3).standard_normal((2, *size)).astype(np.float32)
    ours, theirs = _jax_output(converted, x), converted.reference(x)
    assert ours.shape == theirs.shape == (2, model.num_classes)
    scale = max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5 * scale)
    assert converted.relus == hybrezoo.pi_cost(model, warn=False).relus


def _relu_elements(converted) -> int:
    """Elements that reach a ReLU (``max`` against 0) in the traced program, per sample."""
    x = np.zeros((1, *converted.input_size), np.float32)
    jaxpr = jax.make_jaxpr(converted.apply)(converted.params, x)
    total = 0

    def walk(jp):
        nonlocal total
        for eqn in jp.eqns:
            if eqn.primitive.name == "max":
                total += int(np.prod(eqn.outvars[0].aval.shape))
            for value in eqn.params.values():
                for v in value if isinstance(value, (list, tuple)) else (value,):
                    inner = getattr(v, "jaxpr", v)  # a ClosedJaxpr holds its Jaxpr
                    if hasattr(inner, "eqns"):
                        walk(inner)
    walk(jaxpr.jaxpr)
    return total


def test_only_kept_positions_reach_the_relu():
    model = _randomize(timm.create_model("snl_r18_15k.c100"), seed=4)
    _attach_random_masks(model, (3, 32, 32), seed=5)
    converted = convert(model)
    assert 0 < converted.relus < hybrezoo.pi_cost("pi_resnet18_nostem.c100").relus
    assert _relu_elements(converted) == converted.relus == hybrezoo.pi_cost(model, warn=False).relus
    assert {s.kind for s in converted.steps} >= {"masked_relu", "identity", "relu", "conv+bn", "linear"}


def test_relu_reuse_runs_one_relu_per_group():
    model = _randomize(timm.create_model("hybrenet_m24_252_cull14_thin_reuse4.c100"), seed=6)
    converted = convert(model)
    assert _relu_elements(converted) == converted.relus == 13_824


def test_batch_norm_is_folded_into_its_convolution():
    converted = convert(_randomize(timm.create_model("deepreduce_r18_cull1_thin_ch05_rho05.c100"), seed=7))
    kinds = [s.kind for s in converted.steps]
    assert "affine" not in kinds and kinds.count("conv+bn") == 20  # 17 3x3 convs + 3 projections, all with BN
    wrn = convert(_randomize(timm.create_model("pi_wrn22_8.c100"), seed=8))
    assert "affine" in [s.kind for s in wrn.steps]  # pre-activation BN acts on sums: kept as an affine map


def test_circa_model_is_refused_in_one_line():
    model = timm.create_model("circa_deepreduce_r18_cull1_thin.c100")
    with pytest.raises(CircaNotSupportedError) as err:
        convert(model)
    message = str(err.value)
    assert "\n" not in message and "Circa's protocol" in message and "SPU" in message
    assert "deepreduce_r18_cull1_thin.c100" in message


class _WithGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.GELU()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.act(self.conv(x)).mean((2, 3)))


class _WithMaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.Sequential(nn.MaxPool2d(2))
        self.act = PIReLU()

    def forward(self, x):
        return self.act(self.pool(self.conv(x))).flatten(1)


@pytest.mark.parametrize("model, op, layer", [(_WithGelu(), "GELU", "act"), (_WithMaxPool(), "MaxPool2d", "pool.0")])
def test_unknown_op_names_op_and_layer(model, op, layer):
    with pytest.raises(UnsupportedOpError) as err:
        convert(model, input_size=(3, 8, 8))
    message = str(err.value)
    assert "\n" not in message and op in message and f"layer {layer}" in message


def test_plain_module_with_functional_ops_converts():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3, bias=True)
            self.bn = nn.BatchNorm2d(6)
            self.pool = nn.AvgPool2d(2)
            self.fc = nn.Linear(6 * 2 * 2, 5)

        def forward(self, x):
            y = torch.relu(self.bn(self.conv(x)))
            return self.fc(torch.flatten(self.pool(y), 1))

    model = _randomize(Net(), seed=9)
    converted = convert(model, input_size=(3, 8, 8))
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(converted(x), converted.reference(x), rtol=0, atol=1e-5)
    assert converted.relus == 6 * 4 * 4


def test_core_package_does_not_import_jax():
    code = ("import sys, hybrezoo, hybrezoo.cli, hybrezoo.mpc, hybrezoo.cli.measure, hybrezoo.cost.cheetah; "
            "hybrezoo.cli.build_parser(); "
            "bad = [m for m in ('jax', 'jaxlib', 'spu') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
