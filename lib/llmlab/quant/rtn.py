"""Round-to-nearest (RTN): the baseline every weight quantizer is measured against.

Each weight goes to the nearest point of its group's min-max grid, independently of every other weight and of the
inputs it will meet — no calibration data. GPTQ (arXiv 2210.17323) and AWQ (arXiv 2306.00978) both report RTN as the
naive method they improve on; `llmlab.quant.driver.rtn_quantize_model` applies it to a whole model.
"""

from __future__ import annotations

import torch

from llmlab.quant.formats import fake_quantize


def rtn(W: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True) -> torch.Tensor:
    """Q: W [out, in] rounded to nearest on a grid per output row (group_size=None) or per `group_size` columns."""
    return fake_quantize(W, bits, group_size, symmetric, axis=-1)  # one grid per row / per group along `in`
