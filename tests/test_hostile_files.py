"""Hostile and broken files: no file runs code, no path leads out of a run folder, no two runs mix
in one folder, a kill or a full or read-only disk loses nothing, and every bad file gets one line.

Everything here is real: real pickles whose ``__reduce__`` calls ``os.system`` (the test checks that
the marker file it would create never appears), real processes holding the run folder's lock, real
symbolic links, real full and read-only file systems (tmpfs mounts; those tests are skipped where
mounting is not permitted). Only ``test_disk_full_while_saving_is_one_line_everywhere`` simulates a
full disk, by making ``torch.save`` fail as it does on ENOSPC, so that the case runs everywhere.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hybrezoo.cli import main
from hybrezoo.data.synthetic import write_fake_cifar100
from hybrezoo.engine import load_state_dict, load_teacher, load_weights, run_recipe
from hybrezoo.engine import run as run_module
from hybrezoo.engine.checkpoint import load_checkpoint, save_checkpoint
from hybrezoo.engine.runfolder import LOCK_FILE
from hybrezoo.engine.runlog import RunLog
from hybrezoo.errors import HybrezooError
from hybrezoo.models import create_model

SMALL = "deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100"  # the quickest zoo model
RECIPE = f"training/deepreduce/{SMALL}.yaml"
QUIET = ["runtime.progress=false", "distill.teacher=null", "data.batch_size=50"]
TINY = [*QUIET, "runtime.max_steps=1", "runtime.max_eval_batches=1"]
REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Pickles to ``os.system("touch MARKER")``: loading it with pickle runs the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HYBREZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("HYBREZOO_DATA", raising=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    write_fake_cifar100(path, train_per_class=2, test_per_class=1)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good state dict of SMALL, evil files with a marker each, and broken .pt files."""
    d = tmp_path_factory.mktemp("files")
    state = create_model(SMALL).state_dict()
    torch.save(state, d / "good.pt")
    out = {"dir": d, "good": d / "good.pt", "marker": d / "PWNED"}
    torch.save({**state, "extra": Payload(out["marker"])}, d / "evil.pt")
    torch.save({"format": 2, "stage_index": 0, "payload": Payload(out["marker"])}, d / "evil_checkpoint.pt")
    with open(d / "evil_pickle.pt", "wb") as f:  # not even a torch file: a bare pickle
        pickle.dump(Payload(out["marker"]), f, protocol=2)
    (d / "empty.pt").write_bytes(b"")
    data = (d / "good.pt").read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "garbage.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    torch.save([torch.zeros(3)], d / "list.pt")
    (d / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    out.update({k: d / f"{k}.pt" for k in ("evil", "evil_checkpoint", "evil_pickle", "empty", "truncated",
                                           "garbage", "list")})
    out["garbage_st"] = d / "garbage.safetensors"
    return out


@pytest.fixture(scope="module")
def finished(root, tmp_path_factory):
    """A complete (one-step) run folder."""
    out = tmp_path_factory.mktemp("runs") / "done"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBREZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run_recipe(RECIPE, data=str(root), out=out, overrides=TINY)
    return out


def one_line(capsys, argv) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hybrezoo: error: "), err
    if os.environ.get("HYBREZOO_SHOW_ERRORS"):  # to read every message: HYBREZOO_SHOW_ERRORS=1 pytest -s
        print(f"\n{err[0]}", file=sys.__stderr__)
    return err[0]


def no_code_ran(files) -> None:
    assert not files["marker"].exists(), "a file ran code"


# -- 1. no file runs code --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["evil", "evil_pickle"])
def test_a_pickle_payload_never_runs_through_any_command(kind, root, files, tmp_path, capsys):
    evil = str(files[kind])
    line = one_line(capsys, ["eval", SMALL, "--checkpoint", evil, "--data", str(root)])
    assert "refused" in line and "run code" in line and evil in line
    no_code_ran(files)
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(tmp_path / "init"), *TINY,
                             f"model.init={evil}"])
    assert line.startswith(f"hybrezoo: error: model.init weights: {evil} was refused") and "run code" in line
    no_code_ran(files)
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(tmp_path / "kd"), *TINY,
                             f"distill.teacher={SMALL}", f"distill.checkpoint={evil}"])
    assert f"teacher {SMALL}: {evil} was refused" in line
    no_code_ran(files)
    line = one_line(capsys, ["reduce", "snl", "--model", SMALL, "--budget", "0.5", "--init", evil, "--data", str(root),
                             "--out", str(tmp_path / "snl"), "runtime.max_steps=1", "runtime.progress=false"])
    assert "refused" in line and "run code" in line
    no_code_ran(files)
    line = one_line(capsys, ["reduce", "senet", "--model", SMALL, "--budget", "0.5", "--init", str(files["good"]),
                             "--teacher-checkpoint", evil, "--data", str(root), "--out", str(tmp_path / "senet"),
                             "runtime.max_steps=1", "runtime.progress=false"])
    assert "refused" in line and "run code" in line and evil in line
    no_code_ran(files)


