"""Measured memory on a real model: state-dict bytes, real KV-cache tensors, peaks; stored GPU prefills against the
planner (compare_anatomy) and FP8Linear's activations measured exactly on the CPU."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from llmlab.measure import kv_cache_bytes_of, measure_generate_kv, peak_memory, state_dict_bytes


def test_state_dict_bytes_counts_tied_weights_once_and_groups_them():
    model = torch.nn.Module()
    model.embed_tokens = torch.nn.Embedding(10, 4)
    model.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4, bias=True)])
    model.norm = torch.nn.LayerNorm(4)
    model.lm_head = torch.nn.Linear(4, 10, bias=False)
    model.lm_head.weight = model.embed_tokens.weight  # tied
    groups = state_dict_bytes(model)
    assert groups["embedding"] == 10 * 4 * 4 and "lm_head" not in groups, groups
    assert groups["linear"] == 16 * 4 and groups["bias"] == 4 * 4 and groups["norm"] == 8 * 4, groups
    assert groups["total"] == (40 + 16 + 4 + 8) * 4, groups


def test_peak_memory_on_cpu_sees_a_large_allocation():
    # in a fresh process: in this one, memory freed by earlier tests can serve the allocation without raising RSS
    code = ("import torch\nfrom llmlab.measure import peak_memory\nwith peak_memory('cpu') as peak:\n"
            "    block = torch.ones(64, 2**20)\n    block += 1\nprint(peak.increase_bytes)")
    increase = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert increase > 200 * 2**20, increase  # 256 MiB of float32: observed ≈ 256 MiB


@pytest.mark.slow
def test_real_generate_cache_matches_the_formula_to_the_byte(embedded):
    model, tokenizer, _ = embedded
    measured = measure_generate_kv(model, tokenizer, batch=2, prompt_tokens=20, new_tokens=6)
    assert measured.cached_tokens == 20 + 6 - 1, measured  # the last token's K/V is never stored
    expected = 2 * 30 * 3 * 64 * 4 * measured.cached_tokens * 2  # K and V × layers × kv heads × head_dim × fp32 × tokens × batch
    assert measured.bytes == expected, (measured.bytes, expected)
    assert measured.shapes[0] == [2, 3, 25, 64], measured.shapes


def test_reload_weights_does_nothing_off_a_gpu():
    from llmlab.measure import reload_weights

    linear = torch.nn.Linear(4, 4)
    assert reload_weights(linear, "cpu") is None and linear.weight.device.type == "cpu"


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="positive"):
        measure_generate_kv(None, None, batch=0)


# ---------------------------------------------------------------- stored GPU prefills against the planner


def test_compare_anatomy_on_the_stored_h100_run():
    """Every stored prefill (llama-3.1-8b and the embedded model, bf16, H100) beside plan(): KV exact, the allocator's
    peak within 0.5 %, the per-GPU total (peak reserved + memory outside PyTorch) within 5 %."""
    from llmlab.measure import by_point, compare_anatomy
    from llmlab.results import load_result

    rows = compare_anatomy(load_result("gpu-memory-anatomy")["measurements"])
    points = by_point(rows)
    assert len(points) >= 11 and {p["model"] for p in points} >= {"smollm2-135m", "llama-3.1-8b"}, len(points)
    for point in points:
        assert point["KV cache: planned"] == point["KV cache: measured"], point  # exact
        assert abs(point["allocated peak: error"]) < 0.005, point  # observed -0.34 % to 0.00 %
        assert abs(point["per-GPU total: error"]) < 0.05, point  # observed -4.6 % to +3.5 % (2026-11-25 run)
    weights = [row for row in rows if row["part"] == "weights"]
    assert all(abs(row["error"]) < 0.001 for row in weights), weights  # allocator rounding only


def test_compare_anatomy_plans_a_quantized_run_with_its_linears_staging():
    """A stored FP8 run (hand-made here) is planned in fp8 with FP8Linear's activation staging (12 bytes per value)."""
    from llmlab.measure import WHOLE_BATCH, compare_anatomy
    from llmlab.memory import plan

    eager = replace(WHOLE_BATCH, activation_quantization_bytes=12)
    planned = plan("llama-3.1-8b", "fp8", "bf16", 4096, 8, runtime=eager)
    point = {"batch": 8, "context": 4096, "all_logits": False, "kv_bytes": planned.kv_bytes,
             "peak_allocated_bytes": planned.weight_bytes + planned.kv_bytes + planned.activation_bytes + 2**25,
             "peak_reserved_bytes": 30 * 2**30, "non_pytorch_bytes": 2**30}
    run = {"model": "llama-3.1-8b", "dtype": "bfloat16", "precision": "fp8", "kv_dtype": "bf16",
           "linear": "llmlab.quant.kernels.FP8Linear", "weights_allocated_bytes": planned.weight_bytes,
           "context_overhead_bytes": 2**29, "points": [point, {"batch": 64, "context": 8192, "oom": True}]}
    rows = {row["part"]: row for row in compare_anatomy({"models": [], "quantized_models": [run]})}
    assert set(rows) == {"weights", "KV cache", "allocated peak", "per-GPU total"}  # the OOM point adds nothing
    assert rows["allocated peak"]["error"] == 0 and rows["KV cache"]["error"] == 0
    assert rows["per-GPU total"]["planned_bytes"] == planned.per_gpu_bytes
    assert rows["per-GPU total"]["measured_bytes"] == 31 * 2**30  # the point's own memory outside PyTorch
    assert rows["allocated peak"]["precision"] == "fp8" and rows["allocated peak"]["kv_dtype"] == "bf16"


@pytest.mark.slow
def test_fp8_linear_prefill_activations_match_the_planner():
    """On the CPU, exactly (the profiler's allocator record): a 2-layer model of the embedded model's shape, bf16 then
    with llmlab's FP8Linear, one prefill. FP8Linear quantizes each input through three fp32 temporaries, which the
    planner counts with activation_quantization_bytes=12; vLLM's fused kernel (1 byte) would not change the peak.
    ~15 s on 2 shared cores."""
    from llmlab.measure import cpu_allocation_peak
    from llmlab.memory import activation_bytes, kv_cache_bytes
    from llmlab.models import load_spec
    from llmlab.quant.kernels import convert_model
    from llmlab.zoo import random_model

    torch.manual_seed(0)
    spec = load_spec({**load_spec("smollm2-135m").config, "num_hidden_layers": 2})
    model = random_model(spec.config, dtype=torch.bfloat16)
    ids = torch.randint(0, spec.vocab_size, (1, 128))  # [batch 1, 128 tokens]
    kv = kv_cache_bytes(spec, 128, 1, "bf16")
    measured = {}
    for kind in ("bf16", "fp8"):
        if kind == "fp8":
            convert_model(model, "fp8")
        with torch.no_grad(), cpu_allocation_peak() as peak:
            model(input_ids=ids, use_cache=True, logits_to_keep=1)
        measured[kind] = peak.peak_bytes - kv  # activations: the peak beyond the K/V the pass wrote
    bf16, fp8 = activation_bytes(spec, 1, 128, "bf16"), activation_bytes(spec, 1, 128, "bf16", quantization_bytes=12)
    assert 0.97 < bf16 / measured["bf16"] <= 1.0, (bf16, measured)  # observed 0.981
    assert 0.97 < fp8 / measured["fp8"] <= 1.0, (fp8, measured)  # observed 0.990
    assert activation_bytes(spec, 1, 128, "bf16", quantization_bytes=1) == bf16  # fused: the MLP phase stays larger
    assert bf16 / measured["fp8"] < 0.6  # without the staging the planner would miss about half (observed 0.52)
