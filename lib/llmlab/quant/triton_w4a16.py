"""A W4A16 GEMM in Triton: 4-bit weights read packed from memory, dequantized in registers, 16-bit activations.

Why decode is memory-bound. A decoder GEMM computes Y [M, N] = X [M, K] · Ŵᵀ with Ŵ [N, K]. It does 2·M·N·K FLOPs and
must read the N·K weights at least once. At decode, M (tokens per step) is 1 to a few dozen, so the arithmetic
intensity is 2·M FLOPs per weight: with bf16 weights (2 bytes), M FLOPs per byte, while an H100 needs ~300 FLOP/byte
(≈ 990 dense bf16 TFLOP/s over ≈ 3.3 TB/s) before compute becomes the limit. So at M = 1 the time is bytes /
bandwidth, and the only way to go faster is to read fewer bytes: 4-bit codes plus one 16-bit scale per group of
g = 128 weights take 0.5 + 2/128 ≈ 0.516 bytes per weight, 3.9× fewer than bf16. That ratio is the ceiling of this
kernel's speedup at small M.

Why the kernel loads 4-bit words and dequantizes in registers. If the weights were first expanded to a bf16 copy in
memory and then multiplied, every step would write and read 2 bytes per weight on top of the 0.5 it started from:
slower than plain bf16. The 16-bit weight must exist only in registers, on its way to the multiply. So each program
loads int32 words (eight 4-bit codes each; a thread loads 4 contiguous words, 16 bytes, at once), unpacks them with
bit operations, applies the scale of their group (one load per row and K tile, not per weight), multiplies and
accumulates in fp32. The layout is the one our quantizers export, compressed-tensors "pack-quantized"
(`llmlab.quant.packing`, `llmlab.quant.export`): `weight_packed` int32 [N, K/8] packed along K, nibble i of word w =
column 8w + i, unsigned code u = signed code Q + 8; `weight_scale` [N, K/g]; Ŵ = s · (Q − z) with zero point z = 0
for our symmetric exports (llm-compressor's asymmetric ones carry `weight_zero_point`: `unpack_zero_points`).

Converting a 4-bit code to a float cheaply. At ~6·10¹² weights per second (3 TB/s of 4-bit codes) an H100 SM has
about 5 instruction slots per weight, and the int-to-float instruction runs at a fraction of full rate. The trick of
the FasterTransformer kernels (Kim et al., arXiv 2211.10017) and Marlin (Frantar et al., arXiv 2408.11743): OR the
code into the mantissa of the float 2²³ (bits 0x4B000000); read as a float, that is exactly 2²³ + u, and a float
subtraction leaves u − 8 − z = Q − z, exactly. Here the code is not even shifted down: nibble j of a 16-bit half-word,
masked in place, gives 2²³ + u·16^j, and one multiply-add by 16^−j (a power of two: exact) yields Q − z. Per weight:
one LOP3 (mask and OR), one FFMA, then the multiply-add with x; `_plane` and `_codes_tile` below. The nibbles are
joined back in column order with `tl.join` (a minor axis held by one thread: no data moves).

Two regimes, two kernels (the split-K schedule of Hoque et al., arXiv 2402.00025, in both):
- `_gemv_kernel`, M = 1 (single-stream decode): CUDA cores. Each program takes BLOCK_N rows of the weight and one of
  SPLIT_K slices of K; N / BLOCK_N × SPLIT_K programs keep all 132 SMs of an H100 streaming. A K tile never straddles
  a group, so its scale multiplies the tile's row sums, not each weight. A tensor core would waste 15 of its 16 rows
  here and the tile would have to be staged through shared memory for it.
- `_dot_kernel`, M ≥ 2: tensor cores (`tl.dot`). With M tokens, CUDA cores need M FMAs per weight: at M = 16 about
  twice the memory time. It is written "swap AB": acc [BLOCK_N, BLOCK_M] = Ŵ_tile [BLOCK_N, BLOCK_K] · X_tileᵀ
  [BLOCK_K, BLOCK_M], so the weight rows fill the tensor core's wide side (64 rows for Hopper's wgmma) and the few
  tokens its narrow side (16). The same kernel, with BLOCK_M up to 256 and SPLIT_K = 1, is the prefill GEMM.
`GEMV_MAX_M` is the crossing point; `benchmarks/gpu_w4a16.py` times both kernels at small M to check it.

Split-K reduction: each slice writes fp32 partial sums to a [SPLIT_K, M, N] buffer and a second small kernel adds them
and casts to the output dtype (configs with SPLIT_K = 1 write the output directly: one launch). Chosen over the fp32
atomics of Hoque et al. because it needs no zero-filled buffer (atomics need a memset launch and a cast launch: three
in all) and gives the same bits at every run. Its cost, one more launch reading M·N·SPLIT_K·4 bytes, is part of what
the autotuner times (it runs as the autotuner's post-hook), so split-K is chosen only where it pays for it.

Autotuning: `triton.autotune` over a short list of configs per regime (tile sizes, SPLIT_K, num_warps, num_stages),
keyed on (M bucket, N, K, group size, zero points, dtypes); the first call at a new key benchmarks the list (cold L2:
`triton.testing.do_bench` clears it before each run), later calls reuse the winner; `last_config(kernel)` says which
ran. BLOCK_K is cut to divide g, so g must divide K and be a multiple of 16 (the smallest K of a tensor-core step).
`torch.ops.llmlab.w4a16_matmul` is the same call as an opaque custom op: what torch.compile and CUDA graphs see.

On CPU, `TRITON_INTERPRET=1` (set before triton is imported) runs both kernels with NumPy: slow, and it rounds fp32 to
bf16 by truncation, but it checks the indexing. `dequantize_then_matmul` is the plain PyTorch reference.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from llmlab.quant.packing import INT4_OFFSET, NIBBLES_PER_WORD, unpack_int4, unpack_nibbles

GEMV_MAX_M = 1  # up to this many rows the CUDA-core GEMV runs; above, the tensor-core kernel
MIN_GROUP_MULTIPLE = 16  # a K tile is at least 16 columns (tl.dot's smallest K) and lies inside one group
GROUP_N = 8  # large M: consecutive programs share these many weight tiles, so they are read once into L2

# the bits of the float32 2²³; OR-ing a code u < 2²³ into them gives the float 2²³ + u (its mantissa is u). The
# kernels take it as an argument, not a constant: in a register, ptxas merges the AND and the OR that unpack a code
# into one LOP3 instruction (with two immediate constants it emits two: 15 % more instructions per weight)
FLOAT_2_POW_23_BITS = 0x4B000000
_FLOAT_2_POW_23 = tl.constexpr(8388608.0)
_INT4_OFFSET = tl.constexpr(INT4_OFFSET)
_GROUP_N = tl.constexpr(GROUP_N)


# ---------------------------------------------------------------- the reference: dequantize, then matmul


def check_inputs(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                 group_size: int) -> tuple[int, int, int]:
    """(M, N, K) after checking shapes, dtypes and devices; a one-line ValueError that says what to do otherwise."""
    if x.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"x must be bfloat16 or float16 (W4A16: 16-bit activations), got {x.dtype}; "
                         "pass x.to(torch.bfloat16)")
    if x.dim() != 2:
        raise ValueError(f"x must be [M, K], got shape {tuple(x.shape)}; reshape it to (-1, K) first")
    if packed.dtype != torch.int32 or packed.dim() != 2:
        raise ValueError(f"packed must be int32 [N, K/8] (compressed-tensors weight_packed), got {packed.dtype} "
                         f"{tuple(packed.shape)}; pack signed codes with llmlab.quant.packing.pack_int4")
    M, K = x.shape
    N = packed.shape[0]
    if packed.shape[1] * NIBBLES_PER_WORD != K:
        raise ValueError(f"packed has {packed.shape[1]} words per row, x has K={K} columns: expected "
                         f"{K // NIBBLES_PER_WORD} words (K/8); is x the input of this layer?")
    if not isinstance(group_size, int) or group_size <= 0 or K % group_size or group_size % MIN_GROUP_MULTIPLE:
        raise ValueError(f"group_size={group_size!r} must divide K={K} and be a multiple of {MIN_GROUP_MULTIPLE}; "
                         f"try {', '.join(str(g) for g in (32, 64, 128, 256) if K % g == 0) or 'another size'}")
    expected = (N, K // group_size)
    if tuple(scales.shape) != expected or not scales.is_floating_point():
        raise ValueError(f"scales must be floating [N, K/group_size] = {list(expected)}, got {scales.dtype} "
                         f"{list(scales.shape)}; is group_size={group_size} the one the layer was quantized with?")
    if zeros is not None and (tuple(zeros.shape) != expected or zeros.is_floating_point()):
        raise ValueError(f"zeros must be integer [N, K/group_size] = {list(expected)} (signed zero points), got "
                         f"{zeros.dtype} {list(zeros.shape)}; unpack a packed weight_zero_point with "
                         "unpack_zero_points")
    devices = {t.device for t in (x, packed, scales) + (() if zeros is None else (zeros,))}
    if len(devices) > 1:
        raise ValueError(f"x, packed, scales (and zeros) must be on one device, got {sorted(map(str, devices))}")
    return M, N, K


def dequantize(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None = None,
               group_size: int = 128) -> torch.Tensor:
    """Ŵ [N, K] float32 = s · (Q − z) per row and group of `group_size` columns, from compressed-tensors tensors."""
    Q = unpack_int4(packed).float()  # [N, K/8] int32 -> [N, K] signed codes in [−8, 7]
    N, K = Q.shape
    Q = Q.view(N, K // group_size, group_size)  # [N, K] -> [N, n_groups, g]
    if zeros is not None:
        Q = Q - zeros.float()[:, :, None]
    return (Q * scales.float()[:, :, None]).view(N, K)  # [N, n_groups, g] -> [N, K]


def dequantize_then_matmul(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor,
                           zeros: torch.Tensor | None = None, group_size: int = 128) -> torch.Tensor:
    """The naive W4A16 layer the kernel replaces: Ŵ expanded to a 16-bit copy, then Y [M, N] = x Ŵᵀ accumulated in
    fp32, returned in x's dtype. (The copy is what makes it slow on a GPU: 2 bytes per weight written, then read.)"""
    check_inputs(x, packed, scales, zeros, group_size)
    W = dequantize(packed, scales, zeros, group_size).to(x.dtype)  # [N, K], rounded as a 16-bit GEMM would read it
    return (x.float() @ W.float().t()).to(x.dtype)


