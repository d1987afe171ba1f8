"""Decode speed of a whole Llama-3.1-8B-shaped model per weight format, against the memory-bandwidth roofline.

Run on a CUDA machine: `PYTHONPATH=lib python benchmarks/gpu_decode.py [--out DIR] [--kernels bf16,fp8,int8,int4]`.
The model is built from its config with random weights on the GPU (values change neither memory nor speed); its
decoder linears are then swapped for `llmlab.quant.kernels` modules (fp8 / int8 W8A8, int4 W4A16 group 128 through
torch's kernel, w4a16 through our Triton kernel). For
each format it measures:
  - the bytes the weights take on the GPU (allocator), against the planner's `weight_bytes`;
  - greedy decode tokens/s at batch 1 (and 16) after a 128-token prompt, two ways: eager `generate` (Python and
    kernel-launch overhead included, as a naive server runs) and `generate` with a static cache, which transformers
    compiles with CUDA graphs (`torch.compile`, mode "reduce-overhead"): closer to what serving engines reach;
  - the roofline: measured copy bandwidth / bytes read per decode step (all weights once + the KV cache so far).
Stores data/results/gpu-decode-<gpu>.json.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

from llmlab.memory import weight_bytes
from llmlab.models import load_spec
from llmlab.quant.kernels import KERNELS, convert_model, kernel_available
from llmlab.results import save_result
from llmlab.zoo import random_model

MODEL = "llama-3.1-8b"
PRECISION = {"bf16": "bf16", "fp8": "fp8", "int8": "int8", "int4": "int4", "w4a16": "int4"}  # kernel -> planner


def copy_bandwidth() -> float:
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        y.copy_(x)
    torch.cuda.synchronize()
    return 2 * x.numel() * 20 / (time.perf_counter() - start)


@torch.no_grad()
def decode_rate(model, batch: int, prompt: int, new_tokens: int, static: bool) -> float:
    """Tokens/s per sequence of greedy decoding (the first token, i.e. the prefill, excluded)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt), device="cuda")
    options = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    if static:
        options["cache_implementation"] = "static"

    def timed(n):
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, **options)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(3 if static else 1):  # warm-up: compilation and CUDA-graph capture happen here
        timed(new_tokens)
    first = min(timed(1) for _ in range(3))
    total = min(timed(new_tokens) for _ in range(3))
    return (new_tokens - 1) / (total - first)


def measure(kernel: str, bandwidth: float, batches, new_tokens: int, static: bool) -> dict:
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    model = random_model(MODEL, dtype=torch.bfloat16, device="cuda")
    if kernel != "bf16":
        convert_model(model, kernel, group_size=128)
    gc.collect()
    torch.cuda.empty_cache()
    spec = load_spec(MODEL)
    row = {"kernel": kernel, "weights_allocated_bytes": torch.cuda.memory_allocated() - before,
           "planner_weight_bytes": weight_bytes(spec, PRECISION[kernel], 128).total, "decode": []}
    prompt = 128
    for batch in batches:
        kv_read = spec.num_layers * 2 * spec.num_kv_heads * spec.head_dim * 2 * (prompt + new_tokens // 2) * batch
        roofline = bandwidth / (row["weights_allocated_bytes"] + kv_read)  # decode steps/s if only memory mattered
        point = {"batch": batch, "prompt": prompt, "new_tokens": new_tokens, "roofline_steps_per_s": roofline}
        for mode in ("eager",) + (("static_compiled",) if static else ()):
            try:
                point[f"{mode}_tokens_per_s"] = decode_rate(model, batch, prompt, new_tokens, mode != "eager")
            except Exception as error:  # a kernel inductor cannot compile: keep the eager figure, say why
                point[f"{mode}_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            torch._dynamo.reset()
        row["decode"].append(point)
        print(kernel, point, flush=True)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default data/results)")
    parser.add_argument("--kernels", default=",".join(KERNELS))
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--no-static", action="store_true", help="skip the compiled static-cache runs")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU here: the stored H100 run is in data/results/")
        return 2
    bandwidth = copy_bandwidth()
    measurements = {"model": MODEL, "copy_bandwidth_bytes_per_s": bandwidth, "rows": [], "skipped": {}}
    name = torch.cuda.get_device_name(0)
    slug = "h100" if "H100" in name else "h200" if "H200" in name else "gpu"
    command = " ".join(["python", "benchmarks/gpu_decode.py", *(argv or sys.argv[1:])])
    path = None
    for kernel in args.kernels.split(","):
        ok, reason = kernel_available(kernel, "cuda")
        if not ok:
            measurements["skipped"][kernel] = reason
            continue
        measurements["rows"].append(measure(kernel, bandwidth, [int(b) for b in args.batches.split(",")],
                                            args.new_tokens, not args.no_static))
        # stored after each kernel: a run cut short by a time limit keeps what it measured
        path = save_result(f"gpu-decode-{slug}", measurements, folder=args.out, command=command)
    base = {p["batch"]: p for p in measurements["rows"][0]["decode"]} if measurements["rows"] else {}
    for row in measurements["rows"]:
        for p in row["decode"]:
            eager, static = p.get("eager_tokens_per_s"), p.get("static_compiled_tokens_per_s")
            print(f"{row['kernel']:5s} batch {p['batch']:3d}: weights {row['weights_allocated_bytes'] / 2**30:6.2f} GiB "
                  f"(planner {row['planner_weight_bytes'] / 2**30:6.2f}), eager {eager or 0:7.1f} tok/s, static "
                  f"{static or 0:7.1f} tok/s, roofline {p['roofline_steps_per_s']:7.1f} steps/s"
                  + (f", static vs bf16 ×{static / base[p['batch']]['static_compiled_tokens_per_s']:.2f}"
                     if static and base.get(p["batch"], {}).get("static_compiled_tokens_per_s") else ""))
    print("stored", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
