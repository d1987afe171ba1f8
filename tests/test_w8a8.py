"""W8A8 fake quantization: INT8 / FP8 weights per channel, activations per token or per tensor, on the whole model."""

import copy

import pytest
import torch

from llmlab.quant.formats import fp8_round
from llmlab.quant.w8a8 import (W8A8Linear, method_name_w8a8, quantize_activation, quantize_model_w8a8,
                               quantize_weight)
from tiny_models import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


def test_int8_weights_use_one_grid_per_output_row():
    torch.manual_seed(0)
    W = torch.randn(6, 8)
    W[2] *= 100  # a row 100x larger must not coarsen the others' grids
    W_hat = quantize_weight(W, "int8")
    step = W.abs().amax(dim=1, keepdim=True) / 127.5  # [6, 1]: s per row (signed grid [-128, 127])
    assert torch.all((W - W_hat).abs() <= step / 2 + 1e-6)
    codes = W_hat / step
    torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)  # every weight sits on its row's grid


def test_fp8_weights_are_e4m3_values_after_the_row_scale():
    torch.manual_seed(0)
    W = torch.randn(6, 8)
    W_hat = quantize_weight(W, "fp8")
    s = W.abs().amax(dim=1, keepdim=True) / 448  # the row's absmax lands on e4m3's largest value
    torch.testing.assert_close(fp8_round(W_hat / s), W_hat / s)
    assert (W - W_hat).abs().max() / W.abs().max() < 2**-4  # 3 mantissa bits: half a step ≤ 2^-4; observed 0.025


def test_per_token_scales_isolate_an_outlier_token():
    torch.manual_seed(0)
    X = torch.randn(4, 16)
    X[0, 3] = 500.0  # one huge activation in token 0
    per_token = quantize_activation(X, "per-token")
    per_tensor = quantize_activation(X, "per-tensor")
    error_per_token = (per_token[1:] - X[1:]).abs().mean()  # the other tokens
    error_per_tensor = (per_tensor[1:] - X[1:]).abs().mean()
    assert error_per_token * 50 < error_per_tensor  # observed 0.0052 vs 0.78 (per tensor rounds most to 0)


def test_w8a8_linear_is_close_to_the_float_linear_and_keeps_its_parameter_names():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    X = torch.randn(5, 7, 64)  # [batch, seq, in]
    for fmt, tolerance in (("int8", 0.01), ("fp8", 0.05)):
        module = W8A8Linear.from_linear(linear, "per-token", fmt)
        Y, Y_hat = linear(X), module(X)
        error = ((Y_hat - Y).norm() / Y.norm()).item()
        assert error < tolerance, (fmt, error)  # observed 0.0074 (int8), 0.036 (fp8)
        assert set(module.state_dict()) == set(linear.state_dict()) == {"weight", "bias"}
        assert "per-token" in repr(module)


def test_quantize_model_replaces_every_decoder_linear_and_keeps_lm_head():
    model = tiny_llama()
    ids = torch.randint(0, 128, (2, 16))
    reference = model(ids).logits
    report = quantize_model_w8a8(model, "per-token", "int8")
    assert len(report.quantized) == 2 * 7 and report.method == "w8a8-per-token"
    assert isinstance(model.model.layers[1].mlp.down_proj, W8A8Linear)
    assert type(model.lm_head) is torch.nn.Linear
    logits = model(ids).logits
    assert ((logits - reference).norm() / reference.norm()).item() < 0.03  # observed 0.009


def test_names_and_refusals():
    assert method_name_w8a8("per-tensor", "int8") == "w8a8-naive"
    assert method_name_w8a8("per-token", "fp8") == "fp8-w8a8"
    with pytest.raises(ValueError, match="per-token"):
        quantize_activation(torch.ones(2, 2), "per-channel")
    with pytest.raises(ValueError, match="int8"):
        quantize_weight(torch.ones(2, 2), "int4")


@pytest.mark.slow
def test_fp8_w8a8_stays_close_to_the_baseline_on_the_embedded_model(embedded):
    from llmlab.data import evaluation_ids
    from llmlab.evaluate import perplexity

    model, tokenizer, _ = embedded
    ids = evaluation_ids(tokenizer, 2048)  # windows of 512
    ppl_baseline = perplexity(model, ids, 512)
    quantized = copy.deepcopy(model)
    quantize_model_w8a8(quantized, "per-token", "fp8")
    ppl_fp8 = perplexity(quantized, ids, 512)
    assert ppl_fp8 < 1.05 * ppl_baseline, (ppl_fp8, ppl_baseline)  # observed 14.23 vs 13.74 (1.035), 2026-11
