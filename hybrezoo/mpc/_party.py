"""One party of a two-process SPU run, started by :mod:`hybrezoo.mpc.runner` as
``python _party.py JOB.json``. It imports SPU and numpy only (not hybrezoo, not torch), connects to the
other party over 127.0.0.1, runs the executable once per input set in the job, and writes its output
shares, wall times, traffic (SPU's own link statistics) and peak memory to the job's ``result_path``.
Job and results are JSON with base64 for bytes (``_wire.py``): nothing read here can run code.
"""
from __future__ import annotations

import os
import sys
import time


def main(job_path: str) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _spu_log  # noqa: E402  (sibling modules: the log parser, shared with the runner,
    import _wire  # noqa: E402      and the job and result files)

    try:
        job = _wire.read_job(job_path)
    except (OSError, _wire.WireError) as err:
        raise SystemExit(f"party: cannot read the job {job_path}: {err}")
    rank = job["rank"]
    for host in job["hosts"]:
        if not host.startswith("127.0.0.1:"):
            raise SystemExit(f"party {rank}: refusing host {host}: two-process runs use 127.0.0.1 only")
    import spu.libspu as libspu
    from spu import api as spu_api

    log_path = job["log_path"]
    _spu_log.setup(libspu, log_path)
    config = libspu.RuntimeConfig()
    config.ParseFromString(_wire.decode_bytes(job["config"], "config"))
    executable = libspu.Executable()
    executable.ParseFromString(_wire.decode_bytes(job["executable"], "executable"))
    runs = _wire.job_runs(libspu, job)
    desc = libspu.link.Desc()
    for i, host in enumerate(job["hosts"]):
        desc.add_party(f"party_{i}", host)
    desc.recv_timeout_ms = int(job.get("recv_timeout_ms", 3_600_000))
    desc.connect_retry_times = 120
    desc.connect_retry_interval_ms = 500
    lctx = libspu.link.create_brpc(desc, rank)
    results = []
    for inputs in runs:
        _spu_log.reset_peak_memory()
        offset = _spu_log.size(log_path)
        runtime = spu_api.Runtime(lctx, config)
        for name, share in inputs.items():
            runtime.set_var(name, share)
        lctx.barrier()
        start, cpu_start = time.perf_counter(), time.process_time()
        runtime.run(executable)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        outputs = [runtime.get_var(name) for name in executable.output_names]
        stats = _spu_log.read_link_details(log_path, offset)
        results.append(dict(wall_s=wall, cpu_s=cpu, outputs=outputs, link=stats, peak_rss=_spu_log.peak_memory_bytes()))
        del runtime
    lctx.stop_link()
    _wire.write_results(job["result_path"], results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
