"""The Delphi-style hybrid protocol (Mishra et al., USENIX Security 2020) step by step, as the
Garimella et al. simulator runs it (kvgarimella/cryptonite simulator/experiments/e2e_latency.py,
``run_server_garbler_protocol`` and ``run_client_garbler_protocol``), priced per layer of a counted
model instead of from one network's measurements.

Offline: the client makes HE keys and sends them; the client encrypts its random input masks, the
server evaluates every linear layer on them under HE and returns the masked results; one party
garbles a circuit per ReLU and sends it; oblivious transfer hands the evaluator its input labels.
Online: secret-shared linear layers (near plaintext speed) alternate with garbled ReLUs; the server
finally sends the prediction. Steps run one after the other (no overlap of compute and transfer),
as in the simulator; we add one one-way network latency (RTT / 2) per message the protocol waits on,
which the simulator leaves out.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Tuple

from . import measured as M
from .circuits import Circuit, circa_sign_circuit, delphi_relu_circuit, gc_seconds_per_block, gc_seconds_per_relu
from .counting import ModelCounts, ReluLayer
from .he import HEOps, he_op_seconds, linear_op_cost, static_schedule_makespan
from .networks import NetworkSpec
from .result import LayerCost, PICost

__all__ = ["PROTOCOLS", "GARBLERS", "CLIENT_DEVICES", "estimate", "circa_defaults"]

PROTOCOLS = ("delphi", "circa", "cheetah")  # cheetah: fitted to SPU runs measured here (cheetah.py)
GARBLERS = ("server", "client")
CLIENT_DEVICES = ("embedded", "server")

_FIELD_ELEMENT_BYTES = 8        # Delphi sends field elements as u64
_SHARE_BYTES_PER_ELEMENT = 9    # `on_client_write_linear`: 589,865 B = 41 + 9 x 65,536 elements
_MESSAGE_OVERHEAD_BYTES = 41    # ... and 27,689 = 41 + 9 x 3,072, 18,473 = 41 + 9 x 2,048
_LABEL_LAYER_BYTES = 6          # `on_server_write_relu`: 77,594,630 = 65,536 x 1,184 + 6 per layer


@lru_cache(maxsize=1)
def circa_defaults() -> Dict[str, int]:
    """Bit widths used for plain ReLUs priced with Circa: StochasticReLU's own defaults."""
    try:
        from ..nn.stochastic_relu import StochasticReLU
        params = inspect.signature(StochasticReLU.__init__).parameters
        return dict(ring_bits=int(params["ring_bits"].default), truncated_bits=int(params["truncated_bits"].default),
                    frac_bits=int(params["frac_bits"].default))
    except Exception:  # the layer is not importable: fall back to the same documented values
        return dict(ring_bits=32, truncated_bits=10, frac_bits=12)


@lru_cache(maxsize=1)
def _rates() -> Dict[str, float]:
    """Per-unit costs derived from the artifact's whole-network measurements (:mod:`.measured`)."""
    enc_s = sum(M.HE_ENCRYPT_R18_CIFAR) + sum(M.HE_ENCRYPT_R18_TINY)
    up_ct = (sum(M.HE_UPLOAD_R18_CIFAR) + sum(M.HE_UPLOAD_R18_TINY)) / M.HE_CIPHERTEXT_BYTES
    dec_s = sum(M.HE_DECRYPT_R18_CIFAR) + sum(M.HE_DECRYPT_R18_TINY)
    down_ct = (sum(M.HE_DOWNLOAD_R18_CIFAR) + sum(M.HE_DOWNLOAD_R18_TINY)) / M.HE_CIPHERTEXT_BYTES
    off_enc = sum(s for s, _ in M.OFFLINE_ENCODE_S.values()) / sum(n for _, n in M.OFFLINE_ENCODE_S.values())
    on_enc = (sum(M.ONLINE_ENCODE_R18_CIFAR) + sum(M.ONLINE_ENCODE_R18_TINY)) / (M.R18_CIFAR_RELUS + M.R18_TINY_RELUS)
    # ONLINE_LINEAR_*: 17 convs, the avg-pool (index 17, no weights) and the FC: per weighted layer.
    linear = [t for arr in (M.ONLINE_LINEAR_R18_CIFAR, M.ONLINE_LINEAR_R18_TINY) for i, t in enumerate(arr) if i != 17]
    return dict(encrypt_per_ct=enc_s / up_ct, decrypt_per_ct=dec_s / down_ct,
                offline_encode_per_relu=off_enc, online_encode_per_relu=on_enc,
                online_linear_per_layer=sum(linear) / len(linear))


@dataclass(frozen=True)
class _PricedLayer:
    layer: ReluLayer
    circuit: Circuit
    triple: bool        # Circa: one Beaver multiplication triple per element


