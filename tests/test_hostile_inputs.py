"""Bad input, as a new user or an attacker gives it: one clear line (HybrezooError / ValueError, printed by
the CLI as ``hybrezoo: error: ...``), never a traceback, never a silently wrong result (issue 12).

Each test names the input it feeds; each failed before the fix it guards (a traceback, a misleading
line, or a run that went ahead with the wrong value)."""
import json
import shutil
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from hybrezoo import pi_cost
from hybrezoo.cli import main
from hybrezoo.data import DeviceLoader, holdout_split, load_split
from hybrezoo.data.arrays import ImageArrays
from hybrezoo.data.synthetic import write_fake_cifar100, write_fake_tinyimagenet
from hybrezoo.data.tinyimagenet import TinyImageNetSource
from hybrezoo.engine import runtime
from hybrezoo.engine.export import save_model
from hybrezoo.engine.recipe import RecipeError, load_recipe
from hybrezoo.engine.run import build_model
from hybrezoo.errors import HybrezooError
from hybrezoo.nn import relu_layers

REPO = Path(__file__).resolve().parents[1]
SMALL = "deepreduce_r18_d2111_cull1_thin_ch05_rho05.c100"  # the quickest zoo model to build
RECIPE = REPO / "training" / "deepreduce" / f"{SMALL}.yaml"


def one_error_line(capsys, argv, *needles):
    """Run the CLI; it must exit 2 with exactly one ``hybrezoo: error:`` line holding every needle."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybrezoo: error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HYBREZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# --------------------------------------------------------------------------------------------------
# recipe values: checked when the recipe is loaded, so every entry point refuses them

@pytest.mark.parametrize("override,key", [
    ("data.batch_size=0", "data.batch_size"),                 # was: ZeroDivisionError
    ("data.eval_batch_size=0", "data.eval_batch_size"),       # was: ZeroDivisionError
    ("loss.label_smoothing=2", "loss.label_smoothing"),       # was: RuntimeError deep in cross_entropy
    ("data.holdout=-1", "data.holdout"),                      # was: silently no held-out split
    ("data.holdout=2.5", "data.holdout"),                     # was: silently 2 images
    ("optimizer.momentum=2", "optimizer.momentum"),           # was: accepted, diverging run
    ("schedule.warmup_epochs=-1", "schedule.warmup_epochs"),  # was: accepted
    ("schedule.gamma=-1", "schedule.gamma"),                  # was: a negative learning rate
    ("distill.weight=-1", "distill.weight"),                  # was: accepted (KD pushed away from the teacher)
    ("runtime.max_steps=-1", "runtime.max_steps"),            # was: zero steps, a "finished" run
    ("runtime.max_steps=abc", "runtime.max_steps"),           # was: accepted, failed mid-run
    ("optimizer.lr=.nan", "optimizer.lr"),                    # was: accepted
    ("optimizer.betas=[0.9]", "optimizer.betas"),             # was: accepted, failed in AdamW
    ("stages.0.optimizer.momentum=2", "stages.0.optimizer.momentum"),  # a stage's own section too
])
def test_out_of_range_recipe_values_are_refused_on_load(override, key):
    with pytest.raises(RecipeError, match=f"recipe key {key}=.* is out of range: use ") as err:
        load_recipe(RECIPE, [override])
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("override", ["optimizer.momentum=0", "loss.label_smoothing=0", "data.holdout=0.1",
                                      "data.holdout=5", "runtime.max_steps=null", "schedule.warmup_epochs=0.5",
                                      "distill.weight=0"])
def test_values_at_the_edges_of_their_range_are_accepted(override):
    load_recipe(RECIPE, [override])


def test_recipe_range_errors_reach_the_cli_as_one_line(capsys, tmp_path):
    one_error_line(capsys, ["train", str(RECIPE), "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                            "data.batch_size=0"], "data.batch_size=0", "whole number >= 1")
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_loaders_refuse_bad_sizes_directly():
    data = ImageArrays(np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) % 2, ["a", "b"])
    with pytest.raises(ValueError, match="batch_size=0 is out of range"):  # was: ZeroDivisionError
        DeviceLoader(data, batch_size=0, mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(ValueError, match="data.holdout=-1"):             # was: silently no held-out split
        holdout_split(data, -1, 0)


# --------------------------------------------------------------------------------------------------
# model.kwargs: checked where the run builds its model

@pytest.mark.parametrize("kwargs,needle", [
    ("{foo: 1}", "takes no argument 'foo'"),                  # was: TypeError traceback
    ("{num_classes: 10}", "CIFAR-100 has 100 classes"),       # was: IndexError mid-training
    ("{global_pool: x}", "Invalid pool type: x"),             # was: AssertionError traceback
    ("{drop_rate: -0.5}", "drop_rate=-0.5 is out of range"),  # was: silently no dropout
])
def test_bad_model_kwargs_are_one_line_naming_them(kwargs, needle):
    recipe = load_recipe(RECIPE, [f"model.kwargs={kwargs}"])
    with pytest.raises(HybrezooError, match="model.kwargs") as err:
        build_model(recipe)
    assert needle in str(err.value) and len(str(err.value).splitlines()) == 1


def test_bad_model_kwargs_from_the_cli(capsys, tmp_path):
    write_fake_cifar100(tmp_path / "data", train_per_class=1, test_per_class=1)
    one_error_line(capsys, ["train", str(RECIPE), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                            "runtime.progress=false", "distill.teacher=null", "model.kwargs={foo: 1}"],
                   "model.kwargs", "'foo'")


@pytest.mark.parametrize("kwargs,needle", [
    (dict(num_classes=-1), "num_classes=-1 is out of range"),   # was: built silently
    (dict(drop_rate=-0.5), "drop_rate=-0.5 is out of range"),   # was: built silently, no dropout
    (dict(drop_rate=1.5), "drop_rate=1.5 is out of range"),
])
def test_create_model_refuses_out_of_range_arguments(kwargs, needle):
    with pytest.raises(HybrezooError, match=needle):
        timm.create_model("pi_resnet18.c100", **kwargs)


# --------------------------------------------------------------------------------------------------
# run folders: eval and cost

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders as `hybrezoo train` leaves them: one with ReLU masks, one of another architecture,
    one whose config names an architecture that does not exist, one interrupted, one plain folder."""
    base = tmp_path_factory.mktemp("runs")
    model = timm.create_model(SMALL).eval()
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, o.shape[1:]))
             for n, m in relu_layers(model).items()]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    first = next(iter(relu_layers(model)))
    relu_layers(model)[first].set_mask(torch.zeros(shapes[first]))  # one layer linearised: fewer ReLUs
    save_model(model, base / "masked", [f"c{i}" for i in range(100)])
    save_model(timm.create_model("pi_resnet18_nostem.c100"), base / "nostem", [f"c{i}" for i in range(100)])
    shutil.copytree(base / "nostem", base / "badarch")
    config = json.loads((base / "badarch" / "config.json").read_text())
    config["architecture"] = "pi_resnet19"
    (base / "badarch" / "config.json").write_text(json.dumps(config))
    (base / "interrupted").mkdir()
    (base / "interrupted" / "checkpoint.pt").write_bytes(b"")
    (base / "interrupted" / "recipe.yaml").write_text("model: {name: pi_resnet18.c100}\n")
    (base / "notarun").mkdir()
    return {"base": base, "masked_model": model}


