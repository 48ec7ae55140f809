"""model_cards/ and the zoo table come from one source (registry + manifest + pi_cost) and the
committed files match it; the manifest is validated with clear errors."""
import json
from pathlib import Path

import pytest

import hybrezoo
from hybrezoo.cli import main
from hybrezoo.hub.catalog import CARDS_DIR, README_BEGIN, README_END, check_catalog
from hybrezoo.hub.manifest import SHIPPED, WEIGHTS_ROOT, ManifestError, load_manifest
from hybrezoo.registry import entries, resolve_name

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def shipped_manifest(monkeypatch):
    monkeypatch.delenv("HYBREZOO_MANIFEST", raising=False)


def test_committed_cards_and_table_are_current():
    problems = check_catalog(REPO)
    assert problems == [], "run `hybrezoo cards` and commit model_cards/: " + "; ".join(problems[:5])


def test_every_entry_has_a_card():
    cards = {p.stem for p in (REPO / CARDS_DIR).glob("*.md")} - {"README"}
    assert cards == {e.name for e in entries()}


def test_unpublished_card_says_so_with_its_recipe_and_cost():
    name = "pi_resnet18.c100"
    text = (REPO / CARDS_DIR / f"{name}.md").read_text()
    cost = hybrezoo.pi_cost(name)
    assert "No published weights yet" in text and "model-index" not in text
    assert f"hybrezoo train {resolve_name(name).recipe} --data PATH" in text
    assert f"| ReLUs | {cost.relus:,} in {cost.relu_layers} layers |" in text
    assert f"({cost.macs:,})" in text and f"({cost.params:,})" in text
    index = (REPO / CARDS_DIR / "README.md").read_text()
    assert f"| [{name}]({name}.md) |" in index and "(../training/baseline/pi_resnet18.c100.yaml)" in index


def test_shipped_manifest_is_valid_and_feeds_the_registry():
    manifest = load_manifest(SHIPPED)
    registered = {e.name for e in entries()}
    assert set(manifest.releases) <= registered, "manifest entries that name no registered model"
    for name in registered:
        entry, release = resolve_name(name), manifest.get(name)
        assert entry.published == (release is not None)
        assert entry.hf_hub_id == (release.hub_ref if release else None)
        assert entry.measured_top1 == (release.evaluation["top1"] if release else None)
        if release is not None:  # this checkout holds every published folder
            assert entry.weights_file == str(WEIGHTS_ROOT / name / "model.safetensors")
    assert hybrezoo.list_models(pretrained=True) == sorted(manifest.releases)


@pytest.mark.parametrize("content,message", [
    ("not json", "is not readable JSON"),
    ('{"format": 2, "models": {}}', "is not a hybrezoo manifest"),
    ('{"format": 1, "models": {"x.c100": {"sha256": "ab"}}}', "lacks cost, evaluation, metrics, recipe_yaml, size_bytes"),
    ('{"format": 1, "models": {"x.c100": {"sha256": "ab", "size_bytes": 1, "metrics": {}, "recipe_yaml": "",'
     ' "cost": {}, "url": "x"}}}', "unknown keys url"),
])
def test_bad_manifest_is_one_clear_error(tmp_path, monkeypatch, content, message):
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(ManifestError, match=message):
        load_manifest(path)