def _price_relu_layers(layers: Tuple[ReluLayer, ...], protocol: str) -> List[_PricedLayer]:
    priced = []
    defaults = circa_defaults()
    delphi = delphi_relu_circuit()
    for layer in layers:
        if layer.relus == 0:
            continue
        if protocol == "circa" or layer.stochastic:  # a stochastic ReLU only exists in Circa's protocol
            n = layer.ring_bits if layer.stochastic else defaults["ring_bits"]
            k = layer.truncated_bits if layer.stochastic else defaults["truncated_bits"]
            priced.append(_PricedLayer(layer, circa_sign_circuit(int(n), int(k)), True))
        else:
            priced.append(_PricedLayer(layer, delphi, False))
    return priced


def _gc_seconds_per_relu(circuit: Circuit, role: str, machine: str) -> float:
    if circuit.name == "delphi-relu":  # the artifact's own per-ReLU fit, unchanged
        return gc_seconds_per_relu()[(role, machine)]
    return circuit.blocks * gc_seconds_per_block(role, machine)


def estimate(counts: ModelCounts, model_name: str, *, protocol: str, garbler: str, network: NetworkSpec,
             threads: int, client_threads: int, client_device: str) -> PICost:
    """Price counted inference under the protocol; see the module docstring for the steps."""
    if protocol == "cheetah":  # not Delphi-style: SPU's Cheetah, fitted to measured runs
        from .cheetah import estimate_cheetah
        return estimate_cheetah(counts, model_name, network=network, threads=threads, client_threads=client_threads)
    rates = _rates()
    asked = protocol
    protocol = "circa" if counts.stochastic_relus else protocol  # the model runs Circa's ReLU: Circa's protocol
    priced = _price_relu_layers(counts.relu_layers, asked)
    n_relu = sum(p.layer.relus for p in priced)
    n_triples = sum(p.layer.relus for p in priced if p.triple)
    relu_layer_count = len(priced)

    # ---- linear layers under HE (offline) and secret sharing (online)
    he_costs: List[Tuple[HEOps, float]] = [linear_op_cost(op) for op in counts.linear_ops]
    he_eval_s = static_schedule_makespan([s for _, s in he_costs], threads)
    ct_up = sum(ops.ciphertexts_up for ops, _ in he_costs)
    ct_down = sum(ops.ciphertexts_down for ops, _ in he_costs)
    has_linear = bool(counts.linear_ops)
    he_up_bytes = ct_up * M.HE_CIPHERTEXT_BYTES
    he_down_bytes = ct_down * M.HE_CIPHERTEXT_BYTES
    key_bytes = M.KEY_BYTES if has_linear or n_triples else 0
    keygen_s = M.KEYGEN_S if key_bytes else 0.0
    encrypt_s = ct_up * rates["encrypt_per_ct"]
    decrypt_s = ct_down * rates["decrypt_per_ct"]
    online_linear_s = len(counts.linear_ops) * rates["online_linear_per_layer"]

    # ---- garbled circuits
    garbler_machine = "server" if garbler == "server" else ("client" if client_device == "embedded" else "server")
    evaluator_machine = ("client" if client_device == "embedded" else "server") if garbler == "server" else "server"
    garbler_threads = threads if garbler == "server" else client_threads
    evaluator_threads = client_threads if garbler == "server" else threads
    garble_s = sum(p.layer.relus * _gc_seconds_per_relu(p.circuit, "garble", garbler_machine)
                   for p in priced) / garbler_threads
    eval_s = sum(p.layer.relus * _gc_seconds_per_relu(p.circuit, "eval", evaluator_machine)
                 for p in priced) / evaluator_threads
    delphi = delphi_relu_circuit()
    offline_labels_ref = delphi.garbler_inputs_offline + delphi.evaluator_inputs
    encode_off_s = sum(p.layer.relus * rates["offline_encode_per_relu"]
                       * (p.circuit.garbler_inputs_offline + p.circuit.evaluator_inputs) / offline_labels_ref
                       for p in priced)
    encode_on_s = sum(p.layer.relus * rates["online_encode_per_relu"]
                      * p.circuit.garbler_inputs_online / delphi.garbler_inputs_online for p in priced)
    chunks = sum(math.ceil(p.layer.relus / M.GC_CHUNK_RELUS) for p in priced)
    gc_bytes = sum(p.layer.relus * p.circuit.offline_bytes for p in priced) + chunks * M.GC_CHUNK_HEADER_BYTES
    ot_setup = sum(p.layer.relus * p.circuit.ot_setup_bytes for p in priced)
    ot_send = sum(p.layer.relus * p.circuit.ot_send_bytes for p in priced)
    base_ot = M.BASE_OT_BYTES if n_relu else 0
    labels_online = sum(p.layer.relus * p.circuit.online_label_bytes for p in priced) \
        + _LABEL_LAYER_BYTES * relu_layer_count
    evaluator_storage = sum(p.layer.relus * p.circuit.evaluator_storage_bytes for p in priced)
    garbler_storage = sum(p.layer.relus * p.circuit.garbler_storage_bytes for p in priced)

    # ---- Beaver triples (Circa): generated with Delphi's HE triple protocol (triples_gen.cpp):
    # per 8,192 triples the client sends 2 ciphertexts, the server multiplies them (one
    # ciphertext-ciphertext product and relinearisation, priced as one key switch and two
    # multiplications) and returns 1. Online, each party opens two masked values per product.
    triple_cts = math.ceil(n_triples / M.HE_SLOTS) if n_triples else 0
    t_mul, t_ks = he_op_seconds()
    triples_off_s = triple_cts * (2 * rates["encrypt_per_ct"] + (2 * t_mul + t_ks) + rates["decrypt_per_ct"])
    triples_up = 2 * triple_cts * M.HE_CIPHERTEXT_BYTES
    triples_down = triple_cts * M.HE_CIPHERTEXT_BYTES
    triples_online_each_way = 2 * _FIELD_ELEMENT_BYTES * n_triples
    triple_storage = 3 * _FIELD_ELEMENT_BYTES * n_triples

    # ---- linear shares
    first_input = counts.linear_ops[0].in_numel if has_linear else 0
    shares_up_all = sum(_MESSAGE_OVERHEAD_BYTES + _SHARE_BYTES_PER_ELEMENT * op.in_numel for op in counts.linear_ops)
    shares_up_first = _MESSAGE_OVERHEAD_BYTES + _SHARE_BYTES_PER_ELEMENT * first_input if has_linear else 0
    pred_bytes = _MESSAGE_OVERHEAD_BYTES + _SHARE_BYTES_PER_ELEMENT * counts.num_outputs
    client_linear = sum(op.in_numel + op.out_numel for op in counts.linear_ops) * _FIELD_ELEMENT_BYTES
    server_linear = sum(op.out_numel for op in counts.linear_ops) * _FIELD_ELEMENT_BYTES

    n_linear = len(counts.linear_ops)
    if garbler == "server":
        off_up = key_bytes + he_up_bytes + base_ot + ot_setup + triples_up
        off_down = he_down_bytes + gc_bytes + ot_send + triples_down
        on_up = shares_up_all + triples_online_each_way
        on_down = labels_online + pred_bytes + triples_online_each_way
        off_messages = int(bool(key_bytes)) + 2 * n_linear + (4 if n_relu else 0) + (2 if triple_cts else 0)
        on_messages = n_linear + relu_layer_count + 1 + (relu_layer_count if n_triples else 0)
        client_storage = evaluator_storage + client_linear + triple_storage
        server_storage = garbler_storage + server_linear + triple_storage
    else:
        off_up = key_bytes + he_up_bytes + gc_bytes + triples_up
        off_down = he_down_bytes + base_ot + triples_down
        on_up = shares_up_first + ot_send + triples_online_each_way
        on_down = ot_setup + pred_bytes + triples_online_each_way
        off_messages = int(bool(key_bytes)) + 2 * n_linear + (2 if n_relu else 0) + (2 if triple_cts else 0)
        on_messages = 2 + 2 * relu_layer_count + (relu_layer_count if n_triples else 0)
        client_storage = garbler_storage + client_linear + triple_storage
        server_storage = evaluator_storage + server_linear + triple_storage

    breakdown = {
        "keygen": keygen_s,
        "he_encrypt": encrypt_s,
        "he_eval": he_eval_s,
        "he_decrypt": decrypt_s,
        "gc_garble": garble_s,
        "gc_encode_offline": encode_off_s,
        "triples_offline": triples_off_s,
        "offline_upload": network.upload_seconds(off_up),
        "offline_download": network.download_seconds(off_down),
        "offline_latency": off_messages * network.one_way_s,
        "online_upload": network.upload_seconds(on_up),
        "online_download": network.download_seconds(on_down),
        "online_latency": on_messages * network.one_way_s,
        "gc_encode_online": encode_on_s,
        "linear_online": online_linear_s,
        "gc_eval": eval_s,
    }
    offline_keys = ("keygen", "he_encrypt", "he_eval", "he_decrypt", "gc_garble", "gc_encode_offline",
                    "triples_offline", "offline_upload", "offline_download", "offline_latency")
    offline_s = sum(breakdown[k] for k in offline_keys)
    online_s = sum(v for k, v in breakdown.items() if k not in offline_keys)

    layers = _layer_rows(counts, priced, he_costs)
    return PICost(
        model=model_name, input_size=tuple(counts.input_size), protocol=protocol, garbler=garbler,
        network=network.describe(), threads=threads, client_threads=client_threads,
        relus=counts.relus, stochastic_relus=counts.stochastic_relus,
        relu_layers=sum(1 for r in counts.relu_layers if r.relus > 0),
        macs=counts.macs, flops=counts.flops, params=counts.params,
        offline_s=offline_s, online_s=online_s, latency_s=offline_s + online_s,
        offline_upload_bytes=int(off_up), offline_download_bytes=int(off_down),
        online_upload_bytes=int(on_up), online_download_bytes=int(on_down),
        client_storage_bytes=int(client_storage), server_storage_bytes=int(server_storage),
        breakdown=breakdown, layers=layers, unpriced=counts.unpriced,
        assumptions=_assumptions(counts, asked, garbler, network, client_device, priced),
        warnings=_warnings(counts),
    )


