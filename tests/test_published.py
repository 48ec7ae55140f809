"""The weights the zoo publishes in this repository (``weights/<name>/`` + the shipped manifest):
they load offline from a fresh interpreter through timm, hybrezoo and torch.hub with no setting; a
damaged copy is refused in one line; the hub copy is preferred when it is there and the repository's
copy is the fallback; their card, recipe and manifest agree; and their evaluation on the real data
reprints the card's numbers (where the development data is present)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import hybrezoo
from hybrezoo.engine import load_recipe
from hybrezoo.engine.recipe import dump_recipe
from hybrezoo.hub.card import render_card
from hybrezoo.hub.manifest import SHIPPED, WEIGHTS_ROOT, load_manifest
from hybrezoo.registry import resolve_name

from conftest import lay_out_hf_cache

REPO = Path(__file__).resolve().parents[1]
RELEASES = load_manifest(SHIPPED).releases
FIRST = "deepreduce_r18_cull1_thin_ch05_rho05.tin"


def fresh_python(script: str, *args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """``script`` in a new interpreter with no hybrezoo or Hugging Face setting (what a new user has)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HYBREZOO_", "HF_"))}
    clean["HF_HUB_CACHE"] = str(Path(cwd or "/nonexistent") / "empty-hf-cache")  # never the user's cache
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=300)


def test_the_first_checkpoint_is_published():
    assert FIRST in RELEASES
    assert hybrezoo.list_models(pretrained=True) == sorted(RELEASES)  # exactly the manifest's entries
    assert hybrezoo.model_info(FIRST)["measured_top1"] == RELEASES[FIRST].evaluation["top1"]


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_release_folder_matches_its_manifest_entry(name):
    release, folder = RELEASES[name], WEIGHTS_ROOT / name
    data = (folder / "model.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == release.sha256 and len(data) == release.size_bytes
    assert (folder / "model.safetensors.sha256").read_text() == f"{release.sha256}  model.safetensors\n"
    assert json.loads((folder / "eval.json").read_text()) == release.evaluation
    assert json.loads((folder / "metrics.json").read_text()) == release.metrics
    assert (folder / "recipe.yaml").read_text() == release.recipe_yaml
    card = render_card(release, in_zoo=True)
    assert (folder / "README.md").read_text() == card == (REPO / "model_cards" / f"{name}.md").read_text()
    # repository growth: a ResNet18-size checkpoint stays under 25 MB
    assert len(data) < 25e6
    # the card carries our eval's figures and the command that printed them
    ev = release.evaluation
    assert f"prints top-1 {ev['top1']:.2f} and top-5 {ev['top5']:.2f}" in card
    assert f"hybrezoo eval {name} --data PATH --device {ev['device']} --amp {ev['amp']}" in card
    # git_commit is hybrezoo's own (a commit of this repository's history), or absent
    commit = release.metrics.get("git_commit")
    if commit:
        shallow = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--is-shallow-repository"],
                                 capture_output=True, text=True).stdout.strip()
        if shallow == "false":
            assert subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"]).returncode == 0


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_registered_recipe_regenerates_the_published_run(name):
    """The recipe in training/ resolves to the settings of the run that made the weights (runtime
    options and the teacher's folder aside, which do not change what is computed)."""
    def settings(data):
        data = {k: v for k, v in data.items() if k != "runtime"}
        data["distill"] = {k: v for k, v in data["distill"].items() if k != "checkpoint"}
        return data

    registered = yaml.safe_load(dump_recipe(load_recipe(REPO / resolve_name(name).recipe)))
    assert settings(registered) == settings(yaml.safe_load(RELEASES[name].recipe_yaml))


LOAD_EVERY_WAY = """
import sys, torch, timm, hybrezoo
name, arch, tag, repo, out = sys.argv[1:6]
x = torch.randn(2, *timm.create_model(name).pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(0))
models = {"timm": timm.create_model(name, pretrained=True), "hybrezoo": hybrezoo.create_model(name, pretrained=True),
          "torch.hub": torch.hub.load(repo, arch, tag=tag, pretrained=True, source="local")}
with torch.no_grad():
    torch.save({k: m.eval()(x) for k, m in models.items()} | {"x": x, "listed": hybrezoo.list_models(pretrained=True)}, out)
"""


