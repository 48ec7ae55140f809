"""Circa as a method (hybrezoo.methods.circa): converting any zoo model (masks kept), reproducible
faults, accuracy over fault seeds (library, `hybrezoo eval`), the registered Circa variants and how
pi_cost prices them, and clear errors for settings the protocol cannot run with.
(The layer itself is tested against its analytic fault model in tests/test_stochastic_relu.py.)"""
import json

import pytest
import timm
import torch
from torch import nn

from hybrezoo import HybrezooError, create_model, pi_cost
from hybrezoo.cli import main
from hybrezoo.data.synthetic import write_fake_cifar100
from hybrezoo.engine import evaluate
from hybrezoo.methods.circa import convert, evaluate_under_faults, reseed, stochastic_layers
from hybrezoo.models import PIResNet
from hybrezoo.models import circa as circa_models
from hybrezoo.nn import PIReLU, StochasticReLU, relu_layers
from hybrezoo.registry import entries, resolve_name


def small(**kwargs):
    return PIResNet(depths=(1, 1, 1, 1), base_width=4, num_classes=10, **kwargs)


def test_convert_keeps_masks_culled_layers_and_counts():
    model = PIResNet(depths=(1, 1, 1, 1), base_width=4, num_classes=10, stage_relus=("cull", "all", "thin", "all"))
    mask = torch.rand(8, 16, 16) > 0.3
    model.layer2[0].act1.set_mask(mask)
    before = pi_cost(model, input_size=(3, 32, 32)).relus
    converted = convert(model, k=8, f=12, variant="neg_pass", seed=1)
    assert all(type(m) is PIReLU for m in relu_layers(model).values())           # a copy by default
    layers = stochastic_layers(converted)
    assert set(layers) == set(relu_layers(model)) and all(type(m) is StochasticReLU for m in layers.values())
    assert isinstance(converted.layer1[0].act1, nn.Identity)                    # culled stays free
    assert torch.equal(converted.layer2[0].act1.mask, mask)
    assert {(m.truncated_bits, m.frac_bits, m.ring_bits, m.variant) for m in layers.values()} == {(8, 12, 32, "neg_pass")}
    assert len({m.seed for m in layers.values()}) == len(layers)                 # one fault stream per layer
    cost = pi_cost(converted, input_size=(3, 32, 32), protocol="circa")
    assert cost.relus == cost.stochastic_relus == before
    # the base network's checkpoint loads as is
    converted.load_state_dict(model.state_dict())


def test_convert_handles_plain_relu_modules_and_refuses_models_without_relus():
    timm_net = timm.create_model("resnet10t", num_classes=10)
    converted = convert(timm_net, k=6, f=10)
    assert stochastic_layers(converted) and not any(type(m) is nn.ReLU for m in converted.modules())
    with pytest.raises(HybrezooError, match="no ReLU module"):
        convert(nn.Sequential(nn.Linear(3, 3)), k=6, f=10)


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=31, f=0), "no sign bit"),
    (dict(k=40, f=8), "no sign bit"),
    (dict(k=12, f=20), "overflows the 32-bit ring"),
    (dict(k=4, f=8, variant="sometimes"), "unknown Circa variant"),
    (dict(k=4, f=8, ring_bits=70), "ring_bits must be between"),
])
def test_settings_the_protocol_cannot_run_with_fail_clearly(kwargs, message):
    with pytest.raises(HybrezooError, match=message):
        convert(small(), **kwargs)


def test_faults_are_reproducible_from_the_seed_and_differ_between_seeds():
    model = convert(small(), k=10, f=12, seed=0).eval()
    x = torch.randn(8, 3, 32, 32) * 0.1
    first = model(x)
    reseed(model, 0)
    assert torch.equal(model(x), first)
    reseed(model, 1)
    assert not torch.equal(model(x), first)
    exact = small().eval()
    exact.load_state_dict(model.state_dict())
    assert not torch.equal(exact(x), first)             # the faults are real at this truncation


def test_fault_evaluation_reports_mean_and_spread_over_seeds():
    torch.manual_seed(0)
    model = convert(small(), k=10, f=12).eval()
    loader = [(torch.randn(16, 3, 32, 32) * 0.2, torch.randint(0, 10, (16,))) for _ in range(3)]
    result = evaluate_under_faults(model, loader, [0, 1, 2, 3])
    manual = []
    for seed in range(4):
        reseed(model, seed)
        manual.append(evaluate(model, loader)["top1"])
    assert result.top1 == manual and result.images == 48
    mean = sum(manual) / 4
    assert result.top1_stats["mean"] == pytest.approx(mean)
    assert result.top1_stats["std"] == pytest.approx((sum((v - mean) ** 2 for v in manual) / 3) ** 0.5)
    assert result.settings == {"k": 10, "f": 12, "n": 32, "variant": "pos_zero"}


# -- the registered variants ---------------------------------------------------------------------------------
CIRCA = [e for e in entries() if e.method == "circa"]


def test_variants_are_registered_for_both_data_sets_with_their_settings():
    assert {e.arch for e in CIRCA} == set(circa_models.CIRCA_BASES) and len(CIRCA) == 6
    s = circa_models.SETTINGS
    for entry in CIRCA:
        assert f"k={s['k']}" in entry.description and s["variant"] in entry.description


