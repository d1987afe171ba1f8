"""Packing 4-bit integer codes into int32 words, the two ways serving engines read them.

A 4-bit code takes half a byte, so eight of them share one int32 word. Two layouts matter in practice:

- compressed-tensors "pack-quantized" (what llm-compressor writes and vLLM loads; `compressed_tensors.compressors.
  pack_quantized.helpers.pack_to_int32`): the signed codes Q ∈ [−8, 7] of W [out, in] are shifted to unsigned
  Q + 8 ∈ [0, 15] and packed along `in`: element j of a row goes to bits 4·(j mod 8) of word j // 8 (row-major, in
  order). Result: `weight_packed` int32 [out, in / 8].
- AutoAWQ "GEMM" (casper-hansen/AutoAWQ `awq/modules/linear/gemm.py`, `WQLinear_GEMM.from_linear`; read by vLLM's
  `--quantization awq`): unsigned codes q ∈ [0, 15] of the *transposed* weight [in, out] are packed along `out`, and
  inside each word the eight columns are interleaved: nibble i (bits 4i…4i+3) holds column AWQ_ORDER[i] of the block
  of eight, AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7), the order AWQ's CUDA dequantizer unpacks fastest. Result:
  `qweight` int32 [in, out / 8]; its zero points `qzeros` [in / g, out / 8] are packed the same way.

Both are "put eight nibbles in a word in some order": `pack_nibbles(values, order)` is the one function, and each
layout is that function with its order. Bit 31 belongs to the last nibble, so words whose last code is ≥ 8 read as
negative int32: the bits are what counts.
"""

from __future__ import annotations

import torch

NIBBLES_PER_WORD = 8  # 32 bits / 4 bits
IDENTITY_ORDER = (0, 1, 2, 3, 4, 5, 6, 7)  # compressed-tensors: nibble i holds column i of the block of eight
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ GEMM: nibble i holds column AWQ_ORDER[i]
INT4_OFFSET = 8  # signed code Q ∈ [−8, 7] is stored as the unsigned nibble Q + 8 ∈ [0, 15]


def _column_shifts(order: tuple[int, ...], device=None) -> torch.Tensor:
    """[8]: the bit where column c of a block of eight starts, 4 · (the nibble i with order[i] = c)."""
    if sorted(order) != list(range(NIBBLES_PER_WORD)):
        raise ValueError(f"order must be a permutation of 0..7, got {order}")
    nibble_of_column = torch.argsort(torch.tensor(order, device=device))  # inverse permutation
    return 4 * nibble_of_column


def pack_nibbles(values: torch.Tensor, order: tuple[int, ...] = IDENTITY_ORDER) -> torch.Tensor:
    """int32 [rows, cols / 8] from unsigned 4-bit values [rows, cols] (any integer dtype, each in [0, 15]): nibble i of
    word w holds values[:, 8w + order[i]]."""
    shifts = _column_shifts(order, values.device)  # [8]
    rows, cols = values.shape
    if cols % NIBBLES_PER_WORD:
        raise ValueError(f"packing 4-bit values needs a multiple of 8 columns, got {cols}")
    if values.numel() and (values.min() < 0 or values.max() > 15):
        raise ValueError(f"4-bit values must lie in [0, 15], got [{values.min().item()}, {values.max().item()}]; "
                         f"shift signed codes by {INT4_OFFSET} first")
    blocks = values.to(torch.int64).view(rows, cols // NIBBLES_PER_WORD, NIBBLES_PER_WORD)  # [rows, cols/8, 8]
    words = (blocks << shifts).sum(dim=-1)  # disjoint bit fields: the sum is the OR, in [0, 2^32)
    return (words - (words >> 31 << 32)).to(torch.int32)  # unsigned 32 bits -> the int32 with the same bits


def unpack_nibbles(words: torch.Tensor, order: tuple[int, ...] = IDENTITY_ORDER) -> torch.Tensor:
    """The inverse of `pack_nibbles`: unsigned values int32 [rows, 8 · words] in [0, 15]."""
    shifts = _column_shifts(order, words.device).to(torch.int32)  # [8]
    if words.dtype != torch.int32:
        raise ValueError(f"packed words must be int32, got {words.dtype}")
    rows, n_words = words.shape
    blocks = (words[:, :, None] >> shifts) & 0xF  # [rows, n_words, 8]: column c from its nibble (the mask drops the
    #                                              sign bits that >> copies in)
    return blocks.reshape(rows, n_words * NIBBLES_PER_WORD)  # [rows, n_words, 8] -> [rows, cols]


def pack_int4(Q: torch.Tensor) -> torch.Tensor:
    """compressed-tensors layout: signed codes Q int [out, in] in [−8, 7] -> `weight_packed` int32 [out, in / 8]
    (the bytes of `compressed_tensors`' `pack_to_int32(Q, 4)`)."""
    if Q.numel() and (Q.min() < -INT4_OFFSET or Q.max() > INT4_OFFSET - 1):
        raise ValueError(f"signed 4-bit codes must lie in [−8, 7], got [{Q.min().item()}, {Q.max().item()}]")
    return pack_nibbles(Q.to(torch.int32) + INT4_OFFSET, IDENTITY_ORDER)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """compressed-tensors layout: `weight_packed` int32 [out, in / 8] -> signed codes int8 [out, in]."""
    return (unpack_nibbles(packed, IDENTITY_ORDER) - INT4_OFFSET).to(torch.int8)


def pack_awq(q: torch.Tensor) -> torch.Tensor:
    """AutoAWQ GEMM layout: unsigned codes q [rows, cols] in [0, 15] (the transposed weight [in, out], or the zero
    points [in / g, out]) -> int32 [rows, cols / 8] with AWQ's interleaved nibble order."""
    return pack_nibbles(q, AWQ_ORDER)


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """AutoAWQ GEMM layout: `qweight` [in, out / 8] or `qzeros` [in / g, out / 8] -> unsigned codes int32 in [0, 15]."""
    return unpack_nibbles(packed, AWQ_ORDER)
