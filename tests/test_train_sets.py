"""Sets of runs (`hybrezoo train A B ...`, training/sets/*.yaml): order, skipping, lockstep students equal to
their solo runs bit for bit, a budget that stops runs mid-epoch and a --resume that completes them exactly,
concurrent runs, SIGTERM, and the parallel JPEG decoder equal to the serial one."""
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from hybrezoo.cli import main
from hybrezoo.data.synthetic import write_fake_cifar100, write_fake_tinyimagenet
from hybrezoo.engine import run_recipe
from hybrezoo.engine import trainer as trainer_module
from hybrezoo.engine.checkpoint import read_torch_file, save_checkpoint
from hybrezoo.engine.recipe import dump_recipe, load_recipe
from hybrezoo.engine.sets import plan_set, read_set_file, run_set
from hybrezoo.engine.stop import STOPPED_EXIT, StopRequest, parse_duration
from hybrezoo.errors import HybrezooError
from hybrezoo.registry import entries

REPO = Path(__file__).resolve().parents[1]
SMALL = "deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100"      # 20.7 M MACs
OTHER = "deepreduce_r18_cull14_thin_ch05_rho05.c100"           # another small student
BASE = str(REPO / f"training/deepreduce/{SMALL}.yaml")
STEPS = 5                                                      # 200 fake images, batch 40


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    write_fake_cifar100(path, train_per_class=2, test_per_class=1)
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HYBREZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def recipe(folder: Path, name: str, **extra) -> Path:
    data = {"base": BASE, "distill": {"teacher": None}, "epochs": 2, "runtime": {"progress": False},
            "data": {"batch_size": 40, "eval_batch_size": 50}}
    for key, value in extra.items():
        data[key] = dict(data.get(key) or {}, **value) if isinstance(value, dict) else value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def student(folder: Path, name: str, distill: dict = {}, **extra) -> Path:
    # the teacher's default run folder, as the shipped recipes name runs/baseline/pi_resnet18.<tag>
    return recipe(folder, name, distill={"teacher": SMALL, "checkpoint": "runs/teacher", "temperature": 2.0,
                                         **distill}, **extra)


def same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), \
        [k for k in wa if not torch.equal(wa[k], wb[k])][:3]
    keys = ("stage", "epoch", "step", "train_loss", "train_top1", "train_kd", "eval_top1", "eval_loss")
    la = [[json.loads(x).get(k) for k in keys] for x in (a / "log.jsonl").read_text().splitlines()]
    lb = [[json.loads(x).get(k) for k in keys] for x in (b / "log.jsonl").read_text().splitlines()]
    assert la == lb
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for key in ("top1", "top5", "eval_loss", "relus", "epochs", "selection"):
        assert ma[key] == mb[key], key


@pytest.fixture
def counters(monkeypatch):
    """Optimizer steps taken (the fake clock of the budget) and teacher forwards made."""
    steps, forwards = [0], [0]
    real_opt, real_teacher = trainer_module.create_optimizer, trainer_module.load_teacher

    def counting_optimizer(*args, **kwargs):
        optimizer = real_opt(*args, **kwargs)
        optimizer.register_step_pre_hook(lambda *a: steps.__setitem__(0, steps[0] + 1))
        return optimizer

    def counting_teacher(*args, **kwargs):
        teacher = real_teacher(*args, **kwargs)
        teacher.register_forward_hook(lambda *a: forwards.__setitem__(0, forwards[0] + 1))
        return teacher

    monkeypatch.setattr(trainer_module, "create_optimizer", counting_optimizer)
    monkeypatch.setattr(trainer_module, "load_teacher", counting_teacher)
    return steps, forwards


