"""Chapter 03 exercises: VRAM capacity planning."""

from llmlab.exercises import register


@register("03.1", "Which catalog GPU with the least memory fits llama-3.1-8b in int4 (group 128) at 32,768 tokens, "
                  "batch 1, fp16 KV cache, utilization 0.9? (its catalog name, a string)",
          "min((g for g in gpu_names() if plan('llama-3.1-8b', 'int4', context=32768, gpu=g).fits), "
          "key=lambda g: gpu(g).usable_memory_bytes)")
def _():
    from llmlab.hardware import gpu, gpu_names
    from llmlab.memory import plan

    fitting = [name for name in gpu_names() if plan("llama-3.1-8b", "int4", context=32768, gpu=name).fits]
    return min(fitting, key=lambda name: gpu(name).usable_memory_bytes)


@register("03.2", "How many concurrent 2,048-token sequences does llama-3.1-70b in fp8 with an fp8 KV cache serve "
                  "on one H100 SXM at gpu_memory_utilization 0.9? (an integer)",
          "plan('llama-3.1-70b', 'fp8', kv_dtype='fp8', context=2048, gpu='H100 SXM').max_concurrency")
def _():
    from llmlab.memory import plan

    return plan("llama-3.1-70b", "fp8", kv_dtype="fp8", context=2048, gpu="H100 SXM").max_concurrency


@register("03.3", "How many GB (10**9 bytes) does EACH GPU hold for llama-3.1-70b in fp16 split over tp=4 H100 SXM, "
                  "at 4,096 tokens, batch 1? (a number, GB)",
          "plan('llama-3.1-70b', 'fp16', context=4096, gpu='H100 SXM', tp=4).per_gpu_bytes / 1e9")
def _():
    from llmlab.memory import plan

    return plan("llama-3.1-70b", "fp16", context=4096, gpu="H100 SXM", tp=4).per_gpu_bytes / 1e9


@register("03.4", "What does the planner predict for the peak allocated bytes (weights + KV cache + activations, GB = "
                  "10**9) of llama-3.1-8b in bf16 with a bf16 KV cache at batch 16 x 8,192 tokens, the whole batch in "
                  "one forward pass as transformers runs it? (a number, GB; the stored H100 run measured it)",
          "p = plan('llama-3.1-8b', 'bf16', 'bf16', 8192, 16, runtime=Runtime(prefill_chunk=None)); "
          "(p.weight_bytes + p.kv_bytes + p.activation_bytes) / 1e9")
def _():
    from llmlab.memory import Runtime, plan

    planned = plan("llama-3.1-8b", "bf16", "bf16", 8192, 16, runtime=Runtime(prefill_chunk=None))
    return (planned.weight_bytes + planned.kv_bytes + planned.activation_bytes) / 1e9


@register("03.5", "What per-GPU total (GB = 10**9 bytes) does the planner predict for llama-3.1-8b in bf16 with a bf16 "
                  "KV cache split over tp=2, at batch 16 x 8,192 tokens, the whole batch in one forward pass? (a "
                  "number, GB; compare with the stored two-GPU run in §5.1)",
          "plan('llama-3.1-8b', 'bf16', 'bf16', 8192, 16, tp=2, runtime=Runtime(prefill_chunk=None)).per_gpu_bytes "
          "/ 1e9")
def _():
    from llmlab.memory import Runtime, plan

    return plan("llama-3.1-8b", "bf16", "bf16", 8192, 16, tp=2, runtime=Runtime(prefill_chunk=None)).per_gpu_bytes / 1e9
