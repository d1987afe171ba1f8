"""Static vs continuous batching: the step-cost model by hand, the schedulers on one request, the clients' limits, the
ordering the chapter teaches, and the comparison with a measured run."""

import numpy as np
import pytest

from llmlab.serving.batching import (COMPARED, StepCost, compare_with_measured, poisson_workload, simulate_continuous,
                                     simulate_static, workload_from_lengths)

# a toy engine: 1 GB of weights at 100 GB/s (10 ms per step), 1 KB per cached token, 1 GFLOP per token at 1 TFLOP/s
TOY = StepCost(weight_bytes=1e9, kv_bytes_per_token=1e3, flops_per_token=1e9, bandwidth=1e11, flops=1e12,
               overhead_s=0.0, label="toy")


def test_step_cost_is_a_roofline():
    assert TOY.seconds(0, 1, 0) == pytest.approx(0.010)  # memory-bound: weights / bandwidth
    assert TOY.seconds(0, 1, 1_000_000) == pytest.approx(0.020)  # + 1 GB of KV
    assert TOY.seconds(100, 0, 0) == pytest.approx(0.100)  # compute-bound prefill: 100 GFLOP / 1 TFLOP/s
    assert TOY.seconds_one(100, 0, 0) == TOY.seconds(100, 0, 0)


def test_step_cost_from_the_planner_and_the_catalog():
    cost = StepCost.from_plan("llama-3.1-8b", "H100 SXM", "bf16")
    assert cost.weight_bytes == pytest.approx(16.06e9, rel=0.01)  # bf16 weights, embedding and lm_head included
    assert cost.kv_bytes_per_token == 131072  # 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes
    assert cost.bandwidth == pytest.approx(0.8 * 3350e9) and cost.flops == pytest.approx(0.6 * 989.4e12)
    int4 = StepCost.from_plan("llama-3.1-8b", "A100 80GB", "int4")
    assert int4.flops == pytest.approx(0.6 * 312e12)  # W4A16 multiplies in fp16
    calibrated = StepCost.calibrated(1e9, 2e9, decode_step_s=0.05, prefill_tokens_per_s=400)
    assert calibrated.seconds(0, 1, 0) == pytest.approx(0.05) and calibrated.seconds(400, 0, 0) == pytest.approx(1.0)


def test_one_request_by_hand():
    # prompt 100, output 5: prefill 100 tokens = 0.1 s (compute-bound), then 4 decode steps of 10 ms (+ 101..104 KB)
    work = workload_from_lengths([100], [5])
    expected_finish = 0.1 + sum(0.010 + (100 + s) * 1e3 / 1e11 for s in range(1, 5))
    for result in (simulate_static(work, TOY, batch_size=1), simulate_continuous(work, TOY)):
        assert result.first_token[0] == pytest.approx(0.1)
        assert result.finish[0] == pytest.approx(expected_finish)
        summary = result.summary()
        assert summary["mean_tpot_ms"] == pytest.approx(1000 * (expected_finish - 0.1) / 4)
        assert summary["completed"] == 1 and summary["total_output_tokens"] == 5


def test_static_pads_and_holds_the_batch():
    work = workload_from_lengths([10, 100], [2, 50])
    result = simulate_static(work, TOY, batch_size=2)
    assert result.first_token[0] == result.first_token[1]  # one padded prefill of 2 x 100 tokens
    assert result.first_token[0] == pytest.approx(0.2)
    assert result.padding_fraction == pytest.approx(1 - (12 + 150) / (2 * 150))
    assert result.iterations == 50  # the short request's slot decodes until the long one ends


def test_continuous_batching_beats_static_under_load():
    work = poisson_workload(400, 20, "sharegpt", 2048, seed=0)
    cost = StepCost.from_plan("llama-3.1-8b", "A100 80GB", "bf16")
    static = simulate_static(work, cost, batch_size=16).summary()
    continuous = simulate_continuous(work, cost, kv_tokens=200_000).summary()
    assert continuous["output_throughput"] > 2 * static["output_throughput"]  # observed x9.4, 2026-11
    assert continuous["p99_ttft_ms"] < static["p99_ttft_ms"] / 100  # observed 0.17 s vs 365 s
    assert static["padding_fraction"] > 0.5  # observed 0.73: lognormal lengths pad a lot


def test_concurrency_caps_requests_in_flight():
    work = poisson_workload(60, None, "alpaca", 1024, seed=2)
    for simulate, kwargs in ((simulate_continuous, {}), (simulate_static, {"batch_size": 16})):
        result = simulate(work, TOY, concurrency=4, **kwargs)
        events = sorted([(t, 1) for t in result.sent] + [(t, -1) for t in result.finish])
        in_flight = np.cumsum([step for _, step in events])
        assert in_flight.max() <= 4, simulate.__name__


def test_waves_wait_for_the_previous_wave():
    work = poisson_workload(24, None, "alpaca", 1024, seed=3)
    result = simulate_continuous(work, TOY, concurrency=8, waves=True)
    for wave in (1, 2):
        assert result.sent[8 * wave:8 * wave + 8].min() == pytest.approx(result.finish[8 * wave - 8:8 * wave].max())
    with pytest.raises(ValueError, match="waves need a concurrency"):
        simulate_static(work, TOY, waves=True)


def test_preemption_keeps_every_token():
    work = poisson_workload(200, None, "sharegpt", 2048, seed=4)
    result = simulate_continuous(work, TOY, kv_tokens=8192, block_size=16)
    assert result.preemptions > 0  # observed 2,209 with 8,192 KV tokens
    assert np.isfinite(result.finish).all() and (result.finish >= result.first_token).all()
    assert result.summary()["total_output_tokens"] == int(work.output.sum())


def test_compare_with_a_measured_run():
    simulated = simulate_continuous(workload_from_lengths([50] * 4, [20] * 4), TOY, concurrency=2)
    measured = {"duration": 0.5, "output_throughput": 160.0, "p99_ttft_ms": None, "median_ttft_ms": 60.0}
    rows = {row["metric"]: row for row in compare_with_measured(simulated, measured)}
    assert set(rows) == {"duration", "output_throughput", "median_ttft_ms"}  # None and absent keys skipped
    assert rows["duration"]["ratio"] == pytest.approx(simulated.summary()["duration"] / 0.5)
    assert set(rows) <= set(COMPARED)
    with pytest.raises(ValueError, match="shares no metric"):
        compare_with_measured(simulated, {"throughput": 3})


def test_refusals():
    with pytest.raises(ValueError, match="does not fit kv_tokens"):
        simulate_continuous(workload_from_lengths([900], [200]), TOY, kv_tokens=1000)
    with pytest.raises(ValueError, match="rate_per_s"):
        poisson_workload(10, -1.0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        simulate_static(workload_from_lengths([5], [5]), TOY, batch_size=0)
    with pytest.raises(ValueError, match="increasing order"):
        workload_from_lengths([5, 5], [5, 5], arrival_s=[1.0, 0.5])
