"""The whole zoo priced at once: one row per registered model, for ``hybrezoo zoo`` and the README.

Each model is built on the meta device (no weights, no data, no GPU) and counted once; the count is
then priced for the LAN and WAN presets.

SNL and SENet entries (and their Circa variants) keep the ReLUs that trained masks select: until their
weights are published, the architecture as built still has every ReLU of its base. Their rows price the
recipe's ReLU budget instead (``relus_bound``: the count is an upper bound): each ReLU layer's count
scaled down in proportion, linear layers unchanged. Garbled-circuit cost is linear in ReLUs and HE cost
does not depend on masks, so the latency is an upper bound too, up to the per-layer split of the
ReLUs (which only moves chunk headers and per-layer rounds).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, List, Optional

from ..registry import entries
from .api import build_for_counting, count_for_cost
from .counting import ModelCounts
from .networks import NETWORKS
from .protocol import estimate

__all__ = ["ZooRow", "zoo_rows", "at_relu_budget"]


@dataclass(frozen=True)
class ZooRow:
    name: str
    method: str
    dataset: str
    relus: int
    stochastic_relus: int
    macs: int
    params: int
    lan_s: float                      # offline + online, Delphi server-garbler, 1 thread
    wan_s: float
    lan_online_s: float
    wan_online_s: float
    top1: Optional[float]             # measured by `hybrezoo eval` on the published weights
    published_top1: Optional[float]   # the paper's figure (not ours)
    published_relus: Optional[int]
    unpriced: int                     # nonlinear elements the cost model could not price
    relus_bound: bool = False         # relus is the recipe's budget (masks come with unpublished weights)
    architecture_relus: int = 0       # ReLUs of the architecture as built (no masks)

    def to_dict(self) -> Dict:
        return asdict(self)


def zoo_rows(dataset: Optional[str] = None, protocol: str = "delphi",
             progress: Optional[Callable[[str], None]] = None) -> List[ZooRow]:
    """Price every registered model (optionally one data set's), with the defaults of ``pi_cost``."""
    from ..data.specs import dataset_spec

    tag = dataset_spec(dataset).tag if dataset is not None else None
    rows = []
    for entry in entries():
        if tag is not None and entry.tag != tag:
            continue
        if progress is not None:
            progress(entry.name)
        built = count_for_cost(build_for_counting(entry.name), None)
        bound = entry.relu_budget is not None and not entry.has_weights and entry.relu_budget < built.relus
        if bound:
            counts = at_relu_budget(built, entry.relu_budget)
        elif entry.relu_budget is not None and entry.has_weights:
            from ..models import create_model

            counts = count_for_cost(create_model(entry.name, pretrained=True), None)  # its masks decide the ReLUs
        else:
            counts = built
        priced = {net: estimate(counts, entry.name, protocol=protocol, garbler="server", network=NETWORKS[net],
                                threads=1, client_threads=1, client_device="embedded")
                  for net in ("lan", "wan")}
        rows.append(ZooRow(
            name=entry.name, method=entry.method, dataset=entry.dataset.name,
            relus=counts.relus, stochastic_relus=counts.stochastic_relus, macs=counts.macs, params=counts.params,
            lan_s=priced["lan"].latency_s, wan_s=priced["wan"].latency_s,
            lan_online_s=priced["lan"].online_s, wan_online_s=priced["wan"].online_s,
            top1=entry.measured_top1, published_top1=entry.published_top1, published_relus=entry.published_relus,
            unpriced=sum(u.elements for u in counts.unpriced), relus_bound=bound, architecture_relus=built.relus))
    return rows


def at_relu_budget(counts: ModelCounts, budget: int) -> ModelCounts:
    """``counts`` with every ReLU layer scaled so that the total is ``budget`` (largest remainders get the
    leftover ReLUs, so the sum is exact)."""
    if not 0 <= budget <= counts.relus:
        raise ValueError(f"a budget of {budget:,} ReLUs does not fit a model with {counts.relus:,}")
    exact = [layer.relus * budget / counts.relus if counts.relus else 0.0 for layer in counts.relu_layers]
    scaled = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - scaled[i], reverse=True)
    for i in by_remainder[:budget - sum(scaled)]:
        scaled[i] += 1
    layers = tuple(replace(layer, relus=n) for layer, n in zip(counts.relu_layers, scaled))
    stochastic = sum(layer.relus for layer in layers if layer.stochastic)
    return replace(counts, relus=budget, stochastic_relus=stochastic, relu_layers=layers)
