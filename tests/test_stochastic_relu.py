"""Circa's stochastic ReLU against its analytic fault model and the protocol's share arithmetic."""
import math

import pytest
import torch

from hybrezoo.nn import StochasticReLU, fault_probability, truncated_sign_test
from hybrezoo.nn.stochastic_relu import fault_key

F, K, N = 8, 6, 32


@pytest.mark.parametrize("variant", ["pos_zero", "neg_pass"])
def test_matches_share_arithmetic_bit_for_bit(variant):
    fixed = torch.arange(-200, 201).repeat(500, 1)
    share_a = torch.randint(0, 2 ** N, fixed.shape)
    protocol = truncated_sign_test(fixed, share_a, N, K, variant)
    offset = 2 ** K if variant == "neg_pass" else 0
    assert torch.equal(protocol, fixed + offset >= (share_a & (2 ** K - 1)))


@pytest.mark.parametrize("variant", ["pos_zero", "neg_pass"])
def test_exact_relu_far_from_zero(variant):
    layer = StochasticReLU(frac_bits=F, truncated_bits=K, ring_bits=N, variant=variant, seed=0)
    x = torch.randn(64, 8, 4, 4) * 10
    far = x.abs() >= 2 ** (K - F) + 2 ** -F  # beyond 2^k in fixed point, the test cannot err
    assert far.float().mean() > 0.5
    assert torch.equal(layer(x)[far], torch.relu(x)[far])


@pytest.mark.parametrize("variant", ["pos_zero", "neg_pass"])
def test_fault_rate_matches_analytic_probability(variant):
    layer = StochasticReLU(frac_bits=F, truncated_bits=K, ring_bits=N, variant=variant, seed=1)
    values = torch.arange(-80, 81, dtype=torch.float32) / 2 ** F   # within and around 2^k of zero
    trials = 4000
    test = layer.sign_test(values.repeat(trials, 1))
    observed = (test != (values >= 0)).float().mean(0).double()
    expected = fault_probability(values, F, K, variant)
    # 5-sigma binomial tolerance per value (plus a floor for p near 0 or 1)
    tolerance = 5 * torch.sqrt(expected * (1 - expected) / trials) + 1e-3
    assert torch.all((observed - expected).abs() <= tolerance)
    assert expected.max() > 0.9                                       # the window is really probed


def test_variants_err_in_opposite_directions():
    x = (torch.arange(-63, 64, dtype=torch.float32) / 2 ** F).repeat(2000, 1)
    zeroing = StochasticReLU(frac_bits=F, truncated_bits=K, variant="pos_zero", seed=2)(x)
    passing = StochasticReLU(frac_bits=F, truncated_bits=K, variant="neg_pass", seed=2)(x)
    relu = torch.relu(x)
    # pos_zero only ever zeroes small positives; neg_pass only ever passes small negatives
    zeroed, passed = zeroing != relu, passing != relu
    assert zeroed.any() and passed.any()
    assert torch.all(x[zeroed] > 0) and torch.all(zeroing[zeroed] == 0)
    assert torch.all(x[passed] < 0) and torch.equal(passing[passed], x[passed])


def test_reproducible_under_a_seed():
    x = torch.randn(4, 3, 8, 8) * 0.05
    layer = StochasticReLU(seed=7)
    first = layer(x)
    layer.reseed(7)
    assert torch.equal(layer(x), first)
    layer.reseed(8)
    assert not torch.equal(layer(x), first)


def test_masks_are_honoured():
    layer = StochasticReLU(frac_bits=F, truncated_bits=K, seed=0)
    mask = torch.zeros(2, 3, 3)
    mask[0] = 1
    layer.set_mask(mask)
    x = torch.randn(5, 2, 3, 3) * 10
    y = layer(x)
    assert torch.equal(y[:, 1], x[:, 1])
    assert layer.kept_per_sample((2, 3, 3)) == 9


