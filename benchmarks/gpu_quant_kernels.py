"""Real low-precision GEMMs on a GPU (chapters 05, 06, 08): bf16 vs FP8 vs INT8 vs 4-bit weight-only.

Run on a CUDA machine: `PYTHONPATH=lib python benchmarks/gpu_quant_kernels.py [--out DIR] [--quick]`.
For Llama-3.1-8B and 70B layer shapes (fused qkv, o, gate_up, down) and M (tokens per GEMM) from 1 to 8192, it times
each kernel of `llmlab.quant.kernels` (median of CUDA-event timings, weights rotated through more memory than the L2
cache holds): "rows" time the low-precision GEMM alone (activations already quantized, as engines fuse that step),
"layer_rows" the whole module call for fp8/int8 with our eager, unfused activation quantization. It also measures in the same run the peaks it is compared with: device-to-device copy bandwidth and the dense
bf16 / FP8 / INT8 GEMM throughput at 8192³. It also checks that each real kernel gives the numbers fake quantization
gives (relative error on one layer). Stores data/results/quant-gemm-<gpu>.json (raw rows; notebooks derive speedups).
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from llmlab.models import load_spec
from llmlab.quant.kernels import KERNELS, gemm_sweep, kernel_available, layer_gemm_shapes, real_linear
from llmlab.quant.rtn import rtn
from llmlab.quant.w8a8 import W8A8Linear
from llmlab.results import save_result

MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
MODELS = ("llama-3.1-8b", "llama-3.1-70b")


def _median_ms(fn, repeats: int = 20) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def peaks(n: int = 8192) -> dict:
    """What this GPU reaches at its best, measured now: copy bandwidth and dense GEMM throughput per type."""
    out = {}
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    out["copy_gbps"] = 2 * x.numel() / (_median_ms(lambda: y.copy_(x)) / 1e3) / 1e9  # read + write
    del x, y
    flops = 2 * n**3
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    out["bf16_tflops"] = flops / (_median_ms(lambda: a @ b) / 1e3) / 1e12
    if kernel_available("fp8", "cuda")[0]:
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
        one = torch.tensor(1.0, device="cuda")
        out["fp8_tflops"] = flops / (_median_ms(
            lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)) / 1e3) / 1e12
    ai = torch.randint(-128, 127, (n, n), device="cuda", dtype=torch.int8)
    bi = torch.randint(-128, 127, (n, n), device="cuda", dtype=torch.int8).t()
    out["int8_tops"] = flops / (_median_ms(lambda: torch._int_mm(ai, bi)) / 1e3) / 1e12
    return out


@torch.no_grad()
def correctness() -> dict:
    """Relative error of each real kernel against fake quantization on one 4096 x 4096 layer, at M = 1 and 64."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(4096, 4096, bias=False, device="cuda")
    out = {}
    for M in (1, 64):
        X = torch.randn(M, 4096, device="cuda", dtype=torch.bfloat16)
        references = {"bf16": X.float() @ linear.weight.t(),
                      "int8": W8A8Linear.from_linear(linear, "per-token", "int8")(X.float()),
                      "fp8": W8A8Linear.from_linear(linear, "per-token", "fp8")(X.float()),
                      "int4": X.float() @ rtn(linear.weight, 4, 128).t()}
        references["w4a16"] = references["int4"]  # the same RTN grid, through our Triton kernel
        for kernel in KERNELS:
            if kernel_available(kernel, "cuda")[0]:
                Y = real_linear(copy.deepcopy(linear), kernel)(X)  # real_linear converts in place: work on a copy
                ref = references[kernel]
                out[f"{kernel}_M{M}"] = ((Y.float() - ref).norm() / ref.norm()).item()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default data/results)")
    parser.add_argument("--quick", action="store_true", help="fewer M values and repeats (a smoke run)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU here: this benchmark measures GPU kernels; the stored H100 run is in data/results/")
        return 2
    Ms = (1, 16, 256, 4096) if args.quick else MS
    repeats = 10 if args.quick else 50
    measurements = {"peaks": peaks(), "correctness": correctness(), "rows": [], "layer_rows": [], "skipped": {}}
    print("peaks:", {k: round(v, 1) for k, v in measurements["peaks"].items()}, flush=True)
    print("relative error vs fake-quant:", {k: f"{v:.2e}" for k, v in measurements["correctness"].items()}, flush=True)
    for kernel in KERNELS:
        ok, reason = kernel_available(kernel, "cuda")
        if not ok:
            measurements["skipped"][kernel] = reason
            print(reason, flush=True)
    for model in MODELS:
        for linear, (N, K) in layer_gemm_shapes(load_spec(model)).items():
            for kernel in KERNELS:
                if kernel in measurements["skipped"]:
                    continue
                for timing in gemm_sweep(kernel, N, K, Ms, "cuda", repeats=repeats, scope="gemm"):
                    measurements["rows"].append({"model": model, "linear": linear, **asdict(timing)})
                if kernel in ("fp8", "int8"):  # the module call with eager activation quantization, for contrast
                    for timing in gemm_sweep(kernel, N, K, Ms, "cuda", repeats=repeats, scope="layer"):
                        measurements["layer_rows"].append({"model": model, "linear": linear, **asdict(timing)})
                torch.cuda.empty_cache()
            rows = [r for r in measurements["rows"] if r["model"] == model and r["linear"] == linear]
            bf16 = {r["M"]: r["ms"] for r in rows if r["kernel"] == "bf16"}
            print(f"{model} {linear} N={N} K={K}: " + "; ".join(
                f"M={M} " + " ".join(f"{r['kernel']} {bf16[M] / r['ms']:.2f}x" for r in rows
                                     if r["M"] == M and r["kernel"] != "bf16") for M in (1, 16, 256, 4096) if M in bf16),
                flush=True)
    name = torch.cuda.get_device_name(0)
    slug = "h100" if "H100" in name else "h200" if "H200" in name else "gpu"
    path = save_result(f"quant-gemm-{slug}", measurements,
                       command=" ".join(["python", "benchmarks/gpu_quant_kernels.py", *(argv or sys.argv[1:])]),
                       folder=args.out)
    print("stored", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
