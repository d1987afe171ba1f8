"""GGUF's block formats (llama.cpp / ggml) from scratch: Q8_0, Q4_0, Q4_1 and Q4_K; and the embedded model's own file.

A GGUF tensor is stored row by row, each row cut into blocks of consecutive weights; a block carries its own 16-bit
scale (and minimum) beside its integer codes q, so "4-bit" costs more than 4 bits per weight:

    Q8_0  32 weights: fp16 d + 32 int8 codes                    w = d · q                  34 B → 8.5 bits/weight
    Q4_0  32 weights: fp16 d + 32 4-bit codes                   w = d · (q − 8)            18 B → 4.5 bits/weight
    Q4_1  32 weights: fp16 d, fp16 m + 32 4-bit codes           w = d · q + m              20 B → 5.0 bits/weight
    Q4_K  256 weights = 8 sub-blocks of 32: fp16 d, fp16 dmin,  w = d·sc_j · q − dmin·m_j  144 B → 4.5 bits/weight
          a 6-bit scale sc_j and a 6-bit minimum m_j per sub-block (12 bytes), 256 4-bit codes

Q8_0 and Q4_0 are symmetric (Q4_0's d is the block's signed extreme / −8, so the extreme lands exactly on code 0);
Q4_1 is asymmetric (d = (max − min)/15, m = min); Q4_K ("k-quants") quantizes the sub-block scales and minimums
themselves to 6 bits against two fp16 super-scales, which buys asymmetric 32-weight groups at Q4_0's price.

Each function mirrors ggml's reference code (ggml-org/llama.cpp `ggml/src/ggml-quants.c`: `quantize_row_q8_0_ref`,
`quantize_row_q4_0_ref`, `quantize_row_q4_1_ref`, `quantize_row_q4_K_ref` with `make_qkx2_quants`, and the matching
`dequantize_row_*`), including its rounding (`roundf`: half away from zero for Q8_0; `(int)(x + 8.5)` truncation for
Q4_0/Q4_1; `nearest_int`: half to even for Q4_K) and its byte layout (4-bit codes j and j + 16 share byte j of a
Q4_0/Q4_1 block; in Q4_K, codes l and l + 32 of each 64-weight chunk share a byte). Dequantization is bit-exact with
the `gguf` package (`gguf.quants.dequantize`); Q8_0, Q4_0 and Q4_1 quantization is bit-exact with
`gguf.quants.quantize`, which has no Q4_K quantizer: ours follows ggml's steps with vectorised sums, whose different
summation order can, rarely, pick a different scale than the C code.

The embedded model's file, SmolLM2-135M-Instruct.Q4_1.gguf, stores its linear layers in Q4_1, the tied token
embedding in Q8_0 and the norms in F32. `dequantize_gguf_tensor` decodes any of them with the functions above;
`compare_file_with_model` checks that the course's "16-bit baseline" (`llmlab.zoo.load_model()`) is exactly this file
dequantized. llama.cpp's converter permutes the rows of attn_q / attn_k (its rotary layout); `unpermute_qk` undoes it
as transformers' GGUF loader does.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class BlockFormat:
    """One GGUF block format."""

    name: str  # GGUF type name, e.g. "Q4_1"
    block_size: int  # weights per block
    type_size: int  # bytes per block: codes + fp16 scales (+ minimums)
    formula: str  # how a weight is rebuilt from a block


BLOCK_FORMATS = {
    "Q8_0": BlockFormat("Q8_0", 32, 2 + 32, "w = d · q, q int8"),
    "Q4_0": BlockFormat("Q4_0", 32, 2 + 16, "w = d · (q − 8), q in 0..15"),
    "Q4_1": BlockFormat("Q4_1", 32, 2 + 2 + 16, "w = d · q + m, q in 0..15"),
    "Q4_K": BlockFormat("Q4_K", 256, 2 + 2 + 12 + 128, "w = d·sc_j · q − dmin·m_j, q in 0..15, sc_j and m_j 6-bit"),
}
QK_K_SUBBLOCKS = 8  # a Q4_K super-block holds 8 sub-blocks of 32 weights
QK_K_SUB = 32  # weights per Q4_K sub-block


@dataclass
class Blocks:
    """A tensor in a GGUF block format, fields unpacked (one code per element) for reading."""

    fmt: str  # "Q8_0", "Q4_0", "Q4_1" or "Q4_K"
    shape: tuple[int, ...]  # the tensor's shape; blocks run along its last axis, row by row
    q: torch.Tensor  # [n_blocks, block_size] integer codes (int8 for Q8_0, uint8 in 0..15 otherwise)
    d: torch.Tensor  # [n_blocks] fp16 scale; Q4_K: the super-scale of the sub-block scales
    m: torch.Tensor | None = None  # [n_blocks] fp16: Q4_1 the block minimum; Q4_K dmin, super-scale of the minimums
    scales: torch.Tensor | None = None  # Q4_K: [n_blocks, 8] 6-bit sub-block scales sc_j (0..63), else None
    mins: torch.Tensor | None = None  # Q4_K: [n_blocks, 8] 6-bit sub-block minimums m_j (0..63), else None


# ---------------------------------------------------------------- sizes


def block_format(fmt: str) -> BlockFormat:
    """The BlockFormat called `fmt`; refuse an unknown name."""
    if fmt not in BLOCK_FORMATS:
        raise ValueError(f"unknown GGUF block format {fmt!r}; this module implements {', '.join(BLOCK_FORMATS)}")
    return BLOCK_FORMATS[fmt]


def bits_per_weight(fmt: str) -> float:
    """Bits a weight costs in `fmt`, block scales and minimums included: Q8_0 8.5, Q4_0 4.5, Q4_1 5.0, Q4_K 4.5."""
    spec = block_format(fmt)
    return 8 * spec.type_size / spec.block_size


def bytes_per_weight(fmt: str) -> float:
    """Bytes a weight costs in `fmt`, block scales and minimums included."""
    return bits_per_weight(fmt) / 8


# ---------------------------------------------------------------- rounding as ggml does it


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's roundf: ties away from zero (torch.round sends ties to even). floor(a) + floor(2·(a − floor(a))) avoids
    the error of floor(a + 0.5) when a + 0.5 rounds up in float32 (a = 0.49999997)."""
    a = x.abs()
    return torch.sign(x) * (torch.floor(a) + torch.floor(2 * (a - torch.floor(a))))


