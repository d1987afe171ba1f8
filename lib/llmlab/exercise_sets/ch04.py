"""Chapter 04 exercises: number formats, scales, GGUF blocks, NF4 and bitsandbytes' bytes."""

from llmlab.exercises import register


@register("04.1", "How many bytes does a [576, 1536] weight matrix take in GGUF Q4_1, block scales and minimums "
          "included? (an integer)", "int(576 * 1536 * bytes_per_weight('Q4_1'))")
def _():
    from llmlab.quant.gguf_blocks import bytes_per_weight

    return int(576 * 1536 * bytes_per_weight("Q4_1"))


@register("04.2", "Layer 11's down_proj input has absmax 3131.9. With one symmetric INT8 scale for the whole tensor "
          "(s = absmax / 127.5, the course's convention), how large is the grid step s? (a float)",
          "grid_params(torch.tensor([[3131.9]]), 8, symmetric=True)[0].item()")
def _():
    import torch

    from llmlab.quant.formats import grid_params

    return grid_params(torch.tensor([[3131.9]]), 8, symmetric=True)[0].item()


@register("04.3", "In an NF4 block of 64 weights whose absmax is 0.6, which codebook index (0-15) does the weight "
          "0.3 get? (an integer)", "quantize_nf4(block, 64)[0][0, 1].item() with block = [0.6, 0.3, 0, …]")
def _():
    import torch

    from llmlab.quant.formats import quantize_nf4

    block = torch.zeros(1, 64)
    block[0, :2] = torch.tensor([0.6, 0.3])  # 0.3 / 0.6 = 0.5: between NF4's 0.4407 and 0.5626, nearer the first
    return quantize_nf4(block, 64)[0][0, 1].item()


@register("04.4", "bitsandbytes NF4 on the embedded model keeps the embedding in 16-bit and one fp32 absmax per 64 "
          "weights. Its weight bytes are what fraction of the 16-bit model's? (a ratio; the guide's '-75%' means 0.25)",
          "weight_bytes(spec, 'nf4').total / weight_bytes(spec, 'fp16').total, spec = load_spec('smollm2-135m')")
def _():
    from llmlab.memory import weight_bytes
    from llmlab.models import load_spec

    spec = load_spec("smollm2-135m")
    return weight_bytes(spec, "nf4").total / weight_bytes(spec, "fp16").total
