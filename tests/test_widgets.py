"""The widgets are thin: what they show is exactly what the library returns for the controls' values."""

from llmlab.memory import plan
from llmlab.widgets import NO_GPU, plan_markdown, planner_widget


def test_planner_widget_shows_plan_for_its_defaults():
    widget = planner_widget()
    expected = plan("llama-3.1-8b", "fp16", "fp16", 4096, 1, "H100 SXM", 1, 0.9, 128)
    assert widget.result == expected  # the Plan the widget keeps is the library's, field by field
    assert widget.text == plan_markdown(expected)  # and it displays that plan's rendering


def test_planner_widget_follows_a_control():
    widget = planner_widget(model="llama-3.1-70b", precision="fp8", gpu="H100 SXM")
    widget.controls["context"].value = 32768
    widget.controls["kv_dtype"].value = "fp8"
    expected = plan("llama-3.1-70b", "fp8", kv_dtype="fp8", context=32768, batch=1, gpu="H100 SXM")
    assert widget.result == expected
    assert widget.text == plan_markdown(expected)
    assert widget.result.fits is False  # observed: 70B fp8 + 32k fp8 KV needs more than 0.9 x 79.2 GiB, 2026-11


def test_planner_widget_tensor_parallel_and_no_gpu():
    widget = planner_widget(model="llama-3.1-70b", precision="fp16", gpu="H100 SXM")
    widget.controls["tp"].value = 4
    assert widget.result == plan("llama-3.1-70b", "fp16", gpu="H100 SXM", tp=4)
    widget.controls["gpu"].value = NO_GPU
    assert widget.result == plan("llama-3.1-70b", "fp16", tp=4)
    assert widget.result.fits is None  # no GPU, no verdict


def test_planner_widget_shows_refusals():
    widget = planner_widget(model="smollm2-135m", gpu=None)
    widget.controls["tp"].value = 2  # 9 attention heads do not split over 2 GPUs
    assert widget.result is None
    assert widget.text.startswith("**refused:** tp=2 must divide the 9 attention heads")
