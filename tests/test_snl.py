"""SNL (hybrezoo.methods.snl): the learnable mask layer, the official L1 rule, the search on a small
network and data set written here (library loop and `hybrezoo reduce snl` through the engine), the
masked checkpoint's round trip, the registered entries and their recipes, and bad budgets."""
import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from hybrezoo import pi_cost
from hybrezoo.cli import main
from hybrezoo.data.synthetic import write_fake_cifar100
from hybrezoo.engine import build_model, load_recipe, load_state_dict, run_recipe
from hybrezoo.methods.budget import BudgetError
from hybrezoo.methods.snl import SNLSearch
from hybrezoo.models import PIResNet, create_model, snl
from hybrezoo.nn import PIReLU, relu_layers
from hybrezoo.nn.learnable_mask import LearnableMaskReLU, attach_learnable_masks, learnable_masks, restore_pirelus
from hybrezoo.registry import entries, resolve_name

REPO = Path(__file__).resolve().parents[1]
TINY = "model.kwargs={base_width: 4, depths: [1, 1, 1, 1]}"   # widths 4-32: 15,360 ReLUs at 32x32
QUIET = ["runtime.progress=false", "runtime.device=cpu"]


def tiny_net(**kwargs):
    return PIResNet(depths=(1, 1, 1, 1), base_width=4, num_classes=10, stem_relu=False, **kwargs)


# -- the layer ----------------------------------------------------------------------------------------
def test_learnable_mask_is_relu_at_one_identity_at_zero_and_snl_in_between():
    layer = LearnableMaskReLU((3, 4, 4))
    x = torch.randn(5, 3, 4, 4)
    assert torch.equal(layer(x), torch.relu(x))                       # initialised to 1: a plain ReLU
    with torch.no_grad():
        layer.alpha.zero_()
    assert torch.equal(layer(x), x)
    with torch.no_grad():
        layer.alpha.fill_(0.25)
    assert torch.allclose(layer(x), 0.25 * torch.relu(x) + 0.75 * x)


def test_existing_mask_stays_linear_and_pirelus_come_back():
    model = tiny_net()
    prior = torch.rand(4, 32, 32) > 0.5
    model.layer1[0].act1.set_mask(prior)
    layers = attach_learnable_masks(model, (3, 32, 32))
    assert set(layers) == {n for n, m in model.named_modules() if isinstance(m, LearnableMaskReLU)}
    assert not relu_layers(model)
    layer = layers["layer1.0.act1"]
    assert torch.equal(layer.kept(0.01), prior)                       # linearised positions cannot return
    restore_pirelus(model, {name: m.kept(0.01) for name, m in learnable_masks(model).items()})
    assert not learnable_masks(model) and len(relu_layers(model)) == 8
    assert torch.equal(model.layer1[0].act1.mask, prior)


# -- the official L1 rule ------------------------------------------------------------------------------
def test_l1_weight_grows_by_1_1_after_epochs_without_a_new_lowest_count(monkeypatch):
    search = SNLSearch(tiny_net(), (3, 32, 32), budget=100, l1_weight=1.0)
    counts = iter([9000, 9000, 8000, 8500, 8000, 8000, 8000, 7000, 7000, 50])
    monkeypatch.setattr(search, "relus", lambda: next(counts))
    weights, done = [], []
    for epoch in range(10):
        done.append(search.end_epoch(epoch))
        weights.append(round(search.state["l1_weight"], 6))
    # epochs 0-4 never grow (official warm-up); 5, 6 and 8 set no new minimum; 7 and 9 do
    assert weights == [1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.21, 1.21, 1.331, 1.331]
    assert done == [False] * 9 + [True] and search.state["lowest"] == 50


# -- the search in a plain loop --------------------------------------------------------------------------
def _train_search(search, model, steps=2, epochs=30):
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)  # a high rate: the masks fall from 1 in a few steps
    for epoch in range(epochs):
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y) + search.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if search.end_epoch(epoch):
            return epoch
    return None


