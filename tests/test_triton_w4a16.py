"""The Triton W4A16 kernel (llmlab.quant.triton_w4a16) run by triton's CPU interpreter: the numbers of
dequantize-then-matmul on random inputs, with zero points, with every autotune config and on the tensors our
compressed-tensors export writes; the W4A16Linear module in a model; refusals that say what to do. GPU timings live
in benchmarks/gpu_w4a16.py."""

import os

_PREVIOUS = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"  # before triton is first imported, and while its kernels run: the interpreter

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton", reason="the w4a16 kernel is written in Triton: pip install triton (Linux)")

from llmlab.quant import triton_w4a16 as w4a16  # noqa: E402
from llmlab.quant.packing import pack_int4  # noqa: E402

# False in a whole-suite session: an earlier module imported triton (torch._dynamo does, through transformers) before
# TRITON_INTERPRET was set, so its library functions (tl.sum…) are compiled ones; test_in_a_fresh_process runs this file
INTERPRETED = w4a16.interpreting()


def _restore_environment():  # the notebooks executed later in the session inherit it: leave it as found
    if _PREVIOUS is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _PREVIOUS


if not INTERPRETED:
    _restore_environment()

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def interpreter_environment():
    yield
    _restore_environment()


@pytest.fixture(autouse=True)
def interpreted(request):
    if not INTERPRETED and request.node.name != "test_in_a_fresh_process":
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set: test_in_a_fresh_process runs this test")


def test_in_a_fresh_process():
    if INTERPRETED:
        pytest.skip("triton's interpreter runs in this process: the other tests of this file ran here")
    result = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q"],
                            env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=Path(__file__).parents[1],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]  # observed: 27 passed, 1 skipped in 12 to 20 s