def unpack_zero_points(packed_zero_points: torch.Tensor, out_features: int) -> torch.Tensor:
    """compressed-tensors `weight_zero_point` of an asymmetric pack-quantized layer (int32 [⌈N/8⌉, n_groups], packed
    along N, code + 8 per nibble) -> signed zero points int8 [N, n_groups], as `zeros` wants them."""
    unsigned = unpack_nibbles(packed_zero_points.t().contiguous())  # [n_groups, N/8] -> [n_groups, 8·⌈N/8⌉]
    return (unsigned[:, :out_features] - INT4_OFFSET).t().contiguous().to(torch.int8)  # -> [N, n_groups]


# ---------------------------------------------------------------- the kernels


@triton.jit
def _plane(half, j: tl.constexpr, offset, magic):
    """Nibble j (0 to 3) of every 16-bit half-word, as a float: half int32 [R, W] -> Q − z fp32 [R, W].
    The code u is not shifted down: (half & 0xF·16^j) | bits(2²³) is the float 2²³ + u·16^j, exactly (u lands in
    the mantissa); times 16^−j (a power of two: exact) it is 2^(23−4j) + u; minus 2^(23−4j) + `offset` (offset =
    8 + z) it is u − 8 − z = Q − z. One bit operation and one multiply-add per weight, all exact."""
    bits = (half & (0xF << (4 * j))) | magic  # [R, W]
    return bits.to(tl.float32, bitcast=True) * (1.0 / (1 << (4 * j))) - (_FLOAT_2_POW_23 / (1 << (4 * j)) + offset)


