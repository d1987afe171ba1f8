"""Chapter 11 exercises: the decision tree, engines and SLOs, licensing."""

from llmlab.exercises import register


@register("11.1", "How many A100 80GB GPUs (tensor-parallel size) does the advisor use for llama-3.1-70b, quality "
                  "first, 4 requests of 8,192 tokens? (an integer)",
          "advise('llama-3.1-70b', 'A100 80GB', 'quality', context=8192, batch=4).tp")
def _():
    from llmlab.advisor import advise

    return advise("llama-3.1-70b", "A100 80GB", "quality", context=8192, batch=4).tp


@register("11.2", "How many tokens would vLLM report as 'GPU KV cache size' for llama-3.1-8b in bf16 on an H100 SXM "
                  "with max_model_len 8192 and the default gpu_memory_utilization? (an integer, the planner's estimate)",
          "vllm_budget('llama-3.1-8b', 'H100 SXM', 'bf16', max_model_len=8192).kv_tokens")
def _():
    from llmlab.engines import vllm_budget

    return vllm_budget("llama-3.1-8b", "H100 SXM", "bf16", max_model_len=8192).kv_tokens


@register("11.3", "May a company serve a GGUF conversion of Mistral-Large-Instruct-2407 in a paying product? "
                  "('yes', 'conditional' or 'no')",
          "check_use(derive(['mistral-large-2407'], 'convert'), 'commercial-service')[0]")
def _():
    from llmlab.licensing import check_use, derive

    return check_use(derive(["mistral-large-2407"], "convert"), "commercial-service")[0]


@register("11.4", "How many of the guide's §7 cheat-sheet items are wrong as printed, according to the engines' "
                  "sources? (an integer)",
          "sum(1 for c in GUIDE_FLAG_CHECKS if c.section == '7' and c.verdict == 'wrong')")
def _():
    from llmlab.engines import GUIDE_FLAG_CHECKS

    return sum(1 for check in GUIDE_FLAG_CHECKS if check.section == "7" and check.verdict == "wrong")
