"""Our AWQ, SmoothQuant, W8A8 and FP8 against llm-compressor's AWQ and SmoothQuant on the embedded model.

    .venv/bin/python benchmarks/quant_vs_llmcompressor_awq_sq.py                     # 8 x 256 calibration, 4096 eval
    .venv/bin/python benchmarks/quant_vs_llmcompressor_awq_sq.py --methods fp16,awq-w4g64,llmc-awq-w4g64 --merge

Every method starts from a fresh copy of the embedded model and sees the same calibration windows and evaluation ids
(the same JSON shape as benchmarks/quant_vs_llmcompressor.py, GPTQ's). Methods:
  fp16                         the dequantized float32 model (the course's "16-bit" baseline)
  rtn-w4g64                    round to nearest, symmetric int4, groups of 64
  awq-w4g64                    ours (llm-awq's algorithm: α grid 0..1 in 1/20 steps, clipping search), int4 g64
  awq-w4g64-noclip             ours without the clipping search (llm-compressor has none)
  llmc-awq-w4g64               llm-compressor AWQModifier (defaults: duo_scaling=True, n_grid=20) + int4 g64 symmetric
  llmc-awq-w4g64-noduo         the same with duo_scaling=False (activation-only scales, as in the paper)
  w8a8-naive / w8a8-per-token  INT8 weights per channel, activations per tensor / per token (dynamic), no smoothing
  smoothquant-w8a8[-aX]        ours, α = X (default 0.5), then W8A8 per token
  llmc-smoothquant-w8a8[-aX]   llm-compressor SmoothQuantModifier(smoothing_strength=X) + W8A8 (int8 channel/token)
  fp8-w8a8                     FP8 e4m3 weights per channel, activations per token (dynamic)
Prints a table and stores data/results/<name>.json with provenance (see llmlab.results).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import torch

from llmlab.data import calibration_batches, evaluation_ids
from llmlab.evaluate import packed_weight_bytes, perplexity, weight_bytes_of
from llmlab.quant.awq import AWQConfig, awq_quantize_model
from llmlab.quant.driver import rtn_quantize_model
from llmlab.quant.llmc import llmc_awq, llmc_smoothquant
from llmlab.quant.mappings import quantizable_linears
from llmlab.quant.smoothquant import smoothquant_quantize_model
from llmlab.quant.w8a8 import quantize_model_w8a8
from llmlab.zoo import load_model

METHODS = ("fp16", "rtn-w4g64", "awq-w4g64", "awq-w4g64-noclip", "llmc-awq-w4g64", "w8a8-naive", "w8a8-per-token",
           "smoothquant-w8a8", "llmc-smoothquant-w8a8", "smoothquant-w8a8-a0.25", "llmc-smoothquant-w8a8-a0.25",
           "smoothquant-w8a8-a0.75", "llmc-smoothquant-w8a8-a0.75", "fp8-w8a8")
SMOOTHQUANT = re.compile(r"^(llmc-)?smoothquant-w8a8(?:-a([0-9.]+))?$")


def quantize(method: str, model, calibration_ids: torch.Tensor) -> tuple[int, int | None]:
    """Apply `method` to `model` in place; return (bits, group_size) for the packed size."""
    smoothquant = SMOOTHQUANT.match(method)
    if method == "rtn-w4g64":
        rtn_quantize_model(model, 4, 64, progress=False)
    elif method in ("awq-w4g64", "awq-w4g64-noclip"):
        awq_quantize_model(model, calibration_ids, AWQConfig(clip=method == "awq-w4g64"), progress=False)
    elif method in ("llmc-awq-w4g64", "llmc-awq-w4g64-noduo"):
        llmc_awq(model, calibration_ids, 4, 64, duo_scaling=method == "llmc-awq-w4g64")
    elif method in ("w8a8-naive", "w8a8-per-token", "fp8-w8a8"):
        quantize_model_w8a8(model, "per-tensor" if method == "w8a8-naive" else "per-token",
                            "fp8" if method == "fp8-w8a8" else "int8")
        return 8, None
    elif smoothquant:
        alpha = float(smoothquant[2] or 0.5)
        if smoothquant[1]:
            llmc_smoothquant(model, calibration_ids, alpha)
        else:
            smoothquant_quantize_model(model, calibration_ids, alpha)
        return 8, None
    else:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}, llmc-awq-w4g64-noduo "
                         "or smoothquant-w8a8-aX / llmc-smoothquant-w8a8-aX for another α")
    return 4, 64


def run_method(method: str, calibration_ids: torch.Tensor, eval_ids: torch.Tensor) -> dict:
    """Quantize a fresh embedded model with `method`, then measure perplexity; seconds of each phase."""
    model, _, _ = load_model()
    start = time.perf_counter()
    quantized, bits, group_size = [], 16, None
    if method != "fp16":
        quantized = list(quantizable_linears(model))  # names, read before any module is swapped
        bits, group_size = quantize(method, model, calibration_ids)
    quantize_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ppl = perplexity(model, eval_ids)
    return {"method": method, "perplexity": ppl, "quantize_seconds": round(quantize_seconds, 2),
            "eval_seconds": round(time.perf_counter() - start, 2),
            "packed_weight_bytes": packed_weight_bytes(model, quantized, bits, group_size) if quantized else
            weight_bytes_of(model) // 2}  # fp16 baseline: float32 in memory, 2 bytes a weight on disk


def comparisons(by_method: dict) -> dict:
    """Ours over llm-compressor's, for every pair that ran: perplexity and quantization-time ratios."""
    pairs = {"awq": ("awq-w4g64", "llmc-awq-w4g64"),  # each with its defaults
             "awq_same_algorithm": ("awq-w4g64-noclip", "llmc-awq-w4g64-noduo")}  # the paper's scales, no clipping
    for method in by_method:
        match = SMOOTHQUANT.match(method)
        if match and not match[1]:
            pairs["smoothquant" + (f"_a{match[2]}" if match[2] else "")] = (method, "llmc-" + method)
    result = {}
    for name, (ours, theirs) in pairs.items():
        if ours in by_method and theirs in by_method:
            result[f"{name}_perplexity_ratio_ours_over_llmcompressor"] = (by_method[ours]["perplexity"]
                                                                          / by_method[theirs]["perplexity"])
            result[f"{name}_time_ratio_ours_over_llmcompressor"] = (by_method[ours]["quantize_seconds"]
                                                                    / by_method[theirs]["quantize_seconds"])
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib-samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--name", default="quant-vs-llmcompressor-awq-sq-cpu", help="data/results/<name>.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of an earlier run stored under --name (same settings), replace rerun ones; "
                             "each row keeps the command that measured it")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine two threads wait on each other; "
                             "one AWQ layer took 55 s with 2 threads, 6 s with 1, while other jobs ran)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    _, tokenizer, _ = load_model()
    calibration_ids = calibration_batches(tokenizer, args.calib_samples, args.seq_len)  # [samples, seq_len]
    eval_ids = evaluation_ids(tokenizer, args.eval_tokens)  # [1, eval_tokens]
    setup = {"model": "smollm2-135m (embedded, dequantized from Q4_1)", "device": "cpu",
             "threads": torch.get_num_threads(), "calibration": f"{args.calib_samples} x {args.seq_len} tokens, "
             "offline text", "eval_tokens": args.eval_tokens, "perplexity_window": 512}
    rows = {}
    if args.merge:
        from llmlab.paths import results_dir

        path = results_dir() / f"{args.name}.json"
        if path.is_file():
            stored = json.loads(path.read_text())["measurements"]
            if all(stored.get(key) == value for key, value in setup.items()):
                rows = {row["method"]: row for row in stored["rows"]}
            else:
                print(f"{path.name} was measured with other settings: not merged", file=sys.stderr)
    command = " ".join(["python", *sys.argv])
    for method in filter(None, args.methods.split(",")):
        rows[method] = {**run_method(method, calibration_ids, eval_ids), "command": command}
        print(f"{method:>28}  ppl {rows[method]['perplexity']:8.3f}  quantize {rows[method]['quantize_seconds']:7.1f} s"
              f"  eval {rows[method]['eval_seconds']:6.1f} s", file=sys.stderr, flush=True)
    ratios = comparisons(rows)
    measurements = {**setup, "rows": list(rows.values()), **ratios,
                    "note": "shared 2-core CPU with other jobs running: seconds are indicative, compare within one run"}
    baseline = rows.get("fp16", {}).get("perplexity")
    print(f"{'method':>28} {'perplexity':>11} {'vs fp16':>8} {'quantize s':>11} {'eval s':>8}")
    for row in rows.values():
        ratio = f"{row['perplexity'] / baseline:8.3f}" if baseline else f"{'':>8}"
        print(f"{row['method']:>28} {row['perplexity']:11.3f} {ratio} {row['quantize_seconds']:11.1f} "
              f"{row['eval_seconds']:8.1f}")
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    if not args.no_save:
        from llmlab.results import save_result

        print(save_result(args.name, measurements, command=command))
    return measurements


if __name__ == "__main__":
    main()
