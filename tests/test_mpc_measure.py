"""``hybrezoo measure`` and the SPU runner. Tests that run SPU itself skip when it is not installed (the
``mpc`` extra lives in its own environment, docs/mpc.md); the one-line refusals run everywhere."""
from __future__ import annotations

import builtins
import importlib.util
import json

import numpy as np
import pytest

from hybrezoo.cli import main
from hybrezoo.errors import HybrezooError
from hybrezoo.mpc import MissingExtraError

HAVE_SPU = importlib.util.find_spec("spu") is not None

needs_spu = pytest.mark.skipif(not HAVE_SPU, reason="SecretFlow SPU is not installed (pip install -e \".[mpc]\", "
                                                    "in its own environment: it needs numpy < 2)")
SMALL = "deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100"   # 7,168 ReLUs, the zoo's smallest


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_missing_spu_is_one_line(monkeypatch):
    real_import = builtins.__import__

    def no_spu(name, *args, **kwargs):
        if name == "spu" or name.startswith("spu."):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_spu)
    from hybrezoo.mpc.runner import require_spu

    with pytest.raises(MissingExtraError) as err:
        require_spu()
    assert '.[mpc]' in str(err.value) and "\n" not in str(err.value)


def test_cli_refuses_circa_in_one_line(capsys):
    assert main(["measure", "circa_deepreduce_r18_cull1_thin.c100"]) == 2
    line = _one_line(capsys)
    assert "Circa's protocol" in line and "not what SPU runs" in line


def test_cli_refuses_unknown_protocol(capsys):
    assert main(["measure", SMALL, "--protocol", "aby3"]) == 2
    assert "cheetah, semi2k" in _one_line(capsys)


def test_cli_refuses_zero_images(capsys):
    assert main(["measure", SMALL, "--images", "0"]) == 2
    assert "--images" in _one_line(capsys)


def test_too_big_for_memory_is_refused_before_starting(monkeypatch):
    import timm

    from hybrezoo.mpc import measure as measure_module
    from hybrezoo.mpc import runner

    monkeypatch.setattr(runner, "require_spu", lambda: None)
    monkeypatch.setattr(measure_module, "require_spu", lambda: None)
    monkeypatch.setattr(measure_module, "available_memory_bytes", lambda: 2**30)
    started = []
    monkeypatch.setattr(measure_module, "SPUProgram", lambda *a, **k: started.append(1))
    with pytest.raises(HybrezooError) as err:
        measure_module.measure(timm.create_model("pi_resnet18.c100"), name="pi_resnet18.c100")
    message = str(err.value)
    assert "\n" not in message and "GiB" in message and "1.0 GiB available" in message and "--force" in message
    assert not started


def test_memory_estimate_grows_with_the_largest_layer():
    from hybrezoo.cost import build_for_counting, count_model
    from hybrezoo.cost.cheetah import peak_memory_bytes

    small = peak_memory_bytes(count_model(build_for_counting(SMALL), (3, 32, 32)))
    big = peak_memory_bytes(count_model(build_for_counting("pi_resnet18.c100"), (3, 32, 32)))
    assert 1e9 < small < big


@needs_spu
@pytest.mark.parametrize("protocol", ["cheetah", "semi2k"])
def test_micro_network_runs_privately(protocol):
    from hybrezoo.mpc.calibrate import micro_network
    from hybrezoo.mpc.measure import measure

    model, _ = micro_network("relu_4k")
    result = measure(model, name="micro", protocol=protocol, images=2, check_memory=False)
    assert result.images == 2 and result.top1_agreement == 1.0 and result.max_abs_error < 1e-2
    assert result.upload_bytes > 0 and result.download_bytes > 0 and result.messages > 0
    assert result.peak_memory_bytes > 0 and result.wall_s > 0
    assert result.relus == 4096 and len(result.per_image) == 2
    assert result.estimate["local_s"] > 0


@needs_spu
def test_two_processes_over_loopback_match_the_simulator():
    from hybrezoo.mpc import convert
    from hybrezoo.mpc.calibrate import micro_network
    from hybrezoo.mpc.runner import SPUProgram

    model, size = micro_network("relu_4k")
    program = SPUProgram(convert(model), "semi2k")
    image = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    sim = program.run(image)
    two = program.run_two_process([image])[0]
    np.testing.assert_allclose(two.output, sim.output, atol=1e-3)
    assert two.upload_bytes > 0 and two.download_bytes > 0 and len(two.party_peak_memory_bytes) == 2
    # the same protocol moves about the same traffic either way
    assert abs(two.upload_bytes + two.download_bytes - sim.upload_bytes - sim.download_bytes) \
        < 0.05 * (sim.upload_bytes + sim.download_bytes)


def test_party_refuses_hosts_off_loopback(tmp_path):
    import pickle

    from hybrezoo.mpc import _party

    job = dict(rank=0, hosts=["10.0.0.1:9000", "127.0.0.1:9001"], config=b"", executable=b"", runs=[],
               log_path=str(tmp_path / "log"), result_path=str(tmp_path / "out"))
    path = tmp_path / "job.pkl"
    path.write_bytes(pickle.dumps(job))
    with pytest.raises(SystemExit) as err:
        _party.main(str(path))
    assert "127.0.0.1 only" in str(err.value)


@needs_spu
def test_cli_json_on_a_zoo_network(capsys):
    assert main(["measure", SMALL, "--json", "--protocol", "semi2k"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == SMALL and out["protocol"] == "semi2k" and out["relus"] == 7168
    assert out["top1_agreement"] == 1.0 and out["upload_bytes"] > 0 and out["estimate"]["local_s"] > 0
    assert out["weights"].startswith("random weights")
