"""Packing 4-bit codes: the compressed-tensors layout is byte for byte compressed-tensors' own `pack_to_int32`; the
AutoAWQ GEMM layout puts column AWQ_ORDER[i] in nibble i, as compressed-tensors' AutoAWQ converter reads it back."""

import pytest
import torch
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
from compressed_tensors.entrypoints.convert.converters.autoawq import AutoAWQConverter

from llmlab.quant.packing import (AWQ_ORDER, IDENTITY_ORDER, pack_awq, pack_int4, pack_nibbles, unpack_awq,
                                  unpack_int4, unpack_nibbles)


def random_codes(rows: int, cols: int, low: int, high: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(low, high, (rows, cols), generator=torch.Generator().manual_seed(seed))


def test_one_word_by_hand():
    values = torch.arange(8)[None]  # [1, 8]: column c holds the value c
    # compressed-tensors: nibble i (bits 4i..4i+3) holds column i, so reading the hex digits right to left gives 0..7
    assert pack_nibbles(values, IDENTITY_ORDER).item() == 0x76543210
    # AutoAWQ: nibble i holds column AWQ_ORDER[i] = 0, 2, 4, 6, 1, 3, 5, 7 (right to left)
    assert pack_nibbles(values, AWQ_ORDER).item() == 0x75316420


@pytest.mark.parametrize("shape", [(1, 8), (6, 64), (576, 192)])
def test_pack_int4_equals_compressed_tensors_bytes(shape):
    Q = random_codes(*shape, -8, 8).to(torch.int8)
    Q[0, :8] = 7  # a word whose last nibble is 15 sets bit 31: it must wrap to a negative int32 the same way
    ours, theirs = pack_int4(Q), pack_to_int32(Q, 4)
    assert ours.dtype == theirs.dtype == torch.int32
    assert torch.equal(ours, theirs)  # observed: equal on every shape
    assert torch.equal(unpack_int4(ours), Q)
    assert torch.equal(unpack_from_int32(ours, 4, Q.shape), Q)  # compressed-tensors reads ours back


def test_pack_awq_reads_back_through_compressed_tensors_awq_converter():
    q = random_codes(64, 48, 0, 16, seed=1)  # unsigned codes of a transposed weight [in, out]
    packed = pack_awq(q)
    assert packed.shape == (64, 6)
    codes, _ = AutoAWQConverter.unpack_awq(packed, None, 4)  # their reading of an AutoAWQ checkpoint
    codes, _ = AutoAWQConverter.reverse_awq_order(codes, None, 4)
    assert torch.equal((codes & 0xF).int(), q.int())
    assert torch.equal(unpack_awq(packed), q.int())


def test_layouts_differ_only_in_order():
    q = random_codes(4, 16, 0, 16, seed=2)
    assert not torch.equal(pack_awq(q), pack_nibbles(q))
    assert torch.equal(unpack_nibbles(pack_awq(q), AWQ_ORDER), unpack_nibbles(pack_nibbles(q)))


def test_refusals_say_what_to_do():
    with pytest.raises(ValueError, match="multiple of 8 columns"):
        pack_nibbles(torch.zeros(2, 12, dtype=torch.int32))
    with pytest.raises(ValueError, match="shift signed codes by 8"):
        pack_nibbles(torch.full((1, 8), -1))
    with pytest.raises(ValueError, match=r"\[−8, 7\]"):
        pack_int4(torch.full((1, 8), 8, dtype=torch.int8))
    with pytest.raises(ValueError, match="permutation"):
        pack_nibbles(torch.zeros(1, 8, dtype=torch.int32), (0, 0, 1, 2, 3, 4, 5, 6))
    with pytest.raises(ValueError, match="int32"):
        unpack_int4(torch.zeros(1, 1, dtype=torch.int64))
