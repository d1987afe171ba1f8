"""Chapter 10 exercises: serving engines, streaming, load-test metrics."""

from llmlab.exercises import register

# a chat stream as transformers serve sends it (role first, a keep-alive comment, the last event with usage)
CHAT_STREAM = (b'data: {"choices": [{"delta": {"role": "assistant"}, "index": 0}]}\n\n'
               b'data: {"choices": [{"delta": {"content": "Nvidia"}, "index": 0}]}\n\n'
               b": keep-alive\n\n"
               b'data: {"choices": [{"delta": {"content": ","}, "index": 0}]}\n\n'
               b'data: {"choices": [{"delta": {"content": ""}, "index": 0}]}\n\n'
               b'data: {"choices": [{"delta": {"content": " AMD"}, "index": 0}]}\n\n'
               b'data: {"choices": [{"delta": {}, "index": 0, "finish_reason": "length"}], '
               b'"usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}}\n\n')
TTFTS_MS = [120, 80, 95, 300, 110, 105, 90, 85, 100, 400]


@register("10.1", "TPOT (ms) of a response whose first text arrives at 0.2 s and last at 1.8 s, 33 completion tokens",
          "summarize([RequestResult(0, 33, success=True, start=0, ttft=0.2, latency=1.8, end=1.8, chunks=33, "
          "output_tokens=33)], 1.8)['mean_tpot_ms']")
def _():
    from llmlab.serving.bench import RequestResult, summarize

    result = RequestResult(0, 33, success=True, start=0.0, ttft=0.2, latency=1.8, end=1.8, chunks=33,
                           output_tokens=33)
    return summarize([result], duration=1.8)["mean_tpot_ms"]


@register("10.2", "p90 TTFT (ms) of 120, 80, 95, 300, 110, 105, 90, 85, 100, 400 (linear interpolation)",
          "percentile(TTFTS_MS, 90)")
def _():
    from llmlab.serving.bench import percentile

    return percentile(TTFTS_MS, 90)


@register("10.3", "how many events of ch10.CHAT_STREAM carry text (count for TTFT and ITL)? (an integer)",
          "sum(bool(parse_chunk(d).text) for d in SSEDecoder().feed(CHAT_STREAM))")
def _():
    from llmlab.serving.bench import SSEDecoder, parse_chunk

    return sum(bool(parse_chunk(data).text) for data in SSEDecoder().feed(CHAT_STREAM))


@register("10.4", "vLLM's 'GPU KV cache size' (tokens) for llama-3.1-8b bf16 on one H100 at gpu_memory_utilization 0.8, "
                  "max_model_len 16,384 (an integer)",
          "vllm_budget('llama-3.1-8b', 'h100', 'bf16', gpu_memory_utilization=0.8, max_model_len=16384).kv_tokens")
def _():
    from llmlab.engines import vllm_budget

    return vllm_budget("llama-3.1-8b", "h100", "bf16", gpu_memory_utilization=0.8, max_model_len=16384).kv_tokens


@register("10.5", "How many all-reduces does one forward pass (one decode step) of llama-3.1-8b make under tensor "
                  "parallelism, with the embedding split by vocabulary? (an integer)",
          "allreduces_per_decode_step(load_spec('llama-3.1-8b').num_layers)")
def _():
    from llmlab.models import load_spec
    from llmlab.parallel import allreduces_per_decode_step

    return allreduces_per_decode_step(load_spec("llama-3.1-8b").num_layers)
