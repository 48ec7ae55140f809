"""Where a run executes: device, DDP processes (torchrun), bf16 autocast, channels_last, torch.compile.

One code path serves the CPU, one GPU and several: ``torchrun --nproc_per_node=N -m hybrezoo.cli
train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK, each process takes one GPU, and the recipe stays
the same (its batch size is the global batch). Without torchrun the world has one process.
"""
from __future__ import annotations

import contextlib
import os
import platform
import random
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import HybrezooError

__all__ = ["RunEnv", "init_env", "seed_everything", "capture_rng", "restore_rng", "hardware_info", "unwrap",
           "RngSlot", "isolated_rng"]


@dataclass
class RunEnv:
    """The process's place in the run and the numeric settings every model call uses."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp_dtype: Optional[torch.dtype] = None   # bf16 autocast when set
    channels_last: bool = False
    compile_mode: Optional[str] = None        # torch.compile mode ("default", "max-autotune", ...) or None
    sync_bn: bool = False
    owns_process_group: bool = False
    fused_optimizer: bool = False             # fused CUDA optimizer kernels (only parameters on a GPU)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's BatchNorm statistics (DDP keeps them per process)."""
        if self.distributed:
            for buffer in model.buffers():
                if buffer.is_floating_point() or buffer.dtype == torch.int64:  # BN statistics, not masks
                    dist.broadcast(buffer, 0)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move a model to the device in the run's memory format (SyncBN under DDP when asked)."""
        if self.distributed and self.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training loop calls: DDP around the model, then torch.compile if asked."""
        net: nn.Module = model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if self.compile_mode is not None:
            net = torch.compile(net, mode=None if self.compile_mode == "default" else self.compile_mode)
        return net

    def close(self) -> None:
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def _flag(value: Any, name: str, auto: bool) -> bool:
    if value in ("auto", None):
        return auto
    if value in (True, "on", "true", "yes"):
        return True
    if value in (False, "off", "false", "no"):
        return False
    raise HybrezooError(f"runtime.{name} must be auto, on or off, got {value!r}")


def init_env(runtime: Mapping[str, Any], device: Optional[str] = None) -> RunEnv:
    """The run's environment from the recipe's ``runtime`` section (``device`` overrides it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = device or runtime.get("device", "auto")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(wanted)
    except RuntimeError:
        raise HybrezooError(f"unknown device {wanted!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HybrezooError(f"device {wanted} asked for, but PyTorch sees no GPU: use --device cpu")
        dev = torch.device("cuda", local_rank if world_size > 1 else (dev.index or 0))
        count = torch.cuda.device_count()
        if dev.index >= count:
            raise HybrezooError(f"device {dev} asked for, but this machine has {count} GPU{'s' if count != 1 else ''} "
                                f"(cuda:0 to cuda:{count - 1}): use one of them, or --device cpu")
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    amp = runtime.get("amp", "auto")
    if amp == "auto":
        amp_dtype = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
    elif amp in ("bf16", True, "on"):
        amp_dtype = torch.bfloat16
    elif amp in ("off", False, None):
        amp_dtype = None
    else:
        raise HybrezooError(f"runtime.amp must be auto, bf16 or off, got {amp!r}")
    compile_opt = runtime.get("compile")
    compile_mode = None
    if compile_opt not in (None, False, "off"):
        compile_mode = "default" if compile_opt is True else str(compile_opt)
    return RunEnv(device=dev, rank=rank, world_size=world_size, local_rank=local_rank, amp_dtype=amp_dtype,
                  channels_last=_flag(runtime.get("channels_last", "auto"), "channels_last", dev.type == "cuda"),
                  compile_mode=compile_mode, sync_bn=bool(runtime.get("sync_bn", False)), owns_process_group=owns,
                  fused_optimizer=bool(runtime.get("fused_optimizer", False)))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so that model initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """The global random states (Python, NumPy, PyTorch CPU and the current GPU), for resumption.

    Stored as tensors and plain numbers, so a checkpoint holding them loads with
    ``torch.load(weights_only=True)`` (no pickled NumPy or Python objects)."""
    version, internal, gauss = random.getstate()
    legacy = np.random.get_state(legacy=False)  # the global RandomState: always MT19937
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"bit_generator": str(legacy["bit_generator"]),
                  "key": torch.from_numpy(legacy["state"]["key"].astype(np.int64)),
                  "pos": int(legacy["state"]["pos"]), "has_gauss": int(legacy["has_gauss"]),
                  "gauss": float(legacy["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only: resumable on other GPU counts
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Set the global random states captured by :func:`capture_rng`."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["bit_generator"], npy["key"].numpy().astype(np.uint32), int(npy["pos"]),
                         int(npy["has_gauss"]), float(npy["gauss"])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _native_rng() -> tuple[Any, ...]:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_native_rng(state: tuple[Any, ...]) -> None:
    py, npy, cpu, cuda = state
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)


class RngSlot:
    """The global random states (Python, NumPy, torch CPU, current GPU) of one run while several runs take
    turns in one process (lockstep): entering puts this run's states in place, leaving stores them back.
    Each run thus draws (dropout, a stage's set-up) exactly the numbers it would draw alone."""

    def __init__(self) -> None:
        self._state: Optional[tuple[Any, ...]] = None

    def __enter__(self) -> "RngSlot":
        if self._state is not None:
            _set_native_rng(self._state)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._state = _native_rng()


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run the block without consuming the global random states (e.g. building a teacher whose initial
    weights are overwritten at once): a run's random stream then does not depend on how many teachers
    it loads, or whether a lockstep neighbour loaded the shared one first."""
    state = _native_rng()
    try:
        yield
    finally:
        _set_native_rng(state)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile and DDP wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info(env: Optional[RunEnv] = None) -> dict[str, Any]:
    """What a run ran on, for metrics.json: device kind and name, process count, software versions."""
    info: dict[str, Any] = {
        "device": env.device.type if env else "cpu",
        "processes": env.world_size if env else 1,
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),  # CPU results depend on it (reduction order)
        "torch": torch.__version__, "python": platform.python_version(),
    }
    if env is not None and env.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(env.device)
        info["cuda"] = torch.version.cuda
    info["amp"] = str(env.amp_dtype).replace("torch.", "") if env and env.amp_dtype else "off"
    info["channels_last"] = bool(env.channels_last) if env else False
    info["compile"] = env.compile_mode if env else None
    info["fused_optimizer"] = bool(env.fused_optimizer and env.device.type == "cuda") if env else False
    return info


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate a model and give it back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
