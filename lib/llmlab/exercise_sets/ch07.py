"""Chapter 07 exercises: GPTQ and the export formats."""

from llmlab.exercises import register


@register("07.1", "How many int32 words hold the 4-bit codes of one 576 × 576 q_proj in the compressed-tensors "
                  "pack-quantized layout? (an integer)",
          "pack_int4(torch.zeros(576, 576, dtype=torch.int8)).numel()")
def _():
    import torch

    from llmlab.quant.packing import pack_int4

    return pack_int4(torch.zeros(576, 576, dtype=torch.int8)).numel()


@register("07.2", "In AutoAWQ's GEMM layout, which nibble of a qweight word (0 = lowest 4 bits … 7) holds column 1 "
                  "of its block of eight? (an integer)",
          "next(i for i in range(8) if (pack_awq(one_hot_column_1 * 15).item() >> 4 * i) & 0xF == 15)")
def _():
    import torch

    from llmlab.quant.packing import pack_awq

    word = pack_awq((torch.arange(8) == 1).long()[None] * 15).item()  # only column 1 set, to 15
    return next(i for i in range(8) if (word >> 4 * i) & 0xF == 15)


@register("07.3", "From the Hessian alone: W = [[1, 2]], Ŵ = [[1, 1.5]], H = [[2, 0], [0, 4]] (H = 2XXᵀ/N). What is "
                  "the layer-output error per token ‖(W − Ŵ)X‖²/N? (a number)",
          "output_error(torch.tensor([[1., 2.]]), torch.tensor([[1., 1.5]]), torch.tensor([[2., 0.], [0., 4.]]))")
def _():
    import torch

    from llmlab.quant.gptq import output_error

    return output_error(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 1.5]]), torch.tensor([[2.0, 0.0], [0.0, 4.0]]))


@register("07.4", "How many bytes do qweight + qzeros + scales of one down_proj (out 576, in 1536) take in the "
                  "AutoAWQ GEMM layout at group 64? (an integer, bytes)",
          "sum(t.numel() * t.element_size() for t in awq_gemm_tensors(torch.zeros(576, 1536, dtype=torch.int8), "
          "torch.ones(576, 24)).values())")
def _():
    import torch

    from llmlab.quant.export import awq_gemm_tensors

    tensors = awq_gemm_tensors(torch.zeros(576, 1536, dtype=torch.int8), torch.ones(576, 1536 // 64))
    return sum(t.numel() * t.element_size() for t in tensors.values())
