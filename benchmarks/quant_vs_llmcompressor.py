"""Our GPTQ and RTN against llm-compressor's GPTQ on the embedded model: perplexity and seconds, same data for all.

    .venv/bin/python benchmarks/quant_vs_llmcompressor.py                      # full: 32 x 512 calibration, 16384 eval
    .venv/bin/python benchmarks/quant_vs_llmcompressor.py --calib-samples 8 --seq-len 256 --eval-tokens 4096  # small

Every method starts from a fresh copy of the embedded model and sees the same calibration windows and evaluation ids.
`llmc-gptq-w4g64` is llm-compressor's `GPTQModifier` with its defaults (block 128, dampening 0.01, actorder "static")
on a symmetric int4 group-64 scheme (W4A16 with group 64); `gptq-w4g64-actorder` is ours at the same settings.
Prints a table and stores data/results/<name>.json with provenance (see llmlab.results).
"""

from __future__ import annotations

import argparse
import re
import sys
import time

import torch

from llmlab.data import calibration_batches, evaluation_ids
from llmlab.evaluate import packed_weight_bytes, perplexity, weight_bytes_of
from llmlab.quant.driver import GPTQConfig, gptq_quantize_model, rtn_quantize_model
from llmlab.quant.llmc import llmc_gptq
from llmlab.quant.mappings import quantizable_linears
from llmlab.zoo import load_model

METHODS = ("fp16", "rtn-w4g64", "gptq-w4g64", "gptq-w4g64-actorder", "llmc-gptq-w4g64", "rtn-w3g64", "gptq-w3g64")
PATTERN = re.compile(r"^(rtn|gptq|llmc-gptq)-w(\d)g(\d+)(-actorder)?$")


def run_method(method: str, calibration_ids: torch.Tensor, eval_ids: torch.Tensor) -> dict:
    """Quantize a fresh embedded model with `method`, then measure perplexity; seconds of each phase."""
    model, _, _ = load_model()
    start, start_cpu = time.perf_counter(), time.process_time()
    quantized, bits, group_size = [], 16, None
    if method != "fp16":
        match = PATTERN.match(method)
        if not match:
            raise ValueError(f"unknown method {method!r}; use fp16 or e.g. rtn-w4g64, gptq-w3g64, gptq-w4g64-actorder, "
                             "llmc-gptq-w4g64")
        kind, bits, group_size, act_order = match[1], int(match[2]), int(match[3]), bool(match[4])
        if kind == "rtn":
            rtn_quantize_model(model, bits, group_size, progress=False)
        elif kind == "gptq":
            gptq_quantize_model(model, calibration_ids, GPTQConfig(bits, group_size, act_order=act_order))
        else:
            llmc_gptq(model, calibration_ids, bits, group_size, act_order=True)
        quantized = list(quantizable_linears(model))
    quantize_seconds, quantize_cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    # sizes from a fresh model: llm-compressor adds weight_scale / weight_zero_point parameters, counted twice
    packed = packed_weight_bytes(load_model()[0], quantized, bits, group_size) if quantized else None
    start = time.perf_counter()
    ppl = perplexity(model, eval_ids)
    return {"method": method, "perplexity": ppl, "quantize_seconds": round(quantize_seconds, 2),
            "quantize_cpu_seconds": round(quantize_cpu_seconds, 2),
            "eval_seconds": round(time.perf_counter() - start, 2),
            "packed_weight_bytes": packed if quantized else weight_bytes_of(model) // 2}  # fp16: 2 bytes a weight


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--name", default="quant-vs-llmcompressor-cpu", help="data/results/<name>.json")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for every method (default 1: on a shared 2-core machine two threads "
                             "wait on each other at every op; one perplexity window took 16 s with 2, 2.6 s with 1)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    _, tokenizer, _ = load_model()
    calibration_ids = calibration_batches(tokenizer, args.calib_samples, args.seq_len)  # [samples, seq_len]
    eval_ids = evaluation_ids(tokenizer, args.eval_tokens)  # [1, eval_tokens]
    rows = []
    for method in args.methods.split(","):
        rows.append(run_method(method, calibration_ids, eval_ids))
        print(f"{method:>22}  ppl {rows[-1]['perplexity']:8.3f}  quantize {rows[-1]['quantize_seconds']:7.1f} s "
              f"(cpu {rows[-1]['quantize_cpu_seconds']:7.1f} s)  eval {rows[-1]['eval_seconds']:6.1f} s",
              file=sys.stderr, flush=True)
    by_method = {row["method"]: row for row in rows}
    comparison = {}
    if "llmc-gptq-w4g64" in by_method and "gptq-w4g64-actorder" in by_method:
        ours, theirs = by_method["gptq-w4g64-actorder"], by_method["llmc-gptq-w4g64"]
        comparison = {"perplexity_ratio_ours_over_llmcompressor": ours["perplexity"] / theirs["perplexity"],
                      "time_ratio_ours_over_llmcompressor": ours["quantize_seconds"] / theirs["quantize_seconds"],
                      "cpu_time_ratio_ours_over_llmcompressor":
                          ours["quantize_cpu_seconds"] / theirs["quantize_cpu_seconds"]}
    measurements = {
        "model": "smollm2-135m (embedded, dequantized from Q4_1)", "device": "cpu", "threads": torch.get_num_threads(),
        "calibration": f"{args.calib_samples} x {args.seq_len} tokens, offline text", "eval_tokens": args.eval_tokens,
        "perplexity_window": 512, "rows": rows, **comparison,
        "note": "shared 2-core CPU with other jobs running: wall seconds swing 2x with the load; CPU seconds "
                "(process time, one thread) are the fairer speed comparison",
    }
    print(f"{'method':>22} {'perplexity':>11} {'quantize s':>11} {'(cpu s)':>8} {'eval s':>8}")
    for row in rows:
        print(f"{row['method']:>22} {row['perplexity']:11.3f} {row['quantize_seconds']:11.1f} "
              f"{row['quantize_cpu_seconds']:8.1f} {row['eval_seconds']:8.1f}")
    for key, value in comparison.items():
        print(f"{key}: {value:.3f}")
    if not args.no_save:
        from llmlab.results import save_result

        print(save_result(args.name, measurements, command=" ".join(["python", *sys.argv])))
    return measurements


if __name__ == "__main__":
    main()
