"""DeepReShape as library code: ReLU-equalization, the pruning levels and ReLU-reuse, the registered
HybReNets (counts reproduced by pi_cost, designs reproduced by the library), the recipe, the command."""
import itertools
import json
from pathlib import Path

import pytest
import torch

import hybrezoo
from hybrezoo.cli import main
from hybrezoo.cost.counting import count_model
from hybrezoo.data.synthetic import write_fake_cifar100
from hybrezoo.engine import build_model, load_recipe, stage_section
from hybrezoo.errors import HybrezooError
from hybrezoo.methods.budget import BudgetError
from hybrezoo.methods.criticality import ZOO_ORDERS, base_config
from hybrezoo.methods.deepreshape import (LEVELS, deepreshape, hybrenet_design, hybrenet_designs, hybrenet_name,
                                          relu_equalization, stage_weights)
from hybrezoo.models import hybrenet
from hybrezoo.nn import PIReLU
from hybrezoo.nn.relu_reuse import ReLUReuse
from hybrezoo.registry import entries, model_info

REPO = Path(__file__).resolve().parents[1]
HYBRENETS = [e for e in entries() if e.method == "deepreshape"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stage_relus(model, input_size):
    """ReLUs of stem + stages 1..4 from pi_cost's per-layer records."""
    per = [0] * 5
    for layer in count_model(model, input_size).relu_layers:
        per[0 if layer.name == "act1" else int(layer.name[5])] += layer.relus
    return per


# -- ReLU-equalization ---------------------------------------------------------------------------------

def test_equalization_gives_the_ported_hybrenet_for_the_cifar100_order():
    """(5, 5, 3) is the HybReNet of the PrivCirNet port; the rule finds it from the order S3 > S2 > S4 > S1."""
    assert relu_equalization((3, 2, 4, 1)) == (5, 5, 3)
    per = stage_relus(hybrezoo.create_model("hybrenet_m16_553.c100"), (3, 32, 32))
    assert per[3] > per[2] > per[4] > per[1]


@pytest.mark.parametrize("order", list(itertools.permutations((1, 2, 3, 4))), ids=lambda o: "".join(map(str, o)))
def test_equalization_orders_the_network_s_relus_like_criticality(order):
    factors = relu_equalization(order)
    model = hybrezoo.create_model("hybrenet_m16_553.c100", stage_factors=factors, base_width=8)
    per = stage_relus(model, (3, 32, 32))
    assert all(per[order[i]] > per[order[i + 1]] for i in range(3)), (factors, per)
    # and no smaller factors (lexicographically) do it
    smaller = [f for f in itertools.product(range(2, 17), repeat=3) if f < factors]
    assert not any(all(stage_weights(f, (2, 2, 2, 2))[order[i] - 1] > stage_weights(f, (2, 2, 2, 2))[order[i + 1] - 1]
                       for i in range(3)) for f in smaller)


def test_equalization_ignores_culled_stages_and_follows_depths():
    assert relu_equalization((3, 2, 4, 1), culled=(1,)) == (2, 5, 2)
    assert relu_equalization((3, 4, 2, 1)) == (5, 6, 3)
    assert relu_equalization((3, 4, 2, 1), culled=(1, 2)) == (2, 2, 2)
    deep = relu_equalization((3, 2, 4, 1), depths=(1, 1, 3, 1))
    w = stage_weights(deep, (1, 1, 3, 1))
    assert w[2] > w[1] > w[3] > w[0]


# -- designs ---------------------------------------------------------------------------------------------

def analytic_relus(config, size):
    """ReLUs of a HybReNet configuration by hand: stem, then per stage depth x ReLUs per block x width x positions
    / reuse factor (an independent check of pi_cost's count)."""
    per_block = {"all": 2, "thin": 1, "cull": 0}
    total = config.widths[0] * size * size if config.stem_relu else 0
    for k, (depth, width, mode) in enumerate(zip(config.depths, config.widths, config.stage_relus)):
        total += depth * per_block[mode] * width * (size // 2 ** k) ** 2
    return total // config.relu_reuse


@pytest.mark.parametrize("dataset, budget", [("cifar100", b) for b in (12_000, 25_000, 50_000, 75_000, 180_000,
                                                                        400_000, 557_056)]
                         + [("tinyimagenet", b) for b in (60_000, 150_000, 300_000, 1_000_000)])
def test_every_design_meets_its_budget(dataset, budget):
    spec = hybrezoo.registry.dataset_spec(dataset)
    designs = hybrenet_designs(budget, dataset, ZOO_ORDERS[dataset])
    assert [d.level for d in designs] == list(LEVELS)
    for d in designs:
        if d.feasible:
            assert d.relus <= budget and d.config.base_width >= 16 and d.config.base_width % d.level.reuse == 0
            assert d.relus == analytic_relus(d.config, spec.input_size[1])
            # widened to the budget: one more step of base width would not fit
            assert d.relus + d.level.reuse * d.relus_per_width > budget
    chosen = hybrenet_design(budget, dataset, ZOO_ORDERS[dataset])
    assert chosen.config == next(d for d in designs if d.feasible).config   # the mildest level that fits
    with torch.device("meta"):   # a regular zoo network (built without memory: some levels are very wide)
        model = hybrezoo.create_model(f"hybrenet_m16_553.{spec.tag}", **chosen.config.kwargs())
    assert hybrezoo.pi_cost(model, input_size=spec.input_size).relus == chosen.relus


def test_a_mac_cap_narrows_or_prunes_further():
    free = hybrenet_design(180_000, "cifar100", ZOO_ORDERS["cifar100"])
    capped = hybrenet_design(180_000, "cifar100", ZOO_ORDERS["cifar100"], max_macs=300_000_000)
    assert capped.macs <= 300_000_000 < free.macs and capped.relus <= 180_000


def test_names_spell_the_configuration():
    d = hybrenet_design(15_000, "cifar100", ZOO_ORDERS["cifar100"])
    assert d.name == "hybrenet_m24_252_cull14_thin_reuse4" == hybrenet_name(d.config)
    assert hybrenet_name(base_config("hybrenet_m16_553.c100")) == "hybrenet_m16_553"


# -- ReLU-reuse ------------------------------------------------------------------------------------------

def test_relu_reuse_reuses_the_representative_correction():
    layer = ReLUReuse(2)
    x = torch.tensor([[-1.0, 3.0, 2.0, -5.0]]).view(1, 4, 1, 1)
    y = layer(x).flatten().tolist()
    # groups (0, 1) and (2, 3); representatives 0 and 2: y_c = x_c + relu(x_r) - x_r
    assert y == [0.0, 4.0, 2.0, -5.0]
    assert layer.kept_per_sample((4, 8, 8)) == 2 * 8 * 8
    x = torch.randn(3, 8, 5, 5, requires_grad=True)
    out = ReLUReuse(4)(x)
    reps = x[:, ::4]
    assert torch.allclose(out[:, ::4], torch.relu(reps))            # representatives get a true ReLU
    assert torch.allclose(out[:, 1:4], x[:, 1:4] + (torch.relu(reps[:, :1]) - reps[:, :1]))
    out.sum().backward()                                            # trainable like any layer
    with pytest.raises(ValueError, match="divisible"):
        ReLUReuse(3)(torch.zeros(1, 8, 2, 2))
    with pytest.raises(ValueError, match="takes no mask"):
        ReLUReuse(2).set_mask(torch.ones(4, 1, 1))
    with pytest.raises(ValueError, match="positive integer"):
        ReLUReuse(0)


def test_pi_cost_prices_relu_reuse_at_the_relus_it_evaluates():
    plain = hybrezoo.create_model("hybrenet_m16_553.c100", base_width=8, stage_relus=("cull", "thin", "thin", "all"),
                                  stem_relu=False)
    for factor in (2, 4):
        model = hybrezoo.create_model("hybrenet_m16_553.c100", base_width=8, relu_reuse=factor,
                                      stage_relus=("cull", "thin", "thin", "all"), stem_relu=False)
        assert all(type(m) is ReLUReuse for m in model.modules() if isinstance(m, PIReLU))
        cost, reference = hybrezoo.pi_cost(model), hybrezoo.pi_cost(plain)
        assert cost.relus * factor == reference.relus and cost.macs == reference.macs
        layers, ref_layers = count_model(model, (3, 32, 32)).relu_layers, count_model(plain, (3, 32, 32)).relu_layers
        assert len(layers) == len(ref_layers) > 0
        for layer, ref in zip(layers, ref_layers):
            assert layer.relus == ref.relus // factor and layer.elements == ref.elements
        # the count by forward hooks (what the registry test uses) agrees
        seen = []
        hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(mod.kept_per_sample(tuple(o.shape[1:]))))
                 for m in model.modules() if isinstance(m, PIReLU)]
        model.eval()(torch.zeros(1, 3, 32, 32))
        [h.remove() for h in hooks]
        assert sum(seen) == cost.relus
    with pytest.raises(ValueError, match="multiple of 4"):
        hybrezoo.create_model("hybrenet_m16_553.c100", base_width=10, relu_reuse=4)


