"""Chapter 08 exercises: the quantization matrix and the speed of low-precision kernels."""

from llmlab.exercises import register


@register("08.1", "How many bits per weight does an int4 checkpoint store when every group of 64 weights carries one "
                  "16-bit scale (no zero point)? (a number, bits)",
          "4 + 16 / 64")
def _():
    return 4 + 16 / 64


@register("08.2", "In the stored H100 GEMM run, what is the smallest M (tokens per GEMM) at which W4A16 ('int4') is "
                  "slower than bf16 over a whole Llama-3.1-70B layer? (an integer)",
          "min(M for M, x in speedups(load_result('quant-gemm-h100')['measurements']['rows'], "
          "'llama-3.1-70b')['int4'].items() if x < 1)")
def _():
    from llmlab.quant.kernels import speedups
    from llmlab.results import load_result

    by_m = speedups(load_result("quant-gemm-h100")["measurements"]["rows"], "llama-3.1-70b")["int4"]
    return min(m for m, x in by_m.items() if x < 1)


@register("08.3", "In the stored H100 decode run (load_result('gpu-decode-h100')), how many decode steps per second "
                  "would the int4 Llama-3.1-8B reach if each step only had to read its weights "
                  "(weights_allocated_bytes) at the measured copy bandwidth? (a number, steps/s)",
          "m = load_result('gpu-decode-h100')['measurements']; m['copy_bandwidth_bytes_per_s'] / "
          "next(r for r in m['rows'] if r['kernel'] == 'int4')['weights_allocated_bytes']")
def _():
    from llmlab.results import load_result

    measured = load_result("gpu-decode-h100")["measurements"]
    int4 = next(row for row in measured["rows"] if row["kernel"] == "int4")
    return measured["copy_bandwidth_bytes_per_s"] / int4["weights_allocated_bytes"]
