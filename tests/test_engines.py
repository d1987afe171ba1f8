"""Engine memory budgets and command builders: the arithmetic of each rule, the commands against the flags the
engines' sources define, the refusals, the guide's cheat-sheet checks and the `llmlab serve-cmd` command."""

import json
import math
import subprocess
import sys

import pytest

from llmlab.claims import VERDICTS
from llmlab.cli import main
from llmlab.engines import (FLAG_SOURCES, GUIDE_FLAG_CHECKS, RUNTIME, serve_command, sources_of, trtllm_budget,
                            vllm_budget)
from llmlab.hardware import gpu
from llmlab.memory import activation_bytes, weight_bytes
from llmlab.models import load_spec

# flags each engine's parser defines, as read in the sources named in llmlab.engines.FLAG_SOURCES
VLLM_SERVE_FLAGS = {"--dtype", "--quantization", "--kv-cache-dtype", "--max-model-len", "--tensor-parallel-size",
                    "--gpu-memory-utilization", "--port"}
TRTLLM_FLAGS = {
    "convert_checkpoint.py": {"--model_dir", "--output_dir", "--dtype", "--tp_size", "--fp8_kv_cache", "--use_fp8"},
    "quantize.py": {"--model_dir", "--dtype", "--qformat", "--kv_cache_dtype", "--output_dir", "--tp_size",
                    "--awq_block_size"},
    "trtllm-build": {"--checkpoint_dir", "--output_dir", "--max_batch_size", "--max_input_len", "--max_seq_len",
                     "--max_num_tokens"},
    "trtllm-serve": {"--backend", "--tokenizer", "--port", "--tp_size", "--kv_cache_free_gpu_memory_fraction"},
}


def test_vllm_budget_follows_its_rule():
    budget = vllm_budget("llama-3.1-8b", "H100 SXM", "bf16", max_model_len=8192)
    spec, h100 = load_spec("llama-3.1-8b"), gpu("H100 SXM")
    weights = weight_bytes(spec, "bf16").total
    activation = activation_bytes(spec, 1, 8192, "fp16")
    expected_kv = int(0.9 * h100.usable_memory_bytes) - weights - activation - RUNTIME.cuda_context_bytes
    assert budget.kv_bytes == expected_kv
    assert budget.kv_bytes_per_token == 131072
    assert budget.num_blocks == expected_kv // (16 * 131072)
    assert budget.kv_tokens == 16 * budget.num_blocks  # 448,976 on the measured H100, 2026-11
    assert budget.max_concurrency == pytest.approx(budget.num_blocks / 512)
    assert budget.log == (f"GPU KV cache size: {budget.kv_tokens:,} tokens",
                          f"Maximum concurrency for 8,192 tokens per request: {budget.max_concurrency:.2f}x")


def test_tensor_parallel_splits_weights_and_kv_heads():
    one = vllm_budget("llama-3.1-70b", "H100 SXM", "bf16", tp=4, max_model_len=8192)
    eight = vllm_budget("llama-3.1-70b", "H100 SXM", "bf16", tp=8, max_model_len=8192)
    assert one.kv_bytes_per_token == 2 * eight.kv_bytes_per_token  # 8 KV heads: 2 per GPU, then 1
    assert eight.weights_bytes < 0.55 * one.weights_bytes
    assert one.non_torch_bytes == RUNTIME.cuda_context_bytes + RUNTIME.nccl_bytes


def test_trtllm_budget_is_a_fraction_of_what_is_free():
    budget = trtllm_budget("llama-3.1-8b", "H100 SXM", "bf16", max_seq_len=8192)
    free = budget.total_memory_bytes - budget.weights_bytes - budget.activation_bytes - budget.non_torch_bytes
    assert budget.kv_bytes == int(0.9 * free)
    assert budget.block_size == 32 and budget.kv_tokens == budget.num_blocks * 32
    vllm = vllm_budget("llama-3.1-8b", "H100 SXM", "bf16", max_model_len=8192)
    assert budget.kv_bytes > vllm.kv_bytes  # 0.9 of the free memory leaves less unused than 0.9 of the card


