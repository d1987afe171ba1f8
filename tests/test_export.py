"""Export: integer codes and scales come back exactly from fake-quantized weights; the compressed-tensors folder is
the one llm-compressor's own save_pretrained writes, and transformers reloads it to the same logits; the AutoAWQ GEMM
layout reads back through compressed-tensors' AutoAWQ converter and our unpacker; refusals say what to do."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from llmlab.quant.driver import GPTQConfig, gptq_quantize_model, rtn_quantize_model
from llmlab.quant.export import (AWQ_ZERO_POINT, compare_logits, compressed_tensors_config, dequantize_awq_gemm,
                                 export_awq_gemm, export_compressed_tensors, grid_codes, load_exported,
                                 quantized_linears, window_logits)
from llmlab.quant.formats import quantize
from llmlab.quant.gptq import gptq
from llmlab.quant.packing import pack_int4
from llmlab.quant.rtn import rtn
from tiny_models import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(0))  # tiny_llama's vocabulary is 128


def rtn_tiny(bits: int = 4, group_size: int | None = 32):
    model = tiny_llama()
    return model, rtn_quantize_model(model, bits, group_size, progress=False)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


# ---------------------------------------------------------------- codes and scales


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [None, 32])
def test_grid_codes_are_rtns_codes_and_scales(bits, group_size):
    W = torch.randn(48, 64, generator=torch.Generator().manual_seed(bits))
    Q_true, s_true, _ = quantize(W, bits, group_size)  # [48, 64], [48, n_groups]
    Q, s = grid_codes(rtn(W, bits, group_size), bits, group_size)
    assert torch.equal(Q, Q_true)  # observed: identical codes at every bit width
    assert torch.equal(s, s_true)  # and identical scales (a ±1 code in every group: s is that weight's value)


def test_grid_codes_reproduce_gptqs_floats_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(256, 64, generator=generator) @ (torch.eye(64) + torch.randn(64, 64, generator=generator) / 8)
    W = torch.randn(40, 64, generator=generator)
    result = gptq(W, 2 * X.T @ X / 256, bits=4, group_size=16)
    Q, s = grid_codes(result.Q, 4, 16)
    assert torch.equal(s.repeat_interleave(16, dim=1) * Q.float(), result.Q)  # s · Q, the quantizer's own product
    assert torch.equal(s, result.scale)  # observed: GPTQ's scales, every group


def test_a_group_without_a_code_one_is_still_exact():
    s_true = torch.tensor(0.0123)
    Q_true = torch.tensor([[0, 2, -3, 5, -7, 3, -8, 6] * 2])  # [1, 16]: smallest nonzero code is 2
    W = s_true * Q_true.float()
    Q, s = grid_codes(W, 4, 16)
    assert torch.equal(s * Q.float(), W)
    assert torch.equal(Q.long(), Q_true) and s.item() == s_true.item()  # observed: the true pair is found


def test_grid_codes_refuse_weights_off_the_grid():
    W = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="not on a symmetric int4 grid"):
        grid_codes(W, 4, 32)  # never quantized
    with pytest.raises(ValueError, match="not on a symmetric int4 grid"):
        grid_codes(rtn(W + 3, 4, 32, symmetric=False), 4, 32)  # asymmetric: codes 0..15 around a zero point
    with pytest.raises(ValueError, match="not on a symmetric int3 grid"):
        grid_codes(rtn(W, 4, 32), 3, 32)  # quantized, but at 4 bits
    with pytest.raises(ValueError, match="group_size dividing 32; try 8 or 16"):
        grid_codes(W, 4, 48)


# ---------------------------------------------------------------- compressed-tensors


@pytest.mark.slow
def test_compressed_tensors_folder_equals_llmcompressors_own_save(tmp_path):
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")  # loguru writes to stdout otherwise
    from compressed_tensors.quantization import QuantizationStatus, apply_quantization_config
    from llmcompressor.transformers.compression.compressed_tensors_utils import modify_save_pretrained

    model, report = rtn_tiny()
    export_compressed_tensors(model, None, report, tmp_path / "ours")
    # llm-compressor's own save: a model carrying the scheme and its scales (as after oneshot), through the
    # save_pretrained wrapper oneshot installs (compress in place, save_pretrained, write quantization_config)
    theirs = tiny_llama()
    theirs.load_state_dict(model.state_dict())
    config = compressed_tensors_config(model, report)
    config.quantization_status = QuantizationStatus.FROZEN  # where calibration leaves it
    apply_quantization_config(theirs, config)
    with torch.no_grad():
        for name in report.quantized:
            linear = theirs.get_submodule(name)
            linear.weight_scale.copy_(grid_codes(linear.weight, 4, 32)[1])
    modify_save_pretrained(theirs)
    theirs.save_pretrained(tmp_path / "theirs")

    ours_tensors = load_file(tmp_path / "ours" / "model.safetensors")
    theirs_tensors = load_file(tmp_path / "theirs" / "model.safetensors")
    assert sorted(ours_tensors) == sorted(theirs_tensors)
    for name, tensor in ours_tensors.items():
        assert tensor.dtype == theirs_tensors[name].dtype and torch.equal(tensor, theirs_tensors[name]), name
    ours_config, theirs_config = (json.loads((tmp_path / side / "config.json").read_text())
                                  for side in ("ours", "theirs"))
    assert ours_config == theirs_config  # observed: identical, quantization_config included
    quantization = ours_config["quantization_config"]
    assert quantization["format"] == "pack-quantized" and quantization["ignore"] == ["lm_head"]
    assert quantization["config_groups"]["group_0"]["weights"]["group_size"] == 32
    name = "model.layers.0.self_attn.q_proj"
    assert torch.equal(ours_tensors[f"{name}.weight_packed"],
                       pack_int4(grid_codes(dict(model.named_modules())[name].weight, 4, 32)[0]))
    assert f"{name}.weight_zero_point" not in ours_tensors  # symmetric: no zero point stored


@pytest.mark.parametrize("bits, group_size", [(4, 32), (3, None), (8, 16)])
def test_transformers_reloads_compressed_tensors_to_the_same_logits(tmp_path, bits, group_size):
    model, report = rtn_tiny(bits, group_size)
    folder = export_compressed_tensors(model, None, report, tmp_path)
    reloaded = load_exported(folder)
    assert reloaded.model.layers[0].mlp.up_proj.quantization_scheme.weights.num_bits == bits  # through transformers'
    #                                                    compressed-tensors integration, which decompressed the weights
    assert torch.equal(logits(model), logits(reloaded))  # observed: bit-identical logits (exact codes, float32 scales)


def test_gptq_model_exports_exactly(tmp_path):
    model = tiny_llama()
    report = gptq_quantize_model(model, torch.randint(0, 128, (4, 64), generator=torch.Generator().manual_seed(1)),
                                 GPTQConfig(4, 32, act_order=True), progress=False)
    reloaded = load_exported(export_compressed_tensors(model, None, report, tmp_path))
    assert torch.equal(logits(model), logits(reloaded))


def test_float16_export_rounds_only_the_scales_and_the_other_tensors(tmp_path):
    model, report = rtn_tiny()
    folder = export_compressed_tensors(model, None, report, tmp_path, dtype=torch.float16)
    tensors = load_file(folder / "model.safetensors")
    assert tensors["model.layers.0.mlp.down_proj.weight_scale"].dtype == torch.float16
    assert tensors["model.embed_tokens.weight"].dtype == torch.float16
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float16"
    difference = (logits(model) - logits(load_exported(folder))).abs().max().item()
    assert difference < 1e-2, difference  # observed 2.3e-4 on logits up to 0.62 (float16 rounds at 2^-11)


# ---------------------------------------------------------------- AutoAWQ GEMM


def test_awq_gemm_layout_reads_back_through_compressed_tensors_converter(tmp_path):
    from compressed_tensors.entrypoints.convert.converters.autoawq import AutoAWQConverter

    model, report = rtn_tiny()
    folder = export_awq_gemm(model, None, report, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True,
                                             "version": "gemm", "modules_to_not_convert": None}
    assert config["dtype"] == "float16"
    tensors = load_file(folder / "model.safetensors")
    name = "model.layers.1.mlp.down_proj"  # [64, 128]: in 128, out 64
    assert tensors[f"{name}.qweight"].shape == (128, 8) and tensors[f"{name}.qweight"].dtype == torch.int32
    assert tensors[f"{name}.qzeros"].shape == (4, 8) and tensors[f"{name}.scales"].shape == (4, 64)
    assert tensors[f"{name}.scales"].dtype == torch.float16 and tensors["lm_head.weight"].dtype == torch.float16
    Q, s = grid_codes(dict(model.named_modules())[name].weight, 4, 32)
    converter = AutoAWQConverter(group_size=32)  # their reading of an AutoAWQ checkpoint, to compressed-tensors' signs
    codes, scales, zeros = converter._convert_gemm_module(tensors[f"{name}.qweight"], tensors[f"{name}.scales"],
                                                          tensors[f"{name}.qzeros"])
    assert torch.equal(codes, Q)  # q − 8 = Q: the signed codes come back
    assert torch.equal(zeros, torch.zeros_like(zeros))  # zero point 8 − 8 = 0: our grid is symmetric
    assert torch.equal(scales, s.half())
    W = dequantize_awq_gemm(tensors[f"{name}.qweight"], tensors[f"{name}.qzeros"], tensors[f"{name}.scales"])
    assert torch.equal(W, s.half().float().repeat_interleave(32, dim=1) * Q.float())  # (q − z) · s, z = 8


def test_awq_gemm_reloads_close_to_the_fake_quantized_model(tmp_path):
    model, report = rtn_tiny()
    reloaded = load_exported(export_awq_gemm(model, None, report, tmp_path))
    difference = (logits(model) - logits(reloaded)).abs().max().item()
    assert difference < 1e-2, difference  # observed 2.3e-4: scales and unquantized tensors in float16


def test_awq_zero_point_is_exact_for_the_symmetric_grid():
    assert AWQ_ZERO_POINT == 8  # Q ∈ [−8, 7] ↦ q = Q + 8 ∈ [0, 15]: AWQ's whole unsigned range, q − 8 = Q exactly


# ---------------------------------------------------------------- refusals


def test_refusals_say_what_to_do(tmp_path):
    model, report = rtn_tiny(3, 32)
    with pytest.raises(ValueError, match="4-bit weights only.*export_compressed_tensors"):
        export_awq_gemm(model, None, report, tmp_path)
    model, report = rtn_tiny(4, None)
    with pytest.raises(ValueError, match="needs a group size"):
        export_awq_gemm(model, None, report, tmp_path)
    model, report = rtn_tiny()
    report.group_size = 48
    with pytest.raises(ValueError, match=r"int4 needs group_size dividing 64 \(the in_features of model.layers.0"):
        export_compressed_tensors(model, None, report, tmp_path)
    _, report = rtn_tiny()
    with pytest.raises(ValueError, match="not on a symmetric int4 grid.*was this model quantized"):
        export_compressed_tensors(tiny_llama(seed=1), None, report, tmp_path)  # a model never quantized
    reloaded = load_exported(export_compressed_tensors(model, None, report, tmp_path / "ct"))
    with pytest.raises(ValueError, match="loaded from a quantized checkpoint"):
        export_compressed_tensors(reloaded, None, report, tmp_path / "again")
    report.quantized = []
    with pytest.raises(ValueError, match="quantize the model first"):
        export_compressed_tensors(model, None, report, tmp_path)
    with pytest.raises(ValueError, match="no config.json"):
        load_exported(tmp_path / "nothing")
    model.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="quant_method None"):
        load_exported(tmp_path / "plain")


# ---------------------------------------------------------------- the embedded model


@pytest.mark.slow
def test_embedded_model_exports_and_reloads(embedded, tmp_path):
    from llmlab.data import evaluation_ids
    from llmlab.evaluate import packed_weight_bytes
    from llmlab.zoo import load_model

    model, tokenizer, _ = load_model()  # a fresh copy: the session's `embedded` model stays unquantized
    report = rtn_quantize_model(model, 4, 64, progress=False)
    ids = evaluation_ids(tokenizer, 256)
    reference = window_logits(model, ids)  # [1, 256, 49152]
    exact = compare_logits(reference, window_logits(
        load_exported(export_compressed_tensors(model, tokenizer, report, tmp_path / "ct")), ids))
    assert exact.max_abs_difference == 0.0 and exact.tokens == 256  # observed 0.0 (logits up to 41.9): lossless
    awq_folder = export_awq_gemm(model, tokenizer, report, tmp_path / "awq")
    reloaded = load_exported(awq_folder)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()  # stored once, tied
    close = compare_logits(reference, window_logits(reloaded, ids))
    assert close.max_abs_difference < 0.2 and close.top1_agreement > 0.99, close  # observed 0.048 and 1.0
    expected = packed_weight_bytes(model, report.quantized, 4, 64, scale_bytes=2)  # 4-bit codes, fp16 scales and rest
    zero_bytes = sum(lin.weight.numel() // 64 // 2 for lin in quantized_linears(model, report).values())  # 4 bits/group
    on_disk = (awq_folder / "model.safetensors").stat().st_size
    assert abs(on_disk - expected - zero_bytes) < 0.001 * on_disk, (on_disk, expected)  # observed: header only
    assert (tmp_path / "ct" / "tokenizer.json").is_file() and (awq_folder / "tokenizer.json").is_file()
