"""timm's own model tests, over the zoo's registry.

The checks of timm 1.0.31's ``tests/test_models.py`` (https://github.com/huggingface/pytorch-image-models,
Apache-2.0; the file is not in timm's wheel), rewritten for the zoo at the zoo's input sizes (timm's
would pick the same: 32x32 and 64x64 are below its limits). Where each of timm's per-model tests runs:

- ``test_model_forward``: ``test_forward_and_fx_forward`` (ENTRIES: one name per architecture)
- ``test_model_backward``: ``test_timm_contract.test_forward_backward`` (ENTRIES)
- ``test_model_default_cfgs``: ``test_default_cfg`` (ENTRIES under both tags, on the meta device)
- ``test_model_forward_features``: ``test_timm_contract.test_features_only`` (ENTRIES, both tags)
- ``test_model_forward_torchscript``: ``test_timm_contract.test_torchscript`` (ENTRIES; equal to eager)
- ``test_model_forward_fx``: ``test_forward_and_fx_forward`` (ENTRIES)
- ``test_model_backward_fx``: ``test_fx_backward`` (KINDS)
- ``test_model_forward_fx_torchscript``: ``test_fx_torchscript`` (KINDS)
- ``test_model_forward_torchscript_with_features_fx``: ``test_features_only_fx`` (KINDS; timm: one model)

``KINDS`` is one network per kind of module the zoo is made of (so that the slow checks stay short on
two CPU cores): tracing, scripting and back-propagating through a graph depend on the module types,
and every architecture is traced by ``test_forward_and_fx_forward``. Beyond timm's: masked networks are traced
with their masks loaded (SNL per pixel, SENet per channel), plain ``torch.fx.symbolic_trace`` (no timm
leaf lists, as pruning and quantisation tools trace) works on every kind of network but Circa's, and
the zoo's input checks still give their one-line error from a traced graph.

To run timm's original file over the registry: copy it (from timm's sdist, ``tests/test_models.py``)
into a folder with a ``conftest.py`` that imports ``hybrezoo``, replaces ``timm.list_models`` by one that
keeps zoo architectures only (``name.split(".")[0] in {e.arch for e in hybrezoo.registry.entries()}``)
and, in ``pytest_collection_modifyitems``, keeps only items whose ``model_name`` parameter is a zoo
architecture; then ``python -m pytest -q test_models.py`` (about 5 minutes on 2 CPU cores).
"""
import inspect

import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules
from timm.models._manipulate import group_parameters
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from conftest import one_entry_per_arch

from hybrezoo import pi_cost
from hybrezoo.nn import relu_layers
from hybrezoo.registry import entries, resolve_name

ENTRIES = one_entry_per_arch()
IDS = [e.arch for e in ENTRIES]
# The same architectures under their other tag (other input size and classes), for the config checks.
BOTH = ENTRIES + [e for e in entries() if e.arch in set(IDS) and e.name not in {x.name for x in ENTRIES}]
BOTH_IDS = [e.name for e in BOTH]
# One network per kind of module: PIResNet with PIReLUs and a stem ReLU; with culled (Identity) layers,
# a strided stem and half widths; PIWideResNet with per-channel masks (SENet); ReLU-reuse (HybReNet);
# per-pixel masks (SNL); Circa's stochastic ReLUs with per-pixel masks.
KINDS = [resolve_name(n) for n in ("pi_resnet18.c100", "deepreduce_r18_cull1_thin_ch05_rho05.c100",
                                   "senet_wrn22_8_240k.c100", "hybrenet_m24_252_cull14_thin_reuse4.c100",
                                   "snl_r18_100k.c100", "circa_snl_r18_50k.c100")]
KIND_IDS = [e.arch for e in KINDS]


def _masks(entry, model):
    """Masks as a trained SNL (per pixel) or SENet (per channel) checkpoint brings them."""
    shapes = {r.name: r.shape for r in pi_cost(model, warn=False).layers}
    g = torch.Generator().manual_seed(0)
    masks = {}
    for name in relu_layers(model):
        c, h, w = shapes[name]
        shape = (c, 1, 1) if entry.method == "senet" else (c, h, w)
        masks[f"{name}.mask"] = torch.rand(shape, generator=g) < 0.3
    return masks


def _create(entry, **kwargs):
    """The registered model; masked families with masks loaded from a state dict, as a checkpoint would."""
    model = timm.create_model(entry.name, **kwargs)
    if entry.relu_budget is not None:
        state = dict(model.state_dict(), **_masks(entry, model))
        model.load_state_dict(state)
        assert all(m.mask is not None for m in relu_layers(model).values())
    return model


def _input(entry, batch):
    return torch.randn(batch, *entry.dataset.input_size)


def _tracer_kwargs():
    # timm's own tracing settings (timm.layers.create_feature_extractor, timm's test_models._create_fx_model)
    return dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                param_shapes_constant=True)


def _fx(model):
    """The model traced as timm's FX tests trace it: the graph up to the model's output, train and eval."""
    kwargs = _tracer_kwargs()
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]],
                                    eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=kwargs)


def _only(outputs):
    values = list(outputs.values())
    assert len(values) == 1
    return values[0]


