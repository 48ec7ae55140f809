"""The private-inference figures a model card states, from :mod:`hybrezoo.cost` and nothing else.

One count of the model (its masks honoured) priced on the LAN and WAN presets with the defaults of
:func:`hybrezoo.pi_cost` (server garbler, one thread, the embedded client), under Circa's protocol
when the model has stochastic ReLUs and Delphi's otherwise. The result is plain JSON, so the
manifest can keep the figures of a published checkpoint and its card can be rendered again
without the weights.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from torch import nn

from ..cost.api import count_for_cost
from ..cost.counting import unwrap_model
from ..cost.networks import NETWORKS
from ..cost.protocol import estimate

__all__ = ["CARD_NETWORKS", "cost_summary"]

CARD_NETWORKS = ("lan", "wan")
_PER_NETWORK = ("offline_s", "online_s", "latency_s", "offline_upload_bytes", "offline_download_bytes",
                "online_upload_bytes", "online_download_bytes", "client_storage_bytes")


def cost_summary(model: nn.Module, input_size: Optional[Sequence[int]] = None, label: str = "") -> dict[str, Any]:
    """ReLUs, MACs, FLOPs, params and, per network preset, latency, traffic and client storage."""
    model = unwrap_model(model)
    counts = count_for_cost(model, input_size)
    # Delphi, which ``estimate`` turns into Circa for a model with stochastic ReLUs
    priced = {net: estimate(counts, label or type(model).__name__, protocol="delphi", garbler="server",
                            network=NETWORKS[net], threads=1, client_threads=1, client_device="embedded")
              for net in CARD_NETWORKS}
    first = priced[CARD_NETWORKS[0]]
    return {
        "input_size": list(counts.input_size), "protocol": first.protocol, "garbler": "server", "threads": 1,
        "client_device": "embedded",
        "relus": int(counts.relus), "stochastic_relus": int(counts.stochastic_relus),
        "relu_layers": int(first.relu_layers), "macs": int(counts.macs), "flops": int(counts.flops),
        "params": int(counts.params),
        "unpriced_elements": int(sum(u.elements for u in counts.unpriced)),
        "networks": {net: {"describe": NETWORKS[net].describe(),
                           **{key: _plain(getattr(cost, key)) for key in _PER_NETWORK}}
                     for net, cost in priced.items()},
    }


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, float) else int(value)
