"""Every recipe in training/: it exists for its zoo entry, builds exactly that model, and runs end to
end (a smoke override: one step per training stage) on small data sets in the real on-disk formats.
(SNL, SENet and Circa recipes are checked further in tests/test_snl.py, test_senet.py, test_circa.py.)"""
import json
from pathlib import Path

import pytest
import torch

from hybrezoo.data.synthetic import write_fake_cifar100, write_fake_tinyimagenet
from hybrezoo.engine import build_model, load_recipe, run_recipe, stage_section
from hybrezoo.models import create_model, pi_senet, snl
from hybrezoo.nn import relu_layers
from hybrezoo.registry import entries

REPO = Path(__file__).resolve().parents[1]
# training/sets/ holds set files (lists of recipes for `hybrezoo train SET`, tests/test_train_sets.py), not recipes
SETS = REPO / "training" / "sets"
RECIPES = sorted(p for p in (REPO / "training").rglob("*.yaml")
                 if "_base" not in p.parts and not p.is_relative_to(SETS))
# one step per stage; no warm-up (a recipe's warm-up epoch would cover the whole one-epoch run)
SMOKE = ["epochs=1", "schedule.warmup_epochs=0", "runtime.max_steps=1", "data.batch_size=1", "data.eval_batch_size=1",
         "runtime.max_eval_batches=1", "runtime.progress=false"]
COVERED = [e for e in entries() if e.method in ("baseline", "deepreduce", "deepreshape")]
RELU_BUDGETS = {**snl.BUDGETS, **pi_senet.BUDGETS}


def test_every_registered_entry_has_its_recipe_and_model_card():
    every = entries()
    missing = [e.recipe for e in every if not (REPO / e.recipe).is_file()]
    assert not missing, missing
    assert not [e.name for e in every if not (REPO / "model_cards" / f"{e.name}.md").is_file()]
    orphans = [p for p in RECIPES if p.relative_to(REPO).as_posix() not in {e.recipe for e in every}]
    assert not orphans, f"recipes that regenerate no registered entry: {orphans}"
    assert len(COVERED) == 36 + 20  # + the 2 ported and 8 designed HybReNets, both tags each


@pytest.mark.parametrize("entry", COVERED, ids=lambda e: e.name)
def test_recipe_builds_exactly_its_model(entry):
    recipe = load_recipe(REPO / entry.recipe)
    assert recipe["model"]["name"] == entry.name
    built, reference = build_model(recipe), create_model(entry.name)
    assert type(built) is type(reference)
    assert built.pretrained_cfg["architecture"] == entry.arch and built.pretrained_cfg["tag"] == entry.tag
    assert {k: v.shape for k, v in built.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    assert list(relu_layers(built)) == list(relu_layers(reference))
    assert built.num_classes == entry.dataset.num_classes


@pytest.mark.parametrize("entry", [e for e in COVERED if e.method == "deepreduce"], ids=lambda e: e.name)
def test_deepreduce_distils_from_the_resnet18_of_its_data_set(entry):
    distill = stage_section(load_recipe(REPO / entry.recipe), 0)["distill"]
    assert distill["teacher"] == f"pi_resnet18.{entry.tag}"
    assert distill["checkpoint"] == f"runs/baseline/pi_resnet18.{entry.tag}"  # the teacher recipe's default --out
    assert (distill["temperature"], distill["weight"]) == (4.0, 1.0)


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar100(root, train_per_class=1, test_per_class=1)
    write_fake_tinyimagenet(root, train_per_class=1, val_per_class=1)
    runs = tmp_path_factory.mktemp("runs")
    made = {}

    def smoke_run(path):
        """Run a recipe once with the smoke overrides (cached). The weights it reads from default run folders
        (model.init, distill.checkpoint = runs/<method>/<name>) come from smoke runs of those recipes."""
        path = Path(path).resolve()
        if path not in made:
            recipe = load_recipe(path)
            refs = {"model.init": recipe["model"]["init"], "distill.checkpoint": recipe["distill"]["checkpoint"]}
            refs.update({f"stages.{i}.distill.checkpoint": s["distill"]["checkpoint"]
                         for i, s in enumerate(recipe.stages) if "checkpoint" in s.get("distill", {})})
            extra = []
            for key, ref in refs.items():
                if ref is None:
                    continue
                source = REPO / "training" / Path(ref).relative_to("runs").parent / f"{Path(ref).name}.yaml"
                assert source.is_file(), f"{path.name}: {key}={ref} is no recipe's default run folder"
                extra.append(f"{key}={smoke_run(source)}")
            made[path] = run_recipe(path, data=str(root), out=runs / path.stem, overrides=[*SMOKE, *extra])
        return made[path]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBREZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield smoke_run


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_end_to_end(path, smoke_env):
    out = smoke_env(path)
    metrics = json.loads((out / "metrics.json").read_text())
    entry = next(e for e in entries() if e.name == load_recipe(path)["model"]["name"])
    trained = [s for s in metrics["stages"] if "chosen" in s]  # stages that train (Circa's only scores)
    assert metrics["model"] == entry.name and metrics["epochs"] == len(trained)
    assert all(s["epochs"] == 1 for s in trained)
    if entry.method == "snl":
        assert metrics["relus"] <= RELU_BUDGETS[entry.name]   # SNL may end under its budget
    elif entry.method == "senet":
        assert metrics["relus"] == RELU_BUDGETS[entry.name]   # SENet's allocation sums to it exactly
    elif entry.published_relus:
        assert metrics["relus"] == entry.published_relus
    assert torch.isfinite(torch.tensor(metrics["top1"]))
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
