"""What a finished run leaves for users and for the hub export: weights, config, costs.

``model.safetensors`` + ``config.json`` are written by timm's ``save_for_hf`` (the Hugging Face
format ``timm.create_model("local-dir:RUN_DIR", pretrained=True)`` and the hub read) into a
temporary folder inside the run folder, then moved over the old files one by one with
``os.replace``; ``model.safetensors.sha256`` follows, so every later load of the folder is checked.
The old digest file goes first: a kill in between leaves weights without a digest, never a digest
that condemns good weights.
"""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from timm.models import save_for_hf
from torch import nn

from .runtime import unwrap

__all__ = ["save_model", "model_costs"]


def save_model(model: nn.Module, run_dir: Path, classes: Sequence[str],
               descriptions: Optional[Mapping[str, str]] = None) -> None:
    """Write ``model.safetensors`` (the full state dict, ReLU masks included) and ``config.json``."""
    plain = copy.deepcopy(unwrap(model)).to("cpu").to(memory_format=torch.contiguous_format)
    model_config: dict[str, Any] = {"label_names": list(classes)}
    if descriptions:
        model_config["label_descriptions"] = {c: descriptions[c] for c in classes if c in descriptions}
    run_dir.mkdir(parents=True, exist_ok=True)
    from ..hub.manifest import SHA256_FILE
    from ..hub.verify import write_sha256_file

    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".export-") as tmp:
        save_for_hf(plain, tmp, model_config=model_config, safe_serialization=True)
        umask = os.umask(0)
        os.umask(umask)
        (run_dir / SHA256_FILE).unlink(missing_ok=True)
        for name in ("model.safetensors", "config.json"):
            os.chmod(Path(tmp) / name, 0o666 & ~umask)
            os.replace(Path(tmp) / name, run_dir / name)
    write_sha256_file(run_dir / "model.safetensors")


def model_costs(model: nn.Module, input_size: Sequence[int]) -> dict[str, Any]:
    """ReLUs, MACs, FLOPs and parameters of one image, from :func:`hybrezoo.pi_cost` (issue 3's counter)."""
    import hybrezoo

    cost = hybrezoo.pi_cost(unwrap(model), input_size=tuple(input_size))
    return {"relus": int(cost.relus), "macs": int(cost.macs), "flops": int(cost.flops), "params": int(cost.params)}
