"""GPU memory anatomy, measured (chapters 01–03): weights, KV cache and activation peaks of real forward passes.

Run on a CUDA machine: `PYTHONPATH=lib python benchmarks/gpu_memory_anatomy.py [--out DIR]` (about 3 minutes on an
H100). Models are built from their configs (data/models/*.json) with random weights on the GPU: weight values do not
change memory. For each model and each (batch, context) point it measures, with the CUDA allocator:
  - the weights' bytes once loaded, and the CUDA context (what the driver holds outside PyTorch's allocator);
  - a prefill forward pass that fills a KV cache, keeping only the last position's logits (as generate() and the
    serving engines do): the peak allocated and reserved bytes (and reserved before), the K/V bytes the cache holds,
    and the memory outside PyTorch at that point (the context has grown by the kernels loaded so far);
  - one prefill with the logits of every position, to show what a full [batch, context, vocab] logits tensor costs;
  - for the 8B, a few prefills without a KV cache (use_cache=False, stored apart as "no_cache_points"): does the
    allocator's reserved-but-free memory come from the K/V tensors each layer stores in the middle of the freed
    activations? A serving engine allocates its KV pool up front, so its prefills interleave nothing persistent,
    and the planner's allocator slack may be smaller there.
Then Llama-3.1-8B again with FP8 weights (issue 5): the random bf16 model's decoder linears converted by
`llmlab.quant.kernels.convert_model(model, "fp8")` (FP8Linear: e4m3 weights with one fp32 scale per output row;
activations quantized per token at every call, through fp32 temporaries), the model reloaded into fresh allocator
segments (`llmlab.measure.reload_weights`: as an FP8 checkpoint loaded directly would sit), and the same prefills.
Only raw measurements are stored (data/results/gpu-memory-anatomy.json: bf16 runs under "models", the FP8 run under
"quantized_models"); the notebooks set the planner beside them with `llmlab.measure.compare_anatomy`.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

from llmlab.measure import compare_anatomy, kv_cache_bytes_of, reload_weights, state_dict_bytes
from llmlab.results import save_result
from llmlab.zoo import random_model

POINTS = {
    "smollm2-135m": [(1, 512), (1, 4096), (8, 2048), (32, 1024), (64, 4096)],
    "llama-3.1-8b": [(1, 1024), (1, 8192), (1, 32768), (8, 4096), (32, 2048), (16, 8192)],
}
NO_CACHE_POINTS = {"llama-3.1-8b": [(1, 32768), (32, 2048), (16, 8192)]}  # prefills with use_cache=False
QUANTIZED = [("llama-3.1-8b", "fp8")]  # (model, kernel of llmlab.quant.kernels) measured after the bf16 runs
LINEAR_CLASSES = {"fp8": "llmlab.quant.kernels.FP8Linear"}  # what convert_model puts in place of the decoder linears


def context_overhead_bytes() -> int:
    """Bytes the GPU has in use that PyTorch's allocator did not reserve (CUDA context, cuBLAS workspace, ...)."""
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def prefill(model, batch: int, context: int, vocab: int, all_logits: bool, use_cache: bool = True) -> dict:
    ids = torch.randint(0, vocab, (batch, context), device="cuda")  # [batch, context]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    reserved_before = torch.cuda.memory_reserved()
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=use_cache, logits_to_keep=0 if all_logits else 1)
    torch.cuda.synchronize()
    row = {
        "batch": batch, "context": context, "all_logits": all_logits, "use_cache": use_cache,
        "allocated_before_bytes": before,
        "reserved_before_bytes": reserved_before,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
        "non_pytorch_bytes": context_overhead_bytes(),
        "kv_bytes": kv_cache_bytes_of(out.past_key_values) if use_cache else 0,
        "logits_bytes": out.logits.numel() * out.logits.element_size(),
        "after_forward_allocated_bytes": torch.cuda.memory_allocated(),
    }
    del out, ids
    gc.collect()
    torch.cuda.empty_cache()
    return row


