"""Publishing end to end, offline: a model with ReLU masks trained for a few steps by the engine,
exported to a hub folder, laid out in a local Hugging Face cache, and loaded back through every
route (``hf-hub:``, ``local-dir:``, ``pretrained_cfg_overlay=dict(file=...)``, ``torch.hub.load``,
and a zoo name published through the manifest) to outputs equal to the trained model's, bit for
bit. Also: the card holds the run's numbers, push --dry-run lists the files, bad files fail in one line."""
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard

import hybrezoo
from hybrezoo.cli import main
from hybrezoo.cost.result import format_seconds
from hybrezoo.data.synthetic import write_fake_cifar100
from hybrezoo.engine import register_stage, run_recipe
from hybrezoo.errors import HybrezooError
from hybrezoo.hub import HUB_FILES, WeightsError, export_run, read_release, record_release, render_card
from hybrezoo.hub.catalog import catalog_rows, zoo_table
from hybrezoo.hub.manifest import load_manifest
from hybrezoo.hub.push import plan_push, push_folder
from hybrezoo.nn import relu_layers

from conftest import lay_out_hf_cache

REPO = Path(__file__).resolve().parents[1]
SMALL = "snl_r18_15k.c100"  # a masked entry: its weights must bring masks within its 15,000-ReLU budget
ARCH = SMALL.split(".")[0]
RECIPE_PATH = f"training/snl/{SMALL}.yaml"
RECIPE = REPO / RECIPE_PATH
REPO_ID = "test-org/small"
REVISION = "0123456789abcdef0123456789abcdef01234567"
TRAINED: dict = {}  # the model as the masking stage left it, for bit-for-bit comparisons