def test_a_payload_in_a_checkpoint_never_runs_on_resume(root, files, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(files["evil_checkpoint"].read_bytes())
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(run), "--resume", *TINY])
    assert "cannot be resumed" in line and "run code" in line and "--restart" in line
    no_code_ran(files)
    # the weights of an interrupted run are read the same way
    line = one_line(capsys, ["eval", SMALL, "--checkpoint", str(run / "checkpoint.pt"), "--data", str(root)])
    assert "refused" in line
    no_code_ran(files)


def test_the_api_never_runs_a_payload(files):
    model = create_model(SMALL)
    for call in (lambda: load_state_dict(files["evil"]), lambda: load_weights(model, files["evil"]),
                 lambda: load_checkpoint(files["evil_checkpoint"]), lambda: load_checkpoint(files["evil_pickle"]),
                 lambda: load_teacher({"teacher": SMALL, "checkpoint": str(files["evil"])})):
        with pytest.raises(HybrezooError, match="run code"):
            call()
    no_code_ran(files)


def test_no_code_in_the_package_unpickles_a_file():
    """Every loader goes through torch.load(weights_only=True), the CIFAR reader's restricted unpickler,
    or np.load(allow_pickle=False): nothing else may read a pickle."""
    import re

    package = REPO / "hybrezoo"
    found = []
    for path in package.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"pickle\.loads?\(|weights_only\s*=\s*False|allow_pickle\s*=\s*True|dill|joblib\.load", code) \
                    or (re.search(r"torch\.load\(", code) and "weights_only=True" not in code):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, found


def test_reduce_names_the_missing_flag(root, tmp_path, capsys):
    line = one_line(capsys, ["reduce", "senet", "--model", SMALL, "--budget", "0.5", "--init", str(tmp_path / "nope"),
                             "--data", str(root), "--out", str(tmp_path / "r")])
    assert f"--init {tmp_path / 'nope'} not found" in line and "teacher" not in line


def test_checkpoints_store_numpy_values_as_plain_data(tmp_path):
    """A stage may keep NumPy numbers in ctx.state: they are stored as plain data and read back safely."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"stage_index": 0, "fit": {"state": {"l1": np.float64(0.5), "n": np.int64(3),
                                                              "masks": np.ones((2, 2), dtype=np.float32)}}})
    state = load_checkpoint(path)["fit"]["state"]
    assert state["l1"] == 0.5 and type(state["l1"]) is float and type(state["n"]) is int
    assert torch.equal(state["masks"], torch.ones(2, 2))
    with pytest.raises(HybrezooError, match=r"checkpoint\['fit'\]\['state'\]\['f'\] holds a function"):
        save_checkpoint(path, {"fit": {"state": {"f": lambda: 0}}})
    assert load_checkpoint(path)["fit"]["state"]["n"] == 3          # the previous checkpoint is kept


def test_an_old_checkpoint_with_pickled_numpy_states_is_refused(root, tmp_path, capsys):
    """Format 1 stored NumPy's random state as a pickled array: no longer loadable without unpickling."""
    run = tmp_path / "old"
    run.mkdir()
    torch.save({"format": 1, "stage_index": 0, "fit": {"rng": {"numpy": np.random.get_state()}}},
               run / "checkpoint.pt")
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(run), "--resume", *TINY])
    assert "cannot be resumed" in line and "numpy" in line and "--restart" in line


