"""The files a two-process run exchanges (``runner.py`` -> ``_party.py``: a job; back: the results), as
JSON with base64 for bytes: plain data, nothing in them can run code when read (no pickle).

SPU's secret shares (``libspu.Share``) travel as their own two fields, ``meta`` (a serialized
``ValueMeta``) and ``share_chunks`` (serialized ``ValueChunk`` s), and are rebuilt with ``libspu.Share()``;
the runtime config and the executable are protobufs (``SerializeToString`` / ``ParseFromString``). A
share used by several runs (the server's weights, one per image) is written once and referred to by
index. No hybrezoo import here: the two-process party loads this file alone, beside ``_spu_log``.
"""
from __future__ import annotations

import base64
import json
import os
from typing import Any, Dict, List, Sequence

__all__ = ["encode_bytes", "decode_bytes", "encode_share", "decode_share", "write_json", "read_json",
           "write_job", "read_job", "job_runs", "write_results", "read_results", "WireError"]

FORMAT = "hybrezoo-2pc/1"


class WireError(ValueError):
    """A job or result file that is not what this module writes."""


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def decode_bytes(text: Any, what: str = "value") -> bytes:
    if not isinstance(text, str):
        raise WireError(f"{what}: expected base64 text, got {type(text).__name__}")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as err:
        raise WireError(f"{what}: not base64 ({err})") from None


def encode_share(share: Any) -> Dict[str, Any]:
    """A ``libspu.Share`` as plain data: its ``meta`` and ``share_chunks`` bytes."""
    return {"meta": encode_bytes(share.meta), "share_chunks": [encode_bytes(c) for c in share.share_chunks]}


def decode_share(libspu: Any, data: Any, what: str = "share") -> Any:
    """The ``libspu.Share`` that :func:`encode_share` wrote."""
    if not isinstance(data, dict) or not isinstance(data.get("share_chunks"), list):
        raise WireError(f"{what}: expected {{'meta': ..., 'share_chunks': [...]}}")
    share = libspu.Share()
    share.meta = decode_bytes(data.get("meta"), f"{what}.meta")
    share.share_chunks = [decode_bytes(c, f"{what}.share_chunks") for c in data["share_chunks"]]
    return share


def write_json(path: str, value: Any) -> None:
    """``value`` as JSON, written to ``path`` atomically (a reader never sees half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, separators=(",", ":"), allow_nan=False)
    os.replace(tmp, path)


def read_json(path: str, kind: str) -> Dict[str, Any]:
    with open(path, "r", encoding="utf-8") as f:
        try:
            value = json.load(f)
        except ValueError as err:
            raise WireError(f"{path} is not a {kind} file (not JSON: {err})") from None
    if not isinstance(value, dict) or value.get("format") != FORMAT or value.get("kind") != kind:
        raise WireError(f"{path} is not a {kind} file of format {FORMAT}")
    return value


def write_job(path: str, *, rank: int, hosts: Sequence[str], config: bytes, executable: bytes,
              runs: Sequence[Dict[str, Any]], log_path: str, result_path: str,
              recv_timeout_ms: int = 3_600_000) -> None:
    """One party's job: ``runs`` is one ``{input name: libspu.Share}`` per image."""
    shares: List[Dict[str, Any]] = []
    index: Dict[int, int] = {}   # id(share) -> position in ``shares``: the weights are written once
    encoded_runs = []
    for inputs in runs:
        refs = {}
        for name, share in inputs.items():
            if id(share) not in index:
                index[id(share)] = len(shares)
                shares.append(encode_share(share))
            refs[str(name)] = index[id(share)]
        encoded_runs.append(refs)
    write_json(path, {"format": FORMAT, "kind": "job", "rank": int(rank), "hosts": [str(h) for h in hosts],
                      "config": encode_bytes(config), "executable": encode_bytes(executable),
                      "shares": shares, "runs": encoded_runs, "log_path": str(log_path),
                      "result_path": str(result_path), "recv_timeout_ms": int(recv_timeout_ms)})


def read_job(path: str) -> Dict[str, Any]:
    """The job as written, its fields checked; shares, config and executable still encoded
    (:func:`job_runs` decodes the shares once SPU is imported)."""
    job = read_json(path, "job")
    if not isinstance(job.get("rank"), int) or job["rank"] not in (0, 1):
        raise WireError(f"{path}: rank must be 0 or 1")
    if not isinstance(job.get("hosts"), list) or len(job["hosts"]) != 2 or \
            not all(isinstance(h, str) for h in job["hosts"]):
        raise WireError(f"{path}: hosts must be two 'host:port' strings")
    for key in ("config", "executable", "log_path", "result_path"):
        if not isinstance(job.get(key), str):
            raise WireError(f"{path}: {key} must be a string")
    if not isinstance(job.get("shares"), list) or not isinstance(job.get("runs"), list):
        raise WireError(f"{path}: shares and runs must be lists")
    for refs in job["runs"]:
        if not isinstance(refs, dict) or not all(isinstance(i, int) and 0 <= i < len(job["shares"])
                                                 for i in refs.values()):
            raise WireError(f"{path}: every run maps input names to share indices")
    return job


def job_runs(libspu: Any, job: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The job's runs as ``{input name: libspu.Share}``, each share decoded once; the encoded text is
    dropped from ``job`` (it would otherwise count in the party's peak memory)."""
    shares = [decode_share(libspu, s, f"share {i}") for i, s in enumerate(job["shares"])]
    job["shares"] = []
    return [{name: shares[i] for name, i in refs.items()} for refs in job["runs"]]


def write_results(path: str, results: Sequence[Dict[str, Any]]) -> None:
    """A party's results: per image ``wall_s``, ``cpu_s``, ``outputs`` (``libspu.Share`` s), ``link``
    (SPU's link statistics, a list of dicts of ints) and ``peak_rss``."""
    plain = []
    for r in results:
        plain.append({"wall_s": float(r["wall_s"]), "cpu_s": float(r["cpu_s"]),
                      "outputs": [encode_share(s) for s in r["outputs"]],
                      "link": [{k: int(v) for k, v in d.items()} for d in r["link"]],
                      "peak_rss": int(r["peak_rss"])})
    write_json(path, {"format": FORMAT, "kind": "results", "results": plain})


def read_results(libspu: Any, path: str) -> List[Dict[str, Any]]:
    """What :func:`write_results` wrote, output shares rebuilt as ``libspu.Share`` s."""
    data = read_json(path, "results")
    results = data.get("results")
    if not isinstance(results, list):
        raise WireError(f"{path}: results must be a list")
    out = []
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not isinstance(r.get("outputs"), list) or not isinstance(r.get("link"), list):
            raise WireError(f"{path}: result {i} is malformed")
        try:
            link = [{str(k): int(v) for k, v in d.items()} for d in r["link"]]
            out.append({"wall_s": float(r["wall_s"]), "cpu_s": float(r["cpu_s"]), "peak_rss": int(r["peak_rss"]),
                        "link": link,
                        "outputs": [decode_share(libspu, s, f"result {i} output {j}")
                                    for j, s in enumerate(r["outputs"])]})
        except WireError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise WireError(f"{path}: result {i} is malformed ({err})") from None
    return out
