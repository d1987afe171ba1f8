"""The tensor-core W4A16 kernel as ptxas builds it for an H100 (sm_90a), on a machine without a GPU: Triton compiles
each batched-decode config to PTX, ptxas assembles it, and its report must not say that the wgmma pipeline is
serialized (warning C7515), which cost 6-11 % at Llama-70B shapes, M = 16, on the H100 (see `_dot_kernel`)."""

import subprocess

import pytest

triton = pytest.importorskip("triton", reason="the w4a16 kernel is written in Triton: pip install triton (Linux)")

from llmlab.quant import triton_w4a16 as w4a16  # noqa: E402

SERIALIZED = "C7515"  # ptxas: "wgmma.mma_async instructions are serialized due to non wgmma instructions ..."


@pytest.fixture(scope="module")
def ptxas():
    if w4a16.interpreting():
        pytest.skip("TRITON_INTERPRET=1: the kernels are interpreted functions here, not compiled ones")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.backends.nvidia import compiler
        # the ptxas triton itself assembles sm_90 code with (triton 3.9: CUDA 13's, which reads its newer PTX)
        path = compiler.get_ptxas(90).path if hasattr(compiler, "get_ptxas") else triton.knobs.nvidia.ptxas.path
    except Exception as error:  # a triton without its CUDA backend (not Linux x86-64)
        pytest.skip(f"triton's CUDA backend or its ptxas is not installed here: {error}")
    return path, GPUTarget("cuda", 90, 32)


def ptxas_report(ptxas, config, tmp_path, split_as_constant: bool = False) -> str:
    """ptxas's report (-v) on `_dot_kernel` compiled for sm_90a with `config`, as a 16-row bf16 call specializes it
    (split_as_constant: SPLIT_K compiled in as a constant, as a constexpr would be)."""
    from triton.compiler import ASTSource

    path, target = ptxas
    kernel = w4a16._dot_kernel
    constants = {"GROUP_SIZE": 128, "HAS_ZEROS": False, "FP32_DOT": False, **config.kwargs}
    if constants["SPLIT_K"] != 1 and not split_as_constant:
        constants.pop("SPLIT_K")  # a run-time argument; triton compiles it as a constant only where it equals 1
    pointers = {"x_ptr": "*bf16", "w_ptr": "*i32", "s_ptr": "*bf16", "z_ptr": "*bf16", "out_ptr": "*bf16",
                "partial_ptr": "*fp32"}
    names = kernel.arg_names
    signature = {name: "constexpr" if name in constants else pointers.get(name, "i32") for name in names}
    aligned = [name for name in names if name not in constants and name != "SPLIT_K"]  # 16 | value, as at 70B shapes
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(names.index(name),): value for name, value in constants.items()},
                       attrs={(names.index(name),): [["tt.divisibility", 16]] for name in aligned})
    compiled = triton.compile(source, target=target,
                              options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    ptx = tmp_path / "dot.ptx"
    ptx.write_text(compiled.asm["ptx"])
    result = subprocess.run([path, "-v", "--gpu-name", "sm_90a", str(ptx), "-o", str(tmp_path / "dot.cubin")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


@pytest.mark.parametrize("index", range(len(w4a16.DECODE_CONFIGS)))
def test_batched_decode_configs_keep_the_wgmma_pipeline(ptxas, index, tmp_path):
    config = w4a16.DECODE_CONFIGS[index]
    report = ptxas_report(ptxas, config, tmp_path)
    assert "wgmma.mma_async" in (tmp_path / "dot.ptx").read_text(), "expected Hopper's wgmma in the dot kernel's PTX"
    serialized = [line.strip() for line in report.splitlines() if SERIALIZED in line]
    assert serialized == [], f"{dict(config.kwargs)}: expected no {SERIALIZED} from ptxas, observed {serialized}"


def test_the_check_sees_a_serialized_pipeline(ptxas, tmp_path):
    """The check can fail: the same kernel with SPLIT_K = 4 compiled in as a constant (a constexpr, as it was) draws
    C7515 from ptxas."""
    config = next(c for c in w4a16.DECODE_CONFIGS if c.kwargs["SPLIT_K"] == 4)
    report = ptxas_report(ptxas, config, tmp_path, split_as_constant=True)
    assert SERIALIZED in report, f"expected ptxas to report {SERIALIZED}, observed:\n{report[-1500:]}"
