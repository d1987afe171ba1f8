"""Number formats and their quantize / dequantize primitives: INT-k grids, FP8 (e4m3, e5m2), NF4, error metrics.

INT-k (uniform grid, one scale `s` — and for asymmetric grids one zero point `z` — per tensor, row or group):
    Q = clamp(round(W / s) + z, q_min, q_max),   Ŵ = s · (Q − z)
Symmetric grids are signed, [−2^(k−1), 2^(k−1) − 1], z = 0 and s = max|W| / ((q_max − q_min) / 2), the convention of
GPTQ (IST-DASLab/gptq `quant.py`) and compressed-tensors (llm-compressor), so both land on the same grid: at 4 bits
s = max|W| / 7.5. Asymmetric grids are unsigned, [0, 2^k − 1], s = (max − min) / (2^k − 1), z = round(−min / s), with
min ≤ 0 ≤ max so that 0 is exactly representable.

FP8 (Micikevicius et al., "FP8 Formats for Deep Learning", arXiv 2209.05433): e4m3 (max 448, no infinities) for
weights and activations, e5m2 (max 57344) for gradients. `fp8_round` uses torch's float8 dtypes; `float_grid_round`
is the same rounding written from scratch (nearest, ties to even, subnormals, saturation) to show what the cast does.

NF4 (Dettmers et al., "QLoRA", arXiv 2305.14314, §3): 16 values at quantiles of N(0, 1), scaled to [−1, 1], with an
exact zero; each block of 64 weights is divided by its absmax and every weight snaps to the nearest of the 16 values.
"""

from __future__ import annotations

import torch

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)  # integer grids this module builds (1 bit has no symmetric grid)
FP8_FORMATS = {  # name -> (torch dtype, exponent bits, mantissa bits, largest finite value)
    "e4m3": (torch.float8_e4m3fn, 4, 3, 448.0),  # "fn": finite only; the all-ones pattern is NaN, so max = 1.75 · 2^8
    "e5m2": (torch.float8_e5m2, 5, 2, 57344.0),  # IEEE-like, with inf; max = 1.75 · 2^15
}
NF4_OFFSET = 0.9677083  # QLoRA's outermost quantile: (1 − 1/(2·15) + 1 − 1/(2·16)) / 2, as in bitsandbytes


# ---------------------------------------------------------------- refusals


def check_bits(bits: int) -> None:
    """Refuse an integer width this module has no grid for."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} is not supported; choose one of {', '.join(map(str, SUPPORTED_BITS))} "
                         "(or use fp8_round / quantize_nf4 for FP8 and NF4)")


def group_size_hint(n: int) -> str:
    """Group sizes that divide `n` and suit 4-bit kernels (multiples of 32, at most 256), e.g. '32, 64, 96 or 192'."""
    candidates = [g for g in range(32, min(n, 257), 32) if n % g == 0] or [g for g in range(8, n, 8) if n % g == 0]
    if not candidates:
        return "group_size=None (one scale per row)"
    names = [str(g) for g in candidates]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_group_size(n: int, group_size: int | None, bits: int, where: str = "") -> None:
    """Refuse a group size that does not split `n` columns into whole groups; say which ones would."""
    if group_size is None:
        return
    if not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive integer or None (one scale per row), got {group_size!r}")
    if n % group_size:
        raise ValueError(f"int{bits} needs group_size dividing {n}{where}; try {group_size_hint(n)}")


# ---------------------------------------------------------------- INT-k grids


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """(q_min, q_max): signed [−2^(k−1), 2^(k−1) − 1] when symmetric, unsigned [0, 2^k − 1] otherwise."""
    check_bits(bits)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def grid_params(X: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale s and zero point z of the min-max grid over the last axis of X: [..., n] -> ([..., 1], [..., 1])."""
    q_min, q_max = int_range(bits, symmetric)
    x_min = X.amin(dim=-1, keepdim=True).clamp(max=0)  # [..., 1]; 0 must be on the grid
    x_max = X.amax(dim=-1, keepdim=True).clamp(min=0)  # [..., 1]
    if symmetric:
        s = torch.maximum(-x_min, x_max) / ((q_max - q_min) / 2)
    else:
        s = (x_max - x_min) / (q_max - q_min)
    s = torch.where(s > 0, s, torch.ones_like(s))  # an all-zero group: any scale represents it exactly
    z = torch.zeros_like(s) if symmetric else torch.round(-x_min / s)
    return s, z