def _safe_inverse(d: torch.Tensor) -> torch.Tensor:
    """1/d, and 0 where d = 0 (an all-zero block), as ggml's `id = d ? 1/d : 0`."""
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))


def _as_blocks(W: torch.Tensor, fmt: str) -> torch.Tensor:
    """W [..., n] as float32 blocks [n_blocks, block_size]; refuse rows that blocks do not tile."""
    size = block_format(fmt).block_size
    if W.dim() == 0 or W.shape[-1] % size:
        raise ValueError(f"{fmt} needs a last dimension divisible by {size}, got shape {tuple(W.shape)}; pad the rows "
                         f"or choose a format with smaller blocks")
    return W.detach().float().reshape(-1, size)  # [..., n] -> [n_blocks, block_size]


# ---------------------------------------------------------------- quantize


def quantize_q8_0(X: torch.Tensor) -> dict:
    """Q8_0 of blocks X [n_blocks, 32]: d = max|x| / 127, q = roundf(x / d) (ggml quantize_row_q8_0_ref)."""
    d = X.abs().amax(dim=1) / 127  # [n_blocks]
    q = round_half_away(X * _safe_inverse(d)[:, None]).to(torch.int8)  # [n_blocks, 32]
    return dict(q=q, d=d.half())


def quantize_q4_0(X: torch.Tensor) -> dict:
    """Q4_0 of blocks X [n_blocks, 32]: d = (signed value of largest |x|) / −8, q = min(15, (int)(x/d + 8.5))."""
    extreme = X.gather(1, X.abs().argmax(dim=1, keepdim=True)).squeeze(1)  # [n_blocks]: first largest |x|, signed
    d = extreme / -8  # the extreme maps to code 0 (w = −8·d), the opposite side stops at code 15 (+7·d)
    q = torch.trunc(X * _safe_inverse(d)[:, None] + 8.5).clamp(0, 15).to(torch.uint8)  # [n_blocks, 32]
    return dict(q=q, d=d.half())