def _cifar_with(root: Path, split: str, payload: object) -> None:
    write_fake_cifar100(root, train_per_class=1, test_per_class=1)
    path = root / "cifar-100-python" / split
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")  # our own file, written just above
    data["extra"] = payload
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)


@pytest.mark.parametrize("split", ["meta", "test", "train"])
def test_a_payload_in_a_cifar_file_never_runs(split, files, tmp_path, capsys):
    root = tmp_path / "poisoned"
    _cifar_with(root, split, Payload(files["marker"]))
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(tmp_path / "run"), *TINY])
    assert f"cifar-100-python/{split} was refused" in line and "posix.system" in line
    no_code_ran(files)


def _python2_style(data: dict) -> bytes:
    """A protocol-2 pickle naming numpy.core.multiarray, as the official (Python 2) files do."""
    blob = pickle.dumps(data, protocol=2)
    return blob.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def test_the_restricted_cifar_reader_reads_what_the_real_files_hold(tmp_path):
    from hybrezoo.data.cifar import Cifar100Source

    root = tmp_path / "c"
    write_fake_cifar100(root, train_per_class=1, test_per_class=1)        # protocol 4, bytes as bytes
    folder = root / "cifar-100-python"
    plain = Cifar100Source(root).read("test")
    for name in ("test", "meta"):                       # protocol 2: bytes via _codecs.encode(text, "latin1")
        with open(folder / name, "rb") as f:
            data = pickle.load(f)
        blob = _python2_style(data)
        assert b"numpy.core.multiarray" in blob or name == "meta"
        (folder / name).write_bytes(blob)
    again = Cifar100Source(root).read("test")
    assert np.array_equal(plain.images, again.images) and plain.classes == again.classes
    # a global the files never hold is refused even when harmless
    with open(folder / "meta", "rb") as f:
        meta = pickle.load(f)
    meta["when"] = __import__("datetime").date(2020, 1, 1)
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    with pytest.raises(HybrezooError, match="datetime.date, which a CIFAR-100 file never holds"):
        Cifar100Source(root).read("test")


REAL_CIFAR = Path.home() / "data" / "cifar-100-python"


@pytest.mark.skipif(not (REAL_CIFAR / "meta").is_file(), reason="no unpacked CIFAR-100 in ~/data")
def test_the_restricted_cifar_reader_reads_the_real_files():
    from hybrezoo.data.cifar import Cifar100Source

    test = Cifar100Source(REAL_CIFAR.parent).read("test")
    assert test.images.shape == (10000, 32, 32, 3) and len(test.classes) == 100 and test.classes[0] == "apple"
    assert np.bincount(test.labels).tolist() == [100] * 100


# -- 2. no path leads out of the run folder ------------------------------------------------------------
def test_a_stage_name_cannot_lead_out_of_the_run_folder(root, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "run"
    for name in ("x/../../../../escaped", "../escaped", "/tmp/escaped", "..", "a b"):
        line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(out), *TINY,
                                 f"stages.0.name={name}"])
        assert "is not a plain name" in line
    assert not out.exists() and not list(tmp_path.rglob("escaped*"))


@pytest.mark.parametrize("name", ["log.jsonl", "train.log", "checkpoint.pt", "recipe.yaml", "metrics.json",
                                  LOCK_FILE])
def test_a_run_never_writes_through_a_link(name, root, finished, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for f in finished.iterdir():
        if f.is_file() and f.name != LOCK_FILE:
            (run / f.name).write_bytes(f.read_bytes())
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(outside)
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(run), "--resume", *TINY])
    assert f"{run / name} is a symbolic link" in line
    assert outside.read_text() == "precious\n"