@pytest.mark.parametrize("entry", CIRCA, ids=lambda e: e.name)
def test_variant_builds_its_base_with_stochastic_relus_and_prices_as_circa(entry):
    base = resolve_name(f"{circa_models.CIRCA_BASES[entry.arch]}.{entry.tag}")
    model, reference = create_model(entry.name), create_model(base.name)
    assert list(stochastic_layers(model)) == list(relu_layers(reference))
    assert model.state_dict().keys() == reference.state_dict().keys()
    circa_cost = pi_cost(model, protocol="circa", warn=False)
    assert circa_cost.stochastic_relus == circa_cost.relus == pi_cost(reference, warn=False).relus
    # priced with the variant's own truncation (k=8), not the layer's default (k=10)
    plain_circa = pi_cost(reference, protocol="circa", warn=False)
    assert circa_cost.gc_bytes > plain_circa.gc_bytes and circa_cost.gc_bytes < pi_cost(reference, warn=False).gc_bytes
    # the default protocol argument prices a model with stochastic ReLUs as Circa too
    default = pi_cost(model, warn=False)
    assert default.protocol == "circa" and default.gc_bytes == circa_cost.gc_bytes


def test_an_snl_checkpoint_loads_into_its_circa_variant_with_its_masks():
    snl_net = create_model("snl_r18_50k.c100")   # masks as an SNL run would leave them
    shapes = {r.name: r.shape for r in pi_cost(snl_net, warn=False).layers}
    for name, relu in relu_layers(snl_net).items():
        relu.set_mask(torch.rand(shapes[name]) < 0.1)
    kept = pi_cost(snl_net, warn=False).relus
    variant = create_model("circa_snl_r18_50k.c100")
    variant.load_state_dict(snl_net.state_dict())
    assert pi_cost(variant, protocol="circa", warn=False).stochastic_relus == kept < 491_520


# -- hybrezoo eval --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Small run folders (timm's format, as `hybrezoo train` writes them) of a Circa variant and its base."""
    from hybrezoo.engine.export import save_model

    root = tmp_path_factory.mktemp("data")
    write_fake_cifar100(root, train_per_class=1, test_per_class=1)
    runs = tmp_path_factory.mktemp("runs")
    classes = [f"class_{i:03d}" for i in range(100)]
    for name in ("circa_pi_resnet18.c100", "pi_resnet18.c100"):
        save_model(create_model(name, base_width=4, depths=(1, 1, 1, 1)), runs / name, classes)
    return root, runs / "circa_pi_resnet18.c100", runs / "pi_resnet18.c100"


def test_eval_reports_mean_and_spread_over_fault_seeds(folders, capsys, monkeypatch, tmp_path):
    root, circa_run, plain_run = folders
    monkeypatch.setenv("HYBREZOO_CACHE", str(tmp_path))
    assert main(["eval", str(circa_run), "--data", str(root), "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["circa"]["seeds"] == [0, 1, 2, 3, 4] and len(out["circa"]["top1"]) == 5   # 5 seeds by default
    assert out["top1"] == pytest.approx(out["circa"]["top1_stats"]["mean"]) and out["images"] == 100
    assert out["circa"]["settings"] == {"k": 8, "f": 12, "n": 32, "variant": "neg_pass"}
    # a plain model converted on the fly; the text output names the settings
    assert main(["eval", str(plain_run), "--data", str(root), "--device", "cpu",
                 "--circa-k", "6", "--circa-f", "10", "--circa-seeds", "2"]) == 0
    assert "Circa faults ({'k': 6, 'f': 10, 'n': 32, 'variant': 'pos_zero'})" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--circa-k", "40", "--circa-f", "8"], "no sign bit"),
    (["--circa-k", "12", "--circa-f", "20"], "overflows the 32-bit ring"),
    (["--circa-k", "8"], "give --circa-k and --circa-f together"),
    (["--circa-seeds", "3"], "needs a model with stochastic ReLUs"),
])
def test_eval_rejects_bad_circa_options_in_one_line(folders, capsys, extra, message):
    root, _, plain_run = folders
    code = main(["eval", str(plain_run), "--data", str(root), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


# -- which faults a call gets: a function of the seed and the input (docs/circa.md) --------------------------------
def test_a_seeded_circa_model_is_a_function_of_its_input():
    model = convert(small(), k=10, f=12, seed=0).eval()
    x = torch.randn(8, 3, 32, 32) * 0.1
    first = model(x)
    model(torch.randn(4, 3, 32, 32))                    # whatever ran before
    assert torch.equal(model(x), first)
    # gradient checkpointing recomputes the same faults, so the gradients are those of the plain pass
    model.train()
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        model(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_fault_evaluation_does_not_depend_on_what_ran_before_and_varies_by_seed():
    model = convert(small(), k=10, f=12, seed=0).eval()
    loader = [(torch.randn(16, 3, 32, 32) * 0.2, torch.randint(0, 10, (16,))) for _ in range(3)]
    first = evaluate_under_faults(model, loader, [0, 1, 2])
    model(torch.randn(16, 3, 32, 32))
    assert evaluate_under_faults(model, loader, [0, 1, 2]).top1 == first.top1
    # the faults differ by seed: the logits of one batch under seeds 0 and 1
    x = loader[0][0]
    reseed(model, 0)
    zero = model(x)
    reseed(model, 1)
    assert not torch.equal(model(x), zero)
    assert evaluate(model, loader)["top1"] == first.top1[1]  # left with seed 1: scores seed 1's figure


def test_convert_can_ask_for_fresh_faults_on_every_call():
    model = convert(small(), k=10, f=12, seed=0, fresh_faults=True).eval()
    assert all(m.fresh_faults for m in stochastic_layers(model).values())
    x = torch.randn(8, 3, 32, 32) * 0.1
    first = model(x)
    assert not torch.equal(model(x), first)
    reseed(model, 0)
    assert torch.equal(model(x), first)