def _layer_rows(counts: ModelCounts, priced: List[_PricedLayer],
                he_costs: List[Tuple[HEOps, float]]) -> Tuple[LayerCost, ...]:
    relus: Dict[str, int] = {}
    stochastic: Dict[str, bool] = {}
    gc: Dict[str, int] = {}
    for r in counts.relu_layers:
        relus[r.name] = relus.get(r.name, 0) + r.relus
        stochastic[r.name] = stochastic.get(r.name, False) or r.stochastic
    for p in priced:
        gc[p.layer.name] = gc.get(p.layer.name, 0) + p.layer.relus * p.circuit.offline_bytes \
            + math.ceil(p.layer.relus / M.GC_CHUNK_RELUS) * M.GC_CHUNK_HEADER_BYTES
    he: Dict[str, float] = {}
    for op, (_, seconds) in zip(counts.linear_ops, he_costs):
        he[op.name] = he.get(op.name, 0.0) + seconds
    names = [n for n in counts.module_types if n in relus or n in he or counts.module_macs.get(n)]
    names += [n for n in list(relus) + list(he) if n not in counts.module_types]
    rows = []
    for name in dict.fromkeys(names):
        rows.append(LayerCost(
            name=name, type=counts.module_types.get(name, "op"), shape=tuple(counts.module_shapes.get(name, ())),
            relus=relus.get(name, 0), stochastic=stochastic.get(name, False),
            macs=int(counts.module_macs.get(name, 0)), he_s=he.get(name, 0.0), gc_bytes=gc.get(name, 0)))
    return tuple(rows)


