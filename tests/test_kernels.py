"""Real low-precision kernels (llmlab.quant.kernels) against fake quantization: same numbers, stored compactly."""

import pytest
import torch

from llmlab.quant.kernels import (FP8Linear, Int4Linear, Int8Linear, benchmark_gemm, convert_model, kernel_available,
                                  real_linear)
from llmlab.quant.rtn import rtn
from llmlab.quant.w8a8 import W8A8Linear


def _linear(in_features=256, out_features=96, bias=True, seed=0):
    torch.manual_seed(seed)
    linear = torch.nn.Linear(in_features, out_features, bias=bias)
    return linear


def _relative(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_int8_gemm_equals_fake_quant_w8a8():
    linear = _linear()
    X = torch.randn(3, 5, 256)
    fake = W8A8Linear.from_linear(linear, "per-token", "int8")(X)
    real = Int8Linear.from_linear(linear)(X)
    error = _relative(real, fake)
    assert real.shape == (3, 5, 96)
    assert error < 1e-5, error  # observed 8e-8: integer GEMM + scales = fake-quant in float32 up to rounding


def test_fp8_gemm_equals_fake_quant_w8a8():
    linear = _linear().to(torch.bfloat16)
    X = torch.randn(7, 256, dtype=torch.bfloat16)
    fake = W8A8Linear.from_linear(linear.float(), "per-token", "fp8")(X.float())
    real = FP8Linear.from_linear(linear)(X)
    error = _relative(real, fake)
    assert error < 1e-2, error  # observed 0.0026: bf16 output rounding; both use the same e4m3 codes


def test_int4_gemm_equals_rtn_grid():
    linear = _linear(bias=False)
    X = torch.randn(4, 256, dtype=torch.bfloat16)
    W_hat = rtn(linear.weight.detach(), 4, 64, symmetric=True)  # the grid the course's RTN uses
    expected = X.float() @ W_hat.t()
    real = Int4Linear.from_linear(linear, group_size=64)(X)
    error = _relative(real, expected)
    assert error < 1e-2, error  # observed 0.0023: bf16 scales and bf16 accumulation output


def test_int4_weight_bytes_are_half_a_byte_plus_scales():
    module = Int4Linear.from_linear(_linear(bias=False), group_size=64)
    expected = 96 * 256 // 2 + 96 * (256 // 64) * 2
    assert module.weight_bytes() == expected, (module.weight_bytes(), expected)


def test_int4_refuses_group_sizes_the_kernel_lacks():
    with pytest.raises(ValueError, match="group sizes"):
        Int4Linear.from_linear(_linear(), group_size=96)
    with pytest.raises(ValueError, match="try"):  # 576 = hidden size of the embedded model, 128 does not divide it
        Int4Linear.from_linear(_linear(in_features=576), group_size=128)


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="choose one of"):
        real_linear(_linear(), "int3")


def test_cpu_kernels_are_available_with_a_warning_about_speed():
    ok, reason = kernel_available("fp8", "cpu")
    assert ok and "say nothing" in reason, reason


def test_convert_model_matches_fake_quant_model_and_generates():
    import copy

    from tiny_models import tiny_llama

    from llmlab.quant.driver import rtn_quantize_model
    from llmlab.quant.w8a8 import quantize_model_w8a8

    ids = torch.tensor([[1, 2, 3, 4]])
    for kernel, fake_quantize_model in (("int8", lambda m: quantize_model_w8a8(m, "per-token", "int8")),
                                        ("int4", lambda m: rtn_quantize_model(m, 4, 32, progress=False))):
        model = tiny_llama()  # hidden 64, intermediate 128, 2 layers
        fake = copy.deepcopy(model)
        fake_quantize_model(fake)
        expected = fake.to(torch.bfloat16)(ids).logits.float()  # the same grid values, run in bf16
        model.to(torch.bfloat16)
        names = convert_model(model, kernel, group_size=32)
        observed = model(ids).logits.float()
        assert len(names) == 7 * model.config.num_hidden_layers, names
        error = _relative(observed, expected)
        assert error < 0.08, (kernel, error)  # observed 0.015 (int8), 0.038 (int4); one layer alone: 0.003
        assert model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False).shape == (1, 7)


def test_benchmark_gemm_reports_consistent_figures_on_cpu():
    timing = benchmark_gemm("int8", 32, 64, 128, device="cpu", repeats=3)
    assert timing.ms > 0 and timing.weight_bytes == 64 * 128 + 2 * 64, timing
    assert timing.tflops == pytest.approx(2 * 32 * 64 * 128 / (timing.ms / 1e3) / 1e12), timing


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the H100 run stores these figures)")
def test_cuda_kernels_match_fake_quant():
    linear = _linear(in_features=512, out_features=256).cuda()
    X = torch.randn(1, 512, device="cuda", dtype=torch.bfloat16)  # M = 1: decode, the padded _int_mm path
    for kernel in ("int8", "int4") + (("fp8",) if kernel_available("fp8", "cuda")[0] else ()):
        reference = W8A8Linear.from_linear(linear, "per-token", "int8")(X.float()) if kernel == "int8" else \
            X.float() @ rtn(linear.weight.detach(), 4, 128).t() + linear.bias if kernel == "int4" else \
            W8A8Linear.from_linear(linear, "per-token", "fp8")(X.float())
        assert _relative(real_linear(linear, kernel)(X), reference) < 1e-2, kernel


def test_speedups_sum_a_layer_and_divide():
    from llmlab.quant.kernels import speedups

    rows = [{"model": "m", "linear": "a", "M": 1, "kernel": "bf16", "ms": 2.0},
            {"model": "m", "linear": "b", "M": 1, "kernel": "bf16", "ms": 4.0},
            {"model": "m", "linear": "a", "M": 1, "kernel": "int4", "ms": 1.0},
            {"model": "m", "linear": "b", "M": 1, "kernel": "int4", "ms": 1.0}]
    assert speedups(rows, "m") == {"int4": {1: 3.0}}  # (2 + 4) / (1 + 1)
    with pytest.raises(LookupError, match="stored models"):
        speedups(rows, "other")


def test_stored_h100_gemms_show_what_the_chapters_teach():
    from llmlab.quant.kernels import speedups
    from llmlab.results import load_result

    stored = load_result("quant-gemm-h100")
    seventy = speedups(stored["measurements"]["rows"], "llama-3.1-70b")
    assert seventy["int4"][1] > 2.0, seventy["int4"]  # observed 2.7x at M = 1: a quarter of the bytes
    assert seventy["int4"][256] < 1.0, seventy["int4"]  # observed 0.05x: torch's int4 kernel is a decode kernel
    assert seventy["fp8"][4096] > 1.4, seventy["fp8"]  # observed 1.73x: FP8 tensor cores, compute-bound prefill
