"""Counting one inference: ReLUs (masks honoured), MACs from FlopCounterMode, unpriced ops, bad input."""
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import hybrezoo
from hybrezoo import HybrezooError, pi_cost
from hybrezoo.cost import UnpricedOpWarning, count_model
from hybrezoo.models.deepreduce import PUBLISHED
from hybrezoo.nn import PIReLU, relu_layers
from hybrezoo.nn.stochastic_relu import StochasticReLU
from hybrezoo.registry import entries


def test_resnet18_relus_cifar_and_tiny():
    assert pi_cost("pi_resnet18.c100").relus == 557_056
    assert pi_cost("pi_resnet18.tin").relus == 2_228_224
    assert pi_cost("pi_resnet18_nostem.c100").relus == 491_520


@pytest.mark.parametrize("arch,tag", sorted(PUBLISHED))
def test_every_deepreduce_configuration_matches_its_published_relus(arch, tag):
    counts = count_model(hybrezoo.cost.build_for_counting(f"{arch}.{tag}"), (3, 32, 32) if tag == "c100" else (3, 64, 64))
    assert counts.relus == PUBLISHED[(arch, tag)][0]


def test_every_published_relu_count_in_the_zoo_matches():
    """Architecture-defined counts only: SNL/SENet budgets live in masks that come with the weights."""
    checked = 0
    for entry in entries():
        if entry.published_relus is None or entry.method in ("snl", "senet"):
            continue
        assert pi_cost(entry.name, warn=False).relus == entry.published_relus, entry.name
        checked += 1
    assert checked >= 30


def test_counts_a_real_model_without_touching_it():
    model = timm.create_model("pi_resnet18.c100").train()
    before = model.conv1.weight.detach().clone()
    running = model.bn1.running_mean.clone()
    counts = count_model(model, (3, 32, 32))
    assert counts.device == "meta"
    assert model.training and all(m.training for m in model.modules())
    assert model.conv1.weight.device.type == "cpu" and torch.equal(model.conv1.weight, before)
    assert torch.equal(model.bn1.running_mean, running)
    assert counts.params == sum(p.numel() for p in model.parameters())
    # wrappers are looked through
    assert pi_cost(torch.compile(model)).relus == pi_cost(nn.DataParallel(model)).relus == 557_056


def test_macs_come_from_flop_counter_and_flops_are_twice_macs():
    model = timm.create_model("deepreduce_r18_cull14_thin_ch05.c100").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    counts = count_model(model, (3, 32, 32))
    assert counts.flops == counter.get_total_flops()
    assert counts.flops == 2 * counts.macs
    assert sum(counts.module_macs.values()) == counts.macs
    assert sum(op.macs for op in counts.linear_ops) == counts.macs
    # conv1 of a 0.5x-channel ResNet18: 32 filters of 3x3x3 at 32x32
    assert counts.module_macs["conv1"] == 32 * 27 * 32 * 32


def test_half_masked_layer_has_half_its_relus():
    model = timm.create_model("pi_resnet18.c100")
    layer = relu_layers(model)["layer1.0.act1"]
    full = {r.name: r.relus for r in count_model(model, (3, 32, 32)).relu_layers}
    mask = torch.ones(64, 32, 32, dtype=torch.bool)
    mask[:, :16] = False                       # per element: half of every channel linearised
    layer.set_mask(mask)
    per_element = {r.name: r.relus for r in count_model(model, (3, 32, 32)).relu_layers}
    assert per_element["layer1.0.act1"] == full["layer1.0.act1"] // 2 == 32_768
    assert {k: v for k, v in per_element.items() if k != "layer1.0.act1"} == \
        {k: v for k, v in full.items() if k != "layer1.0.act1"}
    channel = torch.zeros(64, 1, 1, dtype=torch.bool)
    channel[::2] = True                        # per channel: every other channel kept
    layer.set_mask(channel)
    assert {r.name: r.relus for r in count_model(model, (3, 32, 32)).relu_layers}["layer1.0.act1"] == 32_768


