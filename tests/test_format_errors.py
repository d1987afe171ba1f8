"""Chapter 04's format catalogue: every representable value of each format, one format at one granularity, the
INT-grid error report, and the thin widget over it."""

import pytest
import torch

from llmlab.quant.formats import (
    FORMAT_NAMES,
    GRANULARITIES,
    error_report,
    fake_quantize,
    fake_quantize_format,
    int_grid_error,
    nf4_codebook,
    representable_values,
)


def test_representable_values():
    counts = {fmt: representable_values(fmt).numel() for fmt in FORMAT_NAMES}
    # fp16: 2^16 patterns − 2·1023 NaNs − 2 infinities − one of ±0 = 63487
    # e4m3fn: 256 − 2 NaNs − one of ±0 = 253
    assert counts == {"fp16": 63487, "bf16": 65279, "e4m3": 253, "e5m2": 247, "int8": 256, "int4": 16, "nf4": 16}
    assert representable_values("e4m3").max().item() == 448.0 and representable_values("e5m2").max().item() == 57344.0
    assert representable_values("fp16").max().item() == 65504.0
    assert torch.equal(representable_values("nf4"), nf4_codebook().double())
    with pytest.raises(ValueError, match="choose one of"):
        representable_values("fp4")


def test_fake_quantize_format_granularities():
    torch.manual_seed(0)
    W = torch.randn(8, 128) * 0.02
    W[0, 0] = 1.0  # one outlier: it coarsens every grid it shares a scale with
    errors = {(fmt, g): error_report(W, fake_quantize_format(W, fmt, g, 64))["sqnr_db"]
              for fmt in FORMAT_NAMES for g in GRANULARITIES}
    for fmt in ("int8", "int4", "nf4"):  # finer scales, smaller error
        assert errors[fmt, "tensor"] < errors[fmt, "channel"] < errors[fmt, "group"], fmt
    assert errors["fp16", "tensor"] == errors["fp16", "group"] > errors["bf16", "tensor"] > errors["e4m3", "tensor"]
    assert errors["nf4", "group"] > errors["int4", "group"]  # normal-shaped weights: NF4's levels fit better
    torch.testing.assert_close(fake_quantize_format(W, "int4", "group", 64), fake_quantize(W, 4, 64))
    with pytest.raises(ValueError, match="try"):
        fake_quantize_format(W, "int4", "group", 48)
    with pytest.raises(ValueError, match="granularity"):
        fake_quantize_format(W, "int4", "row")


def test_int_grid_error_counts_the_scales():
    torch.manual_seed(0)
    W = torch.randn(16, 576)
    report = int_grid_error(W, 4, 64)
    assert report["bits_per_weight"] == 4 + 16 / 64  # one fp16 scale per 64 weights
    assert int_grid_error(W, 4, None, symmetric=False)["bits_per_weight"] == 4 + (16 + 4) / 576
    assert report["relative_error"] < int_grid_error(W, 4, None)["relative_error"]
    assert int_grid_error(W, 8, 64)["sqnr_db"] - report["sqnr_db"] == pytest.approx(24, abs=2)  # ~6 dB per bit


def test_grid_error_widget_is_thin():
    from llmlab.widgets import grid_error_widget, grid_error_markdown

    torch.manual_seed(0)
    weights = {"q_proj": torch.randn(8, 576), "down_proj": torch.randn(8, 1536)}
    widget = grid_error_widget(weights, bits=4, group_size=64)
    assert widget.result == int_grid_error(weights["q_proj"], 4, 64)
    assert widget.text == grid_error_markdown(widget.result)
    widget.controls["group_size"].value = 128  # 576 columns: refused, with the sizes that work
    assert widget.result is None and "try 32, 64, 96 or 192" in widget.text
    widget.controls["layer"].value = "down_proj"  # 1536 = 12 x 128
    assert widget.result == int_grid_error(weights["down_proj"], 4, 128)
