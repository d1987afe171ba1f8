"""The guide's decision tree as a function, consistent with the planner; the SLO checks on bench and simulation
metrics."""

import pytest

from llmlab.advisor import GUIDE_SLOS, GUIDE_TREE, advise, guide_branch, slo_check
from llmlab.memory import plan


def test_the_guides_branches():
    assert guide_branch("H100 SXM").key == "h100"  # native FP8
    assert guide_branch("L4").key == "h100"  # Ada has FP8 too: the guide's "H100" branch is really "FP8 GPUs"
    assert guide_branch("A100 80GB").key == "universal"
    assert guide_branch("T4", "cost").key == guide_branch("H100 SXM", "cost").key == "density"
    assert [branch.guide_argument for branch in GUIDE_TREE] == ["--quantization fp8", "--quantization int8",
                                                               "--quantization awq"]
    with pytest.raises(ValueError, match="unknown priority"):
        guide_branch("H100 SXM", "speed")


def test_advice_agrees_with_the_planner():
    advice = advise("llama-3.1-70b", "H100 SXM", "quality", context=4096, batch=1)
    assert (advice.precision, advice.kv_dtype, advice.tp, advice.fits) == ("fp8", "fp8", 1, True)
    planned = plan("llama-3.1-70b", "fp8", "fp8", 4096, 1, "H100 SXM")
    assert (advice.max_context, advice.max_concurrency) == (planned.max_context, planned.max_concurrency)
    assert "--quantization fp8" in advice.command and "--kv-cache-dtype fp8" in advice.command


def test_advice_adds_gpus_then_a_denser_format_when_the_branch_does_not_fit():
    a100 = advise("llama-3.1-70b", "A100 80GB", "quality", context=8192, batch=4)
    assert a100.guide.key == "universal" and (a100.precision, a100.tp) == ("int8", 2)  # 1 A100 does not hold 4 x 8k
    assert any("does not hold" in reason for reason in a100.reasons)
    assert "--quantization" not in a100.command  # no 'int8' (it does not exist): vLLM reads the checkpoint's method
    cheap = advise("llama-3.1-70b", "A100 80GB", "cost", context=8192, batch=4)
    assert (cheap.precision, cheap.tp) == ("int4", 1) and "--quantization" not in cheap.command  # no slow 'awq'
    big = advise("llama-3.1-70b", "H100 SXM", "quality", context=32768, batch=16)
    assert (big.precision, big.tp) == ("fp8", 4)
    assert "--tensor-parallel-size 4" in big.command


def test_no_fp8_where_the_gpu_has_none_and_nothing_fits_is_said():
    for device in ("A100 80GB", "T4", "A10G"):
        assert advise("llama-3.1-8b", device, "quality", 4096, 1).precision != "fp8"
    hopeless = advise("llama-3.1-70b", "T4", "quality", context=32768, batch=16, max_tp=1)
    assert not hopeless.fits and hopeless.command.startswith("# nothing fits")


def test_slo_check_on_the_load_generators_metrics():
    bench = {"p99_ttft_ms": 740.0, "completed": 995, "failed": 5, "errors": [""] * 995 + ["http 500: x"] * 5}
    findings = {f.metric: f for f in slo_check(bench)}
    assert findings["ttft_p99_s"].value == pytest.approx(0.74) and findings["ttft_p99_s"].breached
    assert findings["error_fraction"].value == pytest.approx(0.005) and not findings["error_fraction"].breached
    assert findings["kv_waste_fraction"].value is None and findings["kv_waste_fraction"].breached is None
    assert "Scale out" in findings["ttft_p99_s"].action and findings["error_fraction"].action == ""
    assert [slo.threshold for slo in GUIDE_SLOS] == [0.5, 0.08, 0.005]  # the guide's table


def test_slo_check_on_a_simulation():
    findings = {f.metric: f for f in slo_check({"waste_fraction": 0.10, "ttft_p99_s": 0.2, "error_fraction": 0.0})}
    assert findings["kv_waste_fraction"].breached and "block_size" in findings["kv_waste_fraction"].action
    assert not findings["ttft_p99_s"].breached
    assert "ALERT" in findings["kv_waste_fraction"].line() and "ok" in findings["ttft_p99_s"].line()
    with pytest.raises(ValueError, match="must be a number >= 0"):
        slo_check({"ttft_p99_s": -1})