def random_layer(N: int, K: int, group_size: int, dtype=torch.float16, seed: int = 0, zeros: bool = False):
    """(packed int32 [N, K/8], scales [N, K/g], zeros int8 [N, K/g] or None) of a random 4-bit layer."""
    generator = torch.Generator().manual_seed(seed)
    Q = torch.randint(-8, 8, (N, K), generator=generator)
    scales = (torch.rand(N, K // group_size, generator=generator) * 0.02 + 0.005).to(dtype)
    z = torch.randint(-3, 4, (N, K // group_size), generator=generator).to(torch.int8) if zeros else None
    return pack_int4(Q), scales, z


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    """max |y − reference| / max |reference|: the error against the output's scale."""
    return ((y.float() - reference.float()).abs().max() / reference.float().abs().max()).item()


def x_of(M: int, K: int, dtype=torch.float16, seed: int = 1) -> torch.Tensor:
    return torch.randn(M, K, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ---------------------------------------------------------------- the numbers


@pytest.mark.parametrize("M", [1, 3, 16, 33])
@pytest.mark.parametrize("N, K, group_size", [(48, 256, 64), (40, 384, 128), (64, 128, 32)])
def test_kernel_equals_dequantize_then_matmul(M, N, K, group_size):
    packed, scales, _ = random_layer(N, K, group_size)
    x = x_of(M, K)
    reference = w4a16.dequantize_then_matmul(x, packed, scales, None, group_size)
    y = w4a16.w4a16_matmul(x, packed, scales, None, group_size)  # M = 1: the GEMV, else tensor cores
    assert y.shape == (M, N) and y.dtype == torch.float16, (y.shape, y.dtype)
    assert relative_error(y, reference) < 2e-3, relative_error(y, reference)  # observed ≤ 7.1e-4: fp16 rounding


@pytest.mark.parametrize("kernel", ["gemv", "dot"])
def test_both_kernels_at_small_m_and_in_bf16(kernel):
    packed, scales, _ = random_layer(40, 256, 128, dtype=torch.bfloat16)
    x = x_of(3, 256, torch.bfloat16)
    y = w4a16.w4a16_matmul(x, packed, scales, None, 128, kernel=kernel)
    error = relative_error(y, w4a16.dequantize_then_matmul(x, packed, scales, None, 128))
    assert error < 2e-2, error  # observed 8.4e-3 (dot), 4.2e-3 (gemv): the interpreter rounds to bf16 by truncation


def test_every_autotune_config_and_split_k_give_the_same_numbers():
    packed, scales, _ = random_layer(40, 384, 128)  # 3 K tiles: SPLIT_K = 4 and 8 leave some slices empty
    errors = {}
    for M, kernel, configs in ((1, "gemv", w4a16.GEMV_CONFIGS), (5, "dot", w4a16.DECODE_CONFIGS),
                               (40, "dot", w4a16.MID_CONFIGS), (70, "dot", w4a16.LARGE_CONFIGS)):
        x = x_of(M, 384)
        reference = w4a16.dequantize_then_matmul(x, packed, scales, None, 128)
        for config in configs:
            y = w4a16.w4a16_matmul(x, packed, scales, None, 128, kernel=kernel, config=config)
            errors[kernel, M, str(config)] = relative_error(y, reference)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 2e-3, (worst, errors[worst])  # observed ≤ 4.4e-4 over 28 configs, SPLIT_K 1 to 8


def test_the_autotuner_times_split_k_with_its_second_pass(monkeypatch):
    """The GPU path (autotuner, pruning, post-hook, the winner's reduction) with the interpreter and a fake clock that
    makes the last config benchmarked the fastest: the last of GEMV_CONFIGS and DECODE_CONFIGS, fitted to K."""
    packed, scales, _ = random_layer(56, 256, 128)  # a shape no other test tunes: fresh autotuner keys
    monkeypatch.setattr(w4a16, "interpreting", lambda: False)  # take the autotuned path
    reductions = []
    sum_partials = w4a16._sum_partials
    monkeypatch.setattr(w4a16, "_sum_partials", lambda *a: [reductions.append(a[-1]), sum_partials(*a)])
    for M, kernel, configs in ((1, "gemv", w4a16.GEMV_CONFIGS), (5, "dot", w4a16.DECODE_CONFIGS)):
        timings = iter(range(100, 0, -1))
        monkeypatch.setitem(vars(w4a16._TUNED[kernel]), "do_bench",  # shadows the autotuner's GPU benchmarker
                            lambda call, quantiles: [call(), next(timings)][1:] * 3)
        reductions.clear()
        x = x_of(M, 256)
        y = w4a16.w4a16_matmul(x, packed, scales, None, 128)
        winner = w4a16.last_config(kernel)
        timed = w4a16._prune(configs, {"M": M, "GROUP_SIZE": 128, "K": 256})  # fitted: K tiles of ≤ 256 columns
        assert {k: winner[k] for k in timed[-1].kwargs} == timed[-1].kwargs, (winner, timed[-1])
        splits = [c.kwargs["SPLIT_K"] for c in timed if c.kwargs["SPLIT_K"] > 1]
        expected = splits + ([splits[-1]] if timed[-1].kwargs["SPLIT_K"] > 1 else [])
        assert reductions == expected, (reductions, expected)  # each split config timed with its pass, then the call
        error = relative_error(y, w4a16.dequantize_then_matmul(x, packed, scales, None, 128))
        assert error < 2e-3, (kernel, error)  # observed 6.7e-4 (gemv), 0 (dot): partials summed


def test_a_tuned_shape_is_launched_without_the_autotuner(monkeypatch):
    """After the first call at a key, w4a16_matmul launches the autotuner's pick itself (the autotuner's own lookup
    costs 16-22 µs of host time per call on the H100's host): a second call never enters the autotuner."""
    packed, scales, _ = random_layer(40, 256, 128)  # a shape no other test tunes
    monkeypatch.setattr(w4a16, "interpreting", lambda: False)  # take the autotuned path
    for M, kernel in ((1, "gemv"), (3, "dot")):
        monkeypatch.setitem(vars(w4a16._TUNED[kernel]), "do_bench", lambda call, quantiles: [call(), 1.0][1:] * 3)
        x = x_of(M, 256)
        first = w4a16.w4a16_matmul(x, packed, scales, None, 128)
        chosen = w4a16.last_config(kernel)

        def refuse(*args, **kwargs):
            raise AssertionError("the autotuner ran again for a key it had tuned")

        monkeypatch.setattr(w4a16._TUNED[kernel], "run", refuse)
        second = w4a16.w4a16_matmul(x, packed, scales, None, 128)
        assert torch.equal(first, second), relative_error(second, first)
        assert w4a16.last_config(kernel) == chosen, (w4a16.last_config(kernel), chosen)


def test_zero_points_shift_every_code_of_their_group():
    packed, scales, zeros = random_layer(40, 256, 64, zeros=True)
    W = w4a16.dequantize(packed, scales, zeros, 64)
    Q = W / scales.float().repeat_interleave(64, dim=1) + zeros.float().repeat_interleave(64, dim=1)
    assert torch.equal(Q.round(), Q.round().clamp(-8, 7)) and (Q - Q.round()).abs().max() < 1e-4  # s · (Q − z)
    for M in (1, 6):
        x = x_of(M, 256)
        y = w4a16.w4a16_matmul(x, packed, scales, zeros, 64)
        error = relative_error(y, w4a16.dequantize_then_matmul(x, packed, scales, zeros, 64))
        assert error < 2e-3, (M, error)  # observed 7.1e-4 (M = 1), 0 (M = 6)
    errors = {}  # K tiles of 1 to 4 groups (each with its own zero point), with and without the hand prefetch
    for M, kernel, configs in ((1, "gemv", w4a16.GEMV_CONFIGS), (3, "dot", w4a16.DECODE_CONFIGS)):
        x = x_of(M, 256)
        reference = w4a16.dequantize_then_matmul(x, packed, scales, zeros, 64)
        for config in configs:
            y = w4a16.w4a16_matmul(x, packed, scales, zeros, 64, kernel=kernel, config=config)
            errors[kernel, str(config)] = relative_error(y, reference)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 2e-3, (worst, errors[worst])


def test_unpack_zero_points_reads_compressed_tensors_packing():
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    zeros = torch.randint(-8, 8, (44, 3), generator=torch.Generator().manual_seed(0)).to(torch.int8)  # 44 rows: not 8k
    packed = helpers.pack_to_int32(zeros, 4, packed_dim=0)  # what an asymmetric pack-quantized export stores
    assert packed.shape == (6, 3), packed.shape  # ⌈44 / 8⌉ words per group column
    assert torch.equal(w4a16.unpack_zero_points(packed, 44).long(), zeros)  # observed: equal


def test_the_tensors_our_export_writes(tmp_path):
    from safetensors.torch import load_file
    from tiny_models import tiny_llama

    from llmlab.quant.driver import rtn_quantize_model
    from llmlab.quant.export import export_compressed_tensors
    from llmlab.quant.kernels import W4A16Linear

    model = tiny_llama()  # hidden 64, intermediate 128: K = 64 or 128 with groups of 32
    report = rtn_quantize_model(model, 4, 32, progress=False)
    state = load_file(export_compressed_tensors(model, None, report, tmp_path, dtype=torch.float16) /
                      "model.safetensors")
    x = x_of(5, 128)
    errors = {}
    for name in report.quantized:
        linear = model.get_submodule(name)
        tensors = {key.removeprefix(name + "."): value for key, value in state.items() if key.startswith(name + ".")}
        module = W4A16Linear.from_exported(tensors, dtype=torch.float16)
        X = x[:, :linear.in_features]
        expected = X.float() @ linear.weight.t()  # the fake-quantized weights the export encoded
        errors[name] = relative_error(module(X), expected)
        assert module.group_size == 32 and module.zeros is None, (name, module.group_size)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 5e-3, (worst, errors[worst])  # observed 6.0e-4: fp16 output rounding
    assert len(errors) == 14, len(errors)  # 7 linears × 2 layers


# ---------------------------------------------------------------- the module in a model


def test_w4a16_model_matches_fake_quantization_and_generates():
    import copy

    from tiny_models import tiny_llama

    from llmlab.quant.driver import rtn_quantize_model
    from llmlab.quant.kernels import W4A16Linear, convert_model

    ids = torch.tensor([[1, 2, 3, 4]])
    model = tiny_llama()
    fake = copy.deepcopy(model)
    rtn_quantize_model(fake, 4, 32, progress=False)
    expected = fake.to(torch.bfloat16)(ids).logits.float()
    model.to(torch.bfloat16)
    names = convert_model(model, "w4a16", group_size=32)
    assert all(isinstance(model.get_submodule(name), W4A16Linear) for name in names) and len(names) == 14, names
    error = ((model(ids).logits.float() - expected).norm() / expected.norm()).item()
    assert error < 0.08, error  # observed 0.038, as torch's int4 kernel in test_kernels.py; one layer alone: 0.003
    assert model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False).shape == (1, 6)


def test_the_custom_op_is_what_torch_compile_sees():
    packed, scales, _ = random_layer(32, 128, 128)
    x = x_of(3, 128)
    compiled = torch.compile(lambda x: 2 * torch.ops.llmlab.w4a16_matmul(x, packed, scales, None, 128),
                             backend="aot_eager", fullgraph=True)  # fullgraph: no break into the Triton launch
    expected = 2 * w4a16.dequantize_then_matmul(x, packed, scales, None, 128)
    assert relative_error(compiled(x), expected) < 2e-3  # observed 0
    torch.library.opcheck(torch.ops.llmlab.w4a16_matmul.default, (x, packed, scales, None, 128))  # schema, fake shape


def test_weight_bytes_are_half_a_byte_plus_scales():
    from llmlab.quant.kernels import W4A16Linear

    torch.manual_seed(0)
    module = W4A16Linear.from_linear(torch.nn.Linear(256, 96, bias=False), group_size=64)
    expected = 96 * 256 // 2 + 96 * (256 // 64) * 2
    assert module.weight_bytes() == expected, (module.weight_bytes(), expected)


def test_the_sweeps_grids_hold_the_listed_configs(monkeypatch):
    """benchmarks/gpu_w4a16_sweep.py (run on a GPU): its grids hold the configs the autotuner lists were chosen from."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    sweep = pytest.importorskip("gpu_w4a16_sweep")
    gemv = set(sweep.gemv_grid(10240, 8192))
    listed = {(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.kwargs["SPLIT_K"], c.num_warps, c.kwargs["PREFETCH"])
              for c in w4a16.GEMV_CONFIGS}
    assert listed <= gemv | set(sweep.gemv_grid(57344, 8192)) | set(sweep.gemv_grid(8192, 28672)), listed - gemv
    dot = set(sweep.dot_grid(10240, 8192)) | set(sweep.dot_grid(57344, 8192)) | set(sweep.dot_grid(4096, 14336))
    listed = {(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.kwargs["SPLIT_K"], c.num_warps, c.num_stages)
              for c in w4a16.DECODE_CONFIGS}
    assert listed <= dot, listed - dot


def test_kernel_available_names_triton():
    from llmlab.quant.kernels import KERNELS, kernel_available

    ok, reason = kernel_available("w4a16", "cpu")
    assert "w4a16" in KERNELS and ok and "CPU" in reason, reason


# ---------------------------------------------------------------- configs and refusals


def test_m_buckets_and_configs_fitted_to_the_group():
    assert [w4a16.m_bucket(M) for M in (1, 2, 16, 17, 64, 65, 300, 9000)] == [1, 16, 16, 32, 64, 128, 512, 4096]
    wide = w4a16._config(32, 512, 1, warps=4, stages=1, prefetch=True)  # a K tile of 4 groups of 128
    fitted = {(g, K): w4a16.fit_config(wide, g, K).kwargs["BLOCK_K"]
              for g, K in ((128, 8192), (128, 384), (64, 256), (96, 384), (256, 768))}
    assert fitted == {(128, 8192): 512, (128, 384): 128, (64, 256): 256, (96, 384): 32, (256, 768): 256}, fitted
    assert wide.kwargs["BLOCK_K"] == 512  # fitting returns a copy
    pruned = w4a16._prune(w4a16.DECODE_CONFIGS + w4a16.MID_CONFIGS + w4a16.LARGE_CONFIGS,
                          {"M": 40, "GROUP_SIZE": 64, "K": 4096})
    assert {c.kwargs["BLOCK_M"] for c in pruned} == {32, 64}, pruned  # M = 40: the mid regime's token tiles
    assert max(c.kwargs["BLOCK_K"] for c in pruned) == 128, pruned  # K tiles of two whole groups of 64 at most


def test_refusals_say_what_to_do():
    packed, scales, _ = random_layer(40, 256, 64)
    x = x_of(2, 256)
    with pytest.raises(ValueError, match="must divide K=256 and be a multiple of 16; try 32, 64, 128, 256"):
        w4a16.w4a16_matmul(x, packed, scales[:, :2], None, 96)
    with pytest.raises(ValueError, match="multiple of 16"):
        w4a16.w4a16_matmul(x, packed, torch.ones(40, 32, dtype=torch.float16), None, 8)
    with pytest.raises(ValueError, match="bfloat16 or float16.*x.to"):
        w4a16.w4a16_matmul(x.float(), packed, scales, None, 64)
    with pytest.raises(ValueError, match="32 words per row, x has K=128.*expected 16"):
        w4a16.w4a16_matmul(x[:, :128], packed, scales, None, 64)
    with pytest.raises(ValueError, match="packed must be int32"):
        w4a16.w4a16_matmul(x, packed.to(torch.int64), scales, None, 64)
    with pytest.raises(ValueError, match=r"scales must be floating \[N, K/group_size\] = \[40, 4\]"):
        w4a16.w4a16_matmul(x, packed, scales[:, :2], None, 64)
    with pytest.raises(ValueError, match="choose 'auto'"):
        w4a16.w4a16_matmul(x, packed, scales, None, 64, kernel="tensor")
