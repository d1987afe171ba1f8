"""Number formats: INT-k grids round-trip within half a step, land on compressed-tensors' grid, refuse what they cannot
do; FP8 rounding from scratch equals torch's float8 casts; NF4 equals bitsandbytes' codebook and quantizer.
(Importing compressed-tensors and bitsandbytes takes most of this file's ~10 s.)"""

import pytest
import torch

from llmlab.quant.formats import (
    FP8_FORMATS,
    check_group_size,
    dequantize,
    dequantize_fp8,
    dequantize_nf4,
    fake_quantize,
    float_grid_round,
    fp8_round,
    int_range,
    nf4_codebook,
    quantize,
    quantize_fp8,
    quantize_nf4,
    relative_error,
    sqnr_db,
)

# bitsandbytes' NF4 table (functional.py, `get_4bit_type("nf4")`), as printed by bitsandbytes 0.4x
BNB_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
           -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
           0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size, axis", [(None, -1), (4, -1), (None, 0), (3, 0), (None, None)])
def test_round_trip_is_within_half_a_step_and_codes_stay_on_the_grid(symmetric, bits, group_size, axis):
    torch.manual_seed(0)
    W = torch.randn(6, 8)  # a Linear(8, 6) weight
    Q, s, z = quantize(W, bits, group_size, symmetric, axis)
    q_min, q_max = int_range(bits, symmetric)
    assert Q.shape == W.shape and Q.dtype == (torch.int8 if symmetric else torch.uint8)
    assert q_min <= Q.min().item() and Q.max().item() <= q_max
    W_hat = dequantize(Q, s, z, axis)
    step = s.max().item()
    # min-max grids cover every value; the symmetric grid's top code is q_max = 2^(k-1) - 1 while max|W| sits at
    # q_max + 1/2 steps: that value is clipped by exactly half a step, so half a step is the bound everywhere
    assert (W - W_hat).abs().max().item() <= step / 2 + 1e-6
    assert torch.equal(fake_quantize(W, bits, group_size, symmetric, axis), W_hat)


def test_scale_shapes_follow_the_granularity():
    W = torch.randn(6, 8)
    assert quantize(W, 4)[1].shape == (6, 1)  # per output row
    assert quantize(W, 4, group_size=4)[1].shape == (6, 2)  # per row and group of 4 columns
    assert quantize(W, 4, axis=0)[1].shape == (1, 8)  # per column (e.g. activations per channel)
    assert quantize(W, 4, axis=None)[1].shape == ()  # per tensor


def test_symmetric_int4_grid_is_gptqs_and_compressed_tensors_grid():
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization import fake_quantize as ct_fake_quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    torch.manual_seed(0)
    W = torch.randn(16, 128)
    Q, s, z = quantize(W, 4, group_size=64)
    assert torch.allclose(s, W.view(16, 2, 64).abs().amax(-1) / 7.5)  # max|W| / ((q_max - q_min) / 2)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=64)
    groups = W.view(16, 2, 64)  # [out, in] -> [out, n_groups, group_size]
    ct_scale, ct_zero = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
    torch.testing.assert_close(s, ct_scale)
    torch.testing.assert_close(fake_quantize(W, 4, 64), ct_fake_quantize(W, ct_scale, ct_zero, args))


def test_asymmetric_grid_represents_zero_exactly_and_an_all_zero_group_stays_zero():
    W = torch.tensor([[0.0, 0.3, 0.7, 1.0], [0.0, 0.0, 0.0, 0.0]])
    W_hat = fake_quantize(W, 3, symmetric=False)
    assert W_hat[:, 0].tolist() == [0.0, 0.0] and W_hat[1].abs().sum() == 0
    assert W_hat[0, 3] == 1.0  # the max is on an unsigned min-max grid


def test_more_bits_give_about_six_db_each():
    torch.manual_seed(0)
    W = torch.randn(64, 256)
    gain = sqnr_db(W, fake_quantize(W, 8)) - sqnr_db(W, fake_quantize(W, 4))
    assert 22 < gain < 27, gain  # 4 bits x 6.02 dB = 24.1; observed 24.6
    assert relative_error(W, fake_quantize(W, 4, 32)) < relative_error(W, fake_quantize(W, 4))  # groups help


def test_refusals_say_what_to_do():
    with pytest.raises(ValueError, match=r"int4 needs group_size dividing 576; try 32, 64, 96 or 192"):
        quantize(torch.randn(4, 576), 4, group_size=128)
    check_group_size(1536, 128, 4)  # divides: accepted
    for bits in (1, 9, 16):
        with pytest.raises(ValueError, match="not supported; choose one of 2, 3"):
            quantize(torch.randn(4, 8), bits)
    with pytest.raises(ValueError, match="positive integer or None"):
        quantize(torch.randn(4, 8), 4, group_size=0)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_rounding_from_scratch_equals_torch_float8_cast(fmt):
    dtype, exponent_bits, mantissa_bits, max_value = FP8_FORMATS[fmt]
    torch.manual_seed(0)
    magnitudes = torch.exp2(torch.randint(-24, 18, (20000,)).float())  # subnormals, normals, overflow
    values = torch.randn(20000) * magnitudes
    every_fp8 = torch.arange(256, dtype=torch.uint8).view(dtype).float()  # all 256 bit patterns
    every_fp8 = every_fp8[every_fp8.isfinite()].unique()
    ties = (every_fp8[1:] + every_fp8[:-1]) / 2  # exact midpoints: ties go to the even mantissa
    for X in (values, ties, every_fp8):
        assert torch.equal(float_grid_round(X, exponent_bits, mantissa_bits, max_value), fp8_round(X, fmt))
    assert fp8_round(torch.tensor([1e6, -1e6]), fmt).abs().tolist() == [max_value, max_value]  # saturates


def test_fp8_scaled_quantization_round_trip():
    torch.manual_seed(0)
    W = torch.randn(32, 64)
    Q, s = quantize_fp8(W, "e4m3")
    assert Q.dtype == torch.float8_e4m3fn and Q.float().abs().max() == 448  # absmax lands on the largest value
    assert relative_error(W, dequantize_fp8(Q, s)) < 0.04  # 3 mantissa bits: observed 0.028
    Q, s = quantize_fp8(W, "e4m3", axis=1)
    assert s.shape == (32, 1)
    with pytest.raises(ValueError, match="e4m3"):
        fp8_round(W, "e3m4")


def test_nf4_codebook_is_qloras_normal_quantiles():
    code = nf4_codebook()
    torch.testing.assert_close(code, torch.tensor(BNB_NF4), atol=1e-6, rtol=0)
    assert code[7] == 0 and len(code) == 16 and (code[8:] > 0).all()  # exact zero, 8 positive, 7 negative


def test_nf4_round_trip_matches_bitsandbytes():
    torch.manual_seed(0)
    W = torch.randn(8, 128)
    indices, absmax = quantize_nf4(W, block_size=64)
    W_hat = dequantize_nf4(indices, absmax)
    assert indices.max() <= 15 and absmax.shape == (16,)
    assert relative_error(W, W_hat) < 0.12  # observed 0.092
    try:
        import bitsandbytes.functional as bnb
        packed, state = bnb.quantize_4bit(W, blocksize=64, quant_type="nf4")
        reference = bnb.dequantize_4bit(packed, state)
    except Exception as error:  # bitsandbytes absent or without a CPU backend
        pytest.skip(f"bitsandbytes NF4 on CPU unavailable: {error}")
    torch.testing.assert_close(W_hat, reference)
