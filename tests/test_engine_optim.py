"""Optimizers, schedules, distillation loss and atomic checkpoints."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybrezoo.engine.checkpoint import atomic_path, load_checkpoint, load_state_dict, save_checkpoint
from hybrezoo.engine.distill import kd_loss
from hybrezoo.engine.optim import create_optimizer, create_scheduler, lr_factor_fn, param_groups
from hybrezoo.engine.recipe import DEFAULTS
from hybrezoo.errors import HybrezooError


def schedule(**kw):
    return dict(DEFAULTS["schedule"], **kw)


def test_weight_decay_exclusions():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.LayerNorm(4), nn.Linear(4, 2))
    every = param_groups(model, 5e-4, [])
    assert len(every) == 1 and len(every[0]["params"]) == 8
    groups = param_groups(model, 5e-4, ["norm", "bias"])
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(model[0].weight), id(model[3].weight)} and groups[1]["weight_decay"] == 0.0
    norms_only = param_groups(model, 5e-4, ["norm"])
    assert {id(p) for p in norms_only[1]["params"]} == {id(p) for m in (model[1], model[2]) for p in m.parameters()}
    with pytest.raises(HybrezooError, match="may hold norm, bias"):
        param_groups(model, 5e-4, ["bn"])


def test_optimizers():
    cfg = dict(DEFAULTS["optimizer"], nesterov=True)
    sgd = create_optimizer(cfg, nn.Linear(2, 2))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    adamw = create_optimizer(dict(cfg, name="adamw", lr=1e-3, betas=[0.8, 0.9]), nn.Linear(2, 2))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.9)
    with pytest.raises(HybrezooError, match="sgd or adamw"):
        create_optimizer(dict(cfg, name="lamb"), nn.Linear(2, 2))


def test_cosine_with_warmup():
    f = lr_factor_fn(schedule(name="cosine", warmup_epochs=1, warmup_factor=0.1, min_lr=0.001), 0.1, 10, 10)
    assert f(0) == pytest.approx(0.1) and f(5) == pytest.approx(0.55) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.01 + 0.99 * 0.5)                  # half-way through the cosine part
    assert f(100) == pytest.approx(0.01)                              # ends at min_lr / lr


def test_step_and_onecycle_and_constant():
    step = lr_factor_fn(schedule(name="step", milestones=[2, 4], gamma=0.1), 0.1, 6, 5)
    assert [step(s) for s in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    one = lr_factor_fn(schedule(name="onecycle", pct_start=0.25, div_factor=10, final_div_factor=100), 1.0, 4, 10)
    assert one(0) == pytest.approx(0.1) and one(10) == pytest.approx(1.0) and one(40) == pytest.approx(0.001)
    assert max(one(s) for s in range(40)) == pytest.approx(1.0)
    const = lr_factor_fn(schedule(name="constant", warmup_epochs=1, warmup_factor=0.5), 0.1, 3, 2)
    assert [const(s) for s in range(4)] == [0.5, 0.75, 1.0, 1.0]
    with pytest.raises(HybrezooError, match="milestones"):
        lr_factor_fn(schedule(name="step"), 0.1, 3, 2)
    with pytest.raises(HybrezooError, match="own warm-up"):
        lr_factor_fn(schedule(name="onecycle", warmup_epochs=1), 0.1, 3, 2)
    with pytest.raises(HybrezooError, match="covers the whole run"):
        lr_factor_fn(schedule(name="cosine", warmup_epochs=5), 0.1, 3, 2)


def test_scheduler_steps_per_update_and_resumes_exactly():
    model = nn.Linear(2, 2)
    opt = create_optimizer(dict(DEFAULTS["optimizer"]), model)
    sched = create_scheduler(opt, schedule(name="cosine"), epochs=2, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    opt2 = create_optimizer(dict(DEFAULTS["optimizer"]), model)
    sched2 = create_scheduler(opt2, schedule(name="cosine"), epochs=2, steps_per_epoch=5)
    for _ in range(4):
        opt2.step()
        sched2.step()
    state_o, state_s = opt2.state_dict(), sched2.state_dict()
    opt3 = create_optimizer(dict(DEFAULTS["optimizer"]), model)
    sched3 = create_scheduler(opt3, schedule(name="cosine"), epochs=2, steps_per_epoch=5)
    opt3.load_state_dict(state_o)
    sched3.load_state_dict(state_s)
    rest = []
    for _ in range(6):
        opt3.step()
        sched3.step()
        rest.append(opt3.param_groups[0]["lr"])
    assert rest == lrs[4:] and lrs[-1] == pytest.approx(0.0)


def test_kd_loss_is_hinton_kd():
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    expected = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
    assert torch.allclose(kd_loss(s, t, 4.0), expected, atol=1e-6)
    assert kd_loss(t, t, 2.0).abs() < 1e-6
    assert kd_loss(s.bfloat16(), t.bfloat16(), 4.0).dtype == torch.float32


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})

    def torn_save(obj, f, *a, **k):  # f: the temporary file, open for writing
        f.write(b"half a checkp")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_load_state_dict_sources(tmp_path):
    model = nn.Linear(2, 2)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "w.pth")
    assert set(load_state_dict(tmp_path / "w.pth")) == {"weight", "bias"}
    with pytest.raises(HybrezooError, match="not found"):
        load_state_dict(tmp_path / "none.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HybrezooError, match="no model.safetensors"):
        load_state_dict(tmp_path / "empty")
    with pytest.raises(HybrezooError, match="not a hybrezoo training checkpoint"):
        load_checkpoint(tmp_path / "w.pth")
