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
subtraction leaves u − 8 = Q, exactly. Here the code is not even shifted down: nibble j of a 16-bit half-word, masked
in place, gives 2²³ + u·16^j, and one multiply-add by 16^−j (a power of two: exact) yields Q. Per weight: one LOP3
(mask and OR), one FFMA, then the multiply-add with x; `_plane` and `_codes_tile` below. The nibbles are joined back
in column order with `tl.join` (a minor axis held by one thread: no data moves). Zero points, where a layer has them,
are taken off per group: Σ (Q − z)·x = Σ Q·x − z·Σ x in the GEMV, Q − z before the scale in the tensor-core kernel.

Two regimes, two kernels (the split-K schedule of Hoque et al., arXiv 2402.00025, in both):
- `_gemv_kernel`, M = 1 (single-stream decode): CUDA cores. Each program takes BLOCK_N rows of the weight and one of
  SPLIT_K slices of K; N / BLOCK_N × SPLIT_K programs keep all 132 SMs of an H100 streaming. What decides its speed is
  memory-level parallelism, bytes in flight: an H100 needs about bandwidth × latency ≈ 3.3 TB/s × ~0.7 µs ≈ 2 MB in
  flight, some 16 KB per SM, to stream at full speed. Triton software-pipelines the loads of loops built around a
  `tl.dot` (the tensor-core kernel's words too: they go through shared memory); this loop has none, so the GEMV does
  it by hand: K tiles of 512 columns (four 16-byte loads per thread and row, where tiles of one group of
  128 gave one and streamed at 1.1–1.6 TB/s), and PREFETCH loads the next tile's words before this one is unpacked.
  A tile of several groups is seen as PARTS sub-tiles of one group each: its scale multiplies the sub-tile's row
  sums, not each weight. A tensor core would waste 15 of its 16 rows here.
- `_dot_kernel`, M ≥ 2: tensor cores (`tl.dot`). With M tokens, CUDA cores need M FMAs per weight: at M = 16 about
  twice the memory time. It is written "swap AB": acc [BLOCK_N, BLOCK_M] = Ŵ_tile [BLOCK_N, BLOCK_K] · X_tileᵀ
  [BLOCK_K, BLOCK_M], so the weight rows fill the tensor core's wide side (64 rows for Hopper's wgmma) and the few
  tokens its narrow side (16). Triton pipelines its loads through shared memory (num_stages). The codes are converted
  to bf16 before the scale multiplies them, two weights per instruction where the scales share x's type (HMUL2:
  exact codes, one rounding, the bits of an fp32 product rounded). SPLIT_K is a run-time argument there, for ptxas's
  sake (see `_dot_kernel`). The same kernel, with BLOCK_M up to 256 and SPLIT_K = 1, is the prefill GEMM.
`GEMV_MAX_M` is the crossing point; `benchmarks/gpu_w4a16.py` times both kernels at small M to check it.

