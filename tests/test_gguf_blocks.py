"""GGUF block formats from scratch: sizes as ggml defines them, round trips within each format's step, bytes and
dequantized values identical to the `gguf` package's, and the embedded Q4_1 file decoded into exactly the weights the
course's "16-bit baseline" holds."""

import numpy
import pytest
import torch
from gguf import GGMLQuantizationType, GGML_QUANT_SIZES
from gguf import quants as gguf_quants

from llmlab.quant.gguf_blocks import (
    BLOCK_FORMATS,
    bits_per_weight,
    bytes_per_weight,
    compare_file_with_model,
    dequantize_blocks,
    dequantize_gguf_tensor,
    dequantize_raw,
    gguf_tensor,
    hf_name,
    pack_blocks,
    quantize_blocks,
    read_gguf,
    round_half_away,
    type_summary,
    unpack_blocks,
    unpermute_qk,
)

pytestmark = pytest.mark.usefixtures("one_thread")
FORMATS = tuple(BLOCK_FORMATS)
FP16_EPS = 2.0**-11  # relative rounding of a float16 scale


def gaussian(rows=16, columns=512, seed=0):
    torch.manual_seed(seed)
    W = torch.randn(rows, columns) * 0.02  # a weight-like matrix
    W[3, 7] = 0.5  # and one outlier
    return W


# ---------------------------------------------------------------- sizes


def test_bits_per_weight_include_block_scales():
    assert bits_per_weight("Q8_0") == 8.5  # (2 + 32) bytes / 32 weights
    assert bits_per_weight("Q4_0") == 4.5  # (2 + 16) / 32
    assert bits_per_weight("Q4_1") == 5.0  # (2 + 2 + 16) / 32
    assert bits_per_weight("Q4_K") == 4.5  # (2 + 2 + 12 + 128) / 256
    assert bytes_per_weight("Q4_1") == 0.625
    for fmt, spec in BLOCK_FORMATS.items():  # the gguf package's table agrees
        assert GGML_QUANT_SIZES[GGMLQuantizationType[fmt]] == (spec.block_size, spec.type_size), fmt


def test_refusals_say_what_to_do():
    with pytest.raises(ValueError, match="implements Q8_0"):
        bits_per_weight("Q5_K")
    with pytest.raises(ValueError, match="divisible by 256"):
        quantize_blocks(torch.randn(4, 576), "Q4_K")  # 576 = 2.25 super-blocks
    with pytest.raises(ValueError, match="own shape"):
        unpack_blocks(torch.zeros(2, 18, dtype=torch.uint8), "Q4_0", (4, 32))
    with pytest.raises(LookupError, match="GGUF_TO_HF"):
        hf_name("blk.0.attn_qkv.weight")


def test_roundf_sends_ties_away_from_zero():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, 126.5])
    assert round_half_away(x).tolist() == [1.0, 2.0, 3.0, -1.0, -3.0, 0.0, 127.0]  # torch.round gives 0, 2, 2, ...


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_error(fmt):
    W = gaussian()
    blocks = quantize_blocks(W, fmt)
    W_hat = dequantize_blocks(blocks)
    assert W_hat.shape == W.shape and W_hat.dtype == torch.float32
    relative = ((W - W_hat).norm() / W.norm()).item()
    bound = {"Q8_0": 0.007, "Q4_0": 0.10, "Q4_1": 0.09, "Q4_K": 0.08}[fmt]
    assert relative < bound, relative  # observed 0.0056, 0.088, 0.079, 0.072 (seed 0, 16 x 512)
    X = W.reshape(-1, BLOCK_FORMATS[fmt].block_size)  # [n_blocks, block_size]
    error = (W - W_hat).reshape(X.shape).abs().amax(dim=1)  # [n_blocks] worst error per block
    d = blocks.d.float().abs()  # Q4_0 scales carry the sign of the block's extreme
    if fmt == "Q8_0":  # half a step, plus |q| ≤ 127 times the scale's fp16 rounding
        assert (error <= d * (0.5 + 127 * FP16_EPS) * 1.001).all()
    if fmt == "Q4_0":  # up to a full step: the side opposite the extreme stops at +7·d
        assert (error <= d * (1 + 8 * FP16_EPS) * 1.001).all()
    if fmt == "Q4_1":  # half a step, plus the fp16 rounding of d (times q ≤ 15) and of the minimum
        m = blocks.m.float()
        assert (error <= d * (0.5 + 15 * FP16_EPS) * 1.001 + m.abs() * FP16_EPS).all()
    if fmt == "Q4_K":  # 6-bit scales: worse than half a sub-block step, better than Q4_0 overall
        assert relative < ((W - dequantize_blocks(quantize_blocks(W, "Q4_0"))).norm() / W.norm()).item()


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_and_constant_blocks(fmt):
    size = BLOCK_FORMATS[fmt].block_size
    W = torch.zeros(3, size)
    W[1] = -0.25  # a constant negative block
    W[2] = 0.125  # a constant positive block
    torch.testing.assert_close(dequantize_blocks(quantize_blocks(W, fmt)), W, rtol=0, atol=0.25 * 2**-9)


