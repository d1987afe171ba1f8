"""GPU memory anatomy, measured (chapters 01–03): weights, KV cache and activation peaks of real forward passes.

Run on a CUDA machine: `PYTHONPATH=lib python benchmarks/gpu_memory_anatomy.py [--out DIR]`. Models are built from
their configs (data/models/*.json) with random weights on the GPU: weight values do not change memory. For each model
and each (batch, context) point it measures, with the CUDA allocator:
  - the weights' bytes once loaded, and the CUDA context (what the driver holds outside PyTorch's allocator);
  - a prefill forward pass that fills a KV cache, keeping only the last position's logits (as generate() and the
    serving engines do): the peak allocated bytes, and the K/V bytes the cache holds;
  - one prefill with the logits of every position, to show what a full [batch, context, vocab] logits tensor costs.
Only raw measurements are stored (data/results/gpu-memory-anatomy.json); the notebooks compute the planner's
prediction live and set it beside them.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

from llmlab.measure import kv_cache_bytes_of, state_dict_bytes
from llmlab.results import save_result
from llmlab.zoo import random_model

POINTS = {
    "smollm2-135m": [(1, 512), (1, 4096), (8, 2048), (32, 1024), (64, 4096)],
    "llama-3.1-8b": [(1, 1024), (1, 8192), (1, 32768), (8, 4096), (32, 2048), (16, 8192)],
}


def context_overhead_bytes() -> int:
    """Bytes the GPU has in use that PyTorch's allocator did not reserve (CUDA context, cuBLAS workspace, ...)."""
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def prefill(model, batch: int, context: int, vocab: int, all_logits: bool) -> dict:
    ids = torch.randint(0, vocab, (batch, context), device="cuda")  # [batch, context]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=0 if all_logits else 1)
    torch.cuda.synchronize()
    row = {
        "batch": batch, "context": context, "all_logits": all_logits,
        "allocated_before_bytes": before,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
        "kv_bytes": kv_cache_bytes_of(out.past_key_values),
        "logits_bytes": out.logits.numel() * out.logits.element_size(),
        "after_forward_allocated_bytes": torch.cuda.memory_allocated(),
    }
    del out, ids
    gc.collect()
    torch.cuda.empty_cache()
    return row


def measure(name: str, dtype: torch.dtype) -> dict:
    torch.cuda.empty_cache()
    empty_allocated = torch.cuda.memory_allocated()
    model = random_model(name, dtype=dtype, device="cuda", attn_implementation="sdpa")
    config = model.config
    torch.cuda.synchronize()
    result = {
        "model": name, "dtype": str(dtype).removeprefix("torch."), "attn_implementation": "sdpa",
        "weights_allocated_bytes": torch.cuda.memory_allocated() - empty_allocated,
        "state_dict_bytes": state_dict_bytes(model),
        "params": sum(p.numel() for p in model.parameters()),
        "context_overhead_bytes": context_overhead_bytes(),
        "points": [],
    }
    for batch, context in POINTS[name]:
        try:
            result["points"].append(prefill(model, batch, context, config.vocab_size, all_logits=False))
        except torch.OutOfMemoryError:
            result["points"].append({"batch": batch, "context": context, "all_logits": False, "oom": True})
            torch.cuda.empty_cache()
        print(name, result["points"][-1], flush=True)
    batch, context = POINTS[name][2]
    try:
        result["points"].append(prefill(model, batch, context, config.vocab_size, all_logits=True))
    except torch.OutOfMemoryError:
        result["points"].append({"batch": batch, "context": context, "all_logits": True, "oom": True})
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default data/results)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU; the notebooks show its stored results instead")
    torch.cuda.init()
    torch.zeros(1, device="cuda")  # create the CUDA context before measuring it
    measurements = {"cuda_context_bytes_before_models": context_overhead_bytes(),
                    "gpu_total_bytes": torch.cuda.mem_get_info()[1],
                    "models": [measure("smollm2-135m", torch.bfloat16), measure("llama-3.1-8b", torch.bfloat16)]}
    path = save_result("gpu-memory-anatomy", measurements, command="PYTHONPATH=lib python benchmarks/gpu_memory_anatomy.py",
                       folder=args.out)
    print(f"{'model':14s} {'batch':>5s} {'ctx':>6s} {'peak GiB':>9s} {'KV GiB':>8s}")
    for model in measurements["models"]:
        for row in model["points"]:
            if not row.get("oom"):
                print(f"{model['model']:14s} {row['batch']:5d} {row['context']:6d} {row['peak_allocated_bytes'] / 2**30:9.3f} "
                      f"{row['kv_bytes'] / 2**30:8.3f}{'  (all logits)' if row['all_logits'] else ''}")
    print(f"stored in {path}")


if __name__ == "__main__":
    main()