def test_culled_relus_cost_nothing_and_a_linear_model_costs_no_gc():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Identity(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    cost = pi_cost(model, input_size=(3, 8, 8))
    assert cost.relus == 0 and cost.gc_bytes == 0
    assert cost.breakdown["gc_garble"] == 0 and cost.breakdown["gc_eval"] == 0
    assert cost.offline_s > 0  # the HE of the linear layers remains
    with_relu = pi_cost(nn.Sequential(model[0], PIReLU(), *model[2:]), input_size=(3, 8, 8))
    assert with_relu.relus == 512
    # the ReLUs add their garbled circuits (17,072 B each, one 16-byte chunk header) and OT to the traffic
    assert with_relu.offline_download_bytes - cost.offline_download_bytes == 512 * (17_072 + 1_344) + 16
    assert with_relu.offline_upload_bytes - cost.offline_upload_bytes == 512 * 672 + 4_096


def test_plain_relu_modules_and_functional_relus_count_by_numel():
    counts = count_model(timm.create_model("resnet18", num_classes=10), (3, 32, 32))
    # timm's ImageNet ResNet18 at 32x32: stem ReLU at 16x16, then 4 ReLUs per stage at 8, 4, 2, 1
    assert counts.relus == 64 * 16 * 16 + 4 * (64 * 8 * 8 + 128 * 4 * 4 + 256 * 2 * 2 + 512 * 1 * 1)
    assert [u.op for u in counts.unpriced] == ["MaxPool"]

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return F.relu6(F.relu(self.conv(x)))

    counts = count_model(Functional(), (3, 5, 5))
    assert counts.relus == 2 * 4 * 25 and not counts.unpriced


def test_unpriced_nonlinearities_are_listed_and_warned():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.GELU()
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(4 * 4 * 4, 5)

        def forward(self, x):
            x = self.pool(self.act(self.conv(x)))
            x = x * torch.sigmoid(x)                    # functional SiLU by hand
            return self.fc(x.flatten(1))

    with pytest.warns(UnpricedOpWarning, match="GELU.*MaxPool.*Sigmoid.*product of two activations"):
        cost = pi_cost(Mixed(), input_size=(3, 8, 8))
    ops = {(u.name, u.op): u.elements for u in cost.unpriced}
    assert ops[("act", "GELU")] == 4 * 8 * 8
    assert ops[("pool", "MaxPool")] == 4 * 4 * 4
    assert ops[("", "Sigmoid")] == ops[("", "product of two activations")] == 4 * 4 * 4
    assert cost.relus == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pi_cost(Mixed(), input_size=(3, 8, 8), warn=False)  # silenced on request, still in the result


@pytest.mark.parametrize("act, label", [(nn.SiLU(inplace=True), "SiLU"), (nn.LeakyReLU(inplace=True), "LeakyReLU"),
                                        (nn.ELU(inplace=True), "ELU"), (nn.Hardtanh(-1.0, 1.0, inplace=True),
                                                                        "Hardtanh"),
                                        (nn.Hardswish(inplace=True), "Hardswish")])
def test_in_place_nonlinearities_are_listed_too(act, label):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), act, nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    with pytest.warns(UnpricedOpWarning, match=label):
        cost = pi_cost(model, input_size=(3, 8, 8))
    assert [(u.op, u.elements) for u in cost.unpriced] == [(label, 4 * 8 * 8)] and cost.relus == 0

    def product(t):
        t = t.clone()
        return t.mul_(torch.sigmoid(t))                          # in-place product of two activations
    ops = {u.op for u in pi_cost(nn.Sequential(nn.Conv2d(3, 4, 3), _Lambda(product)), input_size=(3, 8, 8),
                                 warn=False).unpriced}
    assert ops == {"Sigmoid", "product of two activations"}


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_stochastic_relus_are_counted_separately_with_their_parameters():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), PIReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          StochasticReLU(truncated_bits=12, ring_bits=36), nn.Flatten(), nn.Linear(8 * 16, 10))
    model[3].set_mask(torch.tensor([1, 0] * 4, dtype=torch.bool).view(8, 1, 1))
    counts = count_model(model, (3, 4, 4))
    assert counts.relus == 8 * 16 + 4 * 16 and counts.stochastic_relus == 4 * 16
    layer = [r for r in counts.relu_layers if r.stochastic][0]
    assert (layer.ring_bits, layer.truncated_bits, layer.frac_bits) == (36, 12, 12)
    assert counts.device == "meta"  # the layer's data-dependent simulation is not run while counting


def test_data_dependent_models_fall_back_to_a_real_forward():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return F.relu(y) if bool(y.sum() >= 0) else y

    counts = count_model(Branchy(), (3, 4, 4))
    assert counts.device == "cpu" and counts.relus == 64


def test_bad_input_is_one_clear_line():
    cases = [
        (lambda: pi_cost(42), "expects a torch.nn.Module or a zoo model name"),
        (lambda: pi_cost("pi_resnt18.c100"), "closest registered names: pi_resnet18"),
        (lambda: pi_cost("pi_resnet18.c100", input_size=(1, 32, 32)), "rejected an input of shape \\(1, 32, 32\\)"),
        (lambda: pi_cost("pi_resnet18.c100", input_size=(3, -1, 32)), "must be positive"),
        (lambda: pi_cost("pi_resnet18.c100", input_size="3,a,32"), "not a list of integers"),
        (lambda: pi_cost(nn.Linear(3, 4)), "pass input_size=\\(C, H, W\\)"),
        (lambda: pi_cost("pi_resnet18.c100", protocol="gazelle"), "unknown protocol 'gazelle'"),
        (lambda: pi_cost("pi_resnet18.c100", network="5g"), "unknown network '5g': use one of lan, wan"),
        (lambda: pi_cost("pi_resnet18.c100", bandwidth_mbps=-10), "bandwidth must be positive"),
        (lambda: pi_cost("pi_resnet18.c100", rtt_ms=-1), "rtt_ms must be a non-negative"),
        (lambda: pi_cost("pi_resnet18.c100", threads=0), "threads must be a positive integer"),
        (lambda: pi_cost("pi_resnet18.c100", garbler="both"), "unknown garbler"),
    ]
    for call, message in cases:
        with pytest.raises((HybrezooError, KeyError)) as err:
            call()
        text = str(err.value)
        assert len(text.splitlines()) == 1, text
        assert __import__("re").search(message, text), text


def test_masks_on_the_meta_device_cannot_be_counted():
    with torch.device("meta"):
        model = timm.create_model("pi_resnet18.c100")
    relu_layers(model)["act1"].set_mask(torch.ones(64, 1, 1, dtype=torch.bool, device="meta"))
    with pytest.raises(HybrezooError, match="on the meta device.*build the model on the CPU"):
        count_model(model, (3, 32, 32))
