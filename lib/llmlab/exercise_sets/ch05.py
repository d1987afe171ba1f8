"""Chapter 05 exercises: SmoothQuant W8A8."""

from llmlab.exercises import register


@register("05.1", "SmoothQuant with α = 0.5: input channel j has max|X_j| = 64 and max|W_j| = 0.25. What smoothing "
                  "factor s_j does Eq. 4 give? (a number)",
          "smooth_scales(torch.tensor([64.0]), torch.tensor([0.25]), alpha=0.5).item()")
def _():
    import torch

    from llmlab.quant.smoothquant import smooth_scales

    return smooth_scales(torch.tensor([64.0]), torch.tensor([0.25]), alpha=0.5).item()


def _two_tokens():
    """Token 0: a massive activation (3000) in channel 0, zeros elsewhere; token 1: 576 values evenly in [-1, 1]."""
    import torch

    X = torch.zeros(2, 576)
    X[0, 0] = 3000.0
    X[1] = torch.linspace(-1, 1, 576)
    return X


@register("05.2", "An activation tensor holds two tokens: token 0 has one channel at 3000 (a massive activation), "
                  "token 1 has 576 values spread evenly over [-1, 1]. After INT8 quantization with ONE scale for the "
                  "whole tensor, how many distinct values does token 1 keep? (an integer)",
          "quantize_activation(X, 'per-tensor')[1].unique().numel()  (X: the two tokens)", rel_tol=0)
def _():
    from llmlab.quant.w8a8 import quantize_activation

    return quantize_activation(_two_tokens(), "per-tensor")[1].unique().numel()


@register("05.3", "The same two tokens quantized with one scale PER TOKEN instead: how many times finer is token 1's "
                  "grid step than with one scale per tensor? (a ratio)",
          "quantize(X, 8, axis=None)[1] / quantize(X, 8, axis=-1)[1][1]  (the scales s: per tensor / token 1's)")
def _():
    from llmlab.quant.formats import quantize

    X = _two_tokens()
    per_tensor, per_token = quantize(X, 8, None, True, axis=None)[1], quantize(X, 8, None, True, axis=-1)[1]
    return (per_tensor / per_token[1]).item()


@register("05.4", "In the stored CPU run (quant-vs-llmcompressor-awq-sq-cpu), by how many percent does SmoothQuant "
                  "α = 0.5 + W8A8 raise the perplexity over the baseline ('fp16' row)? (a number, %)",
          "100 * (ppl['smoothquant-w8a8'] / ppl['fp16'] - 1) with ppl from load_result(...)['measurements']['rows']")
def _():
    from llmlab.results import load_result

    ppl = {row["method"]: row["perplexity"]
           for row in load_result("quant-vs-llmcompressor-awq-sq-cpu")["measurements"]["rows"]}
    return 100 * (ppl["smoothquant-w8a8"] / ppl["fp16"] - 1)
