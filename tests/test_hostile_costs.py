"""pi_cost never drops a nonlinearity silently (issue 12): every op on an activation is priced (ReLUs,
convolutions, matrix products with weights), known to be free (linear in the activations, or data
movement), or listed as unpriced with an ``UnpricedOpWarning``. Each case below is an op a model could
use; the ReLU spellings that are one op are priced as ReLUs, everything else nonlinear is listed.
(docs/cost-model.md, "Not priced, never dropped".)"""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybrezoo import pi_cost
from hybrezoo.cost import UnpricedOpWarning, build_for_counting, count_model
from hybrezoo.registry import entries

C, H, W = 4, 6, 6
ELEMENTS = C * H * W


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _net(op):
    """A convolution (so the op sees an activation, not the input) followed by ``op``."""
    return nn.Sequential(nn.Conv2d(3, C, 3, padding=1), op if isinstance(op, nn.Module) else _Lambda(op))


def _cost(op):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpricedOpWarning)
        return pi_cost(_net(op), input_size=(3, H, W))


# -- ReLUs however they are spelled in one op: priced as ReLUs -------------------------------------------------------
RELUS = {
    "nn.ReLU": nn.ReLU(),
    "nn.ReLU(inplace)": nn.ReLU(inplace=True),
    "nn.Threshold(0, 0)": nn.Threshold(0.0, 0.0),
    "F.threshold(x, 0, 0, inplace)": lambda x: F.threshold(x, 0.0, 0.0, inplace=True),
    "clamp(min=0)": lambda x: torch.clamp(x, min=0),
    "clamp_min(0)": lambda x: x.clamp_min(0.0),
    "clamp_(min=0) in place": lambda x: x.clamp_(min=0),
    "maximum(x, zeros_like(x))": lambda x: torch.maximum(x, torch.zeros_like(x)),
    "maximum(x, tensor(0.))": lambda x: torch.maximum(x, torch.tensor(0.0)),
    "max(zeros, x)": lambda x: torch.max(torch.zeros(()).expand_as(x), x),
    "ReLU6": nn.ReLU6(),
    "clamp(0, 6)": lambda x: x.clamp(0, 6),
    "hardtanh(0, 6)": lambda x: F.hardtanh(x, 0.0, 6.0),
}


@pytest.mark.parametrize("op", RELUS.values(), ids=RELUS.keys())
def test_one_op_relus_are_priced_as_relus(op):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpricedOpWarning)
        cost = pi_cost(_net(op), input_size=(3, H, W))
    assert cost.relus == ELEMENTS and not cost.unpriced


# -- nonlinear ops that are not a ReLU: listed and warned, never dropped ---------------------------------------------
UNPRICED = {
    # the cases: once relus=0 with no warning
    "nn.Threshold(0.1, 0)": (nn.Threshold(0.1, 0.0), {"Threshold"}),
    "nn.Threshold(0, -1)": (nn.Threshold(0.0, -1.0), {"Threshold"}),
    "nn.Hardshrink": (nn.Hardshrink(), {"Hardshrink"}),
    "nn.Softshrink": (nn.Softshrink(), {"Softshrink"}),
    "F.glu": (lambda x: F.glu(x, dim=1), {"GLU"}),
    "torch.sin": (torch.sin, {"sin"}),
    "torch.log1p": (torch.log1p, {"log1p"}),
    # elementwise functions
    "torch.exp": (torch.exp, {"exp"}),
    "torch.sigmoid": (torch.sigmoid, {"Sigmoid"}),
    "torch.tanh": (torch.tanh, {"Tanh"}),
    "torch.abs": (torch.abs, {"abs"}),
    "torch.cos": (torch.cos, {"cos"}),
    "torch.atan (an op nobody named)": (torch.atan, {"atan"}),
    "floor": (torch.floor, {"floor"}),
    "reciprocal": (lambda x: 1.0 / x, {"reciprocal"}),
    "nn.Hardtanh(-1, 1)": (nn.Hardtanh(), {"Hardtanh"}),
    "nn.LeakyReLU": (nn.LeakyReLU(), {"LeakyReLU"}),
    # ReLUs spelled in several ops: the comparison and the select or product are listed, not priced
    "where(x > 0, x, 0)": (lambda x: torch.where(x > 0, x, 0.0), {"comparison", "select by an activation"}),
    "x * (x > 0)": (lambda x: x * (x > 0), {"comparison", "product of two activations"}),
    # clamps and maxima that are not a ReLU
    "clamp(min=-1)": (lambda x: x.clamp(min=-1.0), {"clamp"}),
    "clamp(0, 1)": (lambda x: x.clamp(0.0, 1.0), {"clamp"}),
    "maximum(x, x * x)": (lambda x: torch.maximum(x, x * x), {"product of two activations", "maximum"}),
    "maximum(x, ones)": (lambda x: torch.maximum(x, torch.ones_like(x)), {"maximum"}),
    "max over channels": (lambda x: x.max(dim=1, keepdim=True).values.expand_as(x), {"max"}),
    # data-dependent selection, division, rounding, normalisation
    "x / x.sum()": (lambda x: x / x.sum(), {"division by an activation"}),
    "floor division": (lambda x: torch.div(x, 2, rounding_mode="floor"), {"rounding division"}),
    "cast to int": (lambda x: x.long().float(), {"cast to an integer type"}),
    "gather by argmax": (lambda x: x.gather(1, x.argmax(1, keepdim=True)).expand_as(x), {"argmax", "index by an activation"}),
    "convolution by an activation": (lambda x: F.conv2d(x, x[:1, :, :3, :3].expand(C, C, 3, 3), padding=1),
                                     {"convolution by an activation"}),
    "InstanceNorm2d": (nn.InstanceNorm2d(C), {"BatchNorm with batch statistics"}),
    "GroupNorm": (nn.GroupNorm(1, C), {"GroupNorm"}),
}