def test_bad_release_fields_are_named(tmp_path):
    good = {"sha256": "a" * 64, "size_bytes": 10, "recipe_yaml": "", "cost": {},
            "metrics": {"model": "pi_resnet18.c100", "top1": 1.0, "top5": 2.0}, "hf_hub_id": "org/name",
            "evaluation": {"model": "pi_resnet18.c100", "top1": 1.0, "top5": 2.0, "images": 10_000, "split": "test",
                           "weights_sha256": "a" * 64}}
    path = tmp_path / "good.json"
    path.write_text(json.dumps({"format": 1, "models": {"pi_resnet18.c100": good}}))
    assert load_manifest(path).get("pi_resnet18.c100").top1 == 1.0
    for change, message in [({"evaluation": None}, "evaluation is missing: publish with `hybrezoo publish"),
                            ({"evaluation": dict(good["evaluation"], weights_sha256="b" * 64)},
                             "the evaluation was made on other weights"),
                            ({"evaluation": dict(good["evaluation"], images=0)}, "a positive image count"),({"sha256": "A" * 64}, "sha256 must be 64 lowercase hex"),
                            ({"hf_hub_id": "no-org"}, "is not ORG/NAME"),
                            ({"revision": "main"}, "40-hex-digit commit"),
                            ({"metrics": {"model": "other.c100", "top1": 1, "top5": 2}}, "whose 'model' is")]:
        path = tmp_path / "m.json"
        path.write_text(json.dumps({"format": 1, "models": {"pi_resnet18.c100": dict(good, **change)}}))
        with pytest.raises(ManifestError, match=message):
            load_manifest(path)


def test_manifest_env_pointing_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBREZOO_MANIFEST", str(tmp_path / "absent.json"))
    with pytest.raises(ManifestError, match="not found: unset HYBREZOO_MANIFEST"):
        hybrezoo.hub.published("pi_resnet18.c100")


def test_cards_command_writes_checks_and_cleans(tmp_path, capsys):
    root = tmp_path / "checkout"
    (root / "training").mkdir(parents=True)
    (root / "README.md").write_text(f"# x\n\n{README_BEGIN}\nold table\n{README_END}\n\nafter\n")
    (root / CARDS_DIR).mkdir()
    stale = root / CARDS_DIR / "gone_model.c100.md"
    stale.write_text((REPO / CARDS_DIR / "pi_resnet18.c100.md").read_text())  # a generated card of no entry
    mine = root / CARDS_DIR / "notes.md"
    mine.write_text("hand-written, kept\n")

    assert main(["cards", "--check", "--root", str(root)]) == 1
    assert "model_cards/pi_resnet18.c100.md is missing" in capsys.readouterr().out
    assert main(["cards", "--root", str(root)]) == 0
    assert not stale.exists() and mine.exists()
    readme = (root / "README.md").read_text()
    assert "old table" not in readme and readme.endswith(f"{README_END}\n\nafter\n")
    assert "| [pi_resnet18.c100](model_cards/pi_resnet18.c100.md) |" in readme
    card = (root / CARDS_DIR / "pi_resnet18.c100.md").read_text()
    assert "no recipe yet" in card  # this checkout has no recipes
    assert main(["cards", "--check", "--root", str(root)]) == 0
    assert check_catalog(root) == []
    (root / CARDS_DIR / "pi_resnet18.tin.md").write_text("edited by hand\n")
    assert check_catalog(root) == [f"{CARDS_DIR}/pi_resnet18.tin.md is out of date"]



def test_a_broken_manifest_stops_only_what_needs_weights(tmp_path):
    """`hybrezoo list` works (one warning line); loading weights fails with the manifest's error line."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "manifest.json"
    bad.write_text("not json")
    env = dict(os.environ, HYBREZOO_MANIFEST=str(bad))
    listed = subprocess.run([sys.executable, "-m", "hybrezoo", "list", "--method", "baseline"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and "pi_resnet18.c100" in listed.stdout
    assert listed.stderr.strip().splitlines() == [
        f"hybrezoo:0: UserWarning: manifest {bad} is not readable JSON (Expecting value: line 1 column 1 (char 0)): "
        "restore it from the repository; no published weights are available until it is fixed"]
    loaded = subprocess.run([sys.executable, "-m", "hybrezoo", "eval", "pi_resnet18.c100", "--data", str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 2
    assert loaded.stderr.strip().splitlines()[-1].startswith(f"hybrezoo: error: manifest {bad} is not readable JSON")
