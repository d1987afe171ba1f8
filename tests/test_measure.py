"""Measured memory on a real model: state-dict bytes, real KV-cache tensors, peaks."""

import json
import subprocess
import sys

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


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="positive"):
        measure_generate_kv(None, None, batch=0)