def test_lockstep_students_stopped_mid_epoch_and_resumed_equal_their_solo_runs(root, tmp_path, counters, monkeypatch):
    steps, forwards = counters
    monkeypatch.chdir(tmp_path)
    teacher = recipe(tmp_path, "teacher", epochs=1)
    # different architectures, learning rates, KD settings; both with dropout (the global RNG per run)
    s1 = student(tmp_path, "s1", model={"kwargs": {"drop_rate": 0.3}}, optimizer={"lr": 0.05})
    s2 = student(tmp_path, "s2", model={"name": OTHER, "kwargs": {"drop_rate": 0.2}}, distill={"weight": 0.5})
    the_set = tmp_path / "set.yaml"  # students first: the plan must put the teacher before them
    the_set.write_text(yaml.safe_dump({"description": "test", "runs": [str(s1), str(s2), str(teacher)]}))
    runs = tmp_path / "set_runs"

    plan = plan_set([str(the_set)], runs_dir=runs, data=str(root))
    assert [[r.label for r in u.runs] for u in plan.units] == [["teacher"], ["s1", "s2"]]
    assert plan.runs[1].overrides == [f"distill.checkpoint={runs / 'teacher'}"]   # pointed at this set's folder
    # the budget's clock counts optimizer steps: the teacher's 5, then 7 lockstep steps of 2 students
    stop = StopRequest(deadline=STEPS + 2 * (STEPS + 2), clock=lambda: steps[0])
    first = run_set(plan, stop=stop, progress=False)
    assert first.exit_code == STOPPED_EXIT
    assert [r["state"] for r in first.rows] == ["done", "stopped", "stopped"]
    for name in ("s1", "s2"):
        fit = read_torch_file(runs / name / "checkpoint.pt")["fit"]
        assert (fit["epoch"], fit["batch"], fit["step"]) == (1, 2, STEPS + 2)   # in the middle of epoch 2
        assert len((runs / name / "log.jsonl").read_text().splitlines()) == 1
        assert not (runs / name / "metrics.json").exists()
        assert "lockstep with 1 other run" in (runs / name / "train.log").read_text()

    with pytest.raises(HybrezooError, match=r"2 run\(s\) of this set are unfinished .*add --resume"):
        plan_set([str(the_set)], runs_dir=runs, data=str(root))
    again = plan_set([str(the_set)], runs_dir=runs, data=str(root), resume=True)
    assert [[r.label for r in u.runs] for u in again.units] == [["s1", "s2"]]   # still one lockstep group
    assert run_set(again, progress=False).exit_code == 0
    # one teacher forward per step for both students: 2 epochs x 5 steps, not 2 x 10
    assert forwards[0] == 2 * STEPS
    assert json.loads((runs / "s1" / "metrics.json").read_text())["lockstep_with"] == [str(runs / "s2")]
    assert plan_set([str(the_set)], runs_dir=runs, data=str(root)).units == []   # finished runs are skipped

    for name, path in (("s1", s1), ("s2", s2)):
        forwards[0] = 0
        solo = run_recipe(path, data=str(root), out=tmp_path / "solo" / name,
                          overrides=[f"distill.checkpoint={runs / 'teacher'}"])
        assert forwards[0] == 2 * STEPS
        same_run(runs / name, solo)


def test_a_budget_from_the_command_line_stops_and_resume_completes_exactly(root, tmp_path, counters, monkeypatch,
                                                                           capsys):
    steps, _ = counters
    path = recipe(tmp_path, "alone", model={"kwargs": {"drop_rate": 0.3}}, data={"holdout": 40, "batch_size": 20},
                  select="best", schedule={"name": "cosine", "warmup_epochs": 1})  # 8 steps an epoch
    whole = run_recipe(path, data=str(root), out=tmp_path / "whole")
    steps[0] = 0
    monkeypatch.setattr(StopRequest, "within", classmethod(lambda cls, budget: cls(budget, clock=lambda: steps[0])))
    argv = ["train", str(path), "--data", str(root), "--runs", str(tmp_path / "runs"), "--no-progress"]
    assert main([*argv, "--time-budget", "11s"]) == STOPPED_EXIT    # "11 s" = 11 steps on the fake clock
    captured = capsys.readouterr()
    assert "stopped at epoch 1/2" in captured.out and "continue with `" in captured.err and "--resume`" in captured.err
    fit = read_torch_file(tmp_path / "runs" / "alone" / "checkpoint.pt")["fit"]
    assert (fit["epoch"], fit["batch"]) == (1, 3)
    assert main(argv) == 2 and "add --resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "alone" in out and "done" in out and "1/1 runs finished" in out
    same_run(whole, tmp_path / "runs" / "alone")
    assert main(argv) == 0 and "finished earlier" in capsys.readouterr().out