def test_log_appends_do_not_follow_links(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").symlink_to(outside)   # made after the run's own check: O_NOFOLLOW still refuses
    with pytest.raises(HybrezooError, match="is a symbolic link"):
        RunLog(run, echo=False).info("hello")
    (run / "log.jsonl").symlink_to(outside)
    with pytest.raises(HybrezooError, match="is a symbolic link"):
        RunLog(run, echo=False).epoch({"stage": "s", "epoch": 1})
    assert outside.read_text() == "precious\n"


def test_out_that_is_not_a_folder_is_one_line(root, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert "is a file" in one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(tmp_path / "file"),
                                            *TINY])
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert "broken symbolic link" in one_line(capsys, ["train", RECIPE, "--data", str(root), "--out",
                                                       str(tmp_path / "dangling"), *TINY])
    assert "is a file" in one_line(capsys, ["train", RECIPE, "--data", str(root), "--out",
                                            str(tmp_path / "file" / "run"), *TINY])


# -- 3. one run per folder: the lock, with real processes ----------------------------------------------
def _cli(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "hybrezoo", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, **kwargs)


def test_two_processes_never_share_a_run_folder(root, tmp_path):
    run = tmp_path / "run"
    long = ["train", RECIPE, "--data", str(root), "--out", str(run), *QUIET, "epochs=500"]
    first = _cli(long, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None:   # training, with a checkpoint on disk
            if (run / "log.jsonl").is_file() and (run / "log.jsonl").read_text().strip():
                break
            time.sleep(0.5)
        assert first.poll() is None, first.communicate()
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == first.pid and "epochs=500" in holder["command"]
        for extra in ([], ["--resume"]):
            second = _cli([*long, *extra])
            out, err = second.communicate(timeout=240)
            lines = err.strip().splitlines()
            assert second.returncode == 2 and len(lines) == 1, err
            assert f"{run} is in use by another hybrezoo run (pid {first.pid} on " in lines[0]
            assert "epochs=500" in lines[0]
        assert first.poll() is None            # the first run was not disturbed
    finally:
        os.killpg(first.pid, signal.SIGKILL)   # kill -9: the lock goes with the process
        first.communicate()
    epochs_done = len((run / "log.jsonl").read_text().splitlines())
    assert epochs_done >= 1 and (run / "checkpoint.pt").is_file()
    # kill -9 lost nothing: the folder resumes (one more step, enough to show it continues), and
    # whatever temporary file the kill left is gone
    resumed = _cli([*long, "--resume", "runtime.max_steps=1", "runtime.max_eval_batches=1"])
    out, err = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, err
    assert len((run / "log.jsonl").read_text().splitlines()) >= epochs_done
    assert (run / "model.safetensors").is_file() and (run / LOCK_FILE).read_text() == ""
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".export-")]


# -- 4. leftovers of a kill are cleaned, nothing else --------------------------------------------------
def test_resume_and_a_new_run_clean_their_own_leftovers_only(root, finished, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for f in finished.iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    outside = tmp_path / "outside"
    outside.write_text("precious")
    ours = [".checkpoint.pt.ab12cd_3.tmp", ".metrics.json.zz9yxw0v.tmp", ".log.jsonl.k2j3h4g5.tmp"]
    for name in ours:
        (run / name).write_bytes(b"half")
    (run / ".export-q1w2e3r4").mkdir()
    (run / ".export-q1w2e3r4" / "model.safetensors").write_bytes(b"half")
    theirs = ["notes.tmp", ".export-mine", "my.checkpoint.pt.ab12cd34.tmp.keep", ".hidden.tmp"]
    for name in theirs:
        (run / name).write_text("user file")
    (run / ".link.pt.a1b2c3d4.tmp").symlink_to(outside)          # a link with our pattern: not ours
    assert main(["train", RECIPE, "--data", str(root), "--out", str(run), "--resume", *TINY]) == 0
    names = {p.name for p in run.iterdir()}
    assert not names & {*ours, ".export-q1w2e3r4"}
    assert set(theirs) | {".link.pt.a1b2c3d4.tmp"} <= names and outside.read_text() == "precious"
    assert "removed leftover temporary files" in (run / "train.log").read_text()
    # a new run into a folder whose first run was killed before its first checkpoint cleans them too
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "recipe.yaml").write_text((run / "recipe.yaml").read_text())
    (fresh / ".checkpoint.pt.00000000.tmp").write_bytes(b"half")
    assert main(["train", RECIPE, "--data", str(root), "--out", str(fresh), *TINY]) == 0
    assert not (fresh / ".checkpoint.pt.00000000.tmp").exists()
    # a folder no run has written to is not a run folder: nothing in it is touched
    other = tmp_path / "other"
    other.mkdir()
    (other / ".notes.txt.abcdefgh.tmp").write_text("another program's")
    assert main(["train", RECIPE, "--data", str(root), "--out", str(other), *TINY]) == 0
    assert (other / ".notes.txt.abcdefgh.tmp").read_text() == "another program's"