def quantize_q4_1(X: torch.Tensor) -> dict:
    """Q4_1 of blocks X [n_blocks, 32]: d = (max − min) / 15, m = min, q = min(15, (int)((x − min)/d + 0.5)).
    ggml rounds with the float32 min and d but stores them in fp16: the file's weights carry that rounding too."""
    low, high = X.amin(dim=1), X.amax(dim=1)  # [n_blocks]
    d = (high - low) / 15
    q = torch.trunc((X - low[:, None]) * _safe_inverse(d)[:, None] + 0.5).clamp(0, 15).to(torch.uint8)
    return dict(q=q, d=d.half(), m=low.half())


def make_qkx2_quants(x: torch.Tensor, w: torch.Tensor, nmax: int = 15, rmin: float = -1.0, rdelta: float = 0.1,
                     nstep: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ggml's `make_qkx2_quants` on sub-blocks x [S, 32] with importance w [S, 32]: an asymmetric grid
    x ≈ scale · L + min (L in 0..nmax, min ≤ 0), starting from min-max and trying nstep + 1 stretched grids
    iscale = (nmax + rmin + rdelta·k) / (max − min), each refitted by weighted least squares; keeps the one with the
    smallest weighted squared error; as in ggml, each try cuts its grid from the best min found so far.
    Returns (scale [S], −min [S] ≥ 0, L [S, 32])."""
    low = x.amin(dim=1).clamp(max=0)  # [S]: 0 must stay representable
    high = x.amax(dim=1)  # [S]
    span = high - low
    flat = span == 0  # an all-equal sub-block (ggml: L = 0, scale 0, min = −low)
    span = torch.where(flat, torch.ones_like(span), span)
    sum_w, sum_x = w.sum(dim=1), (w * x).sum(dim=1)  # [S]

    def codes(iscale, offset):
        return torch.round(iscale[:, None] * (x - offset[:, None])).clamp(0, nmax)  # [S, 32], ties to even

    def error(scale, offset, L):
        return (w * (scale[:, None] * L + offset[:, None] - x) ** 2).sum(dim=1)  # [S]

    scale, offset = span / nmax, low
    L = codes(nmax / span, low)
    best = error(scale, offset, L)
    for k in range(nstep + 1):
        reach = high - offset  # [S]: as in ggml, each try starts from the best min found so far
        valid = reach > 0
        reach = torch.where(valid, reach, torch.ones_like(reach))
        L_try = codes((rmin + rdelta * k + nmax) / reach, offset)
        sum_l, sum_l2, sum_xl = (w * L_try).sum(1), (w * L_try**2).sum(1), (w * L_try * x).sum(1)  # [S] each
        D = sum_w * sum_l2 - sum_l**2  # determinant of the 2x2 normal equations for (scale, min)
        ok = (D > 0) & valid
        D = torch.where(ok, D, torch.ones_like(D))
        s_try = (sum_w * sum_xl - sum_x * sum_l) / D
        m_try = (sum_l2 * sum_x - sum_l * sum_xl) / D
        positive = m_try > 0  # the min must stay ≤ 0: refit the scale alone with min = 0
        s_try = torch.where(positive, sum_xl / torch.where(sum_l2 > 0, sum_l2, torch.ones_like(sum_l2)), s_try)
        m_try = torch.where(positive, torch.zeros_like(m_try), m_try)
        e_try = error(s_try, m_try, L_try)
        better = ok & (e_try < best)
        L = torch.where(better[:, None], L_try, L)
        best = torch.where(better, e_try, best)
        scale, offset = torch.where(better, s_try, scale), torch.where(better, m_try, offset)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    L = torch.where(flat[:, None], torch.zeros_like(L), L)
    return scale, -offset, L


def quantize_q4_k(X: torch.Tensor) -> dict:
    """Q4_K of super-blocks X [n_blocks, 256] (ggml quantize_row_q4_K_ref):
    1. each sub-block j of 32 gets (scale_j, min_j) from make_qkx2_quants, importance av_x + |x| (av_x = RMS of j);
    2. d = max_j scale_j / 63, dmin = max_j min_j / 63 (fp16); sc_j = nearest(scale_j / d), m_j = nearest(min_j / dmin);
    3. the codes are recomputed against the rounded grid: q = nearest((x + dmin·m_j) / (d·sc_j)) in 0..15."""
    n_blocks = X.shape[0]
    x = X.reshape(n_blocks * QK_K_SUBBLOCKS, QK_K_SUB)  # [n_blocks, 256] -> [n_blocks·8, 32]
    rms = x.pow(2).mean(dim=1, keepdim=True).sqrt()  # [n_blocks·8, 1]
    scale, minimum, L = make_qkx2_quants(x, rms + x.abs())
    scale = scale.reshape(n_blocks, QK_K_SUBBLOCKS)  # [n_blocks·8] -> [n_blocks, 8]
    minimum = minimum.reshape(n_blocks, QK_K_SUBBLOCKS)
    L = L.reshape(n_blocks, QK_K_SUBBLOCKS, QK_K_SUB)  # [n_blocks·8, 32] -> [n_blocks, 8, 32]
    max_scale, max_min = scale.amax(dim=1), minimum.amax(dim=1)  # [n_blocks]
    sc = torch.round(_safe_inverse(max_scale / 63)[:, None] * scale).clamp(max=63)  # [n_blocks, 8], 6 bits
    mn = torch.round(_safe_inverse(max_min / 63)[:, None] * minimum).clamp(max=63)
    d, dmin = (max_scale / 63).half(), (max_min / 63).half()
    d_j = d.float()[:, None] * sc  # [n_blocks, 8]: the scales the file will really use
    m_j = dmin.float()[:, None] * mn
    X3 = X.reshape(n_blocks, QK_K_SUBBLOCKS, QK_K_SUB)  # [n_blocks, 256] -> [n_blocks, 8, 32]
    requantized = torch.round((X3 + m_j[..., None]) / torch.where(d_j == 0, 1, d_j)[..., None]).clamp(0, 15)
    L = torch.where((d_j == 0)[..., None], L, requantized)  # ggml keeps the first codes where d·sc_j rounds to 0
    return dict(q=L.reshape(n_blocks, -1).to(torch.uint8), d=d, m=dmin,
                scales=sc.to(torch.uint8), mins=mn.to(torch.uint8))


QUANTIZERS = {"Q8_0": quantize_q8_0, "Q4_0": quantize_q4_0, "Q4_1": quantize_q4_1, "Q4_K": quantize_q4_k}


def quantize_blocks(W: torch.Tensor, fmt: str) -> Blocks:
    """W [..., n] (n a multiple of the block size) in GGUF block format `fmt`."""
    return Blocks(fmt, tuple(W.shape), **QUANTIZERS[block_format(fmt).name](_as_blocks(W, fmt)))


# ---------------------------------------------------------------- dequantize


def dequantize_blocks(blocks: Blocks) -> torch.Tensor:
    """Ŵ in float32 and the tensor's shape, exactly as ggml's dequantize_row_* computes it."""
    d, q = blocks.d.float()[:, None], blocks.q.float()  # [n_blocks, 1], [n_blocks, block_size]
    if blocks.fmt == "Q8_0":
        W = q * d
    elif blocks.fmt == "Q4_0":
        W = d * (q - 8)
    elif blocks.fmt == "Q4_1":
        W = d * q + blocks.m.float()[:, None]
    elif blocks.fmt == "Q4_K":
        n_blocks = q.shape[0]
        d_j = (d * blocks.scales.float())[..., None]  # [n_blocks, 8, 1]: d·sc_j
        m_j = (blocks.m.float()[:, None] * blocks.mins.float())[..., None]  # [n_blocks, 8, 1]: dmin·m_j
        W = d_j * q.reshape(n_blocks, QK_K_SUBBLOCKS, QK_K_SUB) - m_j  # [n_blocks, 8, 32]
    else:
        block_format(blocks.fmt)  # raises for an unknown name
    return W.reshape(blocks.shape)


def fake_quantize_blocks(W: torch.Tensor, fmt: str) -> torch.Tensor:
    """W through `fmt` and back (float32): what llama.cpp computes with."""
    return dequantize_blocks(quantize_blocks(W, fmt))


# ---------------------------------------------------------------- bytes (ggml's layout)


def _fp16_bytes(x: torch.Tensor) -> torch.Tensor:
    return x.half().contiguous().view(torch.uint8).reshape(-1, 2)  # [n_blocks] fp16 -> [n_blocks, 2], little-endian


def _fp16_from(raw: torch.Tensor) -> torch.Tensor:
    return raw.contiguous().view(torch.float16).reshape(-1)  # [n_blocks, 2] bytes -> [n_blocks] fp16


def _pack_nibbles(q: torch.Tensor, half: int) -> torch.Tensor:
    """Codes [rows, 2·half] -> bytes [rows, half]: code i in the low nibble, code i + half in the high one."""
    return q[:, :half] | (q[:, half:] << 4)


def _unpack_nibbles(raw: torch.Tensor) -> torch.Tensor:
    """Bytes [rows, half] -> codes [rows, 2·half]: low nibbles first, then high nibbles."""
    return torch.cat([raw & 0x0F, raw >> 4], dim=1)


def _pack_k_scales(sc: torch.Tensor, mn: torch.Tensor) -> torch.Tensor:
    """Q4_K's 8 six-bit scales and 8 six-bit mins in 12 bytes: bytes 0-3 hold sc_0..3 (and the top 2 bits of sc_4..7),
    bytes 4-7 hold m_0..3 (and the top 2 bits of m_4..7), bytes 8-11 the low nibbles of sc_4..7 and m_4..7."""
    sc, mn = sc.to(torch.uint8), mn.to(torch.uint8)  # [n_blocks, 8] each
    first = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)  # [n_blocks, 4]
    second = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    third = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    return torch.cat([first, second, third], dim=1)  # [n_blocks, 12]


def _unpack_k_scales(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `_pack_k_scales` (ggml's get_scale_min_k4): [n_blocks, 12] -> sc, m [n_blocks, 8]."""
    first, second, third = raw[:, :4], raw[:, 4:8], raw[:, 8:]  # [n_blocks, 4] each
    sc = torch.cat([first & 63, (third & 0x0F) | ((first >> 6) << 4)], dim=1)
    mn = torch.cat([second & 63, (third >> 4) | ((second >> 6) << 4)], dim=1)
    return sc, mn


def pack_blocks(blocks: Blocks) -> torch.Tensor:
    """The bytes a GGUF file stores for `blocks`: uint8 [n_blocks, type_size] in ggml's layout."""
    fmt = blocks.fmt
    if fmt == "Q8_0":
        parts = [_fp16_bytes(blocks.d), blocks.q.contiguous().view(torch.uint8)]
    elif fmt == "Q4_0":
        parts = [_fp16_bytes(blocks.d), _pack_nibbles(blocks.q, 16)]
    elif fmt == "Q4_1":
        parts = [_fp16_bytes(blocks.d), _fp16_bytes(blocks.m), _pack_nibbles(blocks.q, 16)]
    elif fmt == "Q4_K":
        chunks = blocks.q.reshape(-1, 32 * 2)  # [n_blocks, 256] -> [n_blocks·4, 64]: codes l and l + 32 share a byte
        qs = _pack_nibbles(chunks, 32).reshape(blocks.q.shape[0], 128)  # [n_blocks·4, 32] -> [n_blocks, 128]
        parts = [_fp16_bytes(blocks.d), _fp16_bytes(blocks.m), _pack_k_scales(blocks.scales, blocks.mins), qs]
    else:
        block_format(fmt)
    return torch.cat(parts, dim=1)


def unpack_blocks(raw: torch.Tensor, fmt: str, shape: tuple[int, ...]) -> Blocks:
    """Read GGUF bytes (uint8, any shape holding whole blocks, e.g. a GGUFReader tensor's .data) as Blocks of a tensor
    of `shape`."""
    spec = block_format(fmt)
    raw = torch.as_tensor(raw).reshape(-1, spec.type_size)  # [..., bytes per row] -> [n_blocks, type_size]
    if raw.shape[0] * spec.block_size != torch.Size(shape).numel():
        raise ValueError(f"{raw.shape[0]} {fmt} blocks hold {raw.shape[0] * spec.block_size} weights, not the "
                         f"{torch.Size(shape).numel()} of shape {tuple(shape)}; pass the tensor's own shape")
    d = _fp16_from(raw[:, :2])
    if fmt == "Q8_0":
        return Blocks(fmt, tuple(shape), q=raw[:, 2:].contiguous().view(torch.int8), d=d)
    if fmt == "Q4_0":
        return Blocks(fmt, tuple(shape), q=_unpack_nibbles(raw[:, 2:]), d=d)
    m = _fp16_from(raw[:, 2:4])
    if fmt == "Q4_1":
        return Blocks(fmt, tuple(shape), q=_unpack_nibbles(raw[:, 4:]), d=d, m=m)
    sc, mn = _unpack_k_scales(raw[:, 4:16])  # Q4_K
    q = _unpack_nibbles(raw[:, 16:].reshape(-1, 32)).reshape(raw.shape[0], 256)  # [n_blocks·4, 32] -> [n_blocks, 256]
    return Blocks(fmt, tuple(shape), q=q, d=d, m=m, scales=sc, mins=mn)


def dequantize_raw(raw: torch.Tensor, fmt: str, shape: tuple[int, ...]) -> torch.Tensor:
    """GGUF bytes -> float32 weights of `shape` (F32 and F16 tensors are read as they are)."""
    if fmt in ("F32", "F16"):
        dtype = torch.float32 if fmt == "F32" else torch.float16
        return torch.as_tensor(raw).contiguous().view(torch.uint8).view(dtype).float().reshape(shape)
    return dequantize_blocks(unpack_blocks(raw, fmt, shape))


# ---------------------------------------------------------------- the embedded file

GGUF_TO_HF = (  # llama.cpp tensor names -> transformers' Llama names (architecture knowledge as data)
    (r"^token_embd\.weight$", "model.embed_tokens.weight"),
    (r"^output_norm\.weight$", "model.norm.weight"),
    (r"^output\.weight$", "lm_head.weight"),
    (r"^blk\.(\d+)\.attn_norm\.weight$", r"model.layers.\1.input_layernorm.weight"),
    (r"^blk\.(\d+)\.ffn_norm\.weight$", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"^blk\.(\d+)\.attn_q\.weight$", r"model.layers.\1.self_attn.q_proj.weight"),
    (r"^blk\.(\d+)\.attn_k\.weight$", r"model.layers.\1.self_attn.k_proj.weight"),
    (r"^blk\.(\d+)\.attn_v\.weight$", r"model.layers.\1.self_attn.v_proj.weight"),
    (r"^blk\.(\d+)\.attn_output\.weight$", r"model.layers.\1.self_attn.o_proj.weight"),
    (r"^blk\.(\d+)\.ffn_gate\.weight$", r"model.layers.\1.mlp.gate_proj.weight"),
    (r"^blk\.(\d+)\.ffn_up\.weight$", r"model.layers.\1.mlp.up_proj.weight"),
    (r"^blk\.(\d+)\.ffn_down\.weight$", r"model.layers.\1.mlp.down_proj.weight"),
)


def hf_name(gguf_name: str) -> str:
    """transformers' parameter name for a llama.cpp tensor name (blk.0.ffn_down.weight -> model.layers.0.mlp...)."""
    for pattern, replacement in GGUF_TO_HF:
        if re.match(pattern, gguf_name):
            return re.sub(pattern, replacement, gguf_name)
    raise LookupError(f"no transformers name known for GGUF tensor {gguf_name!r}; add its pattern to GGUF_TO_HF")


def unpermute_qk(W: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's row permutation of attn_q / attn_k (n_heads = query heads for q, KV heads for k): within each
    head, GGUF interleaves the two rotary halves row by row; transformers keeps them as two contiguous halves."""
    rows = W.shape[0]
    half = rows // n_heads // 2
    W = W.reshape(n_heads, half, 2, *W.shape[1:])  # [rows, in] -> [heads, half, 2, in]: GGUF's interleaved order
    return W.transpose(1, 2).reshape(rows, *W.shape[3:])  # -> [heads, 2, half, in] -> [rows, in]


@dataclass
class GGUFTensor:
    """One tensor of a GGUF file, as stored."""

    name: str  # llama.cpp name, e.g. "blk.0.ffn_down.weight"
    fmt: str  # GGUF type name: "Q4_1", "Q8_0", "F32", ...
    shape: tuple[int, ...]  # [out, in] in PyTorch's order (GGUF lists dimensions the other way round)
    n_bytes: int  # bytes in the file, block scales included
    raw: object  # the stored bytes (a read-only NumPy memmap of the file)

    @property
    def params(self) -> int:
        return torch.Size(self.shape).numel()


def _gguf_path(path: str | os.PathLike | None) -> Path:
    from llmlab.zoo import find_gguf

    return find_gguf(path)


def read_gguf(path: str | os.PathLike | None = None) -> list[GGUFTensor]:
    """Every tensor of a GGUF file (default: the embedded model's), in file order; bytes stay memory-mapped.
    The reader parses the whole header (a 49k-token vocabulary: seconds), so a file is read once per process."""
    return list(_read_gguf(str(_gguf_path(path))))


@functools.lru_cache(maxsize=4)
def _read_gguf(path: str) -> tuple[GGUFTensor, ...]:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return tuple(GGUFTensor(t.name, t.tensor_type.name, tuple(int(n) for n in reversed(t.shape)), int(t.n_bytes),
                            t.data) for t in reader.tensors)


def gguf_tensor(name: str, path: str | os.PathLike | None = None) -> GGUFTensor:
    """One tensor of a GGUF file by its llama.cpp name."""
    tensors = {t.name: t for t in read_gguf(path)}
    if name not in tensors:
        raise LookupError(f"no tensor {name!r} in the file; names look like {', '.join(list(tensors)[:3])}")
    return tensors[name]


def type_summary(tensors: list[GGUFTensor]) -> list[dict]:
    """Per storage type: tensors, weights, bytes and bits per weight (from the file's byte counts)."""
    rows = {}
    for tensor in tensors:
        row = rows.setdefault(tensor.fmt, {"type": tensor.fmt, "tensors": 0, "weights": 0, "bytes": 0})
        row["tensors"] += 1
        row["weights"] += tensor.params
        row["bytes"] += tensor.n_bytes
    for row in rows.values():
        row["bits_per_weight"] = 8 * row["bytes"] / row["weights"]
    return sorted(rows.values(), key=lambda row: -row["bytes"])


def dequantize_gguf_tensor(tensor: GGUFTensor, n_heads: int | None = None) -> torch.Tensor:
    """A file tensor decoded with this module's dequantizers, float32 [out, in]; with n_heads (heads of q, KV heads
    of k) attn_q / attn_k rows are put back in transformers' order."""
    import numpy

    W = dequantize_raw(torch.from_numpy(numpy.array(tensor.raw)), tensor.fmt, tensor.shape)
    if n_heads is not None and (".attn_q." in tensor.name or ".attn_k." in tensor.name):
        W = unpermute_qk(W, n_heads)
    return W


def compare_file_with_model(model, path: str | os.PathLike | None = None, names=None) -> list[dict]:
    """For every tensor of the GGUF file (or those in `names`): decode it with this module and compare with the
    model's parameter of the same name (q/k rows un-permuted). Rows: name, parameter, type, weights,
    max_abs_difference (0.0 = identical)."""
    config = model.config
    parameters = dict(model.named_parameters())
    rows = []
    for tensor in read_gguf(path):
        if names is not None and tensor.name not in names:
            continue
        name = hf_name(tensor.name)
        heads = config.num_key_value_heads if ".attn_k." in tensor.name else config.num_attention_heads
        W = dequantize_gguf_tensor(tensor, heads)
        if name not in parameters:
            raise LookupError(f"the model has no parameter {name!r} (from {tensor.name}); is it the embedded model?")
        theirs = parameters[name].detach().float().cpu()
        rows.append({"name": tensor.name, "parameter": name, "type": tensor.fmt, "weights": tensor.params,
                     "max_abs_difference": (W - theirs).abs().max().item()})
    return rows