def test_relu_reuse_models_round_trip_through_a_state_dict():
    a = hybrezoo.create_model("hybrenet_m24_252_cull14_thin_reuse4.c100")
    b = hybrezoo.create_model("hybrenet_m24_252_cull14_thin_reuse4.c100")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a.eval()(x), b.eval()(x))


# -- the registered HybReNets ------------------------------------------------------------------------------

# The two HybReNets found in public code, as the fact sheet derived them by hand (docs/sources.md
# A.2: ReLUs with the stem ReLU, MACs of stem, 3x3 convs, 1x1 shortcuts and FC): pi_cost must reproduce them.
PORTED = {("hybrenet_m16_553", "c100"): (343_040, 1_053.4e6), ("hybrenet_m32_253", "c100"): (372_736, 709.6e6),
          ("hybrenet_m16_553", "tin"): (1_372_160, 4_213.2e6), ("hybrenet_m32_253", "tin"): (1_490_944, 2_838.3e6)}


@pytest.mark.parametrize("key", list(PORTED), ids=lambda k: ".".join(k))
def test_pi_cost_reproduces_the_ported_hybrenets(key):
    relus, macs = PORTED[key]
    cost = hybrezoo.pi_cost(".".join(key))
    assert cost.relus == relus and abs(cost.macs - macs) < 0.05e6