@pytest.mark.parametrize("call, message", [
    (lambda: vllm_budget("llama-3.1-70b", "H100 SXM", "bf16"), "no memory left for the KV cache"),
    (lambda: vllm_budget("llama-3.1-8b", "L4", "bf16", max_model_len=131072), "the longest that fits is"),
    (lambda: vllm_budget("llama-3.1-8b", "H100 SXM", max_model_len=200_000), "exceeds llama-3.1-8b's "
                                                                              "max_position_embeddings 131072"),
    (lambda: vllm_budget("llama-3.1-8b", "H100 SXM", tp=3), "tp=3 must divide the 32 attention heads"),
    (lambda: vllm_budget("llama-3.1-8b", "H100 SXM", gpu_memory_utilization=1.5), "fraction in"),
    (lambda: serve_command("vllm", "llama-3.1-8b", "T4", "fp8"), "fp8 needs compute capability >= 8.0"),
    (lambda: serve_command("trtllm", "llama-3.1-8b", "A100 80GB", "fp8"), "fp8 needs compute capability >= 8.9"),
    (lambda: serve_command("vllm", "llama-3.1-8b", "T4", "bf16"), "use fp16"),
    (lambda: serve_command("trtllm", "llama-3.1-8b", "H100 SXM", "nf4"), "no bitsandbytes NF4"),
    (lambda: serve_command("sglang", "llama-3.1-8b", "H100 SXM"), "unknown engine"),
])
def test_refusals_say_what_to_do(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_guides_vllm_command_rebuilt_with_checked_flags():
    command = serve_command("vllm", "mistral-7b-v0.3", "H100 SXM", "fp8", "fp8", max_model_len=16384)
    (what, argv), = command.steps
    assert argv == ["vllm", "serve", "mistralai/Mistral-7B-Instruct-v0.3", "--quantization", "fp8",
                    "--kv-cache-dtype", "fp8", "--max-model-len", "16384"]
    assert command.budget.max_concurrency > 50  # observed 62.8 on the H100, 2026-11
    assert any("dynamic FP8" in note for note in command.notes)


def test_vllm_commands_use_only_real_flags():
    cases = [("llama-3.1-8b", "A100 80GB", "int8", "fp8", 1), ("llama-3.1-8b", "L4", "int4", None, 1),
             ("llama-3.1-70b", "H100 SXM", "bf16", None, 4), ("qwen2.5-7b", "A10G", "nf4", None, 1),
             ("llama-3.1-8b", "A100 80GB", "fp8", None, 1)]
    for model, device, precision, kv_dtype, tp in cases:
        argv = serve_command("vllm", model, device, precision, kv_dtype, tp, 8192).steps[0][1]
        flags = {token for token in argv if token.startswith("--")}
        assert flags <= VLLM_SERVE_FLAGS, (precision, flags - VLLM_SERVE_FLAGS)
        assert "int8" not in argv and "awq" not in argv  # neither value is needed (int8 does not exist)
    pre_quantized = serve_command("vllm", "llama-3.1-8b", "A100 80GB", "int4", max_model_len=8192)
    assert "--quantization" not in pre_quantized.steps[0][1]
    assert pre_quantized.steps[0][1][2].endswith("-AWQ-INT4")  # a placeholder for the checkpoint to make


def test_trtllm_pipeline_uses_only_real_flags():
    command = serve_command("trtllm", "llama-3.1-8b", "H100 SXM", "fp8", "fp8", max_model_len=8192)
    steps = [argv for _, argv in command.steps]
    assert [s[1] if s[0] == "python" else s[0] for s in steps] == ["examples/quantization/quantize.py",
                                                                   "trtllm-build", "trtllm-serve"]
    assert steps[0][steps[0].index("--qformat") + 1] == "fp8"
    assert steps[0][steps[0].index("--kv_cache_dtype") + 1] == "fp8"
    for argv in steps:
        tool = argv[1].rsplit("/", 1)[-1] if argv[0] == "python" else argv[0]
        flags = {token for token in argv if token.startswith("--")}
        assert flags <= TRTLLM_FLAGS[tool], (tool, flags - TRTLLM_FLAGS[tool])
    assert steps[2][1] == steps[1][steps[1].index("--output_dir") + 1]  # trtllm-serve ENGINE_DIR, positional
    plain = serve_command("trtllm", "llama-3.1-8b", "A100 80GB", "bf16", max_model_len=8192)
    assert plain.steps[0][1][1] == "examples/models/core/llama/convert_checkpoint.py"


def test_guide_flag_checks_are_sourced_and_graded():
    for check in GUIDE_FLAG_CHECKS:
        assert check.verdict in VERDICTS, check.id
        assert all(key in FLAG_SOURCES for key in check.source.split()), check.id
        assert "@" in sources_of(check) or "(" in sources_of(check)
    verdicts = {check.id: check.verdict for check in GUIDE_FLAG_CHECKS}
    assert verdicts["trtllm-build-use-fp8"] == verdicts["trtllm-serve-engine-dir"] == "wrong"
    assert verdicts["vllm-quantization-int8"] == "wrong" and verdicts["vllm-quantization-fp8"] == "holds"


def test_serve_cmd_prints_the_command_or_json(capsys):
    assert main(["serve-cmd", "llama-3.1-8b", "--gpu", "h100", "--precision", "fp8", "--kv-dtype", "fp8",
                 "--max-model-len", "8192"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# serve") and "--quantization fp8 \\\n" in text and "# note: " in text
    assert main(["serve-cmd", "llama-3.1-8b", "--engine", "trtllm", "--gpu", "h100", "--max-model-len", "8192",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["engine"] == "trtllm" and len(printed["steps"]) == 3
    assert math.isclose(printed["budget"]["fraction"], 0.9)


@pytest.mark.slow
def test_serve_cmd_refuses_in_one_line():  # a subprocess: imports transformers again (seconds)
    run = subprocess.run([sys.executable, "-m", "llmlab.cli", "serve-cmd", "llama-3.1-8b", "--gpu", "t4",
                          "--precision", "fp8"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("llmlab serve-cmd: error: fp8 needs compute capability >= 8.0")
    assert run.stderr.count("\n") == 1
