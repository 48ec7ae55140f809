"""The checks timm's own model tests apply, over every registered architecture (the shape checks
under both data-set tags)."""
import pytest
import timm
import torch

from conftest import one_entry_per_arch

from hybrezoo.registry import entries

ENTRIES = one_entry_per_arch()
IDS = [e.arch for e in ENTRIES]
# The same architectures under their other tag (other input size and classes): the shape contract again.
OTHER_TAGS = [e for e in entries() if e.arch in set(IDS) and e.name not in {x.name for x in ENTRIES}]
BOTH = ENTRIES + OTHER_TAGS
BOTH_IDS = [e.name for e in BOTH]


def _input(entry, batch=2):
    return torch.randn(batch, *entry.dataset.input_size)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_forward_backward(entry):
    model = timm.create_model(entry.name)
    model.train()
    out = model(_input(entry))
    assert out.shape == (2, entry.dataset.num_classes)
    assert not torch.isnan(out).any()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("entry", BOTH, ids=BOTH_IDS)
def test_features_and_head(entry):
    model = timm.create_model(entry.name).eval()
    cfg = model.pretrained_cfg
    x = _input(entry)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features
        assert tuple(feats.shape[-2:]) == tuple(cfg["pool_size"])
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        # (Circa variants too: under their seed the same input gets the same faults, docs/circa.md)
        assert torch.allclose(model.forward_head(model.forward_features(x)), model(x), atol=1e-5)

        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(0, "")
        assert model(x).shape == feats.shape
        model.reset_classifier(7, "avg")
        assert model(x).shape == (2, 7)

        bare = timm.create_model(entry.name, num_classes=0, global_pool="")
        assert bare.eval()(x).shape == feats.shape

    params = dict(model.named_parameters())
    assert cfg["first_conv"] + ".weight" in params
    assert params[cfg["first_conv"] + ".weight"].shape[1] == 3
    assert cfg["classifier"] + ".weight" in params


@pytest.mark.parametrize("entry", BOTH, ids=BOTH_IDS)
def test_features_only(entry):
    model = timm.create_model(entry.name, features_only=True).eval()
    info = model.feature_info
    assert len(info.channels()) >= 3
    with torch.no_grad():
        outs = model(_input(entry))
    assert len(outs) == len(info.channels())
    size = entry.dataset.input_size[-1]
    for out, chs, red in zip(outs, info.channels(), info.reduction()):
        assert out.shape[1] == chs
        assert out.shape[-1] == size // red


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_torchscript(entry):
    model = timm.create_model(entry.name).eval()
    scripted = torch.jit.script(model)   # a Circa model's faults depend on its seed and the input only
    x = _input(entry)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)
