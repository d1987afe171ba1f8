"""Sweep the configs of our Triton W4A16 kernels at Llama-3.1 layer shapes, each timed back to back, to choose the
autotuner's lists (GEMV_CONFIGS, DECODE_CONFIGS in llmlab.quant.triton_w4a16).

Run on a CUDA machine: `PYTHONPATH=lib python benchmarks/gpu_w4a16_sweep.py --out DIR [--m 1,16] [--models 70b]`
(about 2 minutes per M on an H100, most of it compiling). For each shape and M it times every config of a grid
through `w4a16_matmul(..., config=...)` on the back-to-back clock of `benchmarks/gpu_w4a16.py` (calls captured in a
CUDA graph, weights rotating through more memory than the L2 holds), checks each result against
dequantize-then-matmul, and prints the fastest configs with their speedup over bf16; the JSON
(data/results/w4a16-sweep-<gpu>.json) holds every timing.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
import triton

from gpu_w4a16 import graph_ms

GROUP_SIZE = 128
ROTATE_BYTES = 512 * 2**20
MODELS = {"70b": "llama-3.1-70b", "8b": "llama-3.1-8b"}


def gemv_grid(N: int, K: int):
    """(BLOCK_N, BLOCK_K, SPLIT_K, warps, prefetch) for M = 1: enough programs for 132 SMs, not absurdly many."""
    for block_n, block_k, warps, prefetch, split in itertools.product((16, 32, 64, 128), (128, 256, 512), (4, 8),
                                                                      (False, True), (1, 2, 4, 8, 16)):
        programs = -(-N // block_n) * split
        if block_n * block_k // 8 >= 32 * warps and (K // block_k) % split == 0 and 132 <= programs <= 8 * 132 * 4:
            yield block_n, block_k, split, warps, prefetch


def dot_grid(N: int, K: int):
    """(BLOCK_N, BLOCK_K, SPLIT_K, warps, stages) for 2 ≤ M ≤ 16 (one token tile of 16)."""
    for block_n, block_k, split, warps, stages in itertools.product((64, 128), (128, 256, 512), (1, 2, 4, 8), (4, 8),
                                                                    (3, 4)):
        if not (block_n == 64 and warps == 8) and (K // block_k) % split == 0 and -(-N // block_n) * split >= 100:
            yield block_n, block_k, split, warps, stages


@torch.no_grad()
def sweep_shape(model: str, linear: str, N: int, K: int, Ms, rows: list) -> None:
    from llmlab.quant.triton_w4a16 import _config, dequantize_then_matmul, w4a16_matmul

    int4_copies = max(1, min(16, -(-ROTATE_BYTES // (N * K // 2))))
    bf16_copies = max(1, min(16, -(-ROTATE_BYTES // (2 * N * K))))
    packed = [torch.randint(-2**31, 2**31 - 1, (N, K // 8), dtype=torch.int32, device="cuda")
              for _ in range(int4_copies)]  # random codes: speed does not depend on their values
    scales = (torch.rand(N, K // GROUP_SIZE, device="cuda") * 0.01 + 0.001).to(torch.bfloat16)
    W = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.01 for _ in range(bf16_copies)]
    for M in Ms:
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        reference = dequantize_then_matmul(x, packed[0], scales, None, GROUP_SIZE).float()
        bf16_ms = graph_ms(lambda i: torch.matmul(x, W[i].t()), bf16_copies)
        started, timed = time.perf_counter(), []
        grid = gemv_grid(N, K) if M == 1 else dot_grid(N, K)
        for tiles in grid:
            if M == 1:
                block_n, block_k, split, warps, prefetch = tiles
                config = _config(block_n, block_k, split, warps=warps, stages=1, prefetch=prefetch)
                kernel = "gemv"
            else:
                block_n, block_k, split, warps, stages = tiles
                config = _config(block_n, block_k, split, warps=warps, stages=stages, BLOCK_M=16)
                kernel = "dot"

            def call(i, config=config, kernel=kernel):
                return w4a16_matmul(x, packed[i], scales, None, GROUP_SIZE, kernel=kernel, config=config)

            error = ((call(0).float() - reference).abs().max() / reference.abs().max()).item()
            ms = graph_ms(call, int4_copies, replays=5)
            row = {"model": model, "linear": linear, "N": N, "K": K, "M": M, "kernel": kernel,
                   "config": {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages},
                   "ms": ms, "bf16_ms": bf16_ms, "speedup_vs_bf16": bf16_ms / ms, "max_rel_error": error}
            rows.append(row)
            timed.append(row)
        best = sorted(timed, key=lambda row: row["ms"])
        print(f"{model} {linear} N={N} K={K} M={M}: bf16 {bf16_ms * 1e3:.1f} us, {len(timed)} timings in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        for row in best[:6]:
            print(f"   {row['config']}: {row['ms'] * 1e3:.1f} us ×{row['speedup_vs_bf16']:.2f} "
                  f"err {row['max_rel_error']:.1e}", flush=True)
        wrong = [row for row in timed if row["max_rel_error"] > 1e-2]
        if wrong:
            print(f"   {len(wrong)} configs gave wrong results, e.g. {wrong[0]['config']}", flush=True)
    del packed, W
    torch.cuda.empty_cache()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default data/results)")
    parser.add_argument("--m", default="1,16", help="tokens per GEMM, comma-separated (1: the GEMV, 2-16: tl.dot)")
    parser.add_argument("--models", default="70b,8b", help="70b and/or 8b")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU here: this sweep times GPU kernels")
        return 2
    from llmlab.models import load_spec
    from llmlab.quant.kernels import layer_gemm_shapes
    from llmlab.results import save_result

    Ms = [int(m) for m in args.m.split(",")]
    if any(not 1 <= M <= 16 for M in Ms):
        parser.error(f"--m {args.m}: this sweep covers the decode regimes, M from 1 to 16")
    name = torch.cuda.get_device_name(0)
    slug = "h100" if "H100" in name else "h200" if "H200" in name else "gpu"
    command = " ".join(["python", "benchmarks/gpu_w4a16_sweep.py", *(argv if argv is not None else sys.argv[1:])])
    measurements = {"group_size": GROUP_SIZE, "triton": triton.__version__, "rows": []}
    for model in (MODELS[key] for key in args.models.split(",")):
        for linear, (N, K) in layer_gemm_shapes(load_spec(model)).items():
            sweep_shape(model, linear, N, K, Ms, measurements["rows"])
            path = save_result(f"w4a16-sweep-{slug}", measurements, command=command, folder=args.out)
    print(f"stored {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