def _warnings(counts: ModelCounts) -> Tuple[str, ...]:
    if not counts.unpriced:
        return ()
    ops: Dict[str, int] = {}
    for u in counts.unpriced:
        ops[u.op] = ops.get(u.op, 0) + u.elements
    listed = ", ".join(f"{op} ({n:,} elements)" for op, n in ops.items())
    return (f"the cost model does not price these nonlinear ops, so the estimate leaves them out: {listed}",)


def _assumptions(counts: ModelCounts, protocol: str, garbler: str, network: NetworkSpec, client_device: str,
                 priced: List[_PricedLayer]) -> Tuple[str, ...]:
    t_mul, t_ks = he_op_seconds()
    lines = [
        f"Delphi-style hybrid protocol, {garbler}-garbler; constants measured by Garimella et al. (ASPLOS 2023, "
        f"kvgarimella/cryptonite): server AMD EPYC 7502, client "
        + ("Intel Atom Z8350 (embedded)" if client_device == "embedded" else "a server-class machine (EPYC fits)"),
        f"network {network.describe()} ({network.source})",
        f"HE time per linear layer from Delphi's conv/FC op counts: {t_mul * 1e3:.2f} ms per plaintext "
        f"multiplication, {t_ks * 1e3:.2f} ms per key switch (fitted to 124 measured layers); layers spread over "
        f"server threads with a static schedule",
        "GC time linear in the number of ReLUs and in 1/threads (the artifact's assumption)",
        "latency = offline + online (no precomputed material); steps run one after the other; one RTT/2 per "
        "message waited on",
    ]
    if protocol == "circa":
        d = circa_defaults()
        lines.append(f"Circa: each kept ReLU is a truncated sign test in GC (Delphi's add/mod-p/compare gadgets on "
                     f"n-k+1 wires, 1 output) plus one Beaver triple; plain ReLUs use n={d['ring_bits']}, "
                     f"k={d['truncated_bits']} (StochasticReLU's defaults)")
    elif counts.stochastic_relus:
        plain = counts.relus - counts.stochastic_relus
        lines.append(f"Circa: the model's {counts.stochastic_relus:,} stochastic ReLUs are truncated sign tests in GC "
                     f"(their own n and k) plus one Beaver triple each"
                     + (f"; its {plain:,} plain ReLUs are Delphi's ReLU circuit (protocol='circa' prices them as "
                        f"sign tests too)" if plain else ""))
    if counts.device != "meta":
        lines.append(f"counted with a real forward pass on {counts.device} (the meta-device pass failed)")
    return tuple(lines)
