import subprocess
import sys

import pytest
import timm
import torch

import hybrezoo
from hybrezoo.nn import PIReLU
from hybrezoo.registry import entries


def test_every_entry_is_a_timm_model_with_both_tags():
    from hybrezoo.models import snl

    archs = {e.arch for e in entries()}
    for arch in archs:
        assert timm.is_model(arch)
        # (an SNL budget above the network's ReLUs on one data set exists on the other only: snl_r18_500k)
        tags = snl.FAMILY.tags(arch) if arch in snl.ARCHS else ("c100", "tin")
        assert {f"{arch}.{tag}" for tag in tags} <= set(timm.list_models(arch, pretrained=False, include_tags=True))


def test_import_only_adds_names_and_never_overwrites_timm():
    code = (
        "import warnings, timm; warnings.simplefilter('error');"
        "before = set(timm.list_models()); import hybrezoo; after = set(timm.list_models());"
        "assert before < after, 'nothing registered';"
        "added = after - before; ours = {e.arch for e in hybrezoo.registry.entries()};"
        "assert added == ours, added ^ ours; print(len(added))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Overwriting" not in out.stderr


def test_list_models_filters():
    all_names = hybrezoo.list_models()
    assert "pi_resnet18.c100" in all_names and "pi_wrn22_8.tin" in all_names
    dr = hybrezoo.list_models(method="deepreduce")
    assert dr and all(n.startswith("deepreduce_") for n in dr)
    tin = hybrezoo.list_models(dataset="tinyimagenet")
    assert tin and all(n.endswith(".tin") for n in tin)
    assert set(hybrezoo.list_models(method="baseline", dataset="cifar100")) == {
        "pi_resnet18.c100", "pi_resnet18_nostem.c100", "pi_wrn22_8.c100", "pi_wrn22_8_nofinal.c100"}
    published = hybrezoo.list_models(pretrained=True)
    assert published and all(hybrezoo.model_info(n)["pretrained"] for n in published)
    assert all(hybrezoo.model_info(n)["hf_hub_id"] or hybrezoo.model_info(n)["weights_file"] for n in published)
    assert not any(hybrezoo.model_info(n)["pretrained"] for n in hybrezoo.list_models() if n not in published)
    with pytest.raises(ValueError, match="unknown method"):
        hybrezoo.list_models(method="pruning")
    with pytest.raises(ValueError, match="unknown data set"):
        hybrezoo.list_models(dataset="imagenet")


def test_model_info():
    info = hybrezoo.model_info("deepreduce_r18_cull1_thin.c100")
    assert info["method"] == "deepreduce" and info["dataset"] == "cifar100"
    assert info["published_relus"] == 114_688
    assert "DeepReDuce" in info["paper"] and info["paper_url"].startswith("https://arxiv.org/abs/")
    assert info["recipe"] == "training/deepreduce/deepreduce_r18_cull1_thin.c100.yaml"
    assert hybrezoo.model_info("pi_resnet18")["name"] == "pi_resnet18.c100"


def test_unknown_name_names_the_closest():
    with pytest.raises(hybrezoo.UnknownModelError, match="closest registered names: pi_resnet18"):
        hybrezoo.model_info("pi_resnt18")
    with pytest.raises(hybrezoo.UnknownModelError, match="closest registered names"):
        hybrezoo.create_model("deepreduce_r18_cul1")


def test_pretrained_without_weights_says_which_recipe():
    with pytest.raises(hybrezoo.NoWeightsError, match="hybrezoo train training/baseline/pi_resnet18.c100.yaml"):
        timm.create_model("pi_resnet18.c100", pretrained=True)


def _relus(model, input_size):
    """ReLUs per sample by forward hooks (the cost model's count is tested in test_cost)."""
    total = []
    hooks = [m.register_forward_hook(lambda mod, i, o: total.append(mod.kept_per_sample(tuple(o.shape[1:]))))
             for m in model.modules() if isinstance(m, PIReLU)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_size))
    for h in hooks:
        h.remove()
    return sum(total)


# SNL/SENet entries build their base network: their published counts live in the masks of trained weights.
@pytest.mark.parametrize("entry", [e for e in entries() if e.published_relus and e.relu_budget is None],
                         ids=lambda e: e.name)
def test_architecture_matches_published_relu_count(entry):
    model = timm.create_model(entry.name)
    assert _relus(model, entry.dataset.input_size) == entry.published_relus


def test_resnet18_macs_and_params():
    model = timm.create_model("pi_resnet18.c100")
    assert sum(p.numel() for p in model.parameters()) == 11_220_132