def measure(name: str, dtype: torch.dtype, kernel: str | None = None) -> dict:
    """One model's run: built with random weights in `dtype`; with `kernel`, its decoder linears converted to
    llmlab.quant.kernels' real-kernel modules and the model reloaded into fresh allocator segments."""
    started = time.perf_counter()
    torch.cuda.empty_cache()
    empty_allocated = torch.cuda.memory_allocated()
    model = random_model(name, dtype=dtype, device="cuda", attn_implementation="sdpa")
    config = model.config
    result = {"model": name, "dtype": str(dtype).removeprefix("torch."), "attn_implementation": "sdpa"}
    if kernel is None:
        torch.cuda.synchronize()
        weights = torch.cuda.memory_allocated() - empty_allocated
    else:
        from llmlab.quant.kernels import convert_model

        convert_model(model, kernel)  # [out, in] bf16 -> e4m3 [out, in] + fp32 scales [1, out], per decoder linear
        gc.collect()
        weights = reload_weights(model, "cuda")
        result.update(precision=kernel, kv_dtype="bf16", linear=LINEAR_CLASSES[kernel])
    result.update({
        "weights_allocated_bytes": weights,
        "state_dict_bytes": state_dict_bytes(model),  # FP8Linear's Q_W and s_W are buffers: grouped as "other"
        "params": sum(p.numel() for p in model.parameters()),  # nn.Parameters only (not FP8Linear's buffers)
        "context_overhead_bytes": context_overhead_bytes(),
        "points": [],
    })
    for batch, context in POINTS[name]:
        try:
            result["points"].append(prefill(model, batch, context, config.vocab_size, all_logits=False))
        except torch.OutOfMemoryError:
            result["points"].append({"batch": batch, "context": context, "all_logits": False, "oom": True})
            torch.cuda.empty_cache()
        print(name, kernel or result["dtype"], result["points"][-1], flush=True)
    if kernel is None:  # the all-logits pass: a [batch, context, vocab] tensor, whatever the weights' format
        batch, context = POINTS[name][2]
        try:
            result["points"].append(prefill(model, batch, context, config.vocab_size, all_logits=True))
        except torch.OutOfMemoryError:
            result["points"].append({"batch": batch, "context": context, "all_logits": True, "oom": True})
        result["no_cache_points"] = []  # apart from "points", whose every row holds a KV cache
        for batch, context in NO_CACHE_POINTS.get(name, []):
            try:
                row = prefill(model, batch, context, config.vocab_size, all_logits=False, use_cache=False)
            except torch.OutOfMemoryError:
                row = {"batch": batch, "context": context, "all_logits": False, "use_cache": False, "oom": True}
                torch.cuda.empty_cache()
            result["no_cache_points"].append(row)
            print(name, "no cache", row, flush=True)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    result["seconds"] = time.perf_counter() - started
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
    capability = torch.cuda.get_device_capability()
    measurements["quantized_models"] = [measure(name, torch.bfloat16, kernel) for name, kernel in QUANTIZED
                                        if kernel != "fp8" or capability >= (8, 9)]  # FP8 GEMMs need Ada/Hopper
    path = save_result("gpu-memory-anatomy", measurements, command="PYTHONPATH=lib python benchmarks/gpu_memory_anatomy.py",
                       folder=args.out)
    print(f"{'model':14s} {'weights':>7s} {'batch':>5s} {'ctx':>6s} {'peak GiB':>9s} {'KV GiB':>8s} "
          f"{'planned total GiB':>17s} {'measured total GiB':>18s} {'error':>7s}")
    totals = {(row["model"], row["precision"], row["batch"], row["context"]): row
              for row in compare_anatomy(measurements) if row["part"] == "per-GPU total"}
    for model in measurements["models"] + measurements["quantized_models"]:
        precision = model.get("precision", "bf16")
        for row in model["points"]:
            if row.get("oom"):
                print(f"{model['model']:14s} {precision:>7s} {row['batch']:5d} {row['context']:6d} out of memory")
                continue
            if row["all_logits"]:
                compared = "  (all logits)"
            else:
                total = totals[(model["model"], precision, row["batch"], row["context"])]
                compared = (f"{total['planned_bytes'] / 2**30:17.2f} {total['measured_bytes'] / 2**30:18.2f} "
                            f"{total['error']:+7.1%}")
            print(f"{model['model']:14s} {precision:>7s} {row['batch']:5d} {row['context']:6d} "
                  f"{row['peak_allocated_bytes'] / 2**30:9.3f} {row['kv_bytes'] / 2**30:8.3f} {compared}")
    print(f"stored in {path}")


if __name__ == "__main__":
    main()