@pytest.mark.parametrize("op, labels", UNPRICED.values(), ids=UNPRICED.keys())
def test_other_nonlinearities_are_listed_and_warned(op, labels):
    with pytest.warns(UnpricedOpWarning) as record:
        cost = pi_cost(_net(op), input_size=(3, H, W))
    assert cost.relus == 0
    assert {u.op for u in cost.unpriced} == labels
    assert all(u.elements > 0 and u.aten.startswith("aten.") for u in cost.unpriced)
    message = str(record[0].message)
    assert all(label in message for label in labels), message


def test_elements_are_counted_per_sample():
    cost = _cost(lambda x: F.glu(x, dim=1))
    assert [(u.op, u.elements) for u in cost.unpriced] == [("GLU", ELEMENTS // 2)]
    assert [(u.op, u.elements) for u in _cost(torch.sin).unpriced] == [("sin", ELEMENTS)]


# -- linear ops and data movement: free, nothing listed -----------------------------------------------------------
class _LinearBlock(nn.Module):
    """Ops a private-inference protocol evaluates locally on secret shares."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(C, 1, 1))
        self.bn = nn.BatchNorm2d(C)
        self.register_buffer("mask", torch.rand(C, H, W) > 0.5)

    def forward(self, x):
        x = self.bn(x) * 2.0 - x / 3.0 + x * self.scale          # by constants and weights
        x = x * torch.sigmoid(self.scale)                         # a nonlinearity of weights only: in the clear
        x = torch.where(self.mask, x, torch.zeros_like(x))        # selection by a public mask
        x = x.masked_fill(~self.mask, 0.5)
        x = torch.cat([x, x.flip(-1)], dim=1).permute(0, 1, 3, 2).contiguous()
        x = F.pad(x, (1, 1, 1, 1))[..., 1:-1, 1:-1]
        x = F.avg_pool2d(x, 2) + F.adaptive_avg_pool2d(x, 3).repeat(1, 1, 1, 1)[..., :3, :3].mean()
        x = F.interpolate(x, scale_factor=2, mode="nearest") + F.interpolate(x, scale_factor=2, mode="bilinear")
        return F.dropout(x.reshape(x.shape[0], -1), 0.5, training=False).sum(1, keepdim=True)


def test_linear_ops_and_data_movement_are_free():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpricedOpWarning)
        cost = pi_cost(_net(_LinearBlock()), input_size=(3, H, W))
    assert cost.relus == 0 and not cost.unpriced


def test_a_data_dependent_forward_lists_the_values_it_reads():
    """The counter's real-forward fallback: the comparison and the value read in the clear are listed."""
    def branch(x):
        return F.relu(x) if bool(x.sum() >= 0) else x
    counts = count_model(_net(branch), (3, H, W))
    assert counts.device == "cpu" and counts.relus == ELEMENTS
    assert {u.op for u in counts.unpriced} == {"comparison", "value read in the clear (data-dependent control flow)"}


@pytest.mark.parametrize("tag", ["c100", "tin"])
def test_no_zoo_model_has_an_unpriced_op(tag):
    """What `hybrezoo zoo` prints: no zoo network uses an op the cost model cannot price."""
    for entry in entries():
        if entry.tag == tag:
            counts = count_model(build_for_counting(entry.name), entry.dataset.input_size)
            assert not counts.unpriced, (entry.name, counts.unpriced[:3])