# -- 5. a corrupt checkpoint: one line, and a way to start over ----------------------------------------
@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "list"])
def test_a_corrupt_checkpoint_says_how_to_start_over(kind, root, files, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(files[kind].read_bytes())
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(run), "--resume", *TINY])
    assert str(run / "checkpoint.pt") in line and "--restart" in line and "without --resume" not in line
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(run), *TINY])
    assert "already holds a run" in line and "--restart" in line
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(run), "--resume", "--restart", *TINY])
    assert "not both" in line


def test_restart_discards_the_old_run_and_starts_over(root, files, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(files["truncated"].read_bytes())
    (run / "log.jsonl").write_text('{"stage": "old", "epoch": 7}\n')
    (run / "notes.txt").write_text("mine")
    assert main(["train", RECIPE, "--data", str(root), "--out", str(run), "--restart", *TINY]) == 0
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1] and log[0]["stage"] == "train"
    assert load_checkpoint(run / "checkpoint.pt")["stage_index"] == 1
    assert (run / "notes.txt").read_text() == "mine"                 # only the run's own files go
    assert "--restart: discarded the previous run" in (run / "train.log").read_text()


# -- 6. bad weight files: one line each, never a traceback -----------------------------------------------
BAD_WEIGHTS = ["empty", "truncated", "garbage", "list", "garbage_st"]


@pytest.mark.parametrize("kind", BAD_WEIGHTS)
def test_a_bad_weights_file_is_one_line_everywhere(kind, root, files, tmp_path, capsys):
    bad = str(files[kind])
    lines = [
        one_line(capsys, ["eval", SMALL, "--checkpoint", bad, "--data", str(root)]),
        one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(tmp_path / "i"), *TINY,
                          f"model.init={bad}"]),
        one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(tmp_path / "k"), *TINY,
                          f"distill.teacher={SMALL}", f"distill.checkpoint={bad}"]),
    ]
    for line in lines:
        assert bad in line
        assert line.count(bad) == 1, "the path is said once (no repeated prefixes)"
        assert "weights: weights" not in line and ": : " not in line
    assert lines[1].startswith(f"hybrezoo: error: model.init weights: {bad} ")
    assert f"teacher {SMALL}: {bad} " in lines[2]


def test_an_unfinished_run_says_how_to_finish_it(root, tmp_path, capsys, monkeypatch):
    run = tmp_path / "unfinished"

    def stop(path, state, **kwargs):  # interrupted after its first checkpoint
        real(path, state, **kwargs)
        raise KeyboardInterrupt
    real = run_module.save_checkpoint
    monkeypatch.setattr(run_module, "save_checkpoint", stop)
    assert main(["train", RECIPE, "--data", str(root), "--out", str(run), *TINY]) == 130
    monkeypatch.setattr(run_module, "save_checkpoint", real)
    err = capsys.readouterr().err
    assert f"continue with `hybrezoo train {RECIPE} --data {root} --out {run}" in err and "--resume`" in err
    assert not (run / "model.safetensors").exists()
    for argv in (["eval", SMALL, "--checkpoint", str(run), "--data", str(root)],
                 ["train", RECIPE, "--data", str(root), "--out", str(tmp_path / "x"), *TINY, f"model.init={run}"],
                 ["eval", str(run), "--data", str(root)]):
        line = one_line(capsys, argv)
        assert "unfinished run" in line or "has not finished" in line, line
        assert "--resume" in line, line
    # the checkpoint file itself still gives the latest weights on purpose
    assert main(["eval", SMALL, "--checkpoint", str(run / "checkpoint.pt"), "--data", str(root)]) == 0
    capsys.readouterr()


