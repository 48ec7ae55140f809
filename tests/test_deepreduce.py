"""DeepReDuce as library code: stage criticality on the engine, candidates within the budget, the
recipe it writes, and the command's errors. Small networks and small data sets written by the tests."""
import json
from pathlib import Path

import pytest
import torch

import hybrezoo
from hybrezoo.cli import main
from hybrezoo.data.synthetic import write_fake_cifar100
from hybrezoo.engine import build_model, load_recipe, run_recipe, stage_section
from hybrezoo.errors import HybrezooError
from hybrezoo.methods.budget import BudgetError
from hybrezoo.methods.criticality import (Criticality, StageCriticality, base_config, criticality_networks,
                                          resolve_order, stage_criticality)
from hybrezoo.methods.deepreduce import choose_candidate, deepreduce, deepreduce_candidates, zoo_match
from hybrezoo.models import deepreduce as zoo_deepreduce
from hybrezoo.registry import entries

SMALL = {"base_width": 4}   # ResNet18 at 1/16 of its width: a CPU step takes milliseconds
QUICK = ["data.batch_size=30", "data.eval_batch_size=100", "data.holdout=0.2", "optimizer.lr=0.05",
         "runtime.progress=false"]
# The order of the stages in DeepReDuce's published ResNet18 networks (most critical first): CIFAR-100 culls
# stage 1 and then stage 4, Tiny ImageNet stage 1 and then stage 2.
PUBLISHED_ORDER = {"c100": (3, 2, 4, 1), "tin": (3, 4, 2, 1)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks gain nothing from a second thread, and lose much when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    write_fake_cifar100(path, train_per_class=3, test_per_class=1)
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HYBREZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def criticality(root, tmp_path_factory):
    """One criticality measurement of a small ResNet18 (3 epochs per stage network, seed 0)."""
    work = tmp_path_factory.mktemp("crit") / "a"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBREZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return stage_criticality("pi_resnet18.c100", str(root), epochs=3, work_dir=work, model_kwargs=SMALL,
                                 overrides=QUICK, metric="gain")


def test_criticality_is_measured_for_every_stage(criticality):
    work = Path(criticality.settings["work_dir"])
    assert [s.stage for s in criticality.stages] == [1, 2, 3, 4]
    assert sorted(criticality.order) == [1, 2, 3, 4] and criticality.cull_order == criticality.order[::-1]
    assert criticality.split == "holdout"  # accuracy on held-out training images, never on the test split
    for s in criticality.stages:
        metrics = json.loads((work / f"stage{s.stage}" / "metrics.json").read_text())
        assert metrics["selection"]["split"] == "holdout" and metrics["selection"]["top1"] == s.top1
        # only stage k's ReLUs: 4 ReLU layers of width 4 * 2^(k-1) at (32 / 2^(k-1))^2 positions
        assert s.relus == metrics["relus"] == 4 * 4 * 2 ** (s.stage - 1) * (32 // 2 ** (s.stage - 1)) ** 2
        assert s.gain == pytest.approx(s.top1 - criticality.linear_top1) and s.score == s.gain
    assert json.loads((work / "linear" / "metrics.json").read_text())["relus"] == 0
    assert Criticality.from_dict(json.loads((work / "criticality.json").read_text())).order == criticality.order
    assert "S1" in criticality.table() and "cull rank" in criticality.table()


def test_criticality_order_is_deterministic_under_a_fixed_seed(criticality, root, tmp_path):
    again = stage_criticality("pi_resnet18.c100", str(root), epochs=3, work_dir=tmp_path / "b", model_kwargs=SMALL,
                              overrides=QUICK, metric="gain")
    assert [(s.top1, s.relus) for s in again.stages] == [(s.top1, s.relus) for s in criticality.stages]
    assert again.linear_top1 == criticality.linear_top1 and again.order == criticality.order


def test_finished_criticality_runs_are_reused_and_other_settings_refused(criticality, root):
    work = criticality.settings["work_dir"]
    messages = []
    again = stage_criticality("pi_resnet18.c100", None, epochs=3, work_dir=work, model_kwargs=SMALL,
                              overrides=QUICK, metric="gain", log=messages.append)  # no data needed: nothing trains
    assert again.order == criticality.order and all("reusing" in m for m in messages) and len(messages) == 5
    with pytest.raises(HybrezooError, match="other settings .*epochs.*another --work-dir"):
        stage_criticality("pi_resnet18.c100", str(root), epochs=2, work_dir=work, model_kwargs=SMALL,
                          overrides=QUICK, metric="gain")


def test_criticality_metric_and_order_rules():
    stages = [StageCriticality(1, 262_144, 60.0, 10.0, 0.0), StageCriticality(2, 131_072, 65.0, 15.0, 0.0),
              StageCriticality(3, 65_536, 66.0, 16.0, 0.0), StageCriticality(4, 32_768, 61.0, 11.0, 0.0)]
    from hybrezoo.methods.criticality import score
    per_log = [score(s.gain, s.relus, "gain_per_log_relu") for s in stages]
    assert per_log[0] == pytest.approx(10.0 / 5.4185, rel=1e-4)  # log10(262,144) = 5.4185
    table = Criticality("m.c100", "gain", "holdout", 50.0,
                        [StageCriticality(s.stage, s.relus, s.top1, s.gain, s.gain) for s in stages])
    assert table.order == (3, 2, 4, 1) and table.cull_order == (1, 4, 2, 3)
    tie = Criticality("m.c100", "gain", "holdout", 50.0, [StageCriticality(k, 1, 50.0, 0.0, 0.0) for k in (1, 2, 3, 4)])
    assert tie.order == (1, 2, 3, 4)  # ties: the earlier stage counts as more critical, always the same way
    with pytest.raises(HybrezooError, match="unknown criticality metric"):
        score(1.0, 10, "accuracy")


def test_criticality_networks_keep_one_stage_each():
    nets = criticality_networks(base_config("pi_resnet18.c100"))
    for k in range(1, 5):
        assert nets[f"stage{k}"].stage_relus == tuple("all" if i == k else "cull" for i in range(1, 5))
        assert not nets[f"stage{k}"].stem_relu
        assert hybrezoo.pi_cost(hybrezoo.create_model("pi_resnet18.c100", **nets[f"stage{k}"].kwargs())).relus == \
            4 * 64 * 2 ** (k - 1) * (32 // 2 ** (k - 1)) ** 2
    assert hybrezoo.pi_cost(hybrezoo.create_model("pi_resnet18.c100", **nets["linear"].kwargs())).relus == 0


@pytest.mark.parametrize("budget", [7_000, 12_288, 30_000, 49_152, 100_000, 230_000, 400_000])
def test_every_chosen_configuration_meets_its_budget(budget):
    candidates = deepreduce_candidates("pi_resnet18.c100", (1, 4, 2, 3))
    chosen = choose_candidate(candidates, budget)
    assert chosen.relus <= budget
    assert chosen.relus == max(c.relus for c in candidates if c.relus <= budget)
    built = hybrezoo.create_model("pi_resnet18.c100", **chosen.config.kwargs())   # a regular PI-ResNet
    assert hybrezoo.pi_cost(built).relus == chosen.relus


def test_candidates_cover_culling_thinning_and_scaling():
    candidates = deepreduce_candidates("pi_resnet18.c100", (1, 4, 2, 3))
    assert len(candidates) == 4 * 2 * 2 * 2
    assert {c.culled for c in candidates} == {(), (1,), (1, 4), (1, 2, 4)}
    assert all(not c.config.stem_relu for c in candidates)   # DeepReDuce networks have no stem ReLU
    one = next(c for c in candidates if c.culled == (1,) and c.thin and c.alpha == 0.5 and c.rho == 0.5)
    assert one.relus == 14_336 and one.config.stem_stride == 2 and one.config.channel_mult == 0.5


DRD = [e for e in entries() if e.method == "deepreduce" and e.published_relus is not None
       and zoo_deepreduce.ARCHS[e.arch]["depths"] == (2, 2, 2, 2)]


@pytest.mark.parametrize("entry", DRD, ids=lambda e: e.name)
def test_the_choice_rule_reproduces_the_published_deepreduce_networks(entry):
    """The published DeepReDuce networks of depths (2, 2, 2, 2): the most ReLUs within their own count (ties: more
    MACs) is exactly that network, starting from the stem-less ResNet18 and the published culling order."""
    start = f"pi_resnet18_nostem.{entry.tag}"
    candidates = deepreduce_candidates(start, tuple(reversed(PUBLISHED_ORDER[entry.tag])))
    chosen = choose_candidate(candidates, entry.published_relus)
    assert chosen.relus == entry.published_relus
    assert chosen.config.same_network(base_config(entry.name))
    assert zoo_match(chosen.config, entry.tag) == entry.name


def test_the_written_recipe_rebuilds_the_chosen_network(tmp_path):
    result = deepreduce("pi_resnet18.c100", "100k", order="3,2,4,1", out=tmp_path / "r.yaml")
    assert result.zoo_name is None and result.chosen.label() == "cull S1+S4, thin"
    recipe = load_recipe(tmp_path / "r.yaml")
    model = build_model(recipe)
    assert hybrezoo.pi_cost(model).relus == result.chosen.relus == 98_304
    assert stage_section(recipe, 0)["distill"]["teacher"] == "pi_resnet18.c100"
    assert recipe["distill"]["checkpoint"] == "runs/baseline/pi_resnet18.c100"   # the teacher recipe's run folder
    assert recipe["epochs"] == 160 and "runtime" not in (tmp_path / "r.yaml").read_text()

    # a budget whose network the zoo already holds: the recipe names it
    result = deepreduce("pi_resnet18_nostem.c100", "115k", order="zoo", out=tmp_path / "z.yaml")
    assert result.zoo_name == "deepreduce_r18_cull1_thin.c100"
    recipe = load_recipe(tmp_path / "z.yaml")
    assert recipe["model"]["name"] == "deepreduce_r18_cull1_thin.c100" and recipe["model"]["kwargs"] == {}
    assert hybrezoo.pi_cost(build_model(recipe)).relus == 114_688


def test_deepreduce_end_to_end_with_measured_criticality(criticality, root, tmp_path):
    """Criticality (reused from the fixture's run folders), choice, recipe; then the recipe trains on the engine."""
    result = deepreduce("pi_resnet18.c100", "5k", data=str(root), epochs=3, work_dir=criticality.settings["work_dir"],
                        overrides=QUICK, metric="gain", model_kwargs=SMALL, out=tmp_path / "small.yaml")
    assert result.criticality.order == criticality.order
    assert result.cull_order == criticality.cull_order and result.chosen.relus <= 5_000
    assert set(result.chosen.culled) == set(criticality.cull_order[:len(result.chosen.culled)])
    recipe = load_recipe(tmp_path / "small.yaml")
    assert recipe["model"]["kwargs"]["base_width"] == 4
    run = run_recipe(tmp_path / "small.yaml", data=str(root), out=tmp_path / "run",
                     overrides=["distill.teacher=null", "runtime.max_steps=1", "data.batch_size=8",
                                "runtime.max_eval_batches=1", "runtime.progress=false"])
    assert json.loads((run / "metrics.json").read_text())["relus"] == result.chosen.relus


def test_orders_from_a_table_file_and_bad_orders(criticality):
    path = Path(criticality.settings["work_dir"]) / "criticality.json"
    table, order = resolve_order(str(path), "cifar100")
    assert order == criticality.order and table.model == "pi_resnet18.c100"
    assert resolve_order("zoo", "tin") == (None, (3, 4, 2, 1))
    for bad in ("3,2,4", "1,1,2,3", "a,b"):
        with pytest.raises(HybrezooError, match="stage"):
            resolve_order(bad, "cifar100")
    with pytest.raises(HybrezooError, match="not found"):
        resolve_order("missing/criticality.json", "cifar100")


def test_budget_errors_come_before_any_training(tmp_path):
    with pytest.raises(BudgetError, match="exceeds the model's 557,056 ReLUs"):
        deepreduce("pi_resnet18.c100", "600k", work_dir=tmp_path / "w")
    with pytest.raises(BudgetError, match="must be positive"):
        deepreduce("pi_resnet18.c100", 0, work_dir=tmp_path / "w")
    with pytest.raises(HybrezooError, match="no DeepReDuce configuration fits 1,000 ReLUs"):
        deepreduce("pi_resnet18.c100", "1k", work_dir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "pi_resnet18.c100", "--budget", "600k"], "exceeds the model's 557,056 ReLUs: choose a smaller budget"),
    (["--model", "pi_resnet18.c100", "--budget", "0"], "the ReLU budget must be positive"),
    (["--model", "pi_resnt18.c100", "--budget", "50k"], "unknown model 'pi_resnt18.c100'; closest registered names"),
    (["--model", "pi_resnet18", "--budget", "50k"], "no data set tag: write pi_resnet18.c100 or pi_resnet18.tin"),
    (["--model", "pi_wrn22_8.c100", "--budget", "50k"], "not a PI-ResNet"),
    (["--model", "pi_resnet18.c100", "--budget", "lots"], "cannot read the ReLU budget"),
    (["--model", "pi_resnet18.c100", "--budget", "50k", "--order", "3,2,4"], "must name stages 1, 2, 3 and 4"),
    (["--model", "pi_resnet18.c100", "--budget", "50k", "--data", "/no/such/folder"], "does not exist"),
    (["--model", "pi_resnet18.c100", "--budget", "50k", "--order", "zoo", "--alphas", "2"], "alpha must be in"),
    (["--model", "pi_resnet18.c100", "--budget", "50k", "--order", "zoo", "epochs"], "key=value"),
])
def test_cli_bad_input_gets_one_clear_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYBREZOO_DATA", raising=False)
    assert main(["reduce", "deepreduce", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybrezoo: error: ") and message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written, nothing trained


def test_cli_prints_the_table_and_writes_the_recipe(criticality, capsys, tmp_path):
    path = Path(criticality.settings["work_dir"]) / "criticality.json"
    out = tmp_path / "chosen.yaml"
    assert main(["reduce", "deepreduce", "--model", "pi_resnet18.c100", "--budget", "50k", "--order", str(path),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ReLU criticality of pi_resnet18.c100" in printed and "chosen:" in printed and str(out) in printed
    recipe = load_recipe(out)
    relus = hybrezoo.pi_cost(build_model(recipe)).relus
    assert relus <= 50_000 and f"{relus:,} ReLUs" in printed

    assert main(["reduce", "deepreduce", "--model", "pi_resnet18.c100", "--budget", "0.1", "--order", "zoo",
                 "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["budget"] == 55_706 and result["chosen"]["relus"] <= 55_706 and result["recipe"] == str(out)


def test_the_default_teacher_keeps_every_relu():
    """DeepReDuce distils from the all-ReLU network, also when reducing a network that is reduced already."""
    from hybrezoo.methods.deepreduce import deepreduce

    teachers = {m: deepreduce(m, "0.5", order="zoo").recipe["distill"]["teacher"]
                for m in ("pi_resnet18.c100", "pi_resnet18_nostem.c100", "deepreduce_r18_cull1_thin.c100",
                          "hybrenet_m16_553.tin", "hybrenet_m16_252_cull1_thin.c100")}
    assert teachers == {"pi_resnet18.c100": "pi_resnet18.c100", "pi_resnet18_nostem.c100": "pi_resnet18.c100",
                        "deepreduce_r18_cull1_thin.c100": "pi_resnet18.c100",
                        "hybrenet_m16_553.tin": "hybrenet_m16_553.tin",
                        "hybrenet_m16_252_cull1_thin.c100": "pi_resnet18.c100"}
    assert deepreduce("deepreduce_r18_cull1_thin.c100", "0.5", order="zoo",
                      teacher="pi_resnet18_nostem.c100").recipe["distill"]["teacher"] == "pi_resnet18_nostem.c100"
