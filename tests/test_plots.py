"""The shared figures draw exactly the bytes they are given (a figure never computes one)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from llmlab.memory import plan  # noqa: E402
from llmlab.plots import bytes_bars, memory_breakdown  # noqa: E402

GiB = 2**30


def _stack_tops(ax) -> list[float]:
    """Top of each bar's stack, read back from the drawn rectangles of the four parts."""
    tops = {}
    for container in ax.containers[:4]:  # weights, KV, activations, overhead
        for bar in container:
            x = round(bar.get_x(), 6)
            tops[x] = max(tops.get(x, 0.0), bar.get_y() + bar.get_height())
    return [tops[x] for x in sorted(tops)]


def test_memory_breakdown_stacks_the_four_parts_of_a_plan_and_a_row():
    p = plan("llama-3.1-8b", "bf16", "bf16", context=4096, batch=8)
    row = {"label": "measured", "measured": True, "weight_bytes": 16 * GiB, "kv_bytes": 4 * GiB,
           "activation_bytes": 3 * GiB, "overhead_bytes": GiB}
    ax = memory_breakdown([p, row], budget_bytes=80 * GiB)
    expected = (p.weight_bytes + p.kv_bytes + p.activation_bytes + p.overhead_bytes) / GiB
    tops = _stack_tops(ax)
    assert tops[0] == pytest.approx(expected), (tops, expected)  # the plan's four parts, stacked
    assert tops[1] == pytest.approx(24.0), tops  # 16 + 4 + 3 + 1 GiB
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8×4096", "measured"]
    assert ax.containers[0][1].get_hatch() == "//" and not ax.containers[0][0].get_hatch()
    assert "GiB" in ax.get_ylabel() and ax.get_title()
    plt.close("all")


def test_memory_breakdown_refuses_what_it_cannot_draw():
    with pytest.raises(ValueError, match="tp=2"):
        memory_breakdown([plan("llama-3.1-70b", "fp8", tp=2)])
    with pytest.raises(ValueError, match="unit"):
        memory_breakdown([{"weight_bytes": 1}], unit="GiBs")
    with pytest.raises(ValueError, match="one label per bar"):
        memory_breakdown([{"weight_bytes": 1}], labels=["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        memory_breakdown([])
    plt.close("all")


def test_bytes_bars_writes_each_value_in_its_unit():
    ax = bytes_bars({"fp16": 269_030_016, "int4 g64": 113_924_736}, unit="MB", quantity="weights")
    heights = [bar.get_height() for bar in ax.containers[0]]
    assert heights == pytest.approx([269.030016, 113.924736]), heights
    assert ax.get_ylabel() == "weights (MB)"
    plt.close("all")
