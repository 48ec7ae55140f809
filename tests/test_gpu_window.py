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
                HYBREZOO_CACHE=str(tmp / "cache"), PUBLISH="0")
    full.update(env)
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
    for folder in folders:   # each call carries at most the 17 MiB the window left beside the tree
        assert sum(f.stat().st_size for f in folder.iterdir()) <= 17 * MiB
    assert (tmp / "machine" / "src" / "COMMIT").read_text().strip() == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


def received_folders(tmp: Path) -> dict:
    return {str(p.relative_to(b)): p for b in (tmp / "carried" / "received").glob("*") for p in b.glob("*/*")}


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
    folders = received_folders(tmp)
    assert sorted(folders) == ["baseline/pi_resnet18.c100", "deepreduce/deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100"]
    for folder in folders.values():
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} <= {torch.float16, torch.int64, torch.bool}
        assert (folder / "model.safetensors.sha256").is_file() and (folder / "README.md").is_file()
    # the student names its teacher run, which came back beside it
    student = json.loads((folders["deepreduce/deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100"] /
                          "metrics.json").read_text())
    assert student["teacher"]["model"] == "pi_resnet18.c100"
    again = window(tmp, "receive", str(tmp / "out2"), str(tmp / "out3"))
    assert again.returncode == 0 and "already received" in again.stdout   # never published twice


def test_receive_refuses_a_missing_or_damaged_part(finished, tmp_path):
    tmp, _, _, _ = finished
    only_first = tmp_path / "first"
    only_first.mkdir()
    for f in (tmp / "out2").iterdir():
        if f.name != "bundle-1.tar.part-01":
            (only_first / f.name).write_bytes(f.read_bytes())
    missing = window(tmp, "receive", str(only_first), CARRIED=str(tmp_path / "c1"))
    assert missing.returncode != 0 and "bundle-1.tar: 1 of 2 part(s) missing" in missing.stderr
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in (tmp / "out2").iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    part = damaged / "bundle-1.tar.part-00"
    data = bytearray(part.read_bytes())
    data[1000] ^= 0xFF
    part.write_bytes(bytes(data))
    bad = window(tmp, "receive", str(damaged), CARRIED=str(tmp_path / "c2"))
    assert bad.returncode != 0 and "does not match its sha256" in bad.stderr
    assert not list((tmp_path / "c2").glob("receive.*")) and not (tmp_path / "c2" / "received").exists()


def test_a_later_window_trains_students_alone_and_a_second_train_finishes_what_the_budget_left(finished, tmp_path):
    """The teacher published earlier travels with the data (TEACHER_FOLDER); SET names only students; a
    budget that ends before the run leaves it to do (exit 75, nothing to bring back); a second `train` in
    the same window, with nothing carried, trains it, and only the new run comes back, in a bundle of its
    own. (A run cut in mid-epoch and resumed exactly: tests/test_train_sets.py.)"""
    tmp, _, _, _ = finished
    teacher = tmp / "machine" / "hub" / "baseline" / "pi_resnet18.c100"   # exported by the first window
    env = dict(CARRIED=str(tmp_path / "carried"), WINDOW=str(tmp_path / "machine"))
    prepared = window(tmp, "prepare", "c100", str(teacher), **env)
    assert prepared.returncode == 0, prepared.stderr
    student = "training/deepreduce/deepreduce_r18_cull1_thin_ch05_rho05.c100.yaml"
    too_late = window(tmp, "train", out="t1", SET=student, TRAIN_UNTIL="1", **env)
    assert too_late.returncode == 1 and "no time left to train" in too_late.stderr
    cut = window(tmp, "train", out="t2", SET=student, TRAIN_BUDGET="0.001", **env)   # over before it starts
    assert cut.returncode == 75, cut.stdout[-2000:] + cut.stderr[-2000:]
    assert "exited 75" in cut.stdout and "no newly finished run" in cut.stdout
    assert not list((tmp / "t2").glob("bundle-*"))
    (tmp_path / "carried" / "window-1").rename(tmp_path / "away")   # nothing is carried the second time
    done = window(tmp, "train", out="t3", SET=student, **env)
    assert done.returncode == 0 and "exited 0" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp / "t3" / "bundles.txt").read_text().split()[0] == "bundle-1.tar"
    got = window(tmp, "receive", str(tmp / "t3"), CARRIED=str(tmp_path / "here"))
    assert got.returncode == 0, got.stderr
    names = sorted(str(p.relative_to(b)) for b in (tmp_path / "here" / "received").glob("*") for p in b.glob("*/*"))
    assert names == ["deepreduce/deepreduce_r18_cull1_thin_ch05_rho05.c100"]   # the teacher did not come back
    metrics = json.loads(next((tmp_path / "here" / "received").glob("*/deepreduce/*/metrics.json")).read_text())
    assert metrics["teacher"]["model"] == "pi_resnet18.c100"