@triton.jit
def _codes_tile(words, offset, magic):
    """Unpack a tile in registers: words int32 [R, W] -> Q − z fp32 [R, 8·W], column 8w + i = nibble i of word w.
    The low half-word holds nibbles 0–3, the high half (one shift per word) nibbles 4–7. tl.join adds a minor axis of
    2 held by the same thread (no data moves); joining nibbles (i, i + 4), then (·, · + 2), then (·, · + 1) puts
    nibble 4a + 2b + c at [r, w, a, b, c], so the reshape reads them in column order."""
    low, high = words, words >> 16  # [R, W] each: nibbles 0–3 and 4–7 at bits 0–15 (bits above are never read)
    by_4 = tl.join(_plane(low, 0, offset, magic), _plane(high, 0, offset, magic))  # [R, W, 2]: nibbles 0, 4
    by_4_then_2 = tl.join(_plane(low, 2, offset, magic), _plane(high, 2, offset, magic))  # [R, W, 2]: 2, 6
    even = tl.join(by_4, by_4_then_2)  # [R, W, 2, 2]: nibbles 0, 2, 4, 6
    odd = tl.join(tl.join(_plane(low, 1, offset, magic), _plane(high, 1, offset, magic)),
                  tl.join(_plane(low, 3, offset, magic), _plane(high, 3, offset, magic)))  # [R, W, 2, 2]: 1, 3, 5, 7
    codes = tl.join(even, odd)  # [R, W, 2, 2, 2]: nibble 4a + 2b + c at [r, w, a, b, c]
    return tl.reshape(codes, (words.shape[0], 8 * words.shape[1]))  # -> [R, 8·W]