@pytest.mark.parametrize("granularity", ["pixel", "channel"])
def test_search_reaches_the_budget_and_the_mask_count_is_what_pi_cost_counts(granularity):
    model = tiny_net()
    search = SNLSearch(model, (3, 32, 32), budget="0.25", l1_weight=1e-3 if granularity == "pixel" else 3e-2,
                       granularity=granularity)
    assert search.total == 15_360 and search.budget == 3_840
    assert _train_search(search, model) is not None, "the search should meet a 25% budget"
    result = search.finish()
    assert not result["forced_to_budget"] and result["relus"] <= search.budget
    layers = relu_layers(model)
    assert len(layers) == 8 and all(m.mask is not None and m.mask.dtype == torch.bool for m in layers.values())
    assert all(m.per_channel for m in layers.values()) == (granularity == "channel")
    assert pi_cost(model, input_size=(3, 32, 32)).relus == result["relus"]

    fresh = tiny_net()                       # a freshly built network adopts the masks from the state dict
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_a_search_that_runs_out_of_epochs_keeps_the_largest_masks_within_budget():
    model = tiny_net()
    search = SNLSearch(model, (3, 32, 32), budget=1_000, l1_weight=1e-6)
    assert _train_search(search, model, steps=1, epochs=1) is None
    with torch.no_grad():
        largest = torch.cat([m.alpha.flatten() for m in learnable_masks(model).values()]).topk(1_000).values.min()
    result = search.finish()
    assert result["forced_to_budget"] and result["relus"] == 1_000
    assert pi_cost(model, input_size=(3, 32, 32)).relus == 1_000
    assert largest > search.threshold


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget, message", [
    (20_000, "exceeds the model's 15,360 ReLUs"),
    ("0", "must be positive"),
    ("lots", "cannot read the ReLU budget"),
    (None, "needs a ReLU budget"),
])
def test_bad_budgets_fail_with_one_clear_line(budget, message):
    with pytest.raises(BudgetError, match=message):
        SNLSearch(tiny_net(), (3, 32, 32), budget=budget)