@pytest.mark.parametrize("entry", HYBRENETS, ids=lambda e: e.name)
def test_pi_cost_reproduces_every_registered_count(entry):
    relus, macs = hybrenet.DERIVED[(entry.arch, entry.tag)]
    cost = hybrezoo.pi_cost(entry.name)
    assert (cost.relus, cost.macs) == (relus, macs)
    assert entry.published_relus is None          # not a paper figure: the paper's tables could not be read
    info = model_info(entry.name)
    assert info["method"] == "deepreshape" and info["recipe"] == f"training/deepreshape/{entry.name}.yaml"
    assert f"{relus:,} ReLUs" in info["description"]


@pytest.mark.parametrize("arch", list(hybrenet.DESIGNS))
def test_the_library_reproduces_every_registered_design(arch):
    dataset, budget, order = hybrenet.DESIGNS[arch]
    design = hybrenet_design(budget, dataset, order)
    assert design.name == arch and design.relus <= budget
    assert design.config.same_network(base_config(f"{arch}.c100"))
    assert order == ZOO_ORDERS[dataset]
    info = model_info(f"{arch}.{hybrezoo.registry.dataset_spec(dataset).tag}")
    assert "ours, not a paper figure" in info["description"]


def test_every_hybrenet_has_both_tags_and_a_recipe_that_builds_it():
    archs = {e.arch for e in HYBRENETS}
    assert archs == set(hybrenet.ARCHS) and len(HYBRENETS) == 2 * len(archs)
    for entry in HYBRENETS:
        recipe = load_recipe(REPO / entry.recipe)
        assert recipe["model"]["name"] == entry.name
        assert hybrezoo.pi_cost(build_model(recipe)).relus == hybrenet.DERIVED[(entry.arch, entry.tag)][0]
        distill = stage_section(recipe, 0)["distill"]
        assert distill["teacher"] == f"pi_resnet18.{entry.tag}"
        assert distill["checkpoint"] == f"runs/baseline/pi_resnet18.{entry.tag}"


