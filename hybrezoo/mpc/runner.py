"""Private inference of a converted zoo model under SecretFlow SPU, measured.

Who holds what: party 0 is the **server** (it inputs the network's weights, folded), party 1 the
**client** (it inputs the image). Both inputs enter SPU as secrets owned by their party
(``Io.make_shares(..., VIS_SECRET, owner_rank)``: SPU's Cheetah takes no private inputs), SPU runs the
compiled program under the protocol, and the client's logits are reconstructed and compared with the
plaintext PyTorch output. Protocols: ``cheetah`` (two parties, no trusted dealer: HE for linear layers,
silent OT for ReLUs and truncations) and ``semi2k`` (a trusted first party deals Beaver triples).

Two ways to run, both SPU's own:

- the **simulator** (default): both parties in this process, one thread each, talking over SPU's
  in-memory link (no network cost; both parties share this machine's cores);
- ``two_process=True``: two Python processes (``_party.py``, SPU and numpy only) talking over TCP on
  127.0.0.1 (SPU's brpc link). The launching process secret-shares the inputs and hands each party its
  shares, as SPU's own driver does.

Every image is one complete private inference: a fresh SPU runtime (so setup, keys and OT extension
are paid per image, as ``pi_cost``'s latency assumes), timed around ``Runtime.run``. Traffic and
message counts are SPU's link statistics (``_spu_log``); peak memory is the kernel's ``VmHWM``.

SPU's log (and, with two processes, each party's log and the job and result files, JSON: ``_wire``) go
to a temporary folder that :meth:`SPUProgram.close` removes, whether the run succeeded or not, unless the
caller names a folder (``log_dir``, ``hybrezoo measure --keep-logs DIR``): then the logs stay there and a
failed run's error names them. Job and result files hold secret shares and are removed either way.
"""
from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import HybrezooError
from . import _spu_log, _wire
from .convert import ConvertedModel, MissingExtraError

__all__ = ["PROTOCOLS", "ImageRun", "SPUProgram", "require_spu", "machine_description", "free_ports"]

PROTOCOLS = ("cheetah", "semi2k")
SERVER, CLIENT = 0, 1
SPU_HINT = "pip install -e \".[mpc]\" (SecretFlow SPU 0.9.5 and its JAX; Linux or macOS, Python 3.10 or 3.11)"


def require_spu() -> Tuple[Any, Any, Any]:
    """``(libspu, spu.api, spu.utils.frontend)``, or one line saying how to install SPU."""
    try:
        import spu.libspu as libspu
        from spu import api as spu_api
        from spu.utils import frontend
    except ImportError as err:
        raise MissingExtraError(f"measuring private inference needs SecretFlow SPU, which is not installed "
                                f"({err.name or err}): {SPU_HINT}") from None
    return libspu, spu_api, frontend


@dataclass
class ImageRun:
    """One private inference of one image."""

    wall_s: float                  # Runtime.run, the slower party
    cpu_s: float                   # CPU time of both parties (all threads) during the run
    upload_bytes: int              # client -> server
    download_bytes: int            # server -> client
    messages: int                  # SPU send actions, both parties (an upper bound on rounds)
    peak_memory_bytes: int         # simulator: this process; two processes: the larger party
    party_peak_memory_bytes: Tuple[int, ...] = ()
    output: Optional[np.ndarray] = field(default=None, repr=False)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("output")
        d["party_peak_memory_bytes"] = list(self.party_peak_memory_bytes)
        return d


def machine_description() -> str:
    """CPU model and core count: the cost model is fitted to one machine class."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def free_ports(n: int) -> List[int]:
    """``n`` free TCP ports on 127.0.0.1 (bound and released; SPU binds them right after)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(int(s.getsockname()[1]))
    finally:
        for s in socks:
            s.close()
    return ports