def round_to_grid(X: torch.Tensor, s: torch.Tensor, z: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Integer codes Q = clamp(round(X / s) + z, q_min, q_max), as floats; s and z broadcast against X."""
    q_min, q_max = int_range(bits, symmetric)
    return torch.clamp(torch.round(X / s) + z, q_min, q_max)


def snap_to_grid(X: torch.Tensor, s: torch.Tensor, z: torch.Tensor, bits: int, symmetric: bool,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Fake-quantize with given grid parameters: s · (Q − z), the value a kernel would dequantize to.

    Same as `s * (round_to_grid(X, s, z, bits, symmetric) - z)`, computed in place in one buffer (`out` if given),
    skipping z when symmetric: 4 kernels instead of 7, which is what GPTQ's column loop pays on a GPU."""
    q_min, q_max = int_range(bits, symmetric)
    Q = torch.div(X, s, out=out) if out is not None else X / s  # broadcast shape of X and s
    Q.round_()
    if not symmetric:
        Q.add_(z)
    Q.clamp_(q_min, q_max)  # integer codes, as floats
    if not symmetric:
        Q.sub_(z)
    return Q.mul_(s)


def quantize(W: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True,
             axis: int | None = -1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Q, s, z): integer codes of W and the grid parameters.

    Granularity: `axis=None` one scale for the whole tensor; otherwise one scale per slice along `axis` (for a weight
    [out, in] and axis=-1: one per output row, "per-channel"), or per run of `group_size` elements along `axis`.
    Q has W's shape (int8 when symmetric, uint8 otherwise, one code per byte: unpacked); s and z have W's shape with
    `axis` shrunk to the number of groups (1 per row), or are 0-d for a whole tensor.
    """
    check_bits(bits)
    if axis is None:
        Q, s, z = quantize(W.reshape(1, -1), bits, None, symmetric, -1)  # [*shape] -> [1, numel]
        return Q.reshape(W.shape), s.reshape(()), z.reshape(())
    X = W.float().movedim(axis, -1)  # [..., n]: the axis the scales run along, last
    n = X.shape[-1]
    check_group_size(n, group_size, bits)
    group_size = n if group_size is None else group_size
    X = X.reshape(*X.shape[:-1], n // group_size, group_size)  # [..., n] -> [..., n_groups, group_size]
    s, z = grid_params(X, bits, symmetric)  # [..., n_groups, 1] each
    Q = round_to_grid(X, s, z, bits, symmetric).reshape(*X.shape[:-2], n)  # [..., n_groups, group_size] -> [..., n]
    Q = Q.to(torch.int8 if symmetric else torch.uint8).movedim(-1, axis)
    s, z = s.squeeze(-1).movedim(-1, axis), z.squeeze(-1).movedim(-1, axis)  # [..., n_groups, 1] -> n_groups on axis
    return Q, s, z


def dequantize(Q: torch.Tensor, s: torch.Tensor, z: torch.Tensor, axis: int | None = -1) -> torch.Tensor:
    """Ŵ = s · (Q − z) in float32, with s and z as `quantize` returns them (the group size is read off the shapes)."""
    if s.dim() == 0 or axis is None:
        return s * (Q.float() - z)
    group_size = Q.shape[axis] // s.shape[axis]
    s = s.repeat_interleave(group_size, dim=axis)  # n_groups -> n along axis
    z = z.repeat_interleave(group_size, dim=axis)
    return s * (Q.float() - z)


def fake_quantize(W: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True,
                  axis: int | None = -1) -> torch.Tensor:
    """W rounded onto its INT-k grid and back (same dtype as W): what the model computes with after quantization."""
    return dequantize(*quantize(W, bits, group_size, symmetric, axis), axis=axis).to(W.dtype)


# ---------------------------------------------------------------- FP8


def _fp8_format(fmt: str):
    if fmt not in FP8_FORMATS:
        raise ValueError(f"unknown FP8 format {fmt!r}; choose 'e4m3' (weights, activations) or 'e5m2' (gradients)")
    return FP8_FORMATS[fmt]


def fp8_round(X: torch.Tensor, fmt: str = "e4m3") -> torch.Tensor:
    """X rounded to the nearest FP8 value (ties to even), saturating at ±max, in X's dtype: a cast there and back."""
    dtype, _, _, max_value = _fp8_format(fmt)
    return X.clamp(-max_value, max_value).to(dtype).to(X.dtype)


def float_grid_round(X: torch.Tensor, exponent_bits: int, mantissa_bits: int, max_value: float) -> torch.Tensor:
    """Round to a float format with the given exponent/mantissa bits, from scratch (equals `fp8_round` for FP8).

    A value in [2^e, 2^(e+1)) sits on a grid of step 2^(e − mantissa_bits); below the smallest normal exponent
    e_min = 2 − 2^(exponent_bits − 1) the step stays 2^(e_min − mantissa_bits) (subnormals). Ties go to even.
    """
    X32 = X.float()
    e_min = 2 - 2 ** (exponent_bits - 1)  # 1 − bias, bias = 2^(E−1) − 1
    _, exponent = torch.frexp(X32)  # X = m · 2^exponent with |m| in [0.5, 1), so floor(log2|X|) = exponent − 1
    step = torch.exp2((torch.clamp(exponent - 1, min=e_min) - mantissa_bits).float())
    return (torch.round(X32 / step) * step).clamp(-max_value, max_value).to(X.dtype)


def quantize_fp8(W: torch.Tensor, fmt: str = "e4m3", axis: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, s): W / s cast to FP8 with s = max|W| / fp8_max, per tensor (axis=None) or per slice along `axis`."""
    dtype, _, _, max_value = _fp8_format(fmt)
    absmax = W.abs().amax() if axis is None else W.abs().amax(dim=axis, keepdim=True)  # [] or W's shape, axis -> 1
    s = torch.where(absmax > 0, absmax / max_value, torch.ones_like(absmax)).float()
    return (W.float() / s).clamp(-max_value, max_value).to(dtype), s


def dequantize_fp8(Q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Ŵ = s · Q in float32."""
    return s * Q.float()


# ---------------------------------------------------------------- NF4


def nf4_codebook() -> torch.Tensor:
    """The 16 NF4 values: 8 positive and 7 negative quantiles of N(0, 1) plus an exact 0, divided by the largest."""
    positive = torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 9)[:-1].double())  # 8 quantiles in (0.5, 0.97]
    negative = -torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 8)[:-1].double())  # 7 quantiles, mirrored
    values = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values  # [16]
    return (values / values.max()).float()