@pytest.mark.parametrize("folder,needle", [
    ("notarun", "is not a run folder (it holds no config.json)"),  # was: "unknown model"
    ("interrupted", "is an unfinished run"),                        # was: "unknown model"
    ("badarch", "names architecture 'pi_resnet19'"),                # was: RuntimeError traceback
])
def test_eval_of_a_folder_that_cannot_be_loaded_says_why(capsys, runs, tmp_path, folder, needle):
    one_error_line(capsys, ["eval", str(runs["base"] / folder), "--data", str(tmp_path)], needle)


def test_create_model_local_dir_with_an_unknown_architecture(runs):
    from hybrezoo import create_model

    with pytest.raises(HybrezooError, match="names architecture 'pi_resnet19'.*closest: pi_resnet18"):
        create_model(f"local-dir:{runs['base'] / 'badarch'}", pretrained=True)


def test_eval_refuses_weights_of_another_architecture(capsys, runs, tmp_path):
    # pi_resnet18_nostem's tensors fit pi_resnet18 exactly: this used to load and print a top-1
    one_error_line(capsys, ["eval", "pi_resnet18.c100", "--checkpoint", str(runs["base"] / "nostem"),
                            "--data", str(tmp_path)], "pi_resnet18_nostem.c100", "not pi_resnet18.c100")
    one_error_line(capsys, ["eval", "pi_resnet18.c100", "--checkpoint",
                            str(runs["base"] / "nostem" / "model.safetensors"), "--data", str(tmp_path)],
                   "pi_resnet18_nostem.c100")


def test_cost_prices_a_run_folder_with_its_masks(capsys, runs):
    folder = runs["base"] / "masked"
    assert main(["cost", str(folder), "--json"]) == 0  # was: "unknown model"
    result = json.loads(capsys.readouterr().out)
    expected = pi_cost(runs["masked_model"], warn=False).relus
    assert result["relus"] == expected < pi_cost(SMALL, warn=False).relus
    assert pi_cost(str(folder), warn=False).relus == expected
    one_error_line(capsys, ["cost", str(runs["base"] / "notarun")], "is not a run folder")


# --------------------------------------------------------------------------------------------------
# pi_cost and `hybrezoo cost`: one line, and the CLI names its flags