class SPUProgram:
    """A converted model compiled by SPU for one protocol, with the server's weights secret-shared.

    ``run(image)`` runs one private inference in SPU's simulator; ``run_two_process(images)`` runs them
    in two processes over 127.0.0.1. SPU's logs go to ``log_dir`` (created if needed, and kept) or, by
    default, to a temporary folder that ``close()`` (or leaving a ``with`` block, or the program being
    collected) removes.
    """

    def __init__(self, converted: ConvertedModel, protocol: str = "cheetah", field: str = "FM64",
                 fxp_fraction_bits: int = 0, log_dir: Optional[str] = None) -> None:
        self.keep_logs = log_dir is not None
        self.log_dir = ""
        self._cleanup = None
        if protocol not in PROTOCOLS:
            raise HybrezooError(f"unknown protocol {protocol!r} for a measured run: use one of {', '.join(PROTOCOLS)}")
        libspu, spu_api, frontend = require_spu()
        self.libspu, self.spu_api = libspu, spu_api
        self.converted = converted
        self.protocol = protocol
        kind = {"cheetah": libspu.ProtocolKind.CHEETAH, "semi2k": libspu.ProtocolKind.SEMI2K}[protocol]
        fields = {"FM64": libspu.FieldType.FM64, "FM128": libspu.FieldType.FM128}
        if field not in fields:
            raise HybrezooError(f"unknown field {field!r}: use FM64 or FM128")
        self.config = libspu.RuntimeConfig(protocol=kind, field=fields[field], fxp_fraction_bits=int(fxp_fraction_bits))
        self.config.enable_pphlo_profile = True  # makes SPU log its link statistics after each run
        self.field = field
        if log_dir is not None:
            try:
                os.makedirs(log_dir, exist_ok=True)
            except OSError as err:
                raise HybrezooError(f"cannot create the log folder {log_dir}: {err.strerror or err}") from None
            self.log_dir = os.path.abspath(log_dir)
        else:
            self.log_dir = tempfile.mkdtemp(prefix="hybrezoo-spu-")
            self._cleanup = weakref.finalize(self, _remove_folder, self.log_dir)
        self.log_path = os.path.join(self.log_dir, "spu.log")
        try:
            self._setup(libspu, spu_api, frontend, converted)
        except BaseException:
            self.close()
            raise

    def _setup(self, libspu: Any, spu_api: Any, frontend: Any, converted: ConvertedModel) -> None:
        import jax

        _spu_log.setup(libspu, self.log_path)

        leaves, _ = jax.tree_util.tree_flatten(converted.params)
        self.param_names = [f"w{i}" for i in range(len(leaves))]
        example = np.zeros((1, *converted.input_size), np.float32)
        start = time.perf_counter()
        secret = libspu.Visibility.VIS_SECRET
        self.executable, _ = frontend.compile(
            frontend.Kind.JAX, converted.apply, (converted.params, example), {},
            self.param_names + ["x"], [secret] * (len(leaves) + 1),
            lambda outs: [f"out{i}" for i in range(len(outs))])
        self.compile_s = time.perf_counter() - start
        self.io = spu_api.Io(2, self.config)
        # The server's weights, secret-shared once (owner: the server).
        self.weight_shares = [self.io.make_shares(np.asarray(leaf, np.float32), secret, SERVER) for leaf in leaves]

    def close(self) -> None:
        """Remove the temporary log folder (not a ``log_dir`` the caller named); idempotent."""
        if self._cleanup is not None and self._cleanup.alive:
            self._cleanup()
            _spu_log.forget(self.log_path)

    def __enter__(self) -> "SPUProgram":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def where_logs(self, path: Optional[str] = None) -> str:
        """The end of an error message: where the log is kept, or how to keep it."""
        if self.keep_logs:
            return f"SPU's log: {path or self.log_path}"
        return "SPU's log is removed with the run: rerun with --keep-logs DIR (measure(keep_logs=DIR)) to keep it"

    def _inputs(self, image: np.ndarray) -> List[Dict[str, Any]]:
        image = np.asarray(image, np.float32).reshape((1, *self.converted.input_size))
        x_shares = self.io.make_shares(image, self.libspu.Visibility.VIS_SECRET, CLIENT)
        per_rank = []
        for rank in (SERVER, CLIENT):
            inputs = {name: shares[rank] for name, shares in zip(self.param_names, self.weight_shares)}
            inputs["x"] = x_shares[rank]
            per_rank.append(inputs)
        return per_rank

    def run(self, image: np.ndarray) -> ImageRun:
        """One private inference in SPU's simulator (two threads, in-memory link)."""
        libspu, spu_api = self.libspu, self.spu_api
        inputs = self._inputs(image)
        desc = libspu.link.Desc()
        for rank in (SERVER, CLIENT):
            desc.add_party(f"party_{rank}", f"thread_{rank}")
        desc.recv_timeout_ms = 3_600_000
        outputs: List[Any] = [None, None]
        errors: List[BaseException] = []
        walls = [0.0, 0.0]

        def party(rank: int) -> None:
            try:
                lctx = libspu.link.create_mem(desc, rank)
                config = libspu.RuntimeConfig(self.config)
                if rank != SERVER:  # one party logs: its sent bytes are the download, received the upload
                    config.enable_pphlo_profile = False
                runtime = spu_api.Runtime(lctx, config)
                for name, share in inputs[rank].items():
                    runtime.set_var(name, share)
                start = time.perf_counter()
                runtime.run(self.executable)
                walls[rank] = time.perf_counter() - start
                outputs[rank] = [runtime.get_var(n) for n in self.executable.output_names]
            except BaseException as err:  # re-raised in the caller's thread
                errors.append(err)

        _spu_log.reset_peak_memory()
        offset = _spu_log.size(self.log_path)
        threads = [threading.Thread(target=party, args=(rank,), daemon=True) for rank in (SERVER, CLIENT)]
        cpu_start = time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu = time.process_time() - cpu_start
        if errors:
            err = errors[0]
            if not isinstance(err, Exception):
                raise err
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise HybrezooError(f"SPU's simulator failed ({type(err).__name__}: {first}); "
                                f"{self.where_logs()}") from err
        peak = _spu_log.peak_memory_bytes()
        link = _spu_log.read_link_details(self.log_path, offset)
        if not link:
            raise HybrezooError(f"SPU wrote no link statistics: cannot measure traffic; {self.where_logs()}")
        stats = link[-1]
        logits = self.io.reconstruct([outputs[SERVER][0], outputs[CLIENT][0]])
        return ImageRun(wall_s=max(walls), cpu_s=cpu, upload_bytes=stats["recv_bytes"],
                        download_bytes=stats["sent_bytes"],
                        messages=stats["sent_messages"] + stats["recv_messages"], peak_memory_bytes=peak,
                        party_peak_memory_bytes=(peak,), output=np.asarray(logits, np.float32))

    def run_two_process(self, images: Sequence[np.ndarray], timeout_s: Optional[float] = None) -> List[ImageRun]:
        """Each image a private inference between two processes over 127.0.0.1 (SPU's brpc link).

        The job and result files (JSON, ``_wire``: they hold secret shares) are removed when the run
        ends; the party logs with them, unless the logs are kept (``log_dir``)."""
        ports = free_ports(2)
        hosts = [f"127.0.0.1:{p}" for p in ports]
        runs = [self._inputs(image) for image in images]
        work = tempfile.mkdtemp(prefix="hybrezoo-2pc-", dir=self.log_dir)
        procs: List[subprocess.Popen] = []
        files: List[str] = []
        party_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_party.py")
        try:
            job_paths = []
            for rank in (SERVER, CLIENT):
                path = os.path.join(work, f"party{rank}.job.json")
                result_path = os.path.join(work, f"party{rank}.out.json")
                files += [path, path + ".tmp", result_path, result_path + ".tmp"]
                _wire.write_job(path, rank=rank, hosts=hosts, config=self.config.SerializeToString(),
                                executable=self.executable.SerializeToString(),
                                runs=[inputs[rank] for inputs in runs],
                                log_path=os.path.join(work, f"party{rank}.log"), result_path=result_path)
                job_paths.append(path)
            for path in job_paths:
                procs.append(subprocess.Popen([sys.executable, party_script, path], stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True))
            results = self._wait_for_parties(procs, work, timeout_s)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if self.keep_logs:
                for path in files:
                    try:
                        os.remove(path)
                    except OSError:
                        pass
            else:
                _remove_folder(work)
        image_runs = []
        for server, client in zip(*results):
            if not server["link"] or not client["link"]:
                raise HybrezooError(f"SPU wrote no link statistics: cannot measure traffic; {self.where_logs(work)}")
            s, c = server["link"][-1], client["link"][-1]
            logits = self.io.reconstruct([server["outputs"][0], client["outputs"][0]])
            peaks = (int(server["peak_rss"]), int(client["peak_rss"]))
            image_runs.append(ImageRun(
                wall_s=max(server["wall_s"], client["wall_s"]), cpu_s=server["cpu_s"] + client["cpu_s"],
                upload_bytes=c["sent_bytes"],
                download_bytes=s["sent_bytes"], messages=s["sent_messages"] + c["sent_messages"],
                peak_memory_bytes=max(peaks), party_peak_memory_bytes=peaks, output=np.asarray(logits, np.float32)))
        return image_runs

    def _wait_for_parties(self, procs: List[subprocess.Popen], work: str,
                          timeout_s: Optional[float]) -> List[List[Dict[str, Any]]]:
        """Both parties' results, or one line naming the failed party (and where its log is kept). A party
        that fails ends the wait at once (the caller kills the other, which would wait for it)."""
        outputs: List[Optional[str]] = [None] * len(procs)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while any(out is None for out in outputs):
            for rank, proc in enumerate(procs):
                if outputs[rank] is None:
                    try:
                        outputs[rank], _ = proc.communicate(timeout=0.2)
                    except subprocess.TimeoutExpired:
                        pass
            if any(proc.returncode not in (None, 0) for proc in procs):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise HybrezooError(f"the two-process run did not finish within {timeout_s:.0f} s; "
                                    f"{self.where_logs(work)}")
        for rank, proc in enumerate(procs):
            if proc.returncode not in (None, 0):
                tail = (outputs[rank] or "").strip().splitlines()[-1:] or ["no output"]
                raise HybrezooError(f"party {rank} of the two-process run failed (exit {proc.returncode}): {tail[0]}; "
                                    f"{self.where_logs(os.path.join(work, f'party{rank}.log'))}")
        results = []
        for rank in (SERVER, CLIENT):
            path = os.path.join(work, f"party{rank}.out.json")
            try:
                results.append(_wire.read_results(self.libspu, path))
            except (OSError, _wire.WireError) as err:
                raise HybrezooError(f"party {rank} left no readable result ({err}); "
                                    f"{self.where_logs(work)}") from None
        return results


def _remove_folder(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def run_images(program: SPUProgram, images: np.ndarray, two_process: bool = False,
               on_image: Optional[Callable[[int, ImageRun], None]] = None) -> List[ImageRun]:
    """Every image of ``images`` (N, C, H, W) as one private inference; ``on_image`` after each."""
    if two_process:
        runs = program.run_two_process(list(images))
        for i, run in enumerate(runs):
            if on_image:
                on_image(i, run)
        return runs
    runs = []
    for i, image in enumerate(images):
        run = program.run(image)
        runs.append(run)
        if on_image:
            on_image(i, run)
    return runs
