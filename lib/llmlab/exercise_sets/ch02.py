"""Chapter 02 exercises: the KV-cache formula with GQA."""

from llmlab.exercises import register

# Byte counts are exact integers: rel_tol=1e-9, because the default 1 % would accept 02.4's off-by-one-token answer
# (120 instead of 119 tokens is 0.8 % off).


@register("02.1", "How many bytes does ONE token of one sequence take in Llama-3.1-70B's KV cache when the cache is "
          "stored in FP8? (an exact integer, bytes)",
          "kv_bytes_per_token(load_spec('llama-3.1-70b'), 'fp8')", rel_tol=1e-9)
def _():
    from llmlab.memory import kv_bytes_per_token
    from llmlab.models import load_spec

    return kv_bytes_per_token(load_spec("llama-3.1-70b"), "fp8")


@register("02.2", "How many concurrent 8192-token requests of Llama-3.1-8B fit in 40 GiB (40 x 2**30 bytes) of "
          "FP16 KV cache? (a whole number of requests)",
          "40 * 2**30 // kv_cache_bytes(load_spec('llama-3.1-8b'), 8192, 1, 'fp16')", rel_tol=1e-9)
def _():
    from llmlab.memory import kv_cache_bytes
    from llmlab.models import load_spec

    return 40 * 2**30 // kv_cache_bytes(load_spec("llama-3.1-8b"), 8192, 1, "fp16")


@register("02.3", "For Gemma-2-9B at 4096 tokens, batch 1, FP16: the guide's formula divided by the exact KV bytes? "
          "(a ratio; below 1 means the guide under-counts)",
          "kv_bytes_guide(spec, 4096) / kv_cache_bytes(spec, 4096) with spec = load_spec('gemma-2-9b')")
def _():
    from llmlab.memory import kv_bytes_guide, kv_cache_bytes
    from llmlab.models import load_spec

    spec = load_spec("gemma-2-9b")
    return kv_bytes_guide(spec, 4096) / kv_cache_bytes(spec, 4096)


@register("02.4", "The embedded model (float32) generates 20 new tokens after a 100-token prompt, batch 1. How many "
          "bytes do the K/V tensors of its cache hold at the end? (an exact integer, bytes)",
          "kv_cache_bytes(load_spec('smollm2-135m'), 100 + 20 - 1, 1, 'fp32')", rel_tol=1e-9)
def _():
    from llmlab.memory import kv_cache_bytes
    from llmlab.models import load_spec

    return kv_cache_bytes(load_spec("smollm2-135m"), 100 + 20 - 1, 1, "fp32")