def test_loads_offline_through_timm_hybrezoo_and_torch_hub_from_a_fresh_interpreter(tmp_path):
    arch, tag = FIRST.split(".")
    done = fresh_python(LOAD_EVERY_WAY, FIRST, arch, tag, str(REPO), str(tmp_path / "out.pt"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    reference = hybrezoo.create_model(FIRST).eval()
    reference.load_state_dict(load_file(str(WEIGHTS_ROOT / FIRST / "model.safetensors")))
    with torch.no_grad():
        expected = reference(got["x"])
    assert torch.equal(got["timm"], expected) and torch.equal(got["hybrezoo"], expected)
    assert torch.equal(got["torch.hub"], expected) and bool(torch.isfinite(expected).all())
    assert got["listed"] == sorted(RELEASES)


def mirror(tmp_path: Path, hf_hub_id: str | None = None, revision: str | None = None) -> Path:
    """A copy of the shipped release as a mirror folder: manifest.json + weights/<name>/."""
    root = tmp_path / "mirror"
    shutil.copytree(WEIGHTS_ROOT / FIRST, root / "weights" / FIRST)
    data = json.loads(SHIPPED.read_text())
    data["models"] = {FIRST: dict(data["models"][FIRST], hf_hub_id=hf_hub_id, revision=revision)}
    (root / "manifest.json").write_text(json.dumps(data))
    return root


def overwrite_middle(path: Path, size: int = 4096) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(b"\xff" * size)


LOAD = """
import sys, warnings, torch, timm, hybrezoo
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    model = timm.create_model(sys.argv[1], pretrained=True).eval()
print("loaded", model.pretrained_cfg.get("file"), model.pretrained_cfg.get("hf_hub_id"))
for w in caught:
    print("warning:", w.message)
"""


def test_a_damaged_repository_copy_is_refused_in_one_line(tmp_path):
    root = mirror(tmp_path)
    overwrite_middle(root / "weights" / FIRST / "model.safetensors")
    done = fresh_python(LOAD, FIRST, env={"HYBREZOO_MANIFEST": str(root / "manifest.json")}, cwd=tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert f"{root / 'weights' / FIRST / 'model.safetensors'} is corrupt, truncated or replaced" in last
    assert "(from the hybrezoo manifest)" in last and f"git checkout -- weights/{FIRST}" in last
    # the command line says it in one line, without a traceback
    cli = subprocess.run([sys.executable, "-m", "hybrezoo", "eval", FIRST, "--data", str(tmp_path)], cwd=tmp_path,
                         env={**os.environ, "HYBREZOO_MANIFEST": str(root / "manifest.json")},
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1 and "is corrupt" in cli.stderr


REVISION = "89abcdef0123456789abcdef0123456789abcdef"


def test_the_hub_copy_is_preferred_and_the_repository_copy_is_the_fallback(tmp_path):
    root = mirror(tmp_path, hf_hub_id="test-org/first", revision=REVISION)
    cache = tmp_path / "hf"
    env = {"HYBREZOO_MANIFEST": str(root / "manifest.json"), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    local = root / "weights" / FIRST / "model.safetensors"

    # not cached and offline: the repository's copy, silently
    done = fresh_python(LOAD, FIRST, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded" in done.stdout and "warning" not in done.stdout

    # cached: the hub copy is used (the repository's copy, now damaged, is not even read)
    lay_out_hf_cache(cache, "test-org/first", WEIGHTS_ROOT / FIRST, REVISION)
    overwrite_middle(local)
    done = fresh_python(LOAD, FIRST, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning" not in done.stdout

    # a damaged hub copy is checked against the manifest too: refused, and the repository's copy used
    # with a warning naming the damaged file
    shutil.copy(WEIGHTS_ROOT / FIRST / "model.safetensors", local)
    blob = Path(os.path.realpath(cache / "models--test-org--first" / "snapshots" / REVISION / "model.safetensors"))
    overwrite_middle(blob)
    done = fresh_python(LOAD, FIRST, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning:" in done.stdout and "corrupt, truncated or replaced" in done.stdout
    assert "(from the hybrezoo manifest)" in done.stdout and f"loading the repository's copy {local}" in done.stdout


def test_eval_on_the_real_val_split_prints_the_cards_numbers(tiny_imagenet_root, tmp_path):
    """The card's command, run: ``hybrezoo eval NAME --data PATH --device cpu --amp off`` (skipped
    where the development environment's real Tiny ImageNet is absent)."""
    ev = RELEASES[FIRST].evaluation
    done = subprocess.run([sys.executable, "-m", "hybrezoo", "eval", FIRST, "--data", str(tiny_imagenet_root),
                           "--device", ev["device"], "--amp", ev["amp"], "--json"],
                          env={**os.environ, "HYBREZOO_CACHE": str(tmp_path / "cache")},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["images"] == ev["images"] == 10_000 and result["split"] == ev["split"]
    assert f"{result['top1']:.2f}" == f"{ev['top1']:.2f}" and f"{result['top5']:.2f}" == f"{ev['top5']:.2f}"
