"""Chapter 09 exercises: PagedAttention and continuous batching."""

from llmlab.exercises import register


@register("09.1", "What fraction of the KV memory in use holds no token when 3,000 ShareGPT-like requests (seed 0, "
                  "max_model_len 2048) are served with paged blocks of 16 and an unlimited pool? (a number in [0, 1])",
          "lifetime_waste(synthetic_trace(3000, 'sharegpt', 2048, seed=0), 16)['paged']['waste_fraction']")
def _():
    from llmlab.serving.paged import lifetime_waste, synthetic_trace

    return lifetime_waste(synthetic_trace(3000, "sharegpt", 2048, seed=0), 16)["paged"]["waste_fraction"]


@register("09.2", "A contiguous engine reserves max_model_len = 2048 tokens per request in a pool of 65,536 tokens. "
                  "How many requests can run at once? (an integer)",
          "compare(synthetic_trace(500, 'sharegpt', 2048), 65536, 16, 2048).contiguous.max_concurrency")
def _():
    from llmlab.serving.paged import compare, synthetic_trace

    return compare(synthetic_trace(500, "sharegpt", 2048), 65536, 16, 2048).contiguous.max_concurrency


@register("09.3", "Short Alpaca-like requests (3,000, seed 0, max_model_len 2048): what is the largest block size among "
                  "1, 2, 4, 8, 16, 32, 64, 128 that keeps the paged waste under 4 %? (an integer)",
          "max(b for b in (1, 2, 4, 8, 16, 32, 64, 128) if lifetime_waste(trace, b)['paged']['waste_fraction'] < 0.04)")
def _():
    from llmlab.serving.paged import lifetime_waste, synthetic_trace

    trace = synthetic_trace(3000, "alpaca", 2048, seed=0)
    return max(b for b in (1, 2, 4, 8, 16, 32, 64, 128) if lifetime_waste(trace, b)["paged"]["waste_fraction"] < 0.04)


@register("09.4", "Simulate 400 ShareGPT-like requests arriving at 20 per second (seed 0, max_model_len 2048) on "
                  "llama-3.1-8b in bf16 on an A100 80GB: how many times more output tokens per second does continuous "
                  "batching (kv_tokens 200,000) deliver than static batches of 16? (a number)",
          "continuous['output_throughput'] / static['output_throughput'] with "
          "StepCost.from_plan('llama-3.1-8b', 'A100 80GB', 'bf16')", rel_tol=0.02)
def _():
    from llmlab.serving.batching import StepCost, poisson_workload, simulate_continuous, simulate_static

    workload = poisson_workload(400, 20, "sharegpt", 2048, seed=0)
    cost = StepCost.from_plan("llama-3.1-8b", "A100 80GB", "bf16")
    static = simulate_static(workload, cost, batch_size=16).summary()
    continuous = simulate_continuous(workload, cost, kv_tokens=200_000).summary()
    return continuous["output_throughput"] / static["output_throughput"]