@register_stage("hub_test_masks")
def _mask_then_train(ctx):
    """Linearise most of every ReLU layer (per element; the last layer per channel) to within the
    entry's budget, as an SNL search would, train, keep a copy."""
    shapes = {}

    def record(name):
        def hook(module, inputs, output):
            shapes.setdefault(name, tuple(inputs[0].shape[1:]))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in relu_layers(ctx.model).items()]
    with torch.no_grad():
        ctx.model.eval()(torch.zeros(1, *ctx.data.spec.input_size))
    ctx.model.train()
    for h in hooks:
        h.remove()
    *layers, (last, shape) = list(shapes.items())
    gen = torch.Generator().manual_seed(1)
    for name, layer_shape in layers:
        relu_layers(ctx.model)[name].set_mask(torch.rand(layer_shape, generator=gen) < 0.02)   # per element
    relu_layers(ctx.model)[last].set_mask(torch.arange(shape[0]).view(-1, 1, 1) % 16 == 0)    # per channel
    ctx.fit()
    TRAINED["model"] = copy.deepcopy(ctx.model).cpu().eval()
    TRAINED["masks"] = {n: m.mask.clone() for n, m in relu_layers(ctx.model).items() if m.mask is not None}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("hubrun")
    write_fake_cifar100(base / "data", train_per_class=2, test_per_class=1)
    recipe = base / "masked.yaml"
    recipe.write_text(yaml.safe_dump({"base": str(RECIPE), "distill": {"teacher": None}, "model": {"init": None},
                                      "stages": [{"kind": "hub_test_masks", "epochs": 1}]}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBREZOO_CACHE", str(base / "cache"))
        out = run_recipe(recipe, data=str(base / "data"), out=base / "run",
                         overrides=["runtime.progress=false", "data.batch_size=50", "runtime.max_steps=2"])
    assert len(TRAINED["masks"]) == len(relu_layers(TRAINED["model"])) == 16
    return out


@pytest.fixture(scope="module")
def hub(run, tmp_path_factory):
    """The smoke run exported with its evaluation on the stand-in data (the API's real_data=False: the
    command line refuses such a run, see test_a_smoke_run_cannot_be_exported_or_pushed)."""
    return export_run(run, tmp_path_factory.mktemp("export") / "hub", data=run.parent / "data", real_data=False)


@pytest.fixture(scope="module")
def hf_cache(hub, tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf") / "hub"
    lay_out_hf_cache(cache, REPO_ID, hub, REVISION)
    return cache


@pytest.fixture(autouse=True)
def offline(request, monkeypatch, tmp_path_factory):
    """HF_HUB_OFFLINE=1 and a private cache (huggingface_hub reads both into constants at import)."""
    cache = request.getfixturevalue("hf_cache") if "hf_cache" in request.fixturenames else \
        tmp_path_factory.getbasetemp() / "empty-hf-cache"
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HYBREZOO_MANIFEST", raising=False)


def same_as_trained(model) -> None:
    model.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), TRAINED["model"](x))
    masks = {n: m.mask for n, m in relu_layers(model).items() if m.mask is not None}
    assert masks.keys() == TRAINED["masks"].keys()
    assert all(torch.equal(masks[n], TRAINED["masks"][n]) for n in masks)


# ---------------------------------------------------------------- export and card

def test_export_writes_the_hub_folder(run, hub):
    assert sorted(p.name for p in hub.iterdir()) == sorted([*HUB_FILES, "eval.json"])
    for name in ("config.json", "model.safetensors", "metrics.json", "recipe.yaml", "log.jsonl",
                 "model.safetensors.sha256"):
        assert (hub / name).read_bytes() == (run / name).read_bytes(), name
    digest = hashlib.sha256((hub / "model.safetensors").read_bytes()).hexdigest()
    assert (hub / "model.safetensors.sha256").read_text() == f"{digest}  model.safetensors\n"
    evaluation = json.loads((hub / "eval.json").read_text())
    assert evaluation["weights_sha256"] == digest and evaluation["images"] == 100  # the stand-in's 100 test images
    assert (evaluation["device"], evaluation["amp"], evaluation["precision"]) == ("cpu", "off", "float32")
    config = json.loads((hub / "config.json").read_text())
    assert config["architecture"] == ARCH and config["num_classes"] == 100 and len(config["label_names"]) == 100
    assert config["pretrained_cfg"]["tag"] == "c100" and "model_args" in config


def test_card_metadata_and_the_runs_numbers(run, hub):
    metrics = json.loads((run / "metrics.json").read_text())
    evaluation = json.loads((hub / "eval.json").read_text())
    card = ModelCard((hub / "README.md").read_text())
    data = card.data
    assert data.library_name == "timm" and data.license == "apache-2.0"
    assert {"private-inference", "relu-reduction", "snl"} <= set(data.tags)
    assert data.datasets == ["uoft-cs/cifar100"]
    top1, top5 = data.eval_results
    # the card states what `hybrezoo eval` printed for the exported weights, and the run's own figure beside it
    assert (top1.metric_value, top5.metric_value) == (round(evaluation["top1"], 2), round(evaluation["top5"], 2))
    assert top1.dataset_split == "test" and top1.dataset_name == "CIFAR-100"

    text = card.text
    assert f"| these weights, `hybrezoo eval` (cpu, float32, {evaluation['threads']} thread" in text
    assert f"| {evaluation['top1']:.2f} | {evaluation['top5']:.2f} |" in text
    assert f"last evaluation (cpu, float32) | {metrics['top1']:.2f} | {metrics['top5']:.2f} |" in text
    assert "hybrezoo eval DIR --data PATH --device cpu --amp off" in text
    assert f"| ReLUs | {metrics['relus']:,} in 16 layers |" in text and metrics["relus"] <= 15_000  # masks counted
    assert f"{metrics['macs']:,}" in text and f"{metrics['params']:,}" in text
    assert metrics["command"] in text and metrics["git_commit"] in text
    assert f"hybrezoo train {RECIPE_PATH} --data PATH" in text
    assert f"{metrics['train_images']:,}, global batch 50" in text and metrics["hardware"]["cpu"] in text
    assert f"({metrics['wall_time_s']:,.0f} s)" in text or f"{metrics['wall_time_s']:.0f} s" in text
    assert hashlib.sha256((hub / "model.safetensors").read_bytes()).hexdigest() in text
    assert (run / "recipe.yaml").read_text().strip() in text
    assert hybrezoo.registry.PAPERS["snl"].cite() in text
    # the latency rows are pi_cost's own figures for these weights
    model = timm.create_model(f"local-dir:{hub}", pretrained=True)
    for network in ("lan", "wan"):
        cost = hybrezoo.pi_cost(model, network=network)
        assert cost.relus == metrics["relus"]
        assert format_seconds(cost.latency_s) in text


def test_export_refuses_what_it_cannot_publish(run, hub, tmp_path):
    with pytest.raises(HybrezooError, match="is not empty: choose another --out, or add --overwrite"):
        export_run(run, hub, real_data=False)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run / "checkpoint.pt", unfinished)
    with pytest.raises(HybrezooError, match="has not finished: continue it with .*--resume"):
        export_run(unfinished, tmp_path / "x", real_data=False)
    # weights that lost their masks do not reproduce the run's ReLU count
    unmasked = tmp_path / "unmasked"
    shutil.copytree(run, unmasked)
    from safetensors.torch import load_file, save_file
    state = {k: v for k, v in load_file(str(unmasked / "model.safetensors")).items() if not k.endswith(".mask")}
    save_file(state, str(unmasked / "model.safetensors"), metadata={"format": "pt"})
    (unmasked / "model.safetensors.sha256").unlink()
    with pytest.raises(HybrezooError, match="do not reproduce the run's figures \\(relus"):
        export_run(unmasked, tmp_path / "y", real_data=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _edited_copy(run: Path, where: Path, config: dict, model: str) -> Path:
    """The run folder with ``config`` merged into config.json and metrics.json naming ``model``."""
    shutil.copytree(run, where)
    cfg = json.loads((where / "config.json").read_text())
    cfg.update(config)
    (where / "config.json").write_text(json.dumps(cfg))
    metrics = json.loads((where / "metrics.json").read_text())
    (where / "metrics.json").write_text(json.dumps(dict(metrics, model=model)))
    return where


def test_export_publishes_only_the_registered_architecture_under_its_name(run, tmp_path):
    """A `hybrezoo reduce` result built on a base name with architecture arguments, or masked weights
    under a name without masks, would replace that entry's weights with another network's."""
    cfg = json.loads((run / "config.json").read_text())
    other = _edited_copy(run, tmp_path / "args", {"model_args": dict(cfg.get("model_args") or {}, channel_mult=0.5)},
                         SMALL)
    with pytest.raises(HybrezooError, match=r"other architecture arguments \(channel_mult=0.5\).*not the zoo's"):
        export_run(other, tmp_path / "x", real_data=False)
    base = _edited_copy(run, tmp_path / "base", {"architecture": "pi_resnet18_nostem"}, "pi_resnet18_nostem.c100")
    with pytest.raises(HybrezooError, match="carry trained ReLU masks, but pi_resnet18_nostem.c100 is not a masked"):
        export_run(base, tmp_path / "y", real_data=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_smoke_run_cannot_be_exported_or_pushed(run, hub, tmp_path, capsys):
    """As a new user would try it: a few steps on a stand-in data set, exported and pushed (--dry-run)."""
    assert main(["export", str(run), "--out", str(tmp_path / "h"), "--repo-id", REPO_ID]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a smoke run (runtime.max_steps=2), not a checkpoint" in err[0]
    assert not (tmp_path / "h").exists()
    assert main(["push", str(hub), "--repo-id", REPO_ID, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a smoke run" in err[0]
    # the same run without max_steps in its recipe: trained on the stand-in's 200 images
    full = tmp_path / "stand-in"
    shutil.copytree(run, full)
    recipe = yaml.safe_load((full / "recipe.yaml").read_text())
    recipe["runtime"]["max_steps"] = None
    (full / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["export", str(full), "--out", str(tmp_path / "h2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained on 200 images where CIFAR-100 has 50,000" in err[0]
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "h3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a folder" in err[0]


def _with_weights(run: Path, where: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(run, where)
    state = load_file(str(where / "model.safetensors"))
    edit(state)
    save_file(state, str(where / "model.safetensors"), metadata={"format": "pt"})
    (where / "model.safetensors.sha256").unlink()
    return where


def test_export_refuses_bad_tensors_foreign_commits_and_heads(run, tmp_path):
    def nan(state):
        state["conv1.weight"][0, 0, 0, 0] = float("nan")

    def integer(state):
        state["fc.bias"] = state["fc.bias"].to(torch.int32)

    with pytest.raises(HybrezooError, match="tensor conv1.weight holds NaN or infinite values"):
        read_release(_with_weights(run, tmp_path / "nan", nan), real_data=False)
    with pytest.raises(HybrezooError, match="tensor fc.bias is torch.int32, not floating point"):
        read_release(_with_weights(run, tmp_path / "int", integer), real_data=False)
    ten = _edited_copy(run, tmp_path / "ten", {"num_classes": 10}, SMALL)
    with pytest.raises(HybrezooError, match="config.json gives 10 classes and 100 label names where CIFAR-100 has 100"):
        read_release(ten, real_data=False)
    foreign = tmp_path / "foreign"
    shutil.copytree(run, foreign)
    metrics = json.loads((foreign / "metrics.json").read_text())
    (foreign / "metrics.json").write_text(json.dumps(dict(metrics, git_commit="f67eeee7bff202f752e1c399fe6af4f2e7ef6771")))
    with pytest.raises(HybrezooError, match="records git_commit f67eeee7bff2, which is not a hybrezoo commit.*"
                                            "--git-commit REV"):
        read_release(foreign, real_data=False)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    fixed = read_release(foreign, git_commit=head[:7], real_data=False)
    assert fixed.metrics["git_commit"] == head
    assert "git_commit" not in read_release(foreign, git_commit="none", real_data=False).metrics


def test_float16_export_is_checked_evaluated_and_carded_as_stored(run, hub, tmp_path):
    """--dtype float16: half the file, masks and integers untouched, and the sha256, evaluation and card
    are of the stored float16 copy (which loads and computes what the float32 run does, to float16)."""
    from safetensors import safe_open

    half = export_run(run, tmp_path / "half", data=run.parent / "data", real_data=False, dtype="float16")
    size32, size16 = ((f / "model.safetensors").stat().st_size for f in (run, half))
    assert 0.45 < size16 / size32 < 0.55
    with safe_open(str(run / "model.safetensors"), "pt") as f32, safe_open(str(half / "model.safetensors"), "pt") as f16:
        assert f16.keys() == f32.keys() and f16.metadata() == f32.metadata()
        for key in f32.keys():
            a, b = f32.get_tensor(key), f16.get_tensor(key)
            assert b.dtype == (torch.float16 if a.is_floating_point() else a.dtype), key
            assert torch.equal(b, a.to(b.dtype)), key
    release = read_release(half, real_data=False)
    digest = hashlib.sha256((half / "model.safetensors").read_bytes()).hexdigest()
    assert release.weights_dtype == "float16" and release.sha256 == digest != read_release(hub, real_data=False).sha256
    assert (half / "model.safetensors.sha256").read_text() == f"{digest}  model.safetensors\n"
    assert json.loads((half / "eval.json").read_text())["weights_sha256"] == digest
    card = (half / "README.md").read_text()
    assert "stored as float16, cast from the float32 weights" in card and "weights (float16)" in card
    assert "weights (float32)" in (hub / "README.md").read_text()
    model = timm.create_model(f"local-dir:{half}", pretrained=True).eval()
    assert next(model.parameters()).dtype == torch.float32   # loaded into the float32 model
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, ref = model(x), TRAINED["model"](x)
    assert not torch.equal(out, ref) and torch.allclose(out, ref, rtol=1e-2, atol=1e-2)
    assert all(torch.equal(m.mask, TRAINED["masks"][n]) for n, m in relu_layers(model).items() if m.mask is not None)
    # the manifest keeps the precision
    record_release(release, tmp_path / "manifest.json")
    assert load_manifest(tmp_path / "manifest.json").get(release.name).weights_dtype == "float16"


def test_float16_export_refuses_values_it_cannot_hold(run, tmp_path):
    def huge(state):
        state["fc.bias"][0] = 1e6

    with pytest.raises(HybrezooError, match=r"tensor fc.bias holds values beyond float16's range \(largest \|x\| 1e\+06\)"
                                            ".*--dtype float32"):
        export_run(_with_weights(run, tmp_path / "huge", huge), tmp_path / "out", real_data=False, dtype="float16")
    assert not (tmp_path / "out").exists()
    with pytest.raises(HybrezooError, match="--dtype int8: choose one of float32, float16"):
        export_run(run, tmp_path / "out", real_data=False, dtype="int8")


# ---------------------------------------------------------------- loading, offline

def test_load_hf_hub_offline(hf_cache):
    assert hf_constants.is_offline_mode()
    model = timm.create_model(f"hf-hub:{REPO_ID}", pretrained=True)
    assert model.pretrained_cfg["hf_hub_id"] == REPO_ID and model.pretrained_cfg["tag"] == "c100"
    same_as_trained(model)


def test_load_local_dir(hub):
    same_as_trained(timm.create_model(f"local-dir:{hub}", pretrained=True))


def test_load_pretrained_cfg_overlay_file(hub):
    same_as_trained(timm.create_model(SMALL, pretrained=True,
                                      pretrained_cfg_overlay=dict(file=str(hub / "model.safetensors"))))
    same_as_trained(hybrezoo.create_model(SMALL, pretrained=True,
                                          pretrained_cfg_overlay=dict(file=str(hub / "model.safetensors"))))


def test_load_torch_hub_local(hf_cache):
    model = torch.hub.load(str(REPO), ARCH, source="local", tag="c100", pretrained=True,
                           pretrained_cfg_overlay=dict(hf_hub_id=REPO_ID))
    same_as_trained(model)


def test_published_name_loads_through_the_manifest(hub, hf_cache, tmp_path):
    """The whole published path, in a fresh interpreter with the real environment variables: the
    manifest (written by the function `push` uses) gives the zoo name its hf_hub_id and sha256."""
    manifest = tmp_path / "manifest.json"
    record_release(read_release(hub, repo_id=REPO_ID, revision=REVISION, real_data=False), manifest)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.save(x, tmp_path / "x.pt")
    script = f"""
import sys, torch, timm, hybrezoo
x = torch.load(sys.argv[1])
by_hub = torch.hub.load({str(REPO)!r}, {ARCH!r}, source="local", tag="c100", pretrained=True).eval()
by_name = timm.create_model({SMALL!r}, pretrained=True).eval()
with torch.no_grad():
    torch.save({{"hub": by_hub(x), "name": by_name(x), "cfg": by_name.pretrained_cfg["hf_hub_id"],
                "listed": hybrezoo.list_models(pretrained=True), "info": hybrezoo.model_info({SMALL!r})}}, sys.argv[2])
"""
    env = dict(os.environ, HYBREZOO_MANIFEST=str(manifest), HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hf_cache))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = torch.load(tmp_path / "y.pt")
    with torch.no_grad():
        expected = TRAINED["model"](x)
    assert torch.equal(got["hub"], expected) and torch.equal(got["name"], expected)
    assert got["cfg"] == f"{REPO_ID}@{REVISION}" and got["listed"] == [SMALL]
    evaluation = json.loads((hub / "eval.json").read_text())
    assert got["info"]["pretrained"] and got["info"]["measured_top1"] == evaluation["top1"]


# ---------------------------------------------------------------- bad files: one clear error

def test_truncated_file_is_one_clear_error(hub, tmp_path):
    broken = tmp_path / "model.safetensors"
    data = (hub / "model.safetensors").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="is not a complete safetensors file") as err:
        timm.create_model(SMALL, pretrained=True, pretrained_cfg_overlay=dict(file=str(broken)))
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="not found: check the path"):
        timm.create_model(SMALL, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "absent.safetensors")))


def cache_a_corrupt_copy(hub: Path, cache: Path, monkeypatch) -> str:
    """``hub`` cached as test-org/corrupt with one flipped byte in the tensor data (the header still parses)."""
    repo = lay_out_hf_cache(cache, "test-org/corrupt", hub, REVISION)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    blob = Path(os.path.realpath(repo / "snapshots" / REVISION / "model.safetensors"))
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF
    blob.write_bytes(bytes(data))
    return "test-org/corrupt"


def test_corrupt_hub_download_fails_its_sha256(hub, tmp_path, monkeypatch):
    cache_a_corrupt_copy(hub, tmp_path / "hf", monkeypatch)
    with pytest.raises(WeightsError, match="corrupt, truncated or replaced.*the hub's LFS sha256.*delete the cached copy"):
        timm.create_model("hf-hub:test-org/corrupt", pretrained=True)


def test_engine_weights_from_the_hub_pass_the_same_checks(hub, hf_cache, tmp_path, monkeypatch):
    """``--init hf-hub:...`` and teacher checkpoints (engine's load_weights) load the cached file bit for
    bit and refuse a corrupted blob with the same one-line sha256 error as pretrained=True."""
    from hybrezoo.engine import load_weights

    model = timm.create_model(SMALL)
    load_weights(model, f"hf-hub:{REPO_ID}")
    same_as_trained(model)
    corrupt = cache_a_corrupt_copy(hub, tmp_path / "hf", monkeypatch)
    with pytest.raises(HybrezooError, match="init weights .*corrupt, truncated or replaced.*LFS sha256") as err:
        load_weights(timm.create_model(SMALL), f"hf-hub:{corrupt}", what="init weights")
    assert "\n" not in str(err.value)


def test_manifest_sha256_is_checked(hub, hf_cache, tmp_path, monkeypatch):
    good = read_release(hub, repo_id=REPO_ID, revision=REVISION, real_data=False)
    manifest = tmp_path / "manifest.json"
    record_release(good, manifest)
    monkeypatch.setenv("HYBREZOO_MANIFEST", str(manifest))
    same_as_trained(timm.create_model(f"hf-hub:{REPO_ID}", pretrained=True))      # matches
    from dataclasses import replace
    record_release(replace(good, sha256="0" * 64, evaluation=dict(good.evaluation, weights_sha256="0" * 64)), manifest)
    with pytest.raises(WeightsError, match="expected 0000000000000000... \\(from the hybrezoo manifest\\)"):
        timm.create_model(f"hf-hub:{REPO_ID}", pretrained=True)


def test_not_in_cache_while_offline_is_one_clear_error(hf_cache):
    with pytest.raises(WeightsError, match="not in the Hugging Face cache .*HF_HUB_OFFLINE is set"):
        timm.create_model(SMALL, pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="test-org/absent"))


def test_cli_reports_a_corrupt_file_in_one_line(hub, run, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(hub, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    data = run.parent / "data"
    assert main(["eval", str(broken), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors is corrupt, truncated or replaced" in err[0]
    assert "(from model.safetensors.sha256)" in err[0]
    (broken / "model.safetensors.sha256").unlink()  # without its digest, truncation is still caught
    assert main(["eval", str(broken), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a complete safetensors file" in err[0]


def test_corrupt_middle_of_an_exported_file_is_refused_on_every_route(hub, tmp_path, capsys):
    """4 KB overwritten in the middle of model.safetensors, size and header kept: it still parses and
    would load NaN or garbage; the digest beside it refuses it on every route that reads the folder."""
    from hybrezoo.engine import load_weights

    broken = tmp_path / "broken"
    shutil.copytree(hub, broken)
    with open(broken / "model.safetensors", "r+b") as f:
        f.seek((broken / "model.safetensors").stat().st_size // 2)
        f.write(b"\xff" * 4096)
    for load in (lambda: timm.create_model(f"local-dir:{broken}", pretrained=True),
                 lambda: timm.create_model(SMALL, pretrained=True,
                                           pretrained_cfg_overlay=dict(file=str(broken / "model.safetensors"))),
                 lambda: load_weights(timm.create_model(SMALL), broken)):
        with pytest.raises(HybrezooError, match=f"{broken / 'model.safetensors'} is corrupt, truncated or "
                                                "replaced.*from model.safetensors.sha256") as err:
            load()
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------- push

PUBLISHED = REPO / "weights" / "deepreduce_r18_cull1_thin_ch05_rho05.tin"   # a real checkpoint of the zoo


def test_push_dry_run_lists_the_files(tmp_path, capsys):
    from hybrezoo.hub.push import PUSHED_FILES

    folder = tmp_path / "release"
    shutil.copytree(PUBLISHED, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["push", str(folder), "--repo-id", REPO_ID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would upload {len(PUSHED_FILES)} files of {PUBLISHED.name} to https://huggingface.co/{REPO_ID}" in out
    for name in PUSHED_FILES:
        assert f"  {name}" in out
    assert f"{(folder / 'model.safetensors').stat().st_size:,} bytes" in out
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written


def test_push_without_token_or_network_is_one_line(tmp_path, monkeypatch, capsys):
    assert main(["push", str(PUBLISHED), "--repo-id", REPO_ID]) == 2  # HF_HUB_OFFLINE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot push while HF_HUB_OFFLINE is set" in err[0]
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"), raising=False)
    assert main(["push", str(PUBLISHED), "--repo-id", REPO_ID]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Hugging Face token: run `hf auth login` or set HF_TOKEN" in err[0]
    assert main(["push", str(PUBLISHED), "--repo-id", "no-slash", "--dry-run"]) == 2
    assert "is not ORG/NAME" in capsys.readouterr().err


class RecordingHub:
    """Stands in for the Hugging Face service (there is no network here); records what push sends."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))

    def upload_folder(self, folder_path, repo_id, allow_patterns, commit_message):
        files = sorted(p.name for p in Path(folder_path).iterdir() if p.name in allow_patterns)
        self.calls.append(("upload_folder", repo_id, files, Path(folder_path, "README.md").read_text()))
        return type("CommitInfo", (), {"oid": REVISION})()


def test_push_records_the_release_and_its_card(tmp_path, monkeypatch):
    from hybrezoo.hub.push import PUSHED_FILES

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    folder = tmp_path / "release"
    shutil.copytree(PUBLISHED, folder)
    service = RecordingHub()
    manifest = tmp_path / "manifest.json"
    plan = push_folder(folder, REPO_ID, api=service, manifest=manifest)
    assert service.calls[0] == ("create_repo", REPO_ID, False, True)
    _, repo, files, uploaded_card = service.calls[1]
    assert repo == REPO_ID and files == sorted(PUSHED_FILES)
    # a published entry's card loads it by its zoo name, from this repository first
    assert f'timm.create_model("{PUBLISHED.name}", pretrained=True)' in uploaded_card
    assert f"from the hub ({REPO_ID}) when it answers" in uploaded_card
    release = load_manifest(manifest).get(PUBLISHED.name)
    assert release.hf_hub_id == REPO_ID and release.revision == REVISION and plan.manifest == manifest
    assert release.sha256 == hashlib.sha256((PUBLISHED / "model.safetensors").read_bytes()).hexdigest()
    assert release.evaluation == json.loads((PUBLISHED / "eval.json").read_text())
    # the committed card (rendered from the manifest) is the uploaded card, word for word
    assert render_card(release, in_zoo=True) == uploaded_card == (folder / "README.md").read_text()
    assert plan_push(folder, REPO_ID).card == uploaded_card


def test_push_refuses_a_folder_without_an_evaluation(run, tmp_path):
    folder = tmp_path / "release"
    shutil.copytree(PUBLISHED, folder)
    (folder / "eval.json").unlink()
    with pytest.raises(HybrezooError, match="has no eval.json.*hybrezoo publish RUN_DIR --data PATH"):
        plan_push(folder, REPO_ID)


def test_zoo_table_shows_published_figures(hub, tmp_path, monkeypatch):
    manifest = tmp_path / "manifest.json"
    record_release(read_release(hub, repo_id=REPO_ID, revision=REVISION, real_data=False), manifest)
    monkeypatch.setenv("HYBREZOO_MANIFEST", str(manifest))
    metrics = json.loads((hub / "eval.json").read_text())
    rows = catalog_rows(REPO, names={SMALL, "pi_resnet18.c100"})
    table = zoo_table(rows, cards_prefix="model_cards/", repo_prefix="")
    line = next(x for x in table.splitlines() if x.startswith(f"| [{SMALL}]"))
    assert f"| {metrics['top1']:.2f} | {metrics['top5']:.2f} |" in line and f"(https://huggingface.co/{REPO_ID})" in line
    other = next(x for x in table.splitlines() if x.startswith("| [pi_resnet18.c100]"))
    assert "| - | - |" in other


def test_a_published_masked_entry_is_counted_with_its_masks(run, tmp_path):
    """A mirror (manifest.json + weights/) publishing the masked smoke run: `hybrezoo zoo` counts the
    masks of its weights instead of pricing the budget, and shows the evaluation's top-1."""
    folder = export_run(run, tmp_path / "weights" / SMALL, data=run.parent / "data", real_data=False, in_zoo=True)
    record_release(read_release(folder, real_data=False), tmp_path / "manifest.json")
    env = dict(os.environ, HYBREZOO_MANIFEST=str(tmp_path / "manifest.json"))
    done = subprocess.run([sys.executable, "-m", "hybrezoo", "zoo", "--dataset", "c100", "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(r for r in json.loads(done.stdout) if r["name"] == SMALL)
    metrics, evaluation = (json.loads((folder / f).read_text()) for f in ("metrics.json", "eval.json"))
    assert not row["relus_bound"] and row["relus"] == metrics["relus"] < 15_000
    assert row["top1"] == evaluation["top1"]


def test_export_to_a_dangling_link_or_after_a_killed_export(run, tmp_path, capsys):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "nowhere")
    assert main(["export", str(run), "--out", str(link)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hybrezoo: error: --out {link} is a symbolic link to nothing: remove it or choose another folder"]
    # the temporary folder of an export killed before its rename (its process is gone) is removed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".hub.export-{dead.pid}-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    out = export_run(run, tmp_path / "hub", real_data=False)
    assert not stale.exists() and (out / "README.md").is_file()
    assert not list(tmp_path.glob(".hub.export-*"))