# -- timm's test_model_default_cfgs (and the contract helpers it calls), on the meta device ----------------------
@pytest.mark.parametrize("entry", BOTH, ids=BOTH_IDS)
def test_default_cfg(entry):
    name, meta = entry.name, torch.device("meta")
    with meta:
        model = timm.create_model(name, device=meta, dtype=torch.float32).eval()
        with pytest.raises(TypeError):
            timm.create_model(name, device=meta, not_a_model_arg=1)
    assert inspect.signature(model.reset_classifier).parameters["global_pool"].default is None
    assert len(set(group_parameters(model, model.group_matcher(coarse=False), reverse=True).values())) > 1
    cfg = model.pretrained_cfg
    assert model.num_classes == cfg["num_classes"] > 0 and model.num_features > 0 and model.head_hidden_size > 0
    assert model.in_chans == cfg["input_size"][0]
    state = model.state_dict()
    assert cfg["classifier"] + ".weight" in state and cfg["first_conv"] + ".weight" in state

    x = torch.randn(1, *cfg["input_size"], device=meta)
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    assert tuple(feats.shape[1:]) == (model.num_features, *cfg["pool_size"])
    assert pre.shape == (1, model.head_hidden_size)
    model.to(torch.bfloat16)
    assert model(x.to(torch.bfloat16)).dtype == torch.bfloat16       # no stale float32 state
    model.to(torch.float32)
    model.reset_classifier(0)
    assert model(x).shape == pre.shape
    model.reset_classifier(0, "")
    assert tuple(model(x).shape[1:]) == tuple(feats.shape[1:])
    assert timm.create_model(name, num_classes=0, device=meta).eval()(x).shape == pre.shape
    bare = timm.create_model(name, num_classes=0, global_pool="", device=meta).eval()
    assert bare(x).shape == feats.shape

    # a new head joins the model where it is: device, dtype, train/eval (timm's reset_classifier contract)
    bare.to(device=meta, dtype=torch.float64)
    bare.reset_classifier(0)
    bare.reset_classifier(2)
    head = list(bare.get_classifier().parameters())
    assert head and all(p.device == meta and p.dtype == torch.float64 for p in head)
    assert not any(m.training for m in bare.modules())
    # factory device: every parameter and buffer built there, without a device context
    placed = timm.create_model(name, device=meta, dtype=torch.float32)
    assert all(t.device == meta for t in [*placed.parameters(), *placed.buffers()])
    # frozen parameters stay frozen through reset_classifier
    placed.requires_grad_(False)
    placed.reset_classifier(0)
    placed.reset_classifier(0, "")
    assert not any(p.requires_grad for p in placed.parameters())


# -- timm's test_model_forward and test_model_forward_fx (one model build for both) --------------------------------
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_forward_and_fx_forward(entry):
    model = _create(entry).eval()
    x = _input(entry, 1)
    with torch.no_grad():
        expected = model(x)
        assert expected.shape == (1, entry.dataset.num_classes) and not torch.isnan(expected).any()
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)  # Circa too: same input, same faults
        model.set_grad_checkpointing(False)

        traced = _fx(model)
        torch.testing.assert_close(_only(traced(x)), expected, rtol=1e-4, atol=1e-5)
        if entry in KINDS and entry.method != "circa":
            # plain torch.fx, without timm's leaf lists: only the Circa layer must be a leaf (data-dependent)
            plain = torch.fx.symbolic_trace(model)
            assert "check_image_batch" in plain.code
            torch.testing.assert_close(plain(x), expected, rtol=1e-4, atol=1e-5)
        # the input checks are in the graph: a bad input still gets its one-line error
        with pytest.raises(ValueError, match="input channels"):
            traced(torch.randn(1, 4, *entry.dataset.input_size[1:]))
        if entry.relu_budget is not None and entry.method != "senet":
            with pytest.raises(ValueError, match="masks were fitted to"):
                traced(torch.randn(1, 3, 2 * entry.dataset.input_size[1], 2 * entry.dataset.input_size[2]))


@pytest.mark.parametrize("entry", KINDS, ids=KIND_IDS)
def test_fx_backward(entry):
    model = _create(entry, num_classes=42).train()
    traced = _fx(model)
    out = _only(traced(_input(entry, 2)))
    out.mean().backward()
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert sum(p.numel() for p in traced.parameters()) == sum(p.numel() for p in model.parameters())
    assert out.shape == (2, 42) and not torch.isnan(out).any()


@pytest.mark.parametrize("entry", KINDS, ids=KIND_IDS)
def test_fx_torchscript(entry):
    with timm.set_scriptable(True):
        model = _create(entry).eval()
    scripted = torch.jit.script(_fx(model))
    x = _input(entry, 1)
    with torch.inference_mode():
        out = _only(scripted(x))
        assert out.shape == (1, entry.dataset.num_classes) and not torch.isnan(out).any()
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("entry", KINDS, ids=KIND_IDS)
def test_features_only_fx(entry):
    """``features_only=True, feature_cls="fx"`` (timm's FeatureGraphNet) gives the hook-based features."""
    torch.manual_seed(0)
    graph = timm.create_model(entry.name, features_only=True, feature_cls="fx").eval()
    torch.manual_seed(0)
    hooks = timm.create_model(entry.name, features_only=True).eval()   # the same initial weights
    x = _input(entry, 1)
    with torch.no_grad():
        for a, b in zip(graph(x), hooks(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

