import os

# Tests never reach the network: the hub is offline and nothing downloads. (Set before any import:
# huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported.)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import hybrezoo  # noqa: E402
from hybrezoo.registry import entries  # noqa: E402
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def one_entry_per_arch():
    """The first tag of every registered architecture (tags differ only in input size and classes).
    SNL and SENet names of one base network differ only in the budget their masks (weights) are trained
    for, so one name stands for each base network's family."""
    seen = {}
    for e in entries():
        key = (e.method, e.arch.rsplit("_", 1)[0]) if e.relu_budget is not None and e.method != "circa" else e.arch
        seen.setdefault(key, e)
    return list(seen.values())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


__all__ = ["hybrezoo", "one_entry_per_arch"]