# -- the method end to end -----------------------------------------------------------------------------------

def test_the_written_recipe_reproduces_the_design(tmp_path):
    result = deepreshape("50k", "cifar100", order="zoo", out=tmp_path / "a.yaml")
    assert result.zoo_name == "hybrenet_m16_252_cull1_thin.c100"
    assert hybrezoo.pi_cost(build_model(load_recipe(tmp_path / "a.yaml"))).relus == result.chosen.relus == 47_104

    result = deepreshape("70k", "cifar100", order="zoo", out=tmp_path / "b.yaml")   # not a registered design
    recipe = load_recipe(tmp_path / "b.yaml")
    assert result.zoo_name is None and recipe["model"]["name"] == "hybrenet_m16_553.c100"
    assert hybrezoo.pi_cost(build_model(recipe)).relus == result.chosen.relus <= 70_000


def test_deepreshape_with_measured_criticality(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBREZOO_CACHE", str(tmp_path / "cache"))
    write_fake_cifar100(tmp_path / "data", train_per_class=2, test_per_class=1)
    quick = ["runtime.max_steps=2", "data.batch_size=16", "data.eval_batch_size=20", "runtime.max_eval_batches=1",
             "runtime.progress=false"]
    result = deepreshape("100k", "cifar100", data=str(tmp_path / "data"), epochs=1, work_dir=tmp_path / "work",
                         overrides=quick, model_kwargs={"base_width": 4}, out=tmp_path / "r.yaml")
    assert result.criticality is not None and result.order == result.criticality.order
    assert result.chosen.relus <= 100_000 and (tmp_path / "work" / "criticality.json").is_file()
    assert "ReLU criticality of pi_resnet18.c100" in result.report()


@pytest.mark.parametrize("args, message", [
    (["--budget", "600k", "--order", "zoo"], "exceeds the 557,056 ReLUs of ResNet18 on CIFAR-100"),
    (["--budget", "600k", "--dataset", "tin", "--order", "zoo"], None),   # within Tiny ImageNet's ResNet18: fine
    (["--budget", "0", "--order", "zoo"], "the ReLU budget must be positive"),
    (["--budget", "3k"], "too small for a HybReNet: whatever the criticality order"),
    (["--budget", "50k", "--model", "pi_resnt18.c100"], "unknown model 'pi_resnt18.c100'"),
    (["--budget", "50k", "--model", "pi_resnet18.tin"], "not a CIFAR-100 model"),
    (["--budget", "50k", "--order", "3,2,4"], "must name stages 1, 2, 3 and 4"),
    (["--budget", "50k"], "no data folder given"),
])
def test_cli(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYBREZOO_DATA", raising=False)
    code = main(["reduce", "deepreshape", *args])
    captured = capsys.readouterr()
    if message is None:
        assert code == 0 and "chosen:" in captured.out
        written = list((tmp_path / "runs" / "recipes").iterdir())
        assert len(written) == 1 and written[0].name.startswith("deepreshape_hybrenet_")
        return
    err = captured.err.strip()
    assert code == 2 and err.startswith("hybrezoo: error: ") and message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_cli_json(capsys, tmp_path):
    out = tmp_path / "r.yaml"
    assert main(["reduce", "deepreshape", "--budget", "25k", "--order", "zoo", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["chosen"]["name"] == "hybrenet_m20_252_cull14_thin_reuse2" and result["recipe"] == str(out)
    assert [d["level"] for d in result["designs"]] == [level.name for level in LEVELS]
    assert load_recipe(out)["model"]["name"] == "hybrenet_m20_252_cull14_thin_reuse2.c100"


def test_budget_errors(tmp_path):
    with pytest.raises(BudgetError, match="too small"):
        hybrenet_design(2_000, "cifar100", ZOO_ORDERS["cifar100"])
    with pytest.raises(HybrezooError, match="min_width"):
        deepreshape("50k", order="zoo", min_width=0)
