"""The engine end to end on small data sets in the real on-disk formats: the run folder contract,
exact resumption, the stage extension point, model selection, and the CLI's errors."""
import json
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

from hybrezoo.cli import main
from hybrezoo.data.synthetic import write_fake_cifar100
from hybrezoo.engine import Callback, register_stage, run_recipe
from hybrezoo.engine import trainer as trainer_module
from hybrezoo.errors import HybrezooError
from hybrezoo.nn import relu_layers

SMALL = "deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100"  # 20.7 M MACs: the quickest zoo model
RECIPE = f"training/deepreduce/{SMALL}.yaml"
QUIET = ["runtime.progress=false", "distill.teacher=null"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    write_fake_cifar100(path, train_per_class=2, test_per_class=1)
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HYBREZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def finished(root, tmp_path_factory):
    """One complete 2-epoch run, shared by the tests that only read its folder."""
    out = tmp_path_factory.mktemp("runs") / "small"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBREZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run_recipe(RECIPE, data=str(root), out=out,
                   overrides=[*QUIET, "epochs=2", "data.batch_size=50", "data.eval_batch_size=40"])
    return out


def test_run_folder_contract(finished):
    names = {p.name for p in finished.iterdir()}
    assert {"model.safetensors", "config.json", "metrics.json", "recipe.yaml", "log.jsonl", "train.log",
            "checkpoint.pt"} <= names
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".export")]
    metrics = json.loads((finished / "metrics.json").read_text())
    for key in ("top1", "top5", "relus", "macs", "flops", "params", "epochs", "wall_time_s", "hardware", "model",
                "dataset", "recipe", "eval_split", "command"):
        assert key in metrics, key
    assert metrics["model"] == SMALL and metrics["dataset"] == "cifar100" and metrics["eval_split"] == "test"
    assert metrics["relus"] == 7_168 and metrics["epochs"] == 2 and metrics["eval_images"] == 100
    assert metrics["recipe"] == RECIPE and metrics["command"].startswith("hybrezoo train " + RECIPE)
    assert metrics["selection"] == dict(metrics["selection"], rule="last", epoch=2, split="test")
    log = [json.loads(line) for line in (finished / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and log[-1]["train_images"] == 200
    recipe = yaml.safe_load((finished / "recipe.yaml").read_text())
    assert recipe["epochs"] == 2 and recipe["model"]["name"] == SMALL and recipe["distill"]["teacher"] is None

    config = json.loads((finished / "config.json").read_text())
    assert config["architecture"] == SMALL.split(".")[0] and config["num_classes"] == 100
    assert config["pretrained_cfg"]["tag"] == "c100" and config["label_names"][:2] == ["class_000", "class_001"]
    # the folder loads back with timm alone, to the same weights
    model = timm.create_model(f"local-dir:{finished}", pretrained=True)
    saved = load_file(str(finished / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_eval_command_matches_the_run(finished, root, capsys):
    metrics = json.loads((finished / "metrics.json").read_text())
    assert main(["eval", SMALL, "--checkpoint", str(finished), "--data", str(root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(metrics["top1"]) and result["relus"] == 7_168
    assert main(["eval", str(finished), "--data", str(root)]) == 0
    assert "top-1" in capsys.readouterr().out


def test_resume_after_an_interruption_is_bit_identical(root, finished, tmp_path, monkeypatch):
    """KD, a held-out split, best-epoch selection and a warm-up schedule: all their state resumes."""
    overrides = ["runtime.progress=false", f"distill.teacher={SMALL}", f"distill.checkpoint={finished}",
                 "epochs=3", "data.batch_size=40", "data.holdout=40", "select=best",
                 "schedule.name=cosine", "schedule.warmup_epochs=1", "optimizer.no_decay=[norm, bias]"]
    whole = run_recipe(RECIPE, data=str(root), out=tmp_path / "whole", overrides=overrides)

    real = trainer_module.create_optimizer

    def interrupting(*args, **kwargs):  # stop in the middle of epoch 2 (4 steps an epoch)
        optimizer = real(*args, **kwargs)
        count = [0]

        def before_step(opt, args, kwargs):
            count[0] += 1
            if count[0] == 6:
                raise KeyboardInterrupt
        optimizer.register_step_pre_hook(before_step)
        return optimizer

    monkeypatch.setattr(trainer_module, "create_optimizer", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(RECIPE, data=str(root), out=tmp_path / "cut", overrides=overrides)
    monkeypatch.setattr(trainer_module, "create_optimizer", real)
    assert [json.loads(x)["epoch"] for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()] == [1]
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    with pytest.raises(HybrezooError, match="already holds a run: add --resume"):
        run_recipe(RECIPE, data=str(root), out=tmp_path / "cut", overrides=overrides)
    with pytest.raises(HybrezooError, match=r"different recipe \(differs in: epochs\)"):
        run_recipe(RECIPE, data=str(root), out=tmp_path / "cut", overrides=[*overrides, "epochs=4"], resume=True)
    cut = run_recipe(RECIPE, data=str(root), out=tmp_path / "cut", overrides=overrides, resume=True)

    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a = [json.loads(x) for x in (whole / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (cut / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log_b] == [1, 2, 3]
    assert [r["train_loss"] for r in log_a] == [r["train_loss"] for r in log_b]
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (whole, cut))
    assert ma["top1"] == mb["top1"] and ma["selection"] == mb["selection"]
    assert ma["selection"]["split"] == "holdout" and ma["train_images"] == 160
    assert all(r["eval_split"] == "holdout" for r in log_a)   # selection never looks at the test split


class StopEarly(Callback):
    """Counts steps in ctx.state, adds them to the epoch record and ends the stage after 2 epochs."""

    def on_step_end(self, ctx, step):
        ctx.state["steps"] = ctx.state.get("steps", 0) + 1

    def on_epoch_end(self, ctx, epoch, record):
        record["steps_seen"] = ctx.state["steps"]
        return epoch + 1 >= 2


def feature_channels(model):
    """Channels at every ReLU layer, from one forward pass (what a masking method measures first)."""
    channels = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: channels.__setitem__(n, o.shape[1]))
             for n, m in relu_layers(model).items()]
    device = next(model.parameters()).device
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32, device=device))
    for h in hooks:
        h.remove()
    return channels


@register_stage("test_half_channels", options={"keep": 0.5})
def half_channels(ctx):
    """Linearise the last channels of every ReLU layer, then fine-tune with an extra loss term."""
    for name, channels in feature_channels(ctx.model).items():
        keep = torch.zeros(channels, 1, 1, dtype=torch.bool)
        keep[: int(channels * ctx.section["keep"])] = True
        relu_layers(ctx.model)[name].set_mask(keep)
    ctx.model.to(next(ctx.model.parameters()).device)
    fc = ctx.model.get_classifier()
    ctx.fit(loss_terms={"l2": lambda step: 1e-3 * fc.weight.pow(2).sum()}, callbacks=[StopEarly()])


def test_stage_extension_point(root, tmp_path):
    recipe = tmp_path / "two_stages.yaml"
    recipe.write_text(yaml.safe_dump({
        "base": str(REPO / RECIPE),
        "distill": {"teacher": None},
        "stages": [{"kind": "train", "epochs": 1},
                   {"kind": "test_half_channels", "epochs": 5, "keep": 0.25, "optimizer": {"lr": 0.01}}]}))
    out = run_recipe(recipe, data=str(root), out=tmp_path / "run",
                     overrides=["runtime.progress=false", "data.batch_size=50"])
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [("0-train", 1), ("1-test_half_channels", 1),
                                                         ("1-test_half_channels", 2)]      # stopped early
    assert [r.get("steps_seen") for r in log] == [None, 4, 8] and "train_l2" in log[1]
    assert log[1]["lr"] <= 0.01
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["relus"] == 7_168 // 4                                     # masks are counted
    assert [s["name"] for s in metrics["stages"]] == ["0-train", "1-test_half_channels"]
    reloaded = timm.create_model(f"local-dir:{out}", pretrained=True)    # masks travel in the weights
    assert all(layer.mask is not None for layer in relu_layers(reloaded).values())


def test_select_best_without_holdout_is_refused(root, tmp_path):
    with pytest.raises(HybrezooError, match="select=best needs a held-out split"):
        run_recipe(RECIPE, data=str(root), out=tmp_path / "x", overrides=[*QUIET, "select=best"])
    assert not (tmp_path / "x").exists()


def one_error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hybrezoo: error: "), err
    return err[0]


def test_cli_bad_inputs_get_one_clear_line(root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYBREZOO_DATA", raising=False)
    assert "does not exist" in one_error_line(capsys, ["train", RECIPE, "--data", str(tmp_path / "nope")])
    assert "no data folder given" in one_error_line(capsys, ["train", RECIPE])
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_error_line(capsys, ["train", RECIPE, "--data", str(empty), "--out", str(tmp_path / "o")])
    assert "CIFAR-100 not found" in line and "cifar-100-python" in line
    line = one_error_line(capsys, ["train", RECIPE, "--data", str(root), "optimizer.lrr=0.1"])
    assert "unknown recipe key 'optimizer.lrr'; did you mean 'lr'?" in line
    line = one_error_line(capsys, ["train", RECIPE, "--data", str(root), "model.name=pi_resnet81.c100"])
    assert "unknown model 'pi_resnet81.c100'" in line and "pi_resnet18" in line
    assert "unknown model" in one_error_line(capsys, ["train", "pi_resnet81.c100", "--data", str(root)])
    assert "unknown option --bogus" in one_error_line(capsys, ["train", RECIPE, "--data", str(root), "--bogus"])
    assert "unknown model" in one_error_line(capsys, ["eval", "pi_resnet81.c100", "--data", str(root)])
    assert "no published weights" in one_error_line(capsys, ["eval", "pi_resnet18.c100", "--data", str(root)])
    line = one_error_line(capsys, ["eval", "pi_resnet18.c100", "--checkpoint", str(tmp_path), "--data", str(root)])
    assert "no model.safetensors" in line


def test_cli_options_may_follow_the_recipe(root, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", RECIPE, "epochs=1", "--data", str(root), *QUIET, "--out", str(out),
                 "runtime.max_steps=1", "data.batch_size=10", "runtime.max_eval_batches=1"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overrides"] == ["epochs=1", *QUIET, "runtime.max_steps=1", "data.batch_size=10",
                                    "runtime.max_eval_batches=1"]


# -- exact resumption at a stage boundary and in the middle of a later stage ---------------------------
@register_stage("test_random_setup", options={"keep": 0.5})
def random_setup(ctx):
    """A stage whose set-up draws from the global RNG (random per-channel masks), as SENet/SNL set-ups may."""
    for name, channels in feature_channels(ctx.model).items():
        keep = torch.rand(channels, 1, 1) < ctx.section["keep"]
        relu_layers(ctx.model)[name].set_mask(keep)
    ctx.model.to(next(ctx.model.parameters()).device)
    ctx.fit()


def _two_stage_recipe(tmp_path):
    recipe = tmp_path / "two_stages_random.yaml"
    recipe.write_text(yaml.safe_dump({
        "base": str(REPO / RECIPE), "distill": {"teacher": None},
        "model": {"kwargs": {"drop_rate": 0.3}},            # dropout: training consumes the global RNG
        "stages": [{"kind": "train", "epochs": 1},
                   {"kind": "test_random_setup", "epochs": 2, "optimizer": {"lr": 0.01}}]}))
    return recipe


def _same_run(a, b):
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])][:3]
    la = [json.loads(x) for x in (a / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"], r["train_loss"]) for r in la] == [(r["stage"], r["epoch"], r["train_loss"])
                                                                       for r in lb]
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["top1"] == mb["top1"] and ma["relus"] == mb["relus"]


def test_resume_is_exact_at_a_stage_boundary_and_inside_a_later_stage(root, tmp_path, monkeypatch):
    from hybrezoo.engine import run as run_module

    recipe = _two_stage_recipe(tmp_path)
    overrides = ["runtime.progress=false", "data.batch_size=50"]
    whole = run_recipe(recipe, data=str(root), out=tmp_path / "whole", overrides=overrides)
    real_save = run_module.save_checkpoint

    # 1. killed right after the checkpoint that ends stage 1 (no fit state, stage_index 1)
    def stop_at_boundary(path, state, **kwargs):
        real_save(path, state, **kwargs)
        if state["fit"] is None and state["stage_index"] == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(run_module, "save_checkpoint", stop_at_boundary)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, data=str(root), out=tmp_path / "boundary", overrides=overrides)
    monkeypatch.setattr(run_module, "save_checkpoint", real_save)
    assert not (tmp_path / "boundary" / "model.safetensors").exists()
    boundary = run_recipe(recipe, data=str(root), out=tmp_path / "boundary", overrides=overrides, resume=True)
    _same_run(whole, boundary)

    # 2. killed in the second epoch of stage 2 (4 steps an epoch: the 11th optimizer step of the run)
    real_opt = trainer_module.create_optimizer
    steps = [0]

    def interrupting(*args, **kwargs):
        optimizer = real_opt(*args, **kwargs)

        def before_step(opt, a, k):
            steps[0] += 1
            if steps[0] == 11:
                raise KeyboardInterrupt
        optimizer.register_step_pre_hook(before_step)
        return optimizer
    monkeypatch.setattr(trainer_module, "create_optimizer", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, data=str(root), out=tmp_path / "inside", overrides=overrides)
    monkeypatch.setattr(trainer_module, "create_optimizer", real_opt)
    log = [json.loads(x) for x in (tmp_path / "inside" / "log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [("0-train", 1), ("1-test_random_setup", 1)]
    inside = run_recipe(recipe, data=str(root), out=tmp_path / "inside", overrides=overrides, resume=True)
    _same_run(whole, inside)
