"""training/gpu_window.sh, the prepared GPU window, run end to end on the CPU (SMOKE=1: fake data sets,
2-step runs): the data bundle is split to fit beside the working tree, staged, joined and checked; a
teacher and its student train; the finished runs come back as float16 hub folders in parts within the
device tool's limits (8 files, 16 MiB each, 64 MiB a call); ``receive`` joins them, checks the sha256
and unpacks them. Everything runs in temporary folders (CARRIED, WINDOW, DATA, OUT)."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "gpu_window.sh"
MiB = 1024 * 1024


def window(tmp: Path, *args: str, out: str = "", **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, SMOKE="1", PYTHON=os.environ.get("PYTHON", "python3"), CARRIED=str(tmp / "carried"),
                WINDOW=str(tmp / "machine"), DATA=str(tmp / "data"), SHARED_DATA=str(tmp / "shared"),
                HYBREZOO_CACHE=str(tmp / "cache"), PUBLISH="0", **env)
    if out:
        full["OUT"] = str(tmp / out)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=900)


def tree_bytes() -> int:
    """What a call sends besides ``carry``: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    return sum((REPO / name).stat().st_size for name in listed if name and (REPO / name).is_file())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    import sys

    tmp = tmp_path_factory.mktemp("window")
    os.environ.setdefault("PYTHON", sys.executable)
    data = tmp / "shared" / "cifar-100" / "train"
    data.mkdir(parents=True)
    for i in range(6):   # 6 x 4 MiB of incompressible "sheets": the bundle takes two parts of a small window
        (data / f"c{i:03d}_0.webp").write_bytes(os.urandom(4 * MiB))
    # a window whose calls carry 17 MiB beside the tree: the 24 MiB bundle travels in two parts
    prepared = window(tmp, "prepare", "c100", TRAVEL_LIMIT=str(tree_bytes() + 17 * MiB))
    assert prepared.returncode == 0, prepared.stderr
    staged = window(tmp, "stage", out="out1")
    assert staged.returncode == 0, staged.stderr
    trained = window(tmp, "train", out="out2", SET="training/baseline/pi_resnet18.c100.yaml "
                     "training/deepreduce/deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100.yaml")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    fetched = window(tmp, "fetch", out="out3")
    assert fetched.returncode == 0, fetched.stderr
    return tmp, prepared, trained, fetched


def test_the_data_travels_in_parts_that_fit_beside_the_tree(finished):
    tmp, prepared, _, _ = finished
    folders = sorted((tmp / "carried").glob("window-*"))
    assert [sorted(p.name for p in f.glob("part-*")) for f in folders] == [["part-00"], ["part-01"]]
    assert "2 part(s) of at most 16 MiB" in prepared.stdout
    for folder in folders:
        assert tree_bytes() + sum(f.stat().st_size for f in folder.iterdir()) <= tree_bytes() + 17 * MiB
    assert (tmp / "machine" / "src" / "COMMIT").read_text().strip() == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


def test_what_comes_back_fits_the_limits_and_is_float16(finished):
    tmp, _, trained, fetched = finished
    assert "hybrezoo train exited 0" in trained.stdout
    for out in ("out2", "out3"):
        files = list((tmp / out).iterdir())
        assert len(files) <= 8 and all(f.stat().st_size <= 16 * MiB for f in files)
        assert sum(f.stat().st_size for f in files) <= 64 * MiB
    summary = json.loads((tmp / "out2" / "summary.json").read_text())
    assert summary["exit_code"] == 0 and [r["status"] for r in summary["runs"]] == ["done", "done"]
    received = window(tmp, "receive", str(tmp / "out2"), str(tmp / "out3"))
    assert received.returncode == 0, received.stderr
    hub = tmp / "carried" / "received" / "hub"
    names = sorted(str(p.relative_to(hub)) for p in hub.glob("*/*"))
    assert names == ["baseline/pi_resnet18.c100", "deepreduce/deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100"]
    for folder in hub.glob("*/*"):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} <= {torch.float16, torch.int64, torch.bool}
        assert (folder / "model.safetensors.sha256").is_file() and (folder / "README.md").is_file()
    # the student names its teacher run, which came back beside it
    student = json.loads((hub / "deepreduce" / "deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100" /
                          "metrics.json").read_text())
    assert student["teacher"]["model"] == "pi_resnet18.c100"


def test_receive_refuses_a_missing_or_damaged_part(finished, tmp_path):
    tmp, _, _, _ = finished
    missing = window(tmp, "receive", str(tmp / "out3"))
    assert missing.returncode != 0
    assert "missing" in missing.stderr or "no bundle.sha256" in missing.stderr
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in (tmp / "out2").iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    part = sorted(damaged.glob("bundle.tar.part-*"))[0]
    data = bytearray(part.read_bytes())
    data[1000] ^= 0xFF
    part.write_bytes(bytes(data))
    bad = window(tmp, "receive", str(damaged), str(tmp / "out3"))
    assert bad.returncode != 0 and "does not match its sha256" in bad.stderr
    assert not list((tmp / "carried").glob("receive.*"))   # its work folder is removed