def test_sigterm_checkpoints_mid_epoch(root, tmp_path, counters):
    steps, _ = counters
    path = recipe(tmp_path, "term")
    real_step = trainer_module._Member.step

    def step_then_signal(self, *args):
        real_step(self, *args)
        if steps[0] == 3:
            os.kill(os.getpid(), signal.SIGTERM)   # a cluster's wall-time limit, a spot instance's notice
    trainer_module._Member.step = step_then_signal
    try:
        plan = plan_set([str(path)], runs_dir=tmp_path / "runs", data=str(root))
        outcome = run_set(plan, progress=False)
    finally:
        trainer_module._Member.step = real_step
    assert outcome.exit_code == STOPPED_EXIT and outcome.rows[0]["state"] == "stopped"
    assert read_torch_file(tmp_path / "runs" / "term" / "checkpoint.pt")["fit"]["batch"] == 3
    assert "stopped (SIGTERM arrived) in epoch 1 after batch 3/5" in (tmp_path / "runs/term/train.log").read_text()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_two_runs_share_the_device_in_two_processes(root, tmp_path, capsys):
    a = recipe(tmp_path, "a", seed=1, epochs=1)
    b = recipe(tmp_path, "b", seed=2, epochs=1, model={"name": OTHER})
    runs = tmp_path / "runs"
    summary = tmp_path / "summary.json"
    assert main(["train", str(a), str(b), "--data", str(root), "--runs", str(runs), "--jobs", "2",
                 "--no-progress", "--summary", str(summary)]) == 0
    result = json.loads(summary.read_text())
    assert result["units"] == [["a"], ["b"]] and [r["state"] for r in result["runs"]] == ["done", "done"]

    def span(name):
        lines = (runs / name / "train.log").read_text().splitlines()
        assert lines[0][20:].startswith("starting:") and " done: " in lines[-1]
        return lines[0][:19], lines[-1][:19]

    (start_a, end_a), (start_b, end_b) = span("a"), span("b")
    assert start_a < end_b and start_b < end_a       # both ran at the same time, each in its own process
    metrics = [json.loads((runs / n / "metrics.json").read_text()) for n in ("a", "b")]
    assert [m["model"] for m in metrics] == [SMALL, OTHER]


