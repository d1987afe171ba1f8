"""Chapter 01 exercises: memory anatomy (weights, KV cache, where the parameters are)."""

from llmlab.exercises import register


@register("01.1", "How many bytes do Llama-3.1-8B's weights take in INT4 with group size 128, scales and zero points "
                  "included, embedding and lm_head kept in 16-bit? (an integer, bytes)",
          "weight_bytes(load_spec('llama-3.1-8b'), 'int4', group_size=128).total")
def _():
    from llmlab.memory import weight_bytes
    from llmlab.models import load_spec

    return weight_bytes(load_spec("llama-3.1-8b"), "int4", group_size=128).total


@register("01.2", "How many bytes of KV cache does the embedded model (smollm2-135m) hold for 4 sequences of 1000 "
                  "cached tokens each, in bf16? (an integer, bytes)",
          "kv_cache_bytes(load_spec('smollm2-135m'), context=1000, batch=4, kv_dtype='bf16')")
def _():
    from llmlab.memory import kv_cache_bytes
    from llmlab.models import load_spec

    return kv_cache_bytes(load_spec("smollm2-135m"), context=1000, batch=4, kv_dtype="bf16")


@register("01.3", "What fraction of Llama-3.1-8B's parameters sit in the embedding and the lm_head together? "
                  "(a number between 0 and 1)",
          "(spec.embedding_params + spec.lm_head_params) / spec.params with spec = load_spec('llama-3.1-8b')")
def _():
    from llmlab.models import load_spec

    spec = load_spec("llama-3.1-8b")
    return (spec.embedding_params + spec.lm_head_params) / spec.params