@pytest.mark.parametrize("fmt", FORMATS)
def test_bytes_round_trip(fmt):
    blocks = quantize_blocks(gaussian(), fmt)
    raw = pack_blocks(blocks)
    assert raw.dtype == torch.uint8 and raw.shape[1] == BLOCK_FORMATS[fmt].type_size
    again = unpack_blocks(raw, fmt, blocks.shape)
    for field in ("q", "d", "m", "scales", "mins"):
        ours, theirs = getattr(blocks, field), getattr(again, field)
        assert (ours is None and theirs is None) or torch.equal(ours, theirs), field


# ---------------------------------------------------------------- against the gguf package


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_equals_gguf_exactly(fmt):
    W = gaussian(seed=1)
    raw = pack_blocks(quantize_blocks(W, fmt))
    theirs = gguf_quants.dequantize(raw.numpy().reshape(W.shape[0], -1), GGMLQuantizationType[fmt])
    assert torch.equal(dequantize_raw(raw, fmt, W.shape), torch.from_numpy(theirs))  # bit for bit


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0", "Q4_1"])  # gguf.quants has no Q4_K quantizer
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantize_equals_gguf_byte_for_byte(fmt, seed):
    W = gaussian(rows=32, columns=256, seed=seed)
    W[5] = 0.0  # an all-zero row too
    theirs = gguf_quants.quantize(W.numpy(), GGMLQuantizationType[fmt])  # [rows, bytes per row]
    ours = pack_blocks(quantize_blocks(W, fmt)).numpy().reshape(theirs.shape)
    assert numpy.array_equal(ours, theirs), int((ours != theirs).sum())


def test_unpermute_matches_transformers():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    W = torch.randn(192, 40)  # 3 KV heads of 64 rows, as the embedded model's k_proj
    theirs = LlamaTensorProcessor()._reverse_permute_weights(W.numpy(), 9, 3)
    assert torch.equal(unpermute_qk(W, 3), torch.from_numpy(theirs))


def test_hf_names():
    assert hf_name("blk.12.ffn_down.weight") == "model.layers.12.mlp.down_proj.weight"
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("blk.0.attn_norm.weight") == "model.layers.0.input_layernorm.weight"


# ---------------------------------------------------------------- the embedded file


@pytest.mark.slow
def test_embedded_file_types():
    rows = {row["type"]: row for row in type_summary(read_gguf())}
    assert {k: v["tensors"] for k, v in rows.items()} == {"Q4_1": 210, "Q8_0": 1, "F32": 61}  # observed 2026-11
    assert rows["Q4_1"]["bits_per_weight"] == 5.0 and rows["Q8_0"]["bits_per_weight"] == 8.5
    assert rows["Q8_0"]["weights"] == 49152 * 576  # the tied token embedding


@pytest.mark.slow
def test_embedded_tensor_equals_gguf_and_the_model(embedded):
    model, _, _ = embedded
    tensor = gguf_tensor("blk.0.ffn_down.weight")
    assert tensor.fmt == "Q4_1" and tensor.shape == (576, 1536)
    ours = dequantize_gguf_tensor(tensor)
    theirs = gguf_quants.dequantize(numpy.array(tensor.raw), GGMLQuantizationType.Q4_1)
    assert torch.equal(ours, torch.from_numpy(theirs))
    assert torch.equal(ours, model.model.layers[0].mlp.down_proj.weight.detach())  # the baseline IS the file
    q = gguf_tensor("blk.0.attn_q.weight")
    assert torch.equal(dequantize_gguf_tensor(q, 9), model.model.layers[0].self_attn.q_proj.weight.detach())
    assert not torch.equal(dequantize_gguf_tensor(q), model.model.layers[0].self_attn.q_proj.weight.detach())


@pytest.mark.slow
def test_whole_file_equals_the_model(embedded):
    model, _, _ = embedded
    rows = compare_file_with_model(model)
    assert len(rows) == 272  # 30 layers x 9 tensors + embedding + final norm
    assert max(row["max_abs_difference"] for row in rows) == 0.0  # observed: every tensor identical