@pytest.mark.parametrize("kwargs,message", [
    (dict(truncated_bits=31, ring_bits=32), "no sign bit"),
    (dict(truncated_bits=40, ring_bits=32), "no sign bit"),
    (dict(frac_bits=20, truncated_bits=12, ring_bits=32), "overflows the 32-bit ring"),
    (dict(variant="flip"), "unknown Circa variant"),
    (dict(ring_bits=64), "ring_bits must be between"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StochasticReLU(**kwargs)


def test_value_overflowing_the_ring_is_an_error():
    layer = StochasticReLU(frac_bits=12, truncated_bits=4, ring_bits=20)
    with pytest.raises(ValueError, match="overflows the 20-bit ring"):
        layer(torch.tensor([[[[300.0]]]]))
    assert math.isfinite(float(layer(torch.tensor([[[[100.0]]]])).sum()))


# -- which faults a call gets (docs/circa.md "Which faults a call gets") ------------------------------------------
def _window_batch(batch=4, size=(8, 8, 8)):
    """Values inside the fault window (|x| < 2^(k-f)), where about half of the tests err."""
    return -(torch.rand(batch, *size) * 0.9 + 0.05) * 2 ** (K - F)


def test_same_input_same_faults_without_reseeding():
    layer = StochasticReLU(frac_bits=F, truncated_bits=K, variant="neg_pass", seed=3)
    x = _window_batch()
    first = layer(x)
    assert not torch.equal(first, torch.relu(x))             # faults happen here
    layer(torch.randn(2, 8, 8, 8))                            # another call in between changes nothing
    assert torch.equal(layer(x), first)
    assert torch.equal(layer(x.clone()), first)               # a function of the values, not the tensor
    layer.reseed(4)
    assert not torch.equal(layer(x), first)                   # another seed, other faults


def test_other_inputs_get_other_faults_even_where_they_agree():
    """Faults are not one fixed pattern per batch position: a sample's faults change with its batch."""
    layer = StochasticReLU(frac_bits=F, truncated_bits=K, variant="neg_pass", seed=3)
    x = _window_batch()
    y = x.clone()
    y[0] = _window_batch(1)[0]                                # only the first sample differs
    wrong_x = layer(x)[1:] != torch.relu(x)[1:]
    wrong_y = layer(y)[1:] != torch.relu(y)[1:]
    assert wrong_x.any() and not torch.equal(wrong_x, wrong_y)


def test_fresh_faults_draw_new_shares_on_every_call_from_the_seed():
    layer = StochasticReLU(frac_bits=F, truncated_bits=K, variant="neg_pass", seed=3, fresh_faults=True)
    x = _window_batch()
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    layer.reseed(3)
    assert torch.equal(layer(x), first) and "fresh_faults=True" in repr(layer)


def test_global_generator_without_a_seed():
    layer = StochasticReLU(frac_bits=F, truncated_bits=K, variant="neg_pass")
    x = _window_batch()
    torch.manual_seed(1)
    first = layer(x)
    assert not torch.equal(layer(x), first)
    torch.manual_seed(1)
    assert torch.equal(layer(x), first)


def test_fault_key_is_the_same_in_torchscript():
    scripted = torch.jit.script(fault_key)
    for seed, probes, numel in [(0, [0.0, 0.0, 0.0, 0.0, 0.0], 1), (2 ** 62 + 12345, [-3.25, 7.5, -0.001, 1e-9, 2.0], 10 ** 7),
                                (17, [-1e6, 1e6, float("nan"), float("inf"), -float("inf")], 5)]:
        assert scripted(seed, probes, numel, 12) == fault_key(seed, probes, numel, 12)
    assert fault_key(1, [0.5] * 5, 10, 12) != fault_key(2, [0.5] * 5, 10, 12) != fault_key(1, [0.25] * 5, 10, 12)
    layer = StochasticReLU(frac_bits=F, truncated_bits=K, variant="neg_pass", seed=5)
    x = _window_batch()
    scripted = torch.jit.script(layer)
    assert torch.equal(scripted(x), layer(x))
    layer.reseed(6)                                           # the scripted copy follows the reseed
    assert torch.equal(scripted(x), layer(x))


def test_meta_device_layers_compute_shapes_and_get_their_generator_when_materialised():
    with torch.device("meta"):
        layer = StochasticReLU(frac_bits=F, truncated_bits=K, variant="neg_pass", seed=9)
        assert layer.generator is None and layer(torch.empty(2, 3, 4, 4)).shape == (2, 3, 4, 4)
    layer.to_empty(device="cpu")
    x = _window_batch()
    reference = StochasticReLU(frac_bits=F, truncated_bits=K, variant="neg_pass", seed=9)
    assert layer.generator is not None and torch.equal(layer(x), reference(x))


def test_empty_and_nan_inputs():
    layer = StochasticReLU(frac_bits=F, truncated_bits=K, seed=0)
    assert layer(torch.empty(0, 3, 4, 4)).shape == (0, 3, 4, 4)
    x = torch.randn(2, 3, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    assert layer(x).shape == x.shape


def test_a_mask_that_does_not_fit_is_one_clear_error():
    layer = StochasticReLU(frac_bits=F, truncated_bits=K, seed=0, reduction=8)
    layer.set_mask(torch.ones(4, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="fitted to 32x32 inputs"):
        layer(torch.randn(1, 4, 8, 8))
    layer.set_mask(torch.ones(4, 1, 1, dtype=torch.bool))    # per channel: the channel count must fit
    with pytest.raises(ValueError, match=r"expects feature maps of shape \[4, 1, 1\]"):
        layer(torch.randn(1, 5, 8, 8))
