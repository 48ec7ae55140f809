"""``pi_cost(..., protocol="cheetah")``: the fitted SPU Cheetah model, its constants against the stored
measurements (hybrezoo/mpc/calibration.json) and its validation on zoo networks. No SPU, no JAX."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import hybrezoo
from hybrezoo.cost.cheetah import FEATURES, FIT, LOCAL, local_seconds
from hybrezoo.errors import HybrezooError
from hybrezoo.mpc.calibrate import fit

DATA = Path(hybrezoo.__file__).parent / "mpc" / "calibration.json"


@pytest.fixture(scope="module")
def points():
    return json.loads(DATA.read_text())["points"]


def test_cheetah_is_a_pi_cost_protocol():
    delphi = hybrezoo.pi_cost("deepreduce_r18_cull1_thin.c100")
    cheetah = hybrezoo.pi_cost("deepreduce_r18_cull1_thin.c100", protocol="cheetah")
    assert cheetah.protocol == "cheetah" and cheetah.relus == delphi.relus == 114_688 and cheetah.macs == delphi.macs
    assert cheetah.latency_s > cheetah.offline_s > 0 and cheetah.online_upload_bytes > 0
    local = hybrezoo.pi_cost("deepreduce_r18_cull1_thin.c100", protocol="cheetah", network=LOCAL)
    assert math.isclose(local.latency_s, local_seconds(local))          # no network: computation only
    wan = hybrezoo.pi_cost("deepreduce_r18_cull1_thin.c100", protocol="cheetah", network="wan")
    assert wan.latency_s > cheetah.latency_s > local.latency_s          # traffic and rounds cost on a network
    assert "cheetah" in str(cheetah) and "SPU" in str(cheetah)


def test_more_relus_and_macs_cost_more():
    small = hybrezoo.pi_cost("deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100", protocol="cheetah", network=LOCAL)
    big = hybrezoo.pi_cost("pi_resnet18.c100", protocol="cheetah", network=LOCAL)
    assert big.latency_s > small.latency_s and big.online_download_bytes > small.online_download_bytes


def test_unknown_protocol_lists_cheetah():
    with pytest.raises(HybrezooError) as err:
        hybrezoo.pi_cost("pi_resnet18.c100", protocol="aby3")
    assert "cheetah" in str(err.value) and "\n" not in str(err.value)


def test_constants_are_the_fit_of_the_stored_measurements(points):
    result = fit(points)
    for target, coef in (("wall_s", FIT.seconds), ("upload_bytes", FIT.upload), ("download_bytes", FIT.download),
                         ("messages", FIT.messages)):
        for name in FEATURES:
            assert math.isclose(coef[name], result[target][name], rel_tol=1e-4, abs_tol=1e-12), (target, name)
    memory = result["memory"]
    assert math.isclose(FIT.memory_base, memory["base"], rel_tol=1e-4)
    assert math.isclose(FIT.memory_per_relu, memory["largest_relu_layer"], rel_tol=1e-4, abs_tol=1e-9)
    assert math.isclose(FIT.memory_per_linear_output, memory["largest_linear_output"], rel_tol=1e-4, abs_tol=1e-9)
    assert math.isclose(FIT.memory_per_param, memory["params"], rel_tol=1e-4, abs_tol=1e-9)


def test_validated_on_five_zoo_networks_of_different_sizes(points):
    zoo = {p["name"]: p for p in points if p["kind"] == "zoo" and p["protocol"] == "cheetah"}
    assert len(zoo) >= 5
    relus = sorted(p["features"]["relus"] for p in zoo.values())
    assert relus[-1] >= 4 * relus[0]                       # a spread of sizes
    assert all(p["top1_agreement"] == 1.0 for p in zoo.values())
    loo = fit(points)["leave_one_out"]
    # each network predicted by a fit that never saw it (docs/cost-model.md §10): time, upload and download
    # all within 20% for at least 5 networks (the bar; 11 of the 12 measured), none off by 30%
    within = [name for name, e in loo.items() if all(abs(v) < 0.20 for v in e.values())]
    assert len(within) >= 5, loo
    spread = sorted(zoo[name]["features"]["relus"] for name in within)
    assert spread[-1] >= 20 * spread[0]                    # small and large networks among them
    assert max(abs(v) for e in loo.values() for v in e.values()) < 0.30, loo


def test_measured_figures_are_the_ones_the_docs_cite(points):
    doc = (Path(hybrezoo.__file__).parent.parent / "docs" / "cost-model.md").read_text()
    for p in points:
        if p["kind"] == "zoo" and p["protocol"] == "cheetah":
            assert p["name"] in doc and f"{p['wall_s']:.1f}" in doc, p["name"]