def test_bad_sets_are_one_line_before_any_work(root, tmp_path, capsys):
    good = recipe(tmp_path, "good")
    bad_set = tmp_path / "bad_set.yaml"
    bad_set.write_text(yaml.safe_dump({"runs": [str(good), "training/deepreduce/no_such_net.c100.yaml"]}))
    with pytest.raises(HybrezooError, match=r"bad_set.yaml: runs\[1\]: recipe .*no_such_net.* not found"):
        plan_set([str(bad_set)], runs_dir=tmp_path / "r", data=str(root))
    with pytest.raises(HybrezooError, match="unknown model 'pi_resnet81.c100'"):
        plan_set([str(good), "pi_resnet81.c100"], runs_dir=tmp_path / "r", data=str(root))
    # a cycle of teachers: each reads the other's run folder
    x = recipe(tmp_path, "x", model={"init": "runs/y"})
    y = recipe(tmp_path, "y", distill={"teacher": SMALL, "checkpoint": "runs/x"})
    with pytest.raises(HybrezooError, match=r"cycle of teachers .*: .*x.yaml -> .*y.yaml -> .*x.yaml"):
        plan_set([str(x), str(y)], runs_dir=tmp_path / "r", data=str(root))
    lonely = student(tmp_path, "lonely")   # its teacher's folder exists nowhere and no run makes it
    with pytest.raises(HybrezooError, match="distill.checkpoint=runs/teacher not found, and no run of this set"):
        plan_set([str(lonely)], runs_dir=tmp_path / "r", data=str(root))
    for text in ("9", "nine minutes", "-5m", "0s", "5m3"):
        with pytest.raises(HybrezooError, match="cannot read the time budget"):
            parse_duration(text)
    assert parse_duration("1h30m") == 5400 and parse_duration("9m") == 540 and parse_duration("90s") == 90

    # a finished run of another recipe, an unfinished one without --resume
    done = tmp_path / "r" / "good"
    done.mkdir(parents=True)
    (done / "recipe.yaml").write_text(dump_recipe(load_recipe(good, ["epochs=3"])))
    (done / "metrics.json").write_text("{}")
    with pytest.raises(HybrezooError, match=r"holds a finished run of another recipe \(differs in: epochs\)"):
        plan_set([str(good)], runs_dir=tmp_path / "r", data=str(root))
    (done / "metrics.json").unlink()
    save_checkpoint(done / "checkpoint.pt", {"recipe": load_recipe(good).data, "stage_index": 0, "fit": None})
    with pytest.raises(HybrezooError, match=r"1 run\(s\) of this set are unfinished \(good\): add --resume"):
        plan_set([str(good)], runs_dir=tmp_path / "r", data=str(root))

    def one_line(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("hybrezoo: error: "), err
        return err[0]

    data = ["--data", str(root)]
    assert "cannot read the time budget '9'" in one_line(["train", str(good), *data, "--time-budget", "9"])
    assert "cycle of teachers" in one_line(["train", str(x), str(y), *data, "--runs", str(tmp_path / "q")])
    assert "--out names one run folder" in one_line(["train", str(x), str(good), "--data", str(root), "--out", "o"])
    assert "--restart discards one run" in one_line(["train", str(x), str(good), "--data", str(root), "--restart"])


@pytest.mark.parametrize("tag", ["tin", "c100"])
def test_shipped_sets_are_a_teacher_and_its_published_deepreduce_students(tag, tmp_path):
    path = REPO / "training" / "sets" / f"{tag}_deepreduce.yaml"
    _, listed = read_set_file(path)
    published = {e.recipe for e in entries() if e.method == "deepreduce" and e.tag == tag and e.published_relus}
    assert [e.recipe for e in listed][0] == f"training/baseline/pi_resnet18.{tag}.yaml"
    assert {e.recipe for e in listed[1:]} == published and len(listed) == len(published) + 1
    plan = plan_set([str(path)], runs_dir=tmp_path / "runs", check_data=False)
    assert [r.model for r in plan.units[0].runs] == [f"pi_resnet18.{tag}"]
    students = [r for u in plan.units[1:] for r in u.runs]
    assert all(plan.runs[0].index in r.deps for r in students) and len(students) == len(published)
    # every student whose recipe agrees on data, seed, epochs and runtime shares one lockstep group
    by_epochs = {}
    for r in students:
        by_epochs.setdefault(r.epochs, set()).add(r.label)
    assert sorted(sorted(r.label for r in u.runs) for u in plan.units[1:]) == \
        sorted(sorted(labels) for labels in by_epochs.values())


def test_students_alone_distill_from_a_teacher_finished_earlier_in_the_runs_folder(tmp_path):
    """A later window names only the students: their teacher's default folder is looked up under --runs."""
    student = "training/deepreduce/deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100.yaml"
    with pytest.raises(HybrezooError, match="distill.checkpoint=runs/baseline/pi_resnet18.c100 not found"):
        plan_set([student], runs_dir=tmp_path / "runs", check_data=False)
    teacher = tmp_path / "runs" / "baseline" / "pi_resnet18.c100"
    teacher.mkdir(parents=True)
    plan = plan_set([student], runs_dir=tmp_path / "runs", check_data=False)
    (run,) = plan.runs
    assert run.rec["distill"]["checkpoint"] == str(teacher) and run.deps == []
    assert f"distill.checkpoint={teacher}" in run.overrides      # recorded in the run's recipe


def test_parallel_jpeg_decoding_equals_the_serial_decoding(tmp_path, monkeypatch):
    from hybrezoo.data.tinyimagenet import TinyImageNetSource, decode_files, decode_workers

    write_fake_tinyimagenet(tmp_path, train_per_class=3, val_per_class=1)
    source = TinyImageNetSource(tmp_path)
    files, _ = source.listing("train")
    serial = decode_files(files, workers=1)
    pooled = decode_files(files, workers=2, chunk=37)   # chunks that do not divide the 600 files
    assert serial.shape == (600, 64, 64, 3) and np.array_equal(serial, pooled)
    monkeypatch.setenv("HYBREZOO_DECODE_WORKERS", "2")
    assert decode_workers() == 2 and np.array_equal(source.read("train").images, serial)
    files[500].write_bytes(b"not a jpeg")                  # met by a worker process: still one line naming it
    with pytest.raises(HybrezooError, match=f"{files[500].name} is not a readable image"):
        decode_files(files, workers=2, chunk=37)
    monkeypatch.setenv("HYBREZOO_DECODE_WORKERS", "many")
    with pytest.raises(HybrezooError, match="HYBREZOO_DECODE_WORKERS='many' is not a whole number"):
        decode_workers()


def test_the_fused_optimizer_option_leaves_cpu_runs_unchanged():
    from hybrezoo.engine.optim import create_optimizer
    from hybrezoo.engine.recipe import DEFAULTS

    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
        optimizer = create_optimizer(dict(DEFAULTS["optimizer"]), model, fused=fused)
        assert not optimizer.defaults.get("fused")       # fused kernels are for parameters on a GPU only
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
            optimizer.step()
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert DEFAULTS["runtime"]["fused_optimizer"] is False
