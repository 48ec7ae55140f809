"""The protocol estimate against the measurements of Garimella et al. (kvgarimella/cryptonite)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from hybrezoo import pi_cost
from hybrezoo.cost import measured as M
from hybrezoo.cost.circuits import circa_sign_circuit, delphi_relu_circuit, gc_seconds_per_relu
from hybrezoo.cost.he import conv_ops, he_fit_report, naf_weight, static_schedule_makespan
from hybrezoo.cost.validation import delphi_resnet18
from hybrezoo.nn import PIReLU
from hybrezoo.nn.stochastic_relu import StochasticReLU


@pytest.fixture(scope="module")
def r18_cifar():
    return pi_cost(delphi_resnet18(32, 10), input_size=(3, 32, 32))


def test_resnet18_cifar_relus_and_gc_bytes(r18_cifar):
    assert r18_cifar.relus == M.R18_CIFAR_RELUS == 557_056
    assert abs(r18_cifar.gc_bytes - M.R18_CIFAR_GC_BYTES) <= 0.01 * M.R18_CIFAR_GC_BYTES
    assert r18_cifar.gc_bytes == 9_510_061_120  # 557,056 x 17,072 + 68 chunk headers of 16 B


def test_resnet18_cifar_single_thread_he_time(r18_cifar):
    he = r18_cifar.breakdown["he_eval"]
    assert abs(he - sum(M.HE_EVAL_R18_CIFAR) - M.HE_EVAL_R18_CIFAR_FC[1]) <= 0.10 * 286.0  # Delphi per layer
    assert abs(he - M.LPHE_R18_CIFAR[0]) <= 0.10 * M.LPHE_R18_CIFAR[0]                  # LPHE, 1 thread


def test_resnet18_tiny_single_thread_he_time():
    cost = pi_cost(delphi_resnet18(64, 200), input_size=(3, 64, 64))
    assert cost.relus == 2_228_224
    assert abs(cost.breakdown["he_eval"] - M.LPHE_R18_TINY[0]) <= 0.10 * M.LPHE_R18_TINY[0]


def test_reproduces_the_simulator_end_to_end(r18_cifar):
    """e2e_latency.py run_server_garbler_protocol with the artifact's defaults (100/500 Mbit/s, 1 thread),
    evaluated on the measured constants, against our per-layer model of the same network."""
    up, down = 100e6 / 8, 500e6 / 8
    n = M.R18_CIFAR_RELUS
    slope = gc_seconds_per_relu()
    offline = (M.KEYGEN_S + M.KEY_BYTES / up + sum(M.HE_ENCRYPT_R18_CIFAR) + sum(M.HE_UPLOAD_R18_CIFAR) / up
               + M.LPHE_R18_CIFAR[0] + sum(M.HE_DOWNLOAD_R18_CIFAR) / down + sum(M.HE_DECRYPT_R18_CIFAR)
               + slope[("garble", "server")] * n + M.OFFLINE_ENCODE_S["r18_cifar"][0] + M.R18_CIFAR_GC_BYTES / down
               + (M.BASE_OT_BYTES + M.OT_EXT_SETUP_BYTES) / up + M.OT_EXT_SEND_BYTES / down)
    online = (sum(M.ONLINE_SHARES_R18_CIFAR) / up + sum(M.ONLINE_ENCODE_R18_CIFAR)
              + M.LABEL_BYTES_PER_LAYER_OF_65536 * (n / 65_536) / down + sum(M.ONLINE_LINEAR_R18_CIFAR)
              + slope[("eval", "client")] * n + M.PRED_BYTES[10] / down)
    ours = pi_cost(delphi_resnet18(32, 10), input_size=(3, 32, 32), network="wireless")
    assert ours.offline_s == pytest.approx(offline, rel=0.03)
    assert ours.online_s == pytest.approx(online, rel=0.03)


def test_delphi_circuit_model_reproduces_every_measured_byte_constant():
    relu = delphi_relu_circuit()
    assert relu.and_gates == 288
    assert relu.table_bytes == M.GC_TABLE_BYTES_PER_RELU == 15_896
    assert relu.offline_bytes == M.GC_BYTES_PER_RELU == 17_072
    assert relu.ot_setup_bytes * M.R18_CIFAR_RELUS == M.OT_EXT_SETUP_BYTES
    assert relu.ot_send_bytes * M.R18_CIFAR_RELUS == M.OT_EXT_SEND_BYTES
    assert relu.online_label_bytes * 65_536 + 6 == M.LABEL_BYTES_PER_LAYER_OF_65536
    assert relu.evaluator_storage_bytes == M.EVALUATOR_STORAGE_PER_RELU
    assert relu.garbler_storage_bytes == M.GARBLER_STORAGE_PER_RELU
    assert relu.half_gates_bytes == 288 * 32


def test_circa_circuit_shrinks_with_truncation_and_stays_below_delphi():
    sizes = [circa_sign_circuit(32, k).table_bytes for k in range(0, 30, 5)]
    assert sizes == sorted(sizes, reverse=True)
    assert circa_sign_circuit(41, 0).and_gates == 3 * 42 + 4            # untruncated sign on Delphi's field
    assert circa_sign_circuit(41, 0).and_gates < delphi_relu_circuit().and_gates
    with pytest.raises(ValueError, match="truncated bits"):
        circa_sign_circuit(16, 15)


def test_circa_prices_stochastic_layers_with_their_own_bits():
    def model(k):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), StochasticReLU(truncated_bits=k, ring_bits=32),
                             nn.Flatten(), nn.Linear(8 * 64, 10))

    wide, narrow = (pi_cost(model(k), input_size=(3, 8, 8), protocol="circa") for k in (4, 16))
    assert narrow.gc_bytes < wide.gc_bytes
    plain = pi_cost(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), PIReLU(), nn.Flatten(), nn.Linear(512, 10)),
                    input_size=(3, 8, 8))
    default = pi_cost(model(4), input_size=(3, 8, 8))               # protocol="delphi", the default
    assert default.protocol == "circa" and default.gc_bytes == wide.gc_bytes  # a stochastic ReLU is Circa's
    assert default.stochastic_relus == 512 and "stochastic ReLUs are truncated sign tests" in " ".join(default.assumptions)
    assert narrow.online_s < plain.online_s and narrow.client_storage_bytes < plain.client_storage_bytes
    assert plain.protocol == "delphi" and wide.gc_bytes < plain.gc_bytes


def test_he_fit_explains_the_measured_layers():
    report = he_fit_report()
    assert report["layers"] == 124
    assert report["median_abs_rel_error"] < 0.04
    assert report["max_abs_rel_error"] < 0.15


def test_conv_op_counts_follow_delphi_packing():
    # 64->64 at 32x32: 4 channels per half-ciphertext, 8 input ciphertexts, 16 permutations, 4 rotations, 9 taps
    ops = conv_ops(32, 32, 9, 64, 64)
    assert ops.multiplications == 16 * 8 * 4 * 9 and ops.ciphertexts_up == 8 * 9 and ops.ciphertexts_down == 8
    assert conv_ops(32, 32, 1, 64, 64).multiplications == ops.multiplications // 9
    assert [naf_weight(v) for v in (0, 1, 3, 7, 11, 1024)] == [0, 1, 2, 2, 3, 1]


def test_threads_follow_the_static_layer_schedule():
    # predicted per-layer HE times of Delphi's ResNet18 against the measured layer-parallel HE table
    cost = pi_cost(delphi_resnet18(32, 10), input_size=(3, 32, 32))
    convs = [layer.he_s for layer in cost.layers if layer.type == "Conv2d"]
    errors = [abs(static_schedule_makespan(convs, t) - M.LPHE_R18_CIFAR[t - 1]) / M.LPHE_R18_CIFAR[t - 1]
              for t in range(1, 18)]
    assert np.mean(errors) < 0.10
    assert static_schedule_makespan([3.0, 1.0, 1.0], 2) == 4.0 and static_schedule_makespan([1.0] * 3, 8) == 1.0
    many = pi_cost(delphi_resnet18(32, 10), input_size=(3, 32, 32), threads=8, client_threads=4)
    assert many.breakdown["he_eval"] < cost.breakdown["he_eval"] / 4
    assert many.breakdown["gc_garble"] == pytest.approx(cost.breakdown["gc_garble"] / 8)
    assert many.breakdown["gc_eval"] == pytest.approx(cost.breakdown["gc_eval"] / 4)


def test_networks_and_overrides(r18_cifar):
    wan = pi_cost(delphi_resnet18(32, 10), input_size=(3, 32, 32), network="wan")
    assert wan.latency_s > r18_cifar.latency_s
    assert wan.relus == r18_cifar.relus and wan.total_bytes == r18_cifar.total_bytes
    slow = pi_cost(delphi_resnet18(32, 10), input_size=(3, 32, 32), network="wan", bandwidth_mbps=(40, 400),
                   rtt_ms=0)
    assert slow.breakdown["offline_upload"] == pytest.approx(10 * wan.breakdown["offline_upload"])
    assert slow.breakdown["online_latency"] == 0 and wan.breakdown["online_latency"] > 0


def test_client_garbler_moves_the_circuits_upstream(r18_cifar):
    client = pi_cost(delphi_resnet18(32, 10), input_size=(3, 32, 32), garbler="client")
    assert client.offline_upload_bytes > r18_cifar.gc_bytes > client.offline_download_bytes
    assert client.client_storage_bytes < r18_cifar.client_storage_bytes
    assert client.breakdown["gc_garble"] > r18_cifar.breakdown["gc_garble"]   # garbling on the embedded client


def test_result_serialises_and_prints(r18_cifar):
    d = json.loads(json.dumps(r18_cifar.to_dict()))
    assert d["relus"] == 557_056 and d["flops"] == 2 * d["macs"] and len(d["layers"]) == len(r18_cifar.layers)
    text = str(r18_cifar)
    assert "557.06K in 17 layers" in text and "latency" in text
    md = r18_cifar.to_markdown()
    assert "| layer | type |" in md and "Assumptions:" in md
    assert r18_cifar.latency_s == pytest.approx(r18_cifar.offline_s + r18_cifar.online_s)
    with pytest.raises(Exception):
        r18_cifar.relus = 0  # frozen


def test_pi_cost_works_on_models_on_any_device_and_keeps_them():
    model = delphi_resnet18(32, 10).to(torch.float64)
    cost = pi_cost(model, input_size=(3, 32, 32))
    assert cost.relus == 557_056 and next(model.parameters()).dtype == torch.float64