def quantize_nf4(W: torch.Tensor, block_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, absmax): per block of `block_size` consecutive weights (row-major), the absmax and each weight's index
    into `nf4_codebook()` (nearest value; uint8 with one index per byte, unpacked)."""
    if W.numel() % block_size:
        raise ValueError(f"NF4 needs block_size dividing the {W.numel()} weights; try 64 (bitsandbytes' default)")
    blocks = W.float().reshape(-1, block_size)  # [*shape] -> [n_blocks, block_size]
    absmax = blocks.abs().amax(dim=1)  # [n_blocks]
    normalized = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax))[:, None]  # in [-1, 1]
    code = nf4_codebook()
    midpoints = (code[1:] + code[:-1]) / 2  # [15]: decision boundaries between neighbouring values
    indices = torch.bucketize(normalized, midpoints)  # [n_blocks, block_size], nearest value's index
    return indices.to(torch.uint8).reshape(W.shape), absmax


def dequantize_nf4(indices: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    """Ŵ = codebook[index] · absmax of its block, in float32 and the indices' shape."""
    block_size = indices.numel() // absmax.numel()
    values = nf4_codebook()[indices.long()].reshape(-1, block_size)  # [*shape] -> [n_blocks, block_size]
    return (values * absmax[:, None]).reshape(indices.shape)


# ---------------------------------------------------------------- error metrics


def mse(W: torch.Tensor, W_hat: torch.Tensor) -> float:
    """Mean squared error ‖W − Ŵ‖² / numel."""
    return (W.float() - W_hat.float()).pow(2).mean().item()


def relative_error(W: torch.Tensor, W_hat: torch.Tensor) -> float:
    """‖W − Ŵ‖_F / ‖W‖_F."""
    return ((W.float() - W_hat.float()).norm() / W.float().norm()).item()


