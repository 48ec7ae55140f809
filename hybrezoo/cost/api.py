""":func:`pi_cost`: what a model costs under private inference, in one call."""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import HybrezooError
from ..nn.relu import PIReLU
from .counting import ModelCounts, count_model, parse_input_size, unwrap_model
from .networks import NetworkSpec, resolve_network
from .protocol import CLIENT_DEVICES, GARBLERS, PROTOCOLS, estimate
from .result import PICost

__all__ = ["pi_cost", "UnpricedOpWarning", "build_for_counting", "default_input_size", "check_options"]


class UnpricedOpWarning(UserWarning):
    """The model uses nonlinear ops that the cost model does not price."""


def default_input_size(model: nn.Module) -> Optional[Tuple[int, ...]]:
    """The input size a timm model declares in its pretrained config, if any."""
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, dict) and cfg.get("input_size"):
            return tuple(int(v) for v in cfg["input_size"])
    return None


def _model_label(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("architecture"):
        tag = cfg.get("tag")
        return f"{cfg['architecture']}.{tag}" if tag else str(cfg["architecture"])
    return type(model).__name__


def build_for_counting(name: str) -> nn.Module:
    """Build a registered model (or any timm name) without weights, on the meta device when it holds
    no ReLU masks (masks must be real to be counted), otherwise on the CPU."""
    from ..models import create_model

    try:
        with torch.device("meta"):
            model = create_model(name)
    except HybrezooError:
        raise
    except Exception:  # an initialiser without a meta kernel: build it for real
        return create_model(name)
    if any(m.mask is not None for m in model.modules() if isinstance(m, PIReLU)):
        model = create_model(name)
    return model


def check_options(protocol: str, garbler: str, threads: int, client_threads: Optional[int],
                  client_device: str) -> int:
    """Validate the protocol options; returns the client thread count."""
    if protocol not in PROTOCOLS:
        raise HybrezooError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    if garbler not in GARBLERS:
        raise HybrezooError(f"unknown garbler {garbler!r}: use 'server' (Delphi) or 'client' (Garimella et al.)")
    if client_device not in CLIENT_DEVICES:
        raise HybrezooError(f"unknown client_device {client_device!r}: use one of {', '.join(CLIENT_DEVICES)}")
    for label, value in (("threads", threads), ("client_threads", client_threads)):
        if value is None and label == "client_threads":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HybrezooError(f"{label} must be a positive integer, got {value!r}")
    return threads if client_threads is None else client_threads


def pi_cost(model: Union[str, nn.Module], input_size: Optional[Sequence[int]] = None, *,
            protocol: str = "delphi", garbler: str = "server", network: Union[str, NetworkSpec] = "lan",
            bandwidth_mbps: Optional[Union[float, Sequence[float]]] = None, rtt_ms: Optional[float] = None,
            threads: int = 1, client_threads: Optional[int] = None, client_device: str = "embedded",
            warn: bool = True) -> PICost:
    """What one inference of ``model`` costs under private inference.

    Args:
        model: an ``nn.Module`` (zoo or not) or a model name (``"pi_resnet18.c100"``; built without
            weights, nothing is downloaded).
        input_size: (C, H, W) of one input; defaults to the model's ``pretrained_cfg["input_size"]``.
        protocol: ``"delphi"`` (every ReLU a garbled circuit) or ``"circa"`` (a truncated sign test in
            the circuit plus a Beaver triple per ReLU). A model with Circa's stochastic ReLUs is priced
            with Circa's protocol either way (they exist only there). ``"cheetah"``: SPU's Cheetah,
            fitted to runs measured with ``hybrezoo measure`` on a 2-core machine (docs/cost-model.md
            §10; ``garbler``, ``threads`` and ``client_device`` do not apply).
        garbler: ``"server"`` (Delphi) or ``"client"`` (the client garbles, as Garimella et al. propose).
        network: ``"lan"``, ``"wan"`` or ``"wireless"``; ``bandwidth_mbps`` (one figure or
            (upload, download)) and ``rtt_ms`` replace the preset's.
        threads / client_threads: server and client threads (client defaults to ``threads``).
        client_device: ``"embedded"`` (the artifact's Atom client) or ``"server"`` (a client as fast as
            the server).
        warn: emit an :class:`UnpricedOpWarning` when the model uses ops the model cannot price.

    Returns a :class:`~hybrezoo.cost.PICost`; bad input raises :class:`~hybrezoo.errors.HybrezooError`.
    """
    client_threads = check_options(protocol, garbler, threads, client_threads, client_device)
    spec = resolve_network(network, bandwidth_mbps, rtt_ms)
    module, label = _resolve_model(model)
    counts = count_for_cost(module, input_size)
    result = estimate(counts, label, protocol=protocol, garbler=garbler, network=spec, threads=threads,
                      client_threads=client_threads, client_device=client_device)
    if warn and result.warnings:
        for message in result.warnings:
            warnings.warn(f"{label}: {message}", UnpricedOpWarning, stacklevel=2)
    return result


def _resolve_model(model: Any) -> Tuple[nn.Module, str]:
    if isinstance(model, str):
        folder = _run_folder(model)
        if folder is not None:  # weights too: SNL/SENet masks live in them and decide the ReLU count
            from ..models import create_model

            return create_model(f"local-dir:{folder}", pretrained=True), folder
        return build_for_counting(model), model
    if isinstance(model, nn.Module):
        model = unwrap_model(model)
        return model, _model_label(model)
    raise HybrezooError(f"pi_cost expects a torch.nn.Module or a zoo model name such as 'pi_resnet18.c100', "
                        f"got {type(model).__name__}")


def _run_folder(name: str) -> Optional[str]:
    """The folder a model argument names: ``local-dir:DIR``, or an existing folder that is not a model name."""
    import timm

    if name.startswith("local-dir:"):
        return name[len("local-dir:"):]
    if os.path.isdir(name) and (os.path.isfile(os.path.join(name, "config.json")) or not timm.is_model(name)):
        return name
    return None


def count_for_cost(module: nn.Module, input_size: Optional[Sequence[int]]) -> ModelCounts:
    """Counts of one inference, with the input size taken from the model when not given.

    A size the model cannot take (wrong rank, channels, too small) is one line naming input_size and the
    size the model declares, raised without the chained traceback of the failed forward pass (73 lines)."""
    default = default_input_size(module)
    if input_size is None:
        if default is None:
            raise HybrezooError(f"{type(module).__name__} has no pretrained_cfg input size: pass "
                                f"input_size=(C, H, W), e.g. (3, 32, 32)")
        size = default
    else:
        try:
            size = parse_input_size(input_size)
        except HybrezooError as err:
            raise HybrezooError(str(err)) from None
    try:
        return count_model(module, size)
    except HybrezooError as err:  # one line, not the failed forward pass chained under it
        expect = f", e.g. its pretrained_cfg input size {default}" if default and tuple(default) != size else ""
        raise HybrezooError(f"{err}{expect}") from None
