"""``hybrezoo cost`` and ``hybrezoo zoo``."""
import dataclasses
import json
import subprocess
import sys

import pytest

from hybrezoo import registry
from hybrezoo.cli import main
from hybrezoo.cost.plot import pareto_front
from hybrezoo.cost.zoo import zoo_rows


def test_cost_prints_summary_and_layer_table(capsys):
    assert main(["cost", "pi_resnet18.c100"]) == 0
    out = capsys.readouterr().out
    assert "557.06K in 17 layers" in out
    assert "layer4.1.act2" in out and "HE s (1 thr)" in out and "assumptions:" in out


def test_cost_json_with_options(capsys):
    assert main(["cost", "deepreduce_r18_cull1.tin", "--protocol", "circa", "--network", "wan", "--threads", "4",
                 "--bandwidth", "100,500", "--rtt", "10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["relus"] == 917_504 and d["protocol"] == "circa" and d["threads"] == 4
    assert d["input_size"] == [3, 64, 64] and "100 Mbit/s up, 500 Mbit/s down, RTT 10 ms" in d["network"]


def test_cost_input_size_option(capsys):
    assert main(["cost", "pi_resnet18.c100", "--input-size", "3,64,64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["relus"] == 4 * 557_056


@pytest.mark.parametrize("args,message", [
    (["cost", "pi_resnet18.c100", "--protocol", "gazelle"], "unknown protocol 'gazelle'"),
    (["cost", "pi_resnet18.c100", "--network", "5g"], "unknown network '5g'"),
    (["cost", "pi_resnet18.c100", "--bandwidth", "-5"], "bandwidth must be positive"),
    (["cost", "pi_resnet18.c100", "--input-size", "1,32,32"], "rejected an input of shape (1, 32, 32)"),
    (["cost", "pi_resnt18"], "closest registered names: pi_resnet18"),
    (["zoo", "--protocol", "gazelle"], "unknown protocol"),
])
def test_bad_input_is_one_line(args, message, capsys):
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybrezoo: error: ") and message in lines[0], lines


def test_bad_input_from_the_shell_has_no_traceback():
    out = subprocess.run([sys.executable, "-m", "hybrezoo", "cost", "pi_resnet18.c100", "--rtt", "-3"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "hybrezoo: error: --rtt must be a non-negative number of milliseconds, got -3.0"]


def test_zoo_table_json_and_plot(capsys, tmp_path):
    plot = tmp_path / "zoo.svg"
    assert main(["zoo", "--dataset", "cifar100", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    names = registry.list_models(dataset="cifar100")
    assert all(name in out for name in names) and ".tin" not in out
    assert "LAN s" in out and "WAN s" in out and "ReLUs vs MACs" in out
    assert plot.read_text().lstrip().startswith("<?xml")
    assert main(["zoo", "--dataset", "tinyimagenet", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(registry.list_models(dataset="tinyimagenet"))
    r18 = next(r for r in rows if r["name"] == "pi_resnet18.tin")
    assert r18["relus"] == 2_228_224 and r18["wan_s"] > r18["lan_s"] > r18["lan_online_s"] > 0


def test_zoo_shows_measured_top1_and_plots_accuracy(monkeypatch, tmp_path, capsys):
    entry = registry.resolve_name("pi_resnet18.c100")
    monkeypatch.setitem(registry._ENTRIES, entry.name, dataclasses.replace(entry, measured_top1=78.25))
    rows = zoo_rows("cifar100")
    assert next(r for r in rows if r.name == entry.name).top1 == 78.25
    assert all(r.top1 is None for r in rows if r.name != entry.name)
    assert main(["zoo", "--dataset", "cifar100", "--plot", str(tmp_path / "acc.png")]) == 0
    out = capsys.readouterr().out
    assert "78.25" in out and "top-1 vs latency, and ReLUs vs MACs" in out
    assert (tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG"


def test_zoo_prices_the_budget_of_entries_whose_masks_are_unpublished(monkeypatch, capsys):
    """SNL/SENet rows without weights price the recipe's budget (marked <=), not the unmasked base."""
    rows = {r.name: r for r in zoo_rows("cifar100")}
    snl, base = rows["snl_r18_15k.c100"], rows["pi_resnet18_nostem.c100"]
    assert snl.relus_bound and snl.relus == 15_000 and snl.architecture_relus == base.relus == 491_520
    assert snl.macs == base.macs and snl.lan_s < base.lan_s
    assert not base.relus_bound and not rows["deepreduce_r18_cull1.c100"].relus_bound
    circa = rows["circa_snl_r18_50k.c100"]
    assert circa.relus_bound and circa.relus == circa.stochastic_relus == 50_000
    assert main(["zoo", "--dataset", "cifar100"]) == 0
    out = capsys.readouterr().out
    assert "<=15.00K" in out and "an upper bound" in out and "paper states" not in out
    # once published, the row counts the masks of the weights (tests/test_hub.py, the published masked row)


def test_at_relu_budget_scales_layers_to_the_exact_total():
    from hybrezoo.cost.api import build_for_counting, count_for_cost
    from hybrezoo.cost.zoo import at_relu_budget

    counts = count_for_cost(build_for_counting("pi_resnet18.c100"), None)
    scaled = at_relu_budget(counts, 12_345)
    assert scaled.relus == sum(layer.relus for layer in scaled.relu_layers) == 12_345
    assert all(0 <= new.relus <= old.relus for new, old in zip(scaled.relu_layers, counts.relu_layers))
    assert scaled.macs == counts.macs and scaled.linear_ops == counts.linear_ops
    with pytest.raises(ValueError, match="does not fit"):
        at_relu_budget(counts, counts.relus + 1)


def test_zoo_plot_rejects_unknown_formats(tmp_path, capsys):
    assert main(["zoo", "--dataset", "c100", "--plot", str(tmp_path / "zoo.txt")]) == 2
    assert "use a file name ending in .png, .svg, .pdf" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_pareto_front():
    points = [(1, 60), (2, 70), (3, 65), (4, 75), (5, 75)]
    assert pareto_front(points, maximize_y=True) == [0, 1, 3]
    assert pareto_front([(1, 5), (2, 3), (3, 4), (4, 1)], maximize_y=False) == [0, 1, 3]