def sqnr_db(W: torch.Tensor, W_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(‖W‖² / ‖W − Ŵ‖²) in dB; each extra bit adds about 6 dB."""
    noise = (W.float() - W_hat.float()).pow(2).sum()
    return (10 * torch.log10(W.float().pow(2).sum() / noise)).item() if noise > 0 else float("inf")


# ---------------------------------------------------------------- one format at one granularity (chapter 04)

FORMAT_NAMES = ("fp16", "bf16", "e4m3", "e5m2", "int8", "int4", "nf4")  # what fake_quantize_format and
# representable_values accept
GRANULARITIES = ("tensor", "channel", "group")  # one scale per tensor, per output row, per group of input columns


def representable_values(fmt: str) -> torch.Tensor:
    """Every finite value a format can hold, sorted (float64): fp16/bf16/e4m3/e5m2 from all their bit patterns;
    int8 and int4 as their integer codes (signed, before any scale); nf4 as its 16 normalized values."""
    if fmt in ("fp16", "bf16", "e4m3", "e5m2"):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "e4m3": torch.float8_e4m3fn,
                 "e5m2": torch.float8_e5m2}[fmt]
        width = torch.finfo(dtype).bits
        patterns = torch.arange(2**width, dtype=torch.int32).to(torch.int16 if width == 16 else torch.uint8)
        values = patterns.view(dtype).double()  # every bit pattern read as a number
        return torch.unique(values[torch.isfinite(values)])  # NaNs and infinities dropped, −0 merged with +0
    if fmt in ("int8", "int4"):
        q_min, q_max = int_range(8 if fmt == "int8" else 4, True)
        return torch.arange(q_min, q_max + 1, dtype=torch.float64)
    if fmt == "nf4":
        return nf4_codebook().double()
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMAT_NAMES)}")


def fake_quantize_format(W: torch.Tensor, fmt: str, granularity: str = "channel", group_size: int = 64) -> torch.Tensor:
    """W [out, in] through `fmt` and back (float32), with one scale per tensor, per output row ("channel") or per
    `group_size` input columns of a row ("group"). fp16/bf16 are plain casts (no scale: granularity is ignored); FP8
    scales map the absmax to the format's max; int8/int4 use the symmetric grids of `quantize`; NF4's absmax blocks are
    the whole tensor, a row, or a group of consecutive weights."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    if fmt in ("fp16", "bf16"):
        return W.to(torch.float16 if fmt == "fp16" else torch.bfloat16).float()
    out_features, in_features = W.shape
    if granularity == "group":
        check_group_size(in_features, group_size, 4 if fmt in ("int4", "nf4") else 8)
    width = {"tensor": W.numel(), "channel": in_features, "group": group_size}[granularity]  # weights per scale
    if fmt in ("e4m3", "e5m2"):
        blocks = W.float().reshape(-1, width)  # [out, in] -> [n_scales, width], rows never straddled
        return dequantize_fp8(*quantize_fp8(blocks, fmt, axis=1)).reshape(W.shape)
    if fmt in ("int8", "int4"):
        bits = 8 if fmt == "int8" else 4
        axis = None if granularity == "tensor" else -1
        return fake_quantize(W.float(), bits, group_size if granularity == "group" else None, True, axis)
    if fmt == "nf4":
        return dequantize_nf4(*quantize_nf4(W, width))
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMAT_NAMES)}")


def error_report(W: torch.Tensor, W_hat: torch.Tensor) -> dict:
    """How far Ŵ is from W: relative Frobenius error, SQNR (dB) and the largest absolute error."""
    return {"relative_error": relative_error(W, W_hat), "sqnr_db": sqnr_db(W, W_hat),
            "max_abs_error": (W.float() - W_hat.float()).abs().max().item()}


def int_grid_error(W: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True,
                   scale_bits: int = 16) -> dict:
    """Round W [out, in] to an INT-`bits` grid with one scale per `group_size` input columns (None: per output row)
    and report the error beside the storage cost: bits per weight including one `scale_bits` scale per group (and a
    `bits`-wide zero point when asymmetric)."""
    W_hat = fake_quantize(W.float(), bits, group_size, symmetric)
    per_scale = W.shape[-1] if group_size is None else group_size
    overhead = (scale_bits + (0 if symmetric else bits)) / per_scale
    return {"bits": bits, "group_size": group_size, "symmetric": symmetric, "bits_per_weight": bits + overhead,
            **error_report(W, W_hat)}
