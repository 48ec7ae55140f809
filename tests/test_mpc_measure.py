"""``hybrezoo measure`` and the SPU runner. Tests that run SPU itself skip when it is not installed (the
``mpc`` extra lives in its own environment, docs/mpc.md); the one-line refusals run everywhere."""
from __future__ import annotations

import builtins
import importlib.util
import json
import os

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
def test_two_processes_over_loopback_match_the_simulator(tmp_path, monkeypatch):
    import tempfile

    from hybrezoo.mpc import convert
    from hybrezoo.mpc.calibrate import micro_network
    from hybrezoo.mpc.runner import SPUProgram

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, size = micro_network("relu_4k")
    program = SPUProgram(convert(model), "semi2k")
    image = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    sim = program.run(image)
    two = program.run_two_process([image, image])[1]   # two images: the weights' shares travel once
    # the two-process job folder is gone when the run ends, SPU's log folder when the program closes
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(program.log_dir)]
    assert not list(tmp_path.glob("*/hybrezoo-2pc-*"))
    program.close()
    assert not list(tmp_path.iterdir())
    np.testing.assert_allclose(two.output, sim.output, atol=1e-3)
    assert two.upload_bytes > 0 and two.download_bytes > 0 and len(two.party_peak_memory_bytes) == 2
    # the same protocol moves about the same traffic either way
    assert abs(two.upload_bytes + two.download_bytes - sim.upload_bytes - sim.download_bytes) \
        < 0.05 * (sim.upload_bytes + sim.download_bytes)


def test_party_refuses_hosts_off_loopback(tmp_path):
    from hybrezoo.mpc import _party, _wire

    path = tmp_path / "job.json"
    _wire.write_job(str(path), rank=0, hosts=["10.0.0.1:9000", "127.0.0.1:9001"], config=b"", executable=b"",
                    runs=[], log_path=str(tmp_path / "log"), result_path=str(tmp_path / "out"))
    with pytest.raises(SystemExit) as err:
        _party.main(str(path))
    assert "127.0.0.1 only" in str(err.value)


class _Payload:
    """A pickle that, once unpickled, would create a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_party_does_not_unpickle_its_job(tmp_path):
    import pickle

    from hybrezoo.mpc import _party

    marker = tmp_path / "code_ran"
    path = tmp_path / "job.json"
    path.write_bytes(pickle.dumps(dict(rank=0, hosts=["127.0.0.1:1", "127.0.0.1:2"], payload=_Payload(marker))))
    with pytest.raises(SystemExit) as err:
        _party.main(str(path))
    assert "not a job file" in str(err.value) and not marker.exists()


def test_shares_survive_the_job_file(tmp_path):
    """A share written by the runner is rebuilt bit for bit by the party (no SPU needed: a stand-in)."""
    import types

    from hybrezoo.mpc import _wire

    class Share:
        def __init__(self, meta=b"", chunks=()):
            self.meta, self.share_chunks = meta, list(chunks)

    FakeSpu = types.SimpleNamespace(Share=Share)

    weights, x0, x1 = Share(b"\x00meta", [b"\x01\x02", b""]), Share(b"m", [b"a"]), Share(b"m", [b"b"])
    path = str(tmp_path / "job.json")
    _wire.write_job(path, rank=1, hosts=["127.0.0.1:1", "127.0.0.1:2"], config=b"\xffc", executable=b"e",
                    runs=[{"w0": weights, "x": x0}, {"w0": weights, "x": x1}], log_path="l", result_path="r")
    job = _wire.read_job(path)
    assert len(job["shares"]) == 3 and _wire.decode_bytes(job["config"]) == b"\xffc"
    runs = _wire.job_runs(FakeSpu, job)
    assert runs[0]["w0"] is runs[1]["w0"]
    assert [(r["x"].meta, r["x"].share_chunks) for r in runs] == [(b"m", [b"a"]), (b"m", [b"b"])]
    assert (runs[0]["w0"].meta, runs[0]["w0"].share_chunks) == (b"\x00meta", [b"\x01\x02", b""])
    result = str(tmp_path / "out.json")
    _wire.write_results(result, [dict(wall_s=1.5, cpu_s=2, outputs=[x1], peak_rss=7,
                                      link=[dict(sent_bytes=1, recv_bytes=2, sent_messages=3, recv_messages=4)])])
    back = _wire.read_results(FakeSpu, result)[0]
    assert back["outputs"][0].share_chunks == [b"b"] and back["link"][0]["recv_messages"] == 4


@needs_spu
def test_failed_run_removes_or_keeps_its_logs(tmp_path, monkeypatch):
    import shutil
    import sys
    import tempfile
    import time

    from hybrezoo.mpc.calibrate import micro_network
    from hybrezoo.mpc.measure import measure

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    # the client fails at once; the server, which would wait a minute to connect to it, is stopped
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\ncase "$2" in *party1*) echo "client down"; exit 3;; esac\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    model, _ = micro_network("relu_4k")
    start = time.monotonic()
    with pytest.raises(HybrezooError) as err:
        measure(model, name="micro", protocol="semi2k", two_process=True, check_memory=False)
    assert "party 1 of the two-process run failed (exit 3): client down" in str(err.value)
    assert "--keep-logs DIR" in str(err.value) and time.monotonic() - start < 30
    assert not list((tmp_path / "tmp").iterdir())
    monkeypatch.setattr(sys, "executable", shutil.which("false"))   # both parties fail at once
    logs = tmp_path / "logs"
    with pytest.raises(HybrezooError) as err:
        measure(model, name="micro", protocol="semi2k", two_process=True, check_memory=False, keep_logs=str(logs))
    (work,) = logs.glob("hybrezoo-2pc-*")
    assert f"SPU's log: {work / 'party0.log'}" in str(err.value) and "\n" not in str(err.value)
    assert (logs / "spu.log").is_file() and not list(work.glob("*.json*"))   # job files (shares) are removed
    assert not list((tmp_path / "tmp").iterdir())


@needs_spu
def test_cli_json_on_a_zoo_network(capsys, tmp_path):
    assert main(["measure", SMALL, "--json", "--protocol", "semi2k", "--keep-logs", str(tmp_path / "logs")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["logs"] == str(tmp_path / "logs") and "Link details" in (tmp_path / "logs" / "spu.log").read_text()
    assert out["model"] == SMALL and out["protocol"] == "semi2k" and out["relus"] == 7168
    assert out["top1_agreement"] == 1.0 and out["upload_bytes"] > 0 and out["estimate"]["local_s"] > 0
    assert out["weights"].startswith("random weights")