@triton.jit
def _load_tile(w_ptr, s_ptr, z_ptr, n, n_ok, k0, stride_wn, stride_sn, stride_sg, stride_zn, stride_zg,
               GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr, BLOCK_K: tl.constexpr):
    """The packed words of rows n, columns k0 … k0 + BLOCK_K, their group's scale s [R], and the offset 8 + z
    that turns unsigned codes u into Q − z."""
    word = tl.arange(0, BLOCK_K // 8)  # [BLOCK_K/8]
    words = tl.load(w_ptr + n[:, None] * stride_wn + (k0 // 8 + word)[None, :],
                    mask=n_ok[:, None], other=0)  # [R, BLOCK_K/8] int32, contiguous along K: 16-byte loads
    group = k0 // GROUP_SIZE  # the tile lies inside one group (BLOCK_K divides GROUP_SIZE): one scale per row
    s = tl.load(s_ptr + n * stride_sn + group * stride_sg, mask=n_ok, other=0).to(tl.float32)  # [R]
    if HAS_ZEROS:
        z = tl.load(z_ptr + n * stride_zn + group * stride_zg, mask=n_ok, other=0).to(tl.float32)  # [R]
        offset = z[:, None] + _INT4_OFFSET  # [R, 1]: the codes become Q − z
    else:
        offset = _INT4_OFFSET * 1.0  # the codes become Q
    return words, s, offset


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, partial_ptr, M, N, K, M_BUCKET, two_pow_23_bits,
                 stride_xm, stride_xk, stride_wn, stride_sn, stride_sg, stride_zn, stride_zg, stride_om, stride_on,
                 GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    """Y[m, n] for one row m of x, BLOCK_N outputs n and one slice of K, on CUDA cores. Grid (N/BLOCK_N, M, SPLIT_K).
    M_BUCKET only keys the autotuner."""
    pid_n, m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] output features of this program
    k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    n_ok = n < N
    tiles = K // BLOCK_K
    per_split = tl.cdiv(tiles, SPLIT_K)  # K tiles per slice
    y = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for t in range(pid_k * per_split, tl.minimum(pid_k * per_split + per_split, tiles)):
        k0 = t * BLOCK_K
        words, s, offset = _load_tile(w_ptr, s_ptr, z_ptr, n, n_ok, k0, stride_wn, stride_sn, stride_sg, stride_zn,
                                      stride_zg, GROUP_SIZE, HAS_ZEROS, BLOCK_K)
        codes = _codes_tile(words, offset, two_pow_23_bits)  # [BLOCK_N, BLOCK_K] Q − z
        x = tl.load(x_ptr + m * stride_xm + (k0 + k) * stride_xk).to(tl.float32)  # [BLOCK_K]
        y += s * tl.sum(codes * x[None, :], axis=1)  # the tile shares one scale per row: it scales the row's sum
    if SPLIT_K == 1:
        tl.store(out_ptr + m * stride_om + n * stride_on, y.to(out_ptr.dtype.element_ty), mask=n_ok)
    else:
        tl.store(partial_ptr + (pid_k * M + m) * N + n, y, mask=n_ok)  # partials [SPLIT_K, M, N] fp32


@triton.jit
def _dot_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, partial_ptr, M, N, K, M_BUCKET, two_pow_23_bits,
                stride_xm, stride_xk, stride_wn, stride_sn, stride_sg, stride_zn, stride_zg, stride_om, stride_on,
                GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr, FP32_DOT: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    """A [BLOCK_M, BLOCK_N] tile of Y over one slice of K, on tensor cores, computed transposed ("swap AB"):
    acc [BLOCK_N, BLOCK_M] = Ŵ_tile · X_tileᵀ. Grid (N/BLOCK_N · M/BLOCK_M, SPLIT_K). M_BUCKET only keys the autotuner;
    FP32_DOT is for triton's CPU interpreter, which multiplies bf16 tiles as raw integers."""
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    # grouped order: GROUP_N weight tiles × all token tiles, so a weight tile is read from memory once per group
    tiles_n, tiles_m = tl.cdiv(N, BLOCK_N), tl.cdiv(M, BLOCK_M)
    first_n = (pid // (_GROUP_N * tiles_m)) * _GROUP_N
    group_n = tl.minimum(tiles_n - first_n, _GROUP_N)
    pid_n = first_n + (pid % (_GROUP_N * tiles_m)) % group_n
    pid_m = (pid % (_GROUP_N * tiles_m)) // group_n
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] output features
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] tokens
    k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    n_ok, m_ok = n < N, m < M
    tiles = K // BLOCK_K
    per_split = tl.cdiv(tiles, SPLIT_K)  # K tiles per slice
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for t in range(pid_k * per_split, tl.minimum(pid_k * per_split + per_split, tiles)):
        k0 = t * BLOCK_K
        words, s, offset = _load_tile(w_ptr, s_ptr, z_ptr, n, n_ok, k0, stride_wn, stride_sn, stride_sg, stride_zn,
                                      stride_zg, GROUP_SIZE, HAS_ZEROS, BLOCK_K)
        W = _codes_tile(words, offset, two_pow_23_bits) * s[:, None]  # [BLOCK_N, BLOCK_K] Ŵ = s · (Q − z), fp32
        W = W.to(x_ptr.dtype.element_ty)  # rounded to x's 16-bit type, as the tensor core reads it
        xT = tl.load(x_ptr + m[None, :] * stride_xm + (k0 + k)[:, None] * stride_xk,
                     mask=m_ok[None, :], other=0)  # [BLOCK_K, BLOCK_M]: X tile, transposed by its pointers
        if FP32_DOT:  # the same values, multiplied in fp32
            W, xT = W.to(tl.float32), xT.to(tl.float32)
        acc = tl.dot(W, xT, acc)  # [BLOCK_N, BLOCK_M] += [BLOCK_N, BLOCK_K] · [BLOCK_K, BLOCK_M]
    if SPLIT_K == 1:
        tl.store(out_ptr + m[None, :] * stride_om + n[:, None] * stride_on, acc.to(out_ptr.dtype.element_ty),
                 mask=m_ok[None, :] & n_ok[:, None])  # Y[m, n] = acc[n, m]
    else:
        tl.store(partial_ptr + (pid_k * M + m[None, :]) * N + n[:, None], acc,
                 mask=m_ok[None, :] & n_ok[:, None])  # partials [SPLIT_K, M, N] fp32


