"""Serving LLMs: how an engine spends its KV memory and its time (chapters 09 and 10).

- `paged`    the block manager simulated: contiguous max-length reservation vs PagedAttention's blocks, over request
             traces (reserved vs used KV, fragmentation, waste, concurrency, preemption)
- `batching` static vs continuous batching simulated on a roofline step-cost model (throughput, queueing, TTFT), and
             the comparison of a simulation with a measured run
- `local`    start and stop a local OpenAI-compatible server
- `bench`    the OpenAI-compatible load generator (TTFT, TPOT, throughput)
"""
