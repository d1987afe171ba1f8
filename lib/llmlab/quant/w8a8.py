"""W8A8: 8-bit weights *and* 8-bit activations, so the matrix multiply itself can run on INT8 (or FP8) tensor cores.

    Y = X Wᵀ  ≈  (s_X · Q_X)(s_W · Q_W)ᵀ = s_X s_Wᵀ ⊙ (Q_X Q_Wᵀ)      (the INT8 GEMM computes Q_X Q_Wᵀ)

Weights are quantized once ("static"), symmetric, one scale per output channel (a row of W [out, in]). Activations are
quantized on the fly ("dynamic"), symmetric, with one scale per token (a row of X [tokens, in]) or, for the naive
baseline, one scale for the whole tensor. Both granularities keep the scales outside the inner sum over `in`, which is
what lets a kernel apply them after the integer GEMM (SmoothQuant, Xiao et al., arXiv 2211.10438, §3 and Figure 3).
Per-channel *activation* scales would not: they sit inside the sum — hence SmoothQuant migrates them into the weights.

The FP8 variant (e4m3, max 448; Micikevicius et al., arXiv 2209.05433) keeps the same granularities: per channel for
weights, per token for activations — "FP8 dynamic" in vLLM / llm-compressor.

This is fake quantization: weights and inputs are rounded onto their grid and back to float32 and the matmul runs in
float32, which gives the same numbers as a real INT8 kernel up to float rounding in the accumulation, on any device.
Mirrors mit-han-lab/smoothquant `fake_quant.py` (`W8A8Linear`), with this package's grids (`llmlab.quant.formats`).
"""

from __future__ import annotations

import time

import torch

from llmlab.quant.driver import QuantizationReport
from llmlab.quant.formats import fake_quantize, quantize_fp8
from llmlab.quant.mappings import quantizable_linears

ACTIVATION_GRANULARITIES = ("per-token", "per-tensor")  # one activation scale per token / per tensor (naive)
FORMATS = ("int8", "fp8")  # symmetric INT8 grid / FP8 e4m3


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is not a W8A8 format; choose 'int8' or 'fp8' (e4m3)")


def _check(activations: str, fmt: str) -> None:
    if activations not in ACTIVATION_GRANULARITIES:
        raise ValueError(f"activations={activations!r} is not a granularity; choose 'per-token' (one scale per "
                         "token, what SmoothQuant and vLLM use) or 'per-tensor' (the naive baseline)")
    _check_format(fmt)


def _fp8_fake_quantize(X: torch.Tensor, axis: int | None) -> torch.Tensor:
    """X scaled so its absmax (per slice along `axis`, or whole tensor) lands on 448, rounded to e4m3, scaled back."""
    Q, s = quantize_fp8(X, "e4m3", axis=axis)  # s: [] or X's shape with `axis` shrunk to 1
    return (s * Q.float()).to(X.dtype)


def quantize_weight(W: torch.Tensor, fmt: str = "int8") -> torch.Tensor:
    """Ŵ: W [out, in] on its 8-bit grid, one scale per output channel (row), back in W's dtype."""
    _check_format(fmt)
    if fmt == "int8":
        return fake_quantize(W, 8, None, symmetric=True, axis=-1)  # s = max|W[i, :]| / 127.5, per row i
    return _fp8_fake_quantize(W, axis=1)  # s = max|W[i, :]| / 448, per row i


def quantize_activation(X: torch.Tensor, activations: str = "per-token", fmt: str = "int8") -> torch.Tensor:
    """X̂: activations X [..., in] on their 8-bit grid, one scale per token (row of the last axis) or per tensor."""
    _check(activations, fmt)
    axis = -1 if activations == "per-token" else None  # per token: the absmax runs over the `in` axis of each row
    if fmt == "int8":
        return fake_quantize(X, 8, None, symmetric=True, axis=axis)
    return _fp8_fake_quantize(X, axis)


class W8A8Linear(torch.nn.Linear):
    """A Linear whose weight was quantized once (per output channel) and whose input is quantized at every call.

    It keeps `weight` and `bias` under the same names, so state dicts, weight counts and `generate` work unchanged.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activations: str = "per-token",
                 fmt: str = "int8", device=None, dtype=None):
        _check(activations, fmt)
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.activations = activations  # "per-token" or "per-tensor": granularity of the dynamic activation scale
        self.fmt = fmt  # "int8" or "fp8" (e4m3), for weights and activations alike

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: torch.nn.Linear, activations: str = "per-token", fmt: str = "int8") -> "W8A8Linear":
        """A W8A8Linear holding `linear`'s weight quantized per output channel (and its bias, unquantized)."""
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, activations, fmt,
                     device=linear.weight.device, dtype=linear.weight.dtype)
        module.weight.copy_(quantize_weight(linear.weight, fmt))
        if linear.bias is not None:
            module.bias.copy_(linear.bias)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(quantize_activation(x, self.activations, self.fmt), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weights={self.fmt} per-channel, activations={self.fmt} {self.activations}"


def method_name_w8a8(activations: str = "per-token", fmt: str = "int8") -> str:
    """'w8a8-per-token', 'w8a8-naive' (per-tensor activations), 'fp8-w8a8' / 'fp8-w8a8-per-tensor'."""
    _check(activations, fmt)
    if fmt == "fp8":
        return "fp8-w8a8" + ("" if activations == "per-token" else "-per-tensor")
    return "w8a8-" + ("per-token" if activations == "per-token" else "naive")


@torch.no_grad()
def quantize_model_w8a8(model, activations: str = "per-token", fmt: str = "int8",
                        method: str | None = None) -> QuantizationReport:
    """Swap every decoder-layer linear of `model` for a W8A8Linear, in place (lm_head and embeddings stay float).

    No calibration: weight scales come from the weights, activation scales from each input as it arrives.
    `method` names the report (default from `method_name_w8a8`; SmoothQuant passes its own).
    """
    _check(activations, fmt)
    start = time.perf_counter()
    names = list(quantizable_linears(model))
    for name in names:  # one linear at a time: the float weights go as soon as their replacement exists
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, W8A8Linear.from_linear(getattr(parent, child), activations, fmt))
    return QuantizationReport(method or method_name_w8a8(activations, fmt), 8, None, names,
                              time.perf_counter() - start)

