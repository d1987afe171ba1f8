"""`llmlab plan` run as users run it: a subprocess, its JSON checked against the library, its refusals one line."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmlab.cli import main
from llmlab.memory import plan
from llmlab.paths import data_dir

REQUIRED_KEYS = {"params", "active_params", "weight_bytes", "kv_bytes_per_token", "kv_bytes", "activation_bytes",
                 "overhead_bytes", "total_bytes"}
GPU_KEYS = {"gpu", "fits", "max_context", "max_concurrency"}


def llmlab(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmlab.cli", *arguments], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_plan_json_is_the_library_plan():
    run = llmlab("plan", "llama-3.1-70b", "--precision", "fp8", "--gpu", "h100", "--json")
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)  # one JSON object, nothing else on stdout
    assert REQUIRED_KEYS | GPU_KEYS <= set(printed), set(printed)
    assert printed == plan("llama-3.1-70b", "fp8", gpu="h100").to_dict()
    assert isinstance(printed["params"], int) and printed["params"] == 70_553_706_496
    assert printed["fits"] is True and printed["gpu"] == "H100 SXM" and printed["max_context"] == 4974  # 2026-11-26: + cuBLAS workspace, measured slack


@pytest.mark.slow
def test_plan_from_a_config_folder(tmp_path, capsys):
    shutil.copy(data_dir() / "models" / "smollm2-135m.json", tmp_path / "config.json")
    refused = llmlab("plan", str(tmp_path), "--precision", "int4")  # group 128 does not divide hidden 576
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == "llmlab plan: error: int4 needs group_size dividing 576; try 64 or 96\n", refused.stderr
    # the table, in this process (the subprocess path is the same code; this saves a second transformers import)
    assert main(["plan", str(tmp_path), "--precision", "int4", "--group-size", "64", "--gpu", "t4",
                 "--context", "8192", "--batch", "4"]) == 0
    table = capsys.readouterr().out
    for expected in ("int4 weights", "GiB", "GB", "KV cache", "T4: budget", "fits", "max context at batch 4",
                     "max concurrency at context 8,192", "warning: T4's usable memory is estimated"):
        assert expected in table, (expected, table)


@pytest.mark.parametrize("arguments, message", [
    (("plan", "llama-3.1-8b", "--context", "0"), "llmlab plan: error: context must be a positive integer, not 0"),
    (("plan", "llama-3.1-8b", "--batch", "-2"), "llmlab plan: error: batch must be a positive integer, not -2"),
    (("plan", "llama-3.1-8b", "--tp", "0"), "llmlab plan: error: tp must be a positive integer, not 0"),
    (("plan", "llama-3.1-8b", "--gpu", "h10"), "llmlab plan: error: unknown GPU 'h10'; closest: H100 SXM"),
    (("plan", "llama-3.1-8b", "--gpu-memory-utilization", "0"),
     "llmlab plan: error: gpu_memory_utilization is a fraction in (0, 1], not 0.0"),
    (("plan", "llama-3.1-8b", "--precision", "fp4"), "llmlab plan: error: argument --precision: invalid choice"),
    (("plan", "llama-3.1-8b", "--context", "many"), "llmlab plan: error: argument --context: invalid int value"),
    (("plan", "no-such-model"), "llmlab plan: error: unknown model 'no-such-model'"),
    (("plan", "/no/such/config.json"), "llmlab plan: error: "),
    (("plan",), "llmlab plan: error: the following arguments are required: MODEL"),
    (("frobnicate",), "llmlab: error: argument COMMAND: invalid choice: 'frobnicate'"),
    ((), "llmlab: error: name a command"),
])
def test_user_errors_are_one_line_and_exit_2(arguments, message):
    run = llmlab(*arguments)
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert run.stdout == "" and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(message), run.stderr


def test_help_and_the_installed_entry_point():
    run = llmlab("plan", "--help")
    assert run.returncode == 0 and "--gpu-memory-utilization" in run.stdout and "--json" in run.stdout
    entry_point = Path(sys.executable).with_name("llmlab")
    if not entry_point.exists():
        pytest.skip(f"no console script beside {sys.executable} (llmlab not pip-installed in this environment)")
    installed = subprocess.run([str(entry_point), "--help"], capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0 and "plan" in installed.stdout, installed.stderr
