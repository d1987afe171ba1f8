"""Chapter 06 exercises: AWQ W4A16."""

from llmlab.exercises import register


@register("06.1", "AWQ's motivating experiment keeps the top 1 % of input channels (by mean |X_j|) in 16-bit. How many "
                  "channels is that for down_proj of the embedded model, whose input is 1536 wide? (an integer)",
          "salient_channels(torch.rand(1536), fraction=0.01).numel()", rel_tol=0)
def _():
    import torch

    from llmlab.quant.awq import salient_channels

    return salient_channels(torch.rand(1536), fraction=0.01).numel()


@register("06.2", "AWQ scales with α = 0.5 for mean activations s_X = [1, 4, 16], normalized as the reference does "
                  "(max s · min s = 1): what is the largest scale? (a number)",
          "awq_scales(torch.tensor([1.0, 4.0, 16.0]), alpha=0.5).max().item()")
def _():
    import torch

    from llmlab.quant.awq import awq_scales

    return awq_scales(torch.tensor([1.0, 4.0, 16.0]), alpha=0.5).max().item()


@register("06.3", "How many bytes does ONE 1536 x 576 weight matrix (gate_proj of the embedded model) take packed at "
                  "4 bits, group size 64, one 16-bit scale per group, no zero point? (an exact integer, bytes)",
          "packed_weight_bytes(torch.nn.Sequential(torch.nn.Linear(576, 1536, bias=False)), ['0'], 4, 64)",
          rel_tol=0)
def _():
    import torch

    from llmlab.evaluate import packed_weight_bytes

    return packed_weight_bytes(torch.nn.Sequential(torch.nn.Linear(576, 1536, bias=False)), ["0"], 4, 64)


@register("06.4", "In the stored CPU run (quant-vs-llmcompressor-awq-sq-cpu), what fraction of RTN w4g64's "
                  "perplexity gap to the baseline does our AWQ w4g64 win back? (a fraction between 0 and 1)",
          "(ppl['rtn-w4g64'] - ppl['awq-w4g64']) / (ppl['rtn-w4g64'] - ppl['fp16'])")
def _():
    from llmlab.results import load_result

    ppl = {row["method"]: row["perplexity"]
           for row in load_result("quant-vs-llmcompressor-awq-sq-cpu")["measurements"]["rows"]}
    return (ppl["rtn-w4g64"] - ppl["awq-w4g64"]) / (ppl["rtn-w4g64"] - ppl["fp16"])