Split-K reduction: each slice writes fp32 partial sums to a [SPLIT_K, M, N] buffer and a second small kernel adds them
and casts to the output dtype (configs with SPLIT_K = 1 write the output directly: one launch). Chosen over the fp32
atomics of Hoque et al. because it needs no zero-filled buffer (atomics need a memset launch and a cast launch: three
in all) and gives the same bits at every run. Its cost, one more launch reading M·N·SPLIT_K·4 bytes, is part of what
the autotuner times (it runs as the autotuner's post-hook), so split-K is chosen only where it pays for it.

Autotuning: `triton.autotune` over a short list of configs per regime (tile sizes, SPLIT_K, num_warps, num_stages,
PREFETCH), keyed on (M bucket, N, K, group size, zero points, dtypes); the first call at a new key benchmarks the list
(`triton.testing.do_bench`), later calls launch the winner directly (`_CHOSEN`: the autotuner's own lookup costs
more host time than a small GEMM's GPU time); `last_config(kernel)` says which ran. The lists are the
winners of sweeps at Llama-3.1-70B shapes timed back to back (see GEMV_CONFIGS). `fit_config` fits BLOCK_K to the
layer: a K tile lies inside one group or holds whole groups, and divides K; g must divide K and be a multiple of 16
(the smallest K of a tensor-core step). `torch.ops.llmlab.w4a16_matmul` is the same call as an opaque custom op: what
torch.compile and CUDA graphs see.

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
def _plane(half, j: tl.constexpr, magic):
    """Nibble j (0 to 3) of every 16-bit half-word, as a float: half int32 [R, W] -> Q fp32 [R, W].
    The code u is not shifted down: (half & 0xF·16^j) | bits(2²³) is the float 2²³ + u·16^j, exactly (u lands in
    the mantissa); times 16^−j (a power of two: exact) it is 2^(23−4j) + u; minus 2^(23−4j) + 8 it is u − 8 = Q.
    One bit operation and one multiply-add per weight, all exact."""
    bits = (half & (0xF << (4 * j))) | magic  # [R, W]
    scale = 1.0 / (1 << (4 * j))  # 16^−j
    return bits.to(tl.float32, bitcast=True) * scale - (_FLOAT_2_POW_23 * scale + _INT4_OFFSET)


@triton.jit
def _codes_tile(words, magic):
    """Unpack a tile in registers: words int32 [R, W] -> Q fp32 [R, 8·W], column 8w + i = nibble i of word w.
    The low half-word holds nibbles 0–3, the high half (one shift per word) nibbles 4–7. tl.join adds a minor axis of
    2 held by the same thread (no data moves); joining nibbles (i, i + 4), then (·, · + 2), then (·, · + 1) puts
    nibble 4a + 2b + c at [r, w, a, b, c], so the reshape reads them in column order."""
    low, high = words, words >> 16  # [R, W] each: nibbles 0–3 and 4–7 at bits 0–15 (bits above are never read)
    by_4 = tl.join(_plane(low, 0, magic), _plane(high, 0, magic))  # [R, W, 2]: nibbles 0, 4
    by_4_then_2 = tl.join(_plane(low, 2, magic), _plane(high, 2, magic))  # [R, W, 2]: 2, 6
    even = tl.join(by_4, by_4_then_2)  # [R, W, 2, 2]: nibbles 0, 2, 4, 6
    odd = tl.join(tl.join(_plane(low, 1, magic), _plane(high, 1, magic)),
                  tl.join(_plane(low, 3, magic), _plane(high, 3, magic)))  # [R, W, 2, 2]: 1, 3, 5, 7
    codes = tl.join(even, odd)  # [R, W, 2, 2, 2]: nibble 4a + 2b + c at [r, w, a, b, c]
    return tl.reshape(codes, (words.shape[0], 8 * words.shape[1]))  # -> [R, 8·W]


@triton.jit
def _group_scales(s_ptr, z_ptr, n, n_ok, k0, stride_sn, stride_zn, GROUP_SIZE: tl.constexpr,
                  HAS_ZEROS: tl.constexpr, PARTS: tl.constexpr, SUB: tl.constexpr):
    """The scales s and zero points z (0 when symmetric) of rows n for the PARTS sub-tiles of SUB columns from k0 on:
    fp32 [R, PARTS]. A sub-tile lies inside one group."""
    if PARTS == 1:  # one scale per row: a vector, seen as [R, 1]
        group = k0 // GROUP_SIZE
        s = tl.load(s_ptr + n * stride_sn + group, mask=n_ok, other=0)[:, None]
        if HAS_ZEROS:
            z = tl.load(z_ptr + n * stride_zn + group, mask=n_ok, other=0)[:, None]
        else:
            z = tl.zeros((1, 1), dtype=tl.int32)
    else:
        group = (k0 + tl.arange(0, PARTS) * SUB) // GROUP_SIZE  # [PARTS]
        s = tl.load(s_ptr + n[:, None] * stride_sn + group[None, :], mask=n_ok[:, None], other=0)
        if HAS_ZEROS:
            z = tl.load(z_ptr + n[:, None] * stride_zn + group[None, :], mask=n_ok[:, None], other=0)
        else:
            z = tl.zeros((1, PARTS), dtype=tl.int32)
    return s.to(tl.float32), z.to(tl.float32)


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, partial_ptr, M, N, K, M_BUCKET, two_pow_23_bits,
                 stride_xm, stride_wn, stride_sn, stride_zn, stride_om,
                 GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, PREFETCH: tl.constexpr):
    """Y[m, n] for one row m of x, BLOCK_N outputs n and one slice of K, on CUDA cores. Grid (N/BLOCK_N, M, SPLIT_K).
    A K tile may hold several groups (BLOCK_K = 512 for g = 128: a thread's loads are 4 × 16 bytes in flight, not
    one): it is seen as PARTS sub-tiles of SUB columns, one scale each. PREFETCH loads the next tile's words before
    this tile is unpacked (Triton pipelines the loads of loops with a tl.dot: this one is pipelined by hand).
    M_BUCKET only keys the autotuner."""
    pid_n, m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    SUB: tl.constexpr = BLOCK_K if BLOCK_K < GROUP_SIZE else GROUP_SIZE  # columns under one scale
    PARTS: tl.constexpr = BLOCK_K // SUB
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] output features of this program
    n_ok = n < N
    columns = tl.arange(0, PARTS)[:, None] * SUB + tl.arange(0, SUB)[None, :]  # [PARTS, SUB]: the tile's columns
    tiles = K // BLOCK_K
    per_split = tl.cdiv(tiles, SPLIT_K)  # K tiles per slice
    first = pid_k * per_split
    last = tl.minimum(first + per_split, tiles)
    rows = w_ptr + n[:, None] * stride_wn + tl.arange(0, BLOCK_K // 8)[None, :]  # [BLOCK_N, BLOCK_K/8] at k = 0
    acc = tl.zeros((BLOCK_N, PARTS), dtype=tl.float32)
    # a tile index plus `zero_row` is that index as a [1, BLOCK_K/8] tensor: the prefetch masks compare it with
    # `last` (triton 3.9's CPU interpreter rejects a mask built from a comparison of two scalars)
    zero_row = tl.zeros((1, BLOCK_K // 8), dtype=tl.int32)
    if PREFETCH:
        words = tl.load(rows + first * (BLOCK_K // 8), mask=n_ok[:, None] & (first + zero_row < last), other=0)
    for t in range(first, last):
        k0 = t * BLOCK_K
        if PREFETCH:  # the next tile's words travel while this one is unpacked
            ahead = tl.load(rows + (k0 + BLOCK_K) // 8, mask=n_ok[:, None] & (t + 1 + zero_row < last), other=0)
        else:
            words = tl.load(rows + k0 // 8, mask=n_ok[:, None], other=0)  # [BLOCK_N, BLOCK_K/8] int32
        s, z = _group_scales(s_ptr, z_ptr, n, n_ok, k0, stride_sn, stride_zn, GROUP_SIZE,
                             HAS_ZEROS, PARTS, SUB)  # [BLOCK_N, PARTS] each
        x = tl.load(x_ptr + m * stride_xm + k0 + columns).to(tl.float32)  # [PARTS, SUB]
        codes = tl.reshape(_codes_tile(words, two_pow_23_bits), (BLOCK_N, PARTS, SUB))  # Q
        sums = tl.sum(codes * x[None, :, :], axis=2)  # [BLOCK_N, PARTS]: Σ Q·x per sub-tile
        if HAS_ZEROS:
            sums -= z * tl.sum(x, axis=1)[None, :]  # Σ (Q − z)·x = Σ Q·x − z·Σ x
        acc += s * sums  # a sub-tile shares one scale per row: it scales the row's sum
        if PREFETCH:
            words = ahead
    y = tl.sum(acc, axis=1)  # [BLOCK_N]
    if SPLIT_K == 1:
        tl.store(out_ptr + m * stride_om + n, y.to(out_ptr.dtype.element_ty), mask=n_ok)
    else:
        tl.store(partial_ptr + (pid_k * M + m) * N + n, y, mask=n_ok)  # partials [SPLIT_K, M, N] fp32


@triton.jit
def _dot_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, partial_ptr, M, N, K, M_BUCKET, two_pow_23_bits,
                stride_xm, stride_wn, stride_sn, stride_zn, stride_om,
                GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr, FP32_DOT: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K):
    """A [BLOCK_M, BLOCK_N] tile of Y over one slice of K, on tensor cores, computed transposed ("swap AB"):
    acc [BLOCK_N, BLOCK_M] = Ŵ_tile · X_tileᵀ. Grid (N/BLOCK_N · M/BLOCK_M, SPLIT_K). A K tile may hold several
    groups, as in the GEMV. M_BUCKET only keys the autotuner; FP32_DOT is for triton's CPU interpreter, which
    multiplies bf16 tiles as raw integers.

    SPLIT_K is a run-time argument, not a constexpr (Triton still compiles SPLIT_K = 1 as a constant: it specializes
    integers equal to 1). With SPLIT_K > 1 as a constexpr, only the fp32 store of the partial sums is left after the
    loop, and ptxas then serializes the asynchronous wgmma pipeline (its warning C7515: "wgmma.mma_async instructions
    are serialized due to non wgmma instructions defining accumulator registers"); on the H100 that cost 6-11 % at
    70B shapes, M = 16 (Triton 3.6). With both stores in the code, ptxas keeps the pipeline; a CPU test compiles the
    configs for sm_90 and reads ptxas's warnings (tests/test_triton_ptxas.py)."""
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    SUB: tl.constexpr = BLOCK_K if BLOCK_K < GROUP_SIZE else GROUP_SIZE
    PARTS: tl.constexpr = BLOCK_K // SUB
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
    rows = w_ptr + n[:, None] * stride_wn + tl.arange(0, BLOCK_K // 8)[None, :]  # [BLOCK_N, BLOCK_K/8] at k = 0
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for t in range(pid_k * per_split, tl.minimum(pid_k * per_split + per_split, tiles)):
        k0 = t * BLOCK_K
        words = tl.load(rows + k0 // 8, mask=n_ok[:, None], other=0)  # [BLOCK_N, BLOCK_K/8] int32
        s, z = _group_scales(s_ptr, z_ptr, n, n_ok, k0, stride_sn, stride_zn, GROUP_SIZE,
                             HAS_ZEROS, PARTS, SUB)  # [BLOCK_N, PARTS] each
        xT = tl.load(x_ptr + m[None, :] * stride_xm + (k0 + k)[:, None],
                     mask=m_ok[None, :], other=0)  # [BLOCK_K, BLOCK_M]: X tile, transposed by its pointers
        codes = _codes_tile(words, two_pow_23_bits)  # [BLOCK_N, BLOCK_K] Q
        # Ŵ = s · (Q − z) in x's 16-bit type, as the tensor core reads it. Q − z (integers up to 15 in size) is exact
        # in it; where s is stored in that type too, the product is taken there (HMUL2: two weights per instruction,
        # rounded once, the same bits as an fp32 product rounded), else in fp32, then rounded. (Not under the CPU
        # interpreter, FP32_DOT: it multiplies 16-bit floats as raw integers.)
        HALF_PRODUCT: tl.constexpr = s_ptr.dtype.element_ty == x_ptr.dtype.element_ty and not FP32_DOT
        if HAS_ZEROS:
            codes = tl.reshape(tl.reshape(codes, (BLOCK_N, PARTS, SUB)) - z[:, :, None], (BLOCK_N, BLOCK_K))
        if HALF_PRODUCT:
            codes = codes.to(x_ptr.dtype.element_ty)
            s = s.to(x_ptr.dtype.element_ty)
        if PARTS == 1:  # one group: one scale per row
            W = codes * s  # [BLOCK_N, BLOCK_K]
        else:  # sub-tiles of one group each
            W = tl.reshape(tl.reshape(codes, (BLOCK_N, PARTS, SUB)) * s[:, :, None], (BLOCK_N, BLOCK_K))
        W = W.to(x_ptr.dtype.element_ty)
        if FP32_DOT:  # the same values, multiplied in fp32
            W, xT = W.to(tl.float32), xT.to(tl.float32)
        acc = tl.dot(W, xT, acc)  # [BLOCK_N, BLOCK_M] += [BLOCK_N, BLOCK_K] · [BLOCK_K, BLOCK_M]
    if SPLIT_K == 1:
        tl.store(out_ptr + m[None, :] * stride_om + n[:, None], acc.to(out_ptr.dtype.element_ty),
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


def _config(BLOCK_N: int, BLOCK_K: int, SPLIT_K: int, warps: int, stages: int, BLOCK_M: int | None = None,
            prefetch: bool | None = None):
    tiles = {"BLOCK_N": BLOCK_N, "BLOCK_K": BLOCK_K, "SPLIT_K": SPLIT_K}
    if BLOCK_M is not None:
        tiles = {"BLOCK_M": BLOCK_M, **tiles}
    if prefetch is not None:
        tiles["PREFETCH"] = prefetch
    return triton.Config(tiles, num_warps=warps, num_stages=stages)


# M = 1: rows per program × K tile × K slices × hand prefetch. Each config here was among the eight fastest of a sweep
# of 168 to 216 configs at one of the four Llama-3.1-70B shapes on an H100 (each timed back to back in a CUDA graph,
# weights rotating through 512 MB): K tiles of 512 columns win everywhere; 16 to 64 rows; K split only where
# N / BLOCK_N alone leaves SMs idle.
GEMV_CONFIGS = [
    _config(16, 512, 1, warps=4, stages=1, prefetch=True),  # 70B qkv (N = 10,240): the fastest
    _config(32, 512, 1, warps=4, stages=1, prefetch=True),  # 70B o (N = 8,192)
    _config(32, 512, 2, warps=4, stages=1, prefetch=True),
    _config(32, 512, 4, warps=4, stages=1, prefetch=False),
    _config(64, 512, 1, warps=4, stages=1, prefetch=False),  # 70B gate_up (N = 57,344): the fastest
    _config(64, 512, 2, warps=4, stages=1, prefetch=True),  # 70B down (K = 28,672): the fastest
    _config(64, 512, 4, warps=4, stages=1, prefetch=False),
    _config(128, 256, 8, warps=4, stages=1, prefetch=False),
]
# 2 ≤ M ≤ 16 (batched decode): one token tile of 16, weight tiles of 64–128 rows, split K for parallelism. The configs
# within 3 % of the best of a sweep of 36 to 72 per shape (8B and 70B, M = 16, back to back, benchmarks/
# gpu_w4a16_sweep.py). Triton pipelines this loop's loads itself (through shared memory); prefetching the words by
# hand measured no faster here, nor did converting the codes to bf16 pairs in inline PTX (2 instructions per weight,
# where the fp32 path then took 3.5), nor the W tile as wgmma's B operand (from shared memory, tokens padded to 64:
# 1.2-1.4× slower).
DECODE_CONFIGS = [
    _config(64, 128, 4, warps=4, stages=3, BLOCK_M=16),  # 70B qkv, o, down; 8B qkv, o
    _config(64, 128, 2, warps=4, stages=3, BLOCK_M=16),  # 70B and 8B gate_up
    _config(64, 128, 1, warps=4, stages=3, BLOCK_M=16),  # 70B gate_up
    _config(64, 128, 8, warps=4, stages=3, BLOCK_M=16),  # 70B down
    _config(64, 256, 4, warps=4, stages=3, BLOCK_M=16),  # 8B o, qkv, down
    _config(128, 128, 4, warps=4, stages=3, BLOCK_M=16),  # 70B o, down
    _config(128, 128, 8, warps=4, stages=3, BLOCK_M=16),  # 8B down
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


def fit_config(config, group_size: int, K: int | None = None):
    """`config` with BLOCK_K fitted: a K tile lies inside one group or holds whole groups (then g must be a power of
    two, as the tile's sub-tiles are), and divides K."""
    block_k = config.kwargs["BLOCK_K"]
    if block_k <= group_size or group_size & (group_size - 1):
        block_k = math.gcd(block_k, group_size)
    elif K is not None:
        block_k = group_size * math.gcd(block_k // group_size, K // group_size)  # whole groups that divide K
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
        config = fit_config(config, args["GROUP_SIZE"], args["K"])
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
# the autotuner's pick per key (kernel, M bucket, N, K, group size, zero points, dtypes): later calls launch it
# directly. The autotuner looks its own cache up too, but that lookup costs 16 to 22 µs of host time per call on the
# H100's host, as much as the GEMV's GPU time at 8B shapes (7 to 28 µs); this dict lookup costs well under one
_CHOSEN: dict[tuple, triton.Config] = {}
_LAST: dict[str, triton.Config] = {}  # kernel -> the config of its last autotuned call (last_config)


def interpreting() -> bool:
    """Whether triton runs these kernels with its NumPy interpreter: TRITON_INTERPRET=1 was set before triton was
    first imported (triton.jit then builds interpreted functions, tl.sum's among them) and is still set."""
    return triton.knobs.runtime.interpret and not any(isinstance(fn, triton.runtime.JITFunction)
                                                      for fn in (_gemv_kernel, tl.sum))


def last_config(kernel: str) -> dict:
    """The config of the last autotuned call of `kernel` ("gemv" or "dot"): tiles, warps, stages."""
    config = _LAST.get(kernel)
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
    # the kernels take the column stride of x, scales, zeros and the output to be 1 (their rows are contiguous)
    x, packed, scales = x.contiguous(), packed.contiguous(), scales.contiguous()
    zeros = zeros.contiguous() if zeros is not None else None
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0:
        return out
    tuning = config is None and not interpreting()
    if tuning:
        key = (name, m_bucket(M), N, K, group_size, x.dtype, scales.dtype, None if zeros is None else zeros.dtype)
        chosen = _CHOSEN.get(key)
    else:  # under the interpreter, None takes the regime's first config
        chosen = fit_config(config if config is not None else
                            GEMV_CONFIGS[0] if name == "gemv" else _configs_for(M)[0], group_size, K)
    candidates = [chosen] if chosen is not None else GEMV_CONFIGS if name == "gemv" else _configs_for(M)
    most_splits = max(c.kwargs["SPLIT_K"] for c in candidates)
    partials = torch.empty((most_splits, M, N), dtype=torch.float32, device=x.device) if most_splits > 1 else out
    z = zeros if zeros is not None else scales  # a valid pointer, never read when HAS_ZEROS is False
    args = (x, packed, scales, z, out, partials, M, N, K, m_bucket(M), FLOAT_2_POW_23_BITS, x.stride(0),
            packed.stride(0), scales.stride(0), z.stride(0), out.stride(0))
    constants = {"GROUP_SIZE": group_size, "HAS_ZEROS": zeros is not None}
    if name == "gemv":
        def grid(meta):
            return triton.cdiv(N, meta["BLOCK_N"]), M, meta["SPLIT_K"]
    else:
        constants["FP32_DOT"] = not x.is_cuda  # CPU tensors: the interpreter (see _dot_kernel)

        def grid(meta):
            return triton.cdiv(N, meta["BLOCK_N"]) * triton.cdiv(M, meta["BLOCK_M"]), meta["SPLIT_K"]
    if chosen is None:  # a new key: the autotuner times the regime's configs, then runs the fastest
        _TUNED[name][grid](*args, **constants)
        chosen = _CHOSEN[key] = _TUNED[name].best_config
    else:
        _TUNED[name].fn[grid](*args, **constants, **chosen.all_kwargs())
    if tuning:
        _LAST[name] = chosen
    if chosen.kwargs["SPLIT_K"] > 1:
        _sum_partials(partials, out, M * N, chosen.kwargs["SPLIT_K"])
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