def test_cli_rejects_a_budget_above_the_model_before_any_work(capsys, tmp_path):
    code = main(["reduce", "snl", "--model", "pi_resnet18_nostem.c100", "--budget", "600k",
                 "--init", str(tmp_path), "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "exceeds the model's 491,520 ReLUs" in err and len(err.splitlines()) == 1


def test_cli_says_where_the_starting_weights_come_from(capsys, tmp_path):
    assert main(["reduce", "snl", "--model", "pi_resnet18_nostem.c100", "--budget", "50k",
                 "--data", str(tmp_path)]) == 2
    assert "pass --init RUN_DIR" in capsys.readouterr().err


# -- end to end through the engine: `hybrezoo reduce snl` --------------------------------------------------
@pytest.fixture(scope="module")
def snl_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar100(root, train_per_class=2, test_per_class=1)
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBREZOO_CACHE", str(runs / "cache"))
        base = run_recipe(REPO / "training/baseline/pi_resnet18_nostem.c100.yaml", data=str(root), out=runs / "base",
                          overrides=["epochs=1", "runtime.max_steps=2", "data.batch_size=100", TINY, *QUIET])
        out = runs / "snl"
        code = main(["reduce", "snl", "--model", "pi_resnet18_nostem.c100", "--budget", "3000", "--init", str(base),
                     "--data", str(root), "--out", str(out), TINY, "data.batch_size=100", "data.eval_batch_size=100",
                     "stages.0.epochs=30", "stages.0.l1_weight=1.0e-3", "stages.0.optimizer.lr=0.1",
                     "stages.1.epochs=1", *QUIET])
        assert code == 0
        yield root, out


def test_reduce_snl_reaches_the_budget_and_counts_what_pi_cost_counts(snl_run):
    _, out = snl_run
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    search = [r for r in log if r["stage"] == "search"]
    assert search[-1]["snl_relus"] <= 3000 < search[0]["snl_relus"]   # stopped when the count met the budget
    assert len(search) < 30 and "WARNING" not in (out / "train.log").read_text()
    assert metrics["relus"] <= 3000
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    masks = {k: v for k, v in load_state_dict(out).items() if k.endswith(".mask")}
    assert len(masks) == 8 and all(v.dtype == torch.bool for v in masks.values())
    assert sum(int(v.sum()) for v in masks.values()) == metrics["relus"] == pi_cost(model).relus


def test_a_registered_budget_runs_under_its_snl_name_and_any_other_under_the_base_name(snl_run, tmp_path):
    """So that `hybrezoo export` publishes a `reduce snl` result as the zoo's SNL entry for that budget
    (and refuses one whose budget no entry has, rather than labelling it the base network)."""
    from hybrezoo.models import pi_senet

    assert snl.FAMILY.entry_for("pi_resnet18_nostem.c100", 15_000) == "snl_r18_15k.c100"
    assert snl.FAMILY.entry_for("pi_resnet18_nostem.tin", 500_000) == "snl_r18_500k.tin"
    assert snl.FAMILY.entry_for("pi_resnet18_nostem.c100", 3_000) is None
    assert snl.FAMILY.entry_for("pi_resnet18.c100", 15_000) is None              # SNL's base has no stem ReLU
    assert pi_senet.FAMILY.entry_for("pi_resnet18.c100", 50_000) == "senet_r18_50k.c100"
    root, out = snl_run
    assert load_recipe(out / "recipe.yaml")["model"]["name"] == "pi_resnet18_nostem.c100"   # budget 3000
    named = tmp_path / "snl15k"
    code = main(["reduce", "snl", "--model", "pi_resnet18_nostem.c100", "--budget", "15k",
                 "--init", str(out.parent / "base"), "--data", str(root), "--out", str(named), TINY,
                 "data.batch_size=100", "data.eval_batch_size=100", "stages.0.epochs=1", "stages.1.epochs=1",
                 "runtime.max_steps=1", *QUIET])
    assert code == 0
    assert load_recipe(named / "recipe.yaml")["model"]["name"] == "snl_r18_15k.c100"
    assert json.loads((named / "metrics.json").read_text())["model"] == "snl_r18_15k.c100"


def test_the_saved_checkpoint_reloads_with_the_same_masks_and_outputs(snl_run):
    root, out = snl_run
    from_folder = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    rebuilt = create_model("pi_resnet18_nostem.c100", base_width=4, depths=(1, 1, 1, 1))
    assert all(m.mask is None for m in relu_layers(rebuilt).values())     # a fresh build has every ReLU
    rebuilt.load_state_dict(load_state_dict(out / "model.safetensors"))
    rebuilt.eval()
    checkpoint = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["stage_start_model"]
    for name, relu in relu_layers(rebuilt).items():
        assert torch.equal(relu.mask, relu_layers(from_folder)[name].mask)
        assert torch.equal(relu.mask, checkpoint[f"{name}.mask"])    # what training ended with
    x = torch.randn(8, 3, 32, 32)
    assert torch.equal(rebuilt(x), from_folder(x))
    # and the run's own score is reproduced from the file alone
    assert main(["eval", str(out), "--data", str(root), "--json", "--device", "cpu"]) == 0


# -- the registered entries and their recipes -------------------------------------------------------------
SNL_ENTRIES = [e for e in entries() if e.method == "snl"]


def test_every_issue_budget_is_registered_for_both_data_sets_where_the_network_has_that_many_relus():
    wanted = {("r18", b) for b in (15, 25, 30, 40, 50, 70, 100, 150, 180, 200, 300, 500)} | \
             {("wrn22_8", b) for b in (120, 150, 180, 240, 300)}
    assert {(a.split("_", 1)[1].rsplit("_", 1)[0], int(a.rsplit("_", 1)[1][:-1])) for a in snl.ARCHS} == wanted
    # 500k is more than ResNet18's 491,520 ReLUs (no stem ReLU) on CIFAR-100: Tiny ImageNet only
    partial = {a: snl.FAMILY.tags(a) for a in snl.ARCHS if snl.FAMILY.tags(a) != ("c100", "tin")}
    assert partial == {"snl_r18_500k": ("tin",)}
    assert all(e.relu_budget == snl.BUDGETS[e.name] for e in SNL_ENTRIES)
    assert len(SNL_ENTRIES) == 2 * len(wanted) - 1 == 33
    assert {e.name for e in SNL_ENTRIES} == set(snl.BUDGETS)
    with pytest.raises(Exception, match="unknown model"):
        create_model("snl_r18_500k.c100")


@pytest.mark.parametrize("entry", SNL_ENTRIES, ids=lambda e: e.name)
def test_recipe_searches_for_the_registered_budget_from_the_right_base(entry):
    recipe = load_recipe(REPO / entry.recipe, ["model.init=null"])
    base = "pi_resnet18_nostem" if "_r18_" in entry.arch else "pi_wrn22_8_nofinal"
    assert recipe["model"]["name"] == entry.name
    assert [s["kind"] for s in recipe.stages] == ["snl_search", "train"]
    assert recipe.stages[0]["budget"] == snl.BUDGETS[entry.name]
    assert load_recipe(REPO / entry.recipe)["model"]["init"] == f"runs/baseline/{base}.{entry.tag}"
    assert recipe["distill"] == {"teacher": f"{base}.{entry.tag}", "checkpoint": f"runs/baseline/{base}.{entry.tag}",
                                 "temperature": 4.0, "weight": 1.0}
    with torch.device("meta"):  # shapes and names only: no weights to initialise
        built, reference = build_model(recipe), timm.create_model(f"{base}.{entry.tag}")
    assert built.pretrained_cfg["architecture"] == entry.arch
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert list(relu_layers(built)) == list(relu_layers(reference))


def test_model_info_and_transcribed_figures():
    info = resolve_name("snl_r18_50k.c100")
    assert (info.published_relus, info.published_top1) == (49_400, 73.75) and "transcribed" in info.published_source
    assert resolve_name("snl_wrn22_8_240k.c100").published_top1 is None   # network of that row is ambiguous
    assert isinstance(create_model("snl_wrn22_8_240k.tin").layer1[0].act1, PIReLU)


def test_an_interrupted_search_resumes_bit_identically(snl_run, tmp_path, monkeypatch):
    """The penalty weight and the lowest count live in the stage state: a resumed search continues exactly."""
    from hybrezoo.engine import trainer as trainer_module
    from safetensors.torch import load_file

    root, out = snl_run
    base = out.parent / "base"
    overrides = [TINY, *QUIET, "model.name=pi_resnet18_nostem.c100", f"model.init={base}",
                 f"distill.teacher=local-dir:{base}", "stages.0.budget=0.5", "stages.0.epochs=3",
                 "stages.0.l1_weight=1.0e-6", "stages.0.growth_from_epoch=0", "stages.1.epochs=1",
                 "data.batch_size=100", "data.eval_batch_size=100"]
    template = REPO / "training/snl/_base/snl.yaml"
    monkeypatch.setenv("HYBREZOO_CACHE", str(tmp_path / "cache"))
    whole = run_recipe(template, data=str(root), out=tmp_path / "whole", overrides=overrides)

    real = trainer_module.create_optimizer

    def interrupting(*args, **kwargs):  # stop in the search's third epoch (2 steps an epoch)
        optimizer, count = real(*args, **kwargs), [0]

        def before_step(opt, a, k):
            count[0] += 1
            if count[0] == 5:
                raise KeyboardInterrupt
        optimizer.register_step_pre_hook(before_step)
        return optimizer

    monkeypatch.setattr(trainer_module, "create_optimizer", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(template, data=str(root), out=tmp_path / "cut", overrides=overrides)
    monkeypatch.setattr(trainer_module, "create_optimizer", real)
    cut = run_recipe(template, data=str(root), out=tmp_path / "cut", overrides=overrides, resume=True)

    log = [[json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()] for d in (whole, cut)]
    assert [r["snl_l1_weight"] for r in log[0] if r["stage"] == "search"] == pytest.approx([1e-6, 1.1e-6, 1.21e-6])
    assert [r.get("snl_l1_weight") for r in log[0]] == [r.get("snl_l1_weight") for r in log[1]]
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cut / "metrics.json").read_text())["relus"] == 7_680      # forced to the 50% budget