# -- 7. a full or read-only disk: one line, nothing lost -------------------------------------------------
def test_disk_full_while_saving_is_one_line_everywhere(root, tmp_path, capsys, monkeypatch):
    """torch.save on a full disk raises ``RuntimeError ... inline_container.cc`` with the OSError as its
    context: simulated here so that it runs on every machine (the tmpfs tests below do it for real)."""
    from hybrezoo.engine import checkpoint as checkpoint_module

    real = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 a part of it")
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534") from None
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"stage_index": 0})
    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(HybrezooError, match=r"cannot write .*checkpoint.pt: No space left on device"):
        save_checkpoint(path, {"stage_index": 1})
    assert load_checkpoint(path)["stage_index"] == 0 and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), "--out", str(tmp_path / "run"), *TINY])
    assert "No space left on device" in line and "--resume" in line
    monkeypatch.setattr(checkpoint_module.torch, "save", real)


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")


@pytest.fixture
def mounts():
    made: list[Path] = []

    def mount(target: Path, options: str) -> Path:
        _mount(target, options)
        made.append(target)
        return target
    yield mount
    for target in reversed(made):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_real_full_disk_loses_nothing(root, tmp_path, capsys, mounts, monkeypatch):
    """A 24 MB tmpfs holds the first mid-training checkpoint (15 MB) but not a second beside it."""
    args = [RECIPE, "--data", str(root), *QUIET, "epochs=2"]
    whole = tmp_path / "whole"
    assert main(["train", *args, "--out", str(whole)]) == 0
    capsys.readouterr()
    disk = mounts(tmp_path / "disk", "size=24m")
    run = disk / "run"
    line = one_line(capsys, ["train", *args, "--out", str(run)])
    assert "No space left on device" in line and "--resume" in line
    assert load_checkpoint(run / "checkpoint.pt")["fit"]["epoch"] == 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    assert main(["train", *args, "--out", str(run), "--resume"]) == 0
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)                   # nothing lost: the same weights

    # the weights themselves on a full disk (SafetensorError): fill the disk just before they are saved
    real_save_model = run_module.save_model

    def fill_then_save(model, run_dir, *a, **k):
        with open(disk / "filler", "wb") as f:
            with pytest.raises(OSError):
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
        return real_save_model(model, run_dir, *a, **k)
    monkeypatch.setattr(run_module, "save_model", fill_then_save)
    (disk / "filler").unlink(missing_ok=True)
    run2 = disk / "run2"
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), *TINY, "--out", str(run2)])
    assert "cannot write the weights" in line and "No space left on device" in line and "--resume" in line
    assert not [p.name for p in run2.iterdir() if p.name.startswith(".export-")]
    monkeypatch.setattr(run_module, "save_model", real_save_model)
    (disk / "filler").unlink()
    assert main(["train", RECIPE, "--data", str(root), *TINY, "--out", str(run2), "--resume"]) == 0
    assert (run2 / "model.safetensors").is_file()


def test_a_read_only_out_is_one_line(root, finished, tmp_path, capsys, mounts):
    ro = mounts(tmp_path / "ro", "ro,size=1m")
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), *TINY, "--out", str(ro / "run")])
    assert "Read-only file system" in line and "writable --out" in line
    # a finished run on a disk that became read-only: --resume says so, the run is untouched
    disk = mounts(tmp_path / "rw", "size=64m")
    run = disk / "run"
    assert main(["train", RECIPE, "--data", str(root), *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    line = one_line(capsys, ["train", RECIPE, "--data", str(root), *TINY, "--out", str(run), "--resume"])
    assert "Read-only file system" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