@pytest.mark.parametrize("size", [(3, 4, 4), (1, 32, 32), (3, 32), (3, 10 ** 9, 10 ** 9), "abc"])
def test_pi_cost_bad_input_size_has_no_chained_traceback(size):
    with pytest.raises(HybrezooError) as err:
        pi_cost("pi_resnet18.c100", input_size=size)
    e = err.value
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)  # was: 73 lines
    assert len(str(e).splitlines()) == 1
    assert len("".join(traceback.format_exception(e)).splitlines()) < 20


@pytest.mark.parametrize("args,flag", [
    (["--rtt", "-1"], "--rtt must be"),
    (["--threads", "0"], "--threads must be"),
    (["--client-threads", "0"], "--client-threads must be"),
    (["--client-device", "phone"], "--client-device"),
    (["--bandwidth", "-5"], "--bandwidth must be positive"),
    (["--network", "5g"], "pass --bandwidth and --rtt"),
    (["--input-size", "3,4,4"], "--input-size"),
])
def test_cost_cli_errors_name_the_flag_not_the_python_argument(capsys, args, flag):
    line = one_error_line(capsys, ["cost", "pi_resnet18.c100", *args], flag)
    for python_name in ("bandwidth_mbps", "rtt_ms", "client_threads", "client_device", "input_size"):
        assert python_name not in line


# --------------------------------------------------------------------------------------------------
# Tiny ImageNet files

@pytest.fixture(scope="module")
def tin_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("tin")
    write_fake_tinyimagenet(root, train_per_class=1, val_per_class=1)
    return root


@pytest.fixture
def tin(tin_template, tmp_path):
    shutil.copytree(tin_template / "tiny-imagenet-200", tmp_path / "tiny-imagenet-200")
    source = TinyImageNetSource(tmp_path)
    victim = next((source.dir / "train" / source.wnids[7] / "images").iterdir())
    return source, victim


def test_a_decompression_bomb_is_refused(tin, monkeypatch):
    source, victim = tin
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 * 4)
    Image.new("RGB", (200, 200)).save(victim, format="JPEG")  # > 2x the limit: DecompressionBombError
    with pytest.raises(HybrezooError, match=f"{victim.name} claims an image too large.*decompression bomb"):
        source.read("train")


def test_a_decompression_bomb_warning_is_refused_too(tin, monkeypatch):
    source, victim = tin
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 * 4)
    Image.new("RGB", (150, 150)).save(victim, format="JPEG")  # between 1x and 2x: PIL only warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(HybrezooError, match="decompression bomb"):
            source.read("train")


def test_a_16_bit_image_is_refused_not_clipped(tin):
    source, victim = tin
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(victim, format="PNG")  # was: read as all 255
    with pytest.raises(HybrezooError, match=f"{victim.name} is a 16-bit image"):
        source.read("train")


def test_a_class_without_training_images_is_refused(tin):
    source, victim = tin
    victim.unlink()  # its class's only image
    with pytest.raises(HybrezooError, match=f"class {source.wnids[7]} has no training images"):
        source.read("train")  # was: 199 images, a class never taught but still scored


def test_default_fake_data_holds_a_batch_of_every_shipped_recipe(tmp_path):
    write_fake_cifar100(tmp_path)
    write_fake_tinyimagenet(tmp_path)
    sizes = {name: len(load_split(name, "train", tmp_path, use_cache=False)) for name in ("cifar100", "tinyimagenet")}
    recipes = [p for p in (REPO / "training").rglob("*.yaml") if "_base" not in p.parts and "sets" not in p.parts]
    assert len(recipes) > 50
    for path in recipes:
        batch = load_recipe(path)["data"]["batch_size"]
        dataset = "tinyimagenet" if path.name.endswith(".tin.yaml") else "cifar100"
        assert batch <= sizes[dataset], f"{path.name}: batch {batch} > {sizes[dataset]} default fake images"


# --------------------------------------------------------------------------------------------------
# devices, hardware record, docs

def test_a_gpu_that_is_not_there_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HybrezooError, match="device cuda:3 asked for, but PyTorch sees no GPU"):
        runtime.init_env({}, "cuda:3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(HybrezooError, match=r"device cuda:3 asked for, but this machine has 1 GPU \(cuda:0 to"):
        runtime.init_env({}, "cuda:3")


def test_hardware_info_records_the_cpu_thread_count():
    assert runtime.hardware_info()["threads"] == torch.get_num_threads()


def test_docs_do_not_claim_runtime_settings_leave_results_alone():
    text = (REPO / "docs" / "training.md").read_text()
    assert "settings do not change the mathematics of a run" not in text
    assert "runtime.max_steps" in text and "hardware.threads" in text


def test_reduce_init_that_does_not_exist_names_init(capsys, tmp_path):
    one_error_line(capsys, ["reduce", "senet", "--model", "pi_resnet18.c100", "--budget", "50k", "--init",
                            str(tmp_path / "missing"), "--data", str(tmp_path)], "--init", "not found")