@triton.jit
def _split_k_sum_kernel(partial_ptr, out_ptr, size, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    """out [M·N] = Σ over SPLIT_K of partials [SPLIT_K, M·N] fp32, cast to out's dtype: the second pass of split-K."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] flat output positions
    ok = i < size
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for split in tl.static_range(SPLIT_K):
        total += tl.load(partial_ptr + split * size + i, mask=ok, other=0.0)
    tl.store(out_ptr + i, total.to(out_ptr.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------- configs and autotuning


def _config(BLOCK_N: int, BLOCK_K: int, SPLIT_K: int, warps: int, stages: int, BLOCK_M: int | None = None):
    tiles = {"BLOCK_N": BLOCK_N, "BLOCK_K": BLOCK_K, "SPLIT_K": SPLIT_K}
    return triton.Config(tiles if BLOCK_M is None else {"BLOCK_M": BLOCK_M, **tiles}, num_warps=warps,
                         num_stages=stages)


# M = 1: rows per program × K slices. The GEMV's loop is not software-pipelined (no tl.dot), so num_stages changes
# nothing: the loads in flight are one 16-byte load per thread and row of the program (BLOCK_N = 32, 4 warps: one
# row a thread) times the resident programs (~10 per SM at 48 registers a thread, 5 at BLOCK_N = 128), and split-K
# multiplies the programs where N is small (N = 8192, BLOCK_N = 64: 128 programs for 132 SMs without it).
GEMV_CONFIGS = [
    _config(32, 128, 1, warps=4, stages=1),
    _config(32, 128, 4, warps=4, stages=1),
    _config(64, 128, 1, warps=4, stages=1),
    _config(64, 128, 2, warps=4, stages=1),
    _config(64, 128, 4, warps=4, stages=1),
    _config(128, 128, 2, warps=4, stages=1),  # four rows a thread: four loads in flight, x's registers shared
    _config(128, 128, 4, warps=4, stages=1),
    _config(128, 128, 8, warps=4, stages=1),
]
# 2 ≤ M ≤ 16 (batched decode): one token tile of 16, weight tiles of 32–128 rows, split K for parallelism
DECODE_CONFIGS = [
    _config(64, 128, 1, warps=4, stages=4, BLOCK_M=16),
    _config(64, 128, 2, warps=4, stages=4, BLOCK_M=16),
    _config(64, 128, 4, warps=4, stages=3, BLOCK_M=16),
    _config(128, 128, 1, warps=4, stages=4, BLOCK_M=16),
    _config(128, 128, 2, warps=8, stages=3, BLOCK_M=16),
    _config(32, 128, 2, warps=4, stages=4, BLOCK_M=16),
    _config(32, 128, 4, warps=2, stages=4, BLOCK_M=16),
    _config(128, 64, 4, warps=4, stages=4, BLOCK_M=16),
]
# 16 < M ≤ 64: still weight-bound, wider token tiles
MID_CONFIGS = [
    _config(64, 128, 1, warps=4, stages=4, BLOCK_M=32),
    _config(128, 128, 1, warps=4, stages=3, BLOCK_M=32),
    _config(64, 128, 2, warps=4, stages=4, BLOCK_M=32),
    _config(64, 128, 1, warps=4, stages=3, BLOCK_M=64),
    _config(128, 64, 1, warps=4, stages=4, BLOCK_M=64),
    _config(128, 128, 2, warps=8, stages=3, BLOCK_M=64),
]
# M > 64 (prefill): compute-bound, big tiles so each dequantized weight tile serves many tokens
LARGE_CONFIGS = [
    _config(128, 64, 1, warps=4, stages=4, BLOCK_M=64),
    _config(128, 64, 1, warps=8, stages=3, BLOCK_M=128),
    _config(128, 64, 1, warps=4, stages=4, BLOCK_M=128),
    _config(128, 64, 1, warps=8, stages=3, BLOCK_M=256),
    _config(256, 64, 1, warps=8, stages=3, BLOCK_M=128),
    _config(64, 128, 1, warps=4, stages=4, BLOCK_M=128),
]


def m_bucket(M: int) -> int:
    """The autotuning key for M: M itself for the GEMV, then 16 (every M from 2 to 16 runs one token tile of 16), then
    the next power of two up to 4096 (a config that wins at M = 512 wins at 600 too)."""
    if M <= GEMV_MAX_M:
        return M
    if M <= 16:
        return 16
    return min(1 << (M - 1).bit_length(), 4096)


def _configs_for(M: int) -> list:
    return DECODE_CONFIGS if M <= 16 else MID_CONFIGS if M <= 64 else LARGE_CONFIGS


def fit_config(config, group_size: int):
    """`config` with BLOCK_K cut to divide `group_size` (a K tile must not straddle two groups)."""
    block_k = math.gcd(config.kwargs["BLOCK_K"], group_size)
    if block_k == config.kwargs["BLOCK_K"]:
        return config
    return triton.Config({**config.kwargs, "BLOCK_K": block_k}, num_warps=config.num_warps,
                         num_stages=config.num_stages)


def _prune(configs, named_args, **kwargs):
    """Autotuner hook: keep the configs of M's regime, each fitted to the group size; drop duplicates."""
    args = {**named_args, **kwargs}
    wanted = configs if "BLOCK_M" not in configs[0].kwargs else _configs_for(args["M"])
    fitted = {}
    for config in wanted:
        config = fit_config(config, args["GROUP_SIZE"])
        fitted.setdefault((tuple(sorted(config.kwargs.items())), config.num_warps, config.num_stages), config)
    return list(fitted.values())


def _sum_partials(partials: torch.Tensor, out: torch.Tensor, size: int, split_k: int) -> None:
    """The second pass of split-K: out = Σ of the first `split_k` partial sums, in out's dtype."""
    block = 1024
    _split_k_sum_kernel[(triton.cdiv(size, block),)](partials, out, size, SPLIT_K=split_k, BLOCK=block)


def _after_launch(nargs: dict, exception=None) -> None:
    """Autotuner post-hook: the split-K configs run their second pass inside the timing, so they pay for it."""
    if exception is None and nargs["SPLIT_K"] > 1:
        _sum_partials(nargs["partial_ptr"], nargs["out_ptr"], nargs["M"] * nargs["N"], nargs["SPLIT_K"])


_KEY = ["M_BUCKET", "N", "K", "GROUP_SIZE", "HAS_ZEROS"]
_TUNING = {"key": _KEY, "prune_configs_by": {"early_config_prune": _prune}, "post_hook": _after_launch}
_tuned_gemv = triton.autotune(GEMV_CONFIGS, **_TUNING)(_gemv_kernel)
_tuned_dot = triton.autotune(DECODE_CONFIGS + MID_CONFIGS + LARGE_CONFIGS, **_TUNING)(_dot_kernel)
_TUNED = {"gemv": _tuned_gemv, "dot": _tuned_dot}


def interpreting() -> bool:
    """Whether triton runs these kernels with its NumPy interpreter: TRITON_INTERPRET=1 was set before triton was
    first imported (triton.jit then builds interpreted functions, tl.sum's among them) and is still set."""
    return triton.knobs.runtime.interpret and not any(isinstance(fn, triton.runtime.JITFunction)
                                                      for fn in (_gemv_kernel, tl.sum))


def last_config(kernel: str) -> dict:
    """The config the autotuner chose for the last call of `kernel` ("gemv" or "dot"): tiles, warps, stages."""
    config = getattr(_TUNED[kernel], "best_config", None)
    if config is None:
        raise LookupError(f"the {kernel} kernel has not run through its autotuner yet; call w4a16_matmul on a GPU")
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


# ---------------------------------------------------------------- the call


def w4a16_matmul(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None = None,
                 group_size: int = 128, kernel: str = "auto", config=None) -> torch.Tensor:
    """Y [M, N] = x [M, K] · Ŵᵀ in x's dtype (fp32 accumulation), Ŵ = s · (Q − z) read from compressed-tensors
    tensors: packed int32 [N, K/8], scales [N, K/g], zeros int [N, K/g] or None (symmetric).

    kernel: "auto" (GEMV for M ≤ GEMV_MAX_M, else tensor cores), "gemv" or "dot". config: a `triton.Config` to run
    instead of autotuning (always used under the interpreter; None there takes the regime's first config)."""
    if kernel not in ("auto", "gemv", "dot"):
        raise ValueError(f"kernel={kernel!r}; choose 'auto', 'gemv' (CUDA cores) or 'dot' (tensor cores)")
    M, N, K = check_inputs(x, packed, scales, zeros, group_size)
    if not x.is_cuda and isinstance(_gemv_kernel, triton.runtime.JITFunction):
        raise ValueError("the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 set before importing triton, "
                         "for CPU tests); on CPU use dequantize_then_matmul")
    name = kernel if kernel != "auto" else "gemv" if M <= GEMV_MAX_M else "dot"
    packed = packed.contiguous()  # the words of a row must be contiguous (one 16-byte load covers 4 of them)
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0:
        return out
    candidates = [config] if config is not None else GEMV_CONFIGS if name == "gemv" else _configs_for(M)
    most_splits = max(c.kwargs["SPLIT_K"] for c in candidates)
    partials = torch.empty((most_splits, M, N), dtype=torch.float32, device=x.device) if most_splits > 1 else out
    z = zeros if zeros is not None else scales  # a valid pointer, never read when HAS_ZEROS is False
    args = (x, packed, scales, z, out, partials, M, N, K, m_bucket(M), FLOAT_2_POW_23_BITS, x.stride(0), x.stride(1),
            packed.stride(0), scales.stride(0), scales.stride(1), z.stride(0), z.stride(1), out.stride(0),
            out.stride(1))
    constants = {"GROUP_SIZE": group_size, "HAS_ZEROS": zeros is not None}
    if name == "gemv":
        def grid(meta):
            return triton.cdiv(N, meta["BLOCK_N"]), M, meta["SPLIT_K"]
    else:
        constants["FP32_DOT"] = not x.is_cuda  # CPU tensors: the interpreter (see _dot_kernel)

        def grid(meta):
            return triton.cdiv(N, meta["BLOCK_N"]) * triton.cdiv(M, meta["BLOCK_M"]), meta["SPLIT_K"]
    if config is None and not interpreting():
        _TUNED[name][grid](*args, **constants)
        split_k = _TUNED[name].best_config.kwargs["SPLIT_K"]
    else:
        chosen = fit_config(config if config is not None else
                            (GEMV_CONFIGS[0] if name == "gemv" else _configs_for(M)[0]), group_size)
        _TUNED[name].fn[grid](*args, **constants, **chosen.all_kwargs())
        split_k = chosen.kwargs["SPLIT_K"]
    if split_k > 1:
        _sum_partials(partials, out, M * N, split_k)
    return out


@torch.library.custom_op("llmlab::w4a16_matmul", mutates_args=())
def w4a16_op(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],
             group_size: int) -> torch.Tensor:
    """`w4a16_matmul` as an opaque operator: torch.compile does not trace into the Triton launch (nor its
    autotuner) and CUDA graphs capture the kernels it launches. Autotune first, in eager mode, then capture."""
    return w4a16_matmul(x, packed, scales, zeros, group_size)


@w4a16_op.register_fake
def _w4a16_op_shape(x, packed, scales, zeros, group_size):
    return x.new_empty((x.shape[0], packed.shape[0]))
