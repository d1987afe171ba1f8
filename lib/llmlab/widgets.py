"""Thin ipywidgets over the library's pure functions (STYLE.md #13: a widget never holds logic).

A builder lays out controls, calls ONE library function with their values whenever one changes, keeps what it
returned in `.result` and shows it rendered as Markdown. Every number on screen comes from that call, so a test can
set a control's value and compare `.result` with the same call made directly.

    planner_widget()   llmlab.memory.plan: model, precision, KV dtype, context, batch, GPU, tensor parallel,
                       gpu_memory_utilization, int4 group size
    plan_markdown()    how a Plan is shown (bytes in GB = 10**9 and GiB = 2**30, as the course writes them)
"""

from __future__ import annotations

import ipywidgets as widgets
from IPython.display import Markdown

from llmlab.course import markdown_table
from llmlab.hardware import gpu_names
from llmlab.memory import FORMATS, GB, KV_DTYPES, Plan, plan
from llmlab.models import catalog_names

GiB = 2**30
NO_GPU = "(none)"  # the GPU choice that plans the model alone, without fitting it anywhere
CONTEXTS = tuple(2**k for k in range(8, 18))  # 256 ... 131072 tokens per sequence
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # concurrent sequences
TENSOR_PARALLEL = (1, 2, 4, 8, 16)  # GPUs one model is split over
GROUP_SIZES = (32, 64, 128)  # int4 group sizes offered (ignored by the other formats)


def plan_markdown(result: Plan) -> str:
    """A Plan as Markdown: one table of bytes, then the GPU verdict and warnings when it was planned on a GPU."""
    per_gpu = f" (per GPU of {result.tp})" if result.tp > 1 else ""
    rows = [("weights (whole model)", result.weight_bytes),
            ("KV cache per token (one sequence)", result.kv_bytes_per_token),
            (f"KV cache: {result.batch} x {result.context:,} tokens (whole model)", result.kv_bytes),
            (f"activations, {result.prefill_tokens:,}-token prefill{per_gpu}", result.activation_bytes),
            (f"runtime overhead{per_gpu}", result.overhead_bytes),
            ("one GPU holds", result.per_gpu_bytes),
            ("total, all GPUs", result.total_bytes)]
    table = markdown_table([{"": name, "bytes": f"{value:,}", "GB": f"{value / GB:.2f}", "GiB": f"{value / GiB:.2f}"}
                            for name, value in rows])
    head = (f"**{result.model}**: {result.params / 1e9:.2f} B parameters, weights {result.precision}"
            f"{f' (group {result.group_size})' if result.group_size else ''}, KV cache {result.kv_dtype}, "
            f"tp = {result.tp}")
    lines = [head, "", table]
    if result.gpu is not None:
        verdict = "fits" if result.fits else "does NOT fit"
        lines += ["", f"**{result.tp} x {result.gpu}**: {verdict} — budget {result.budget_bytes / GB:.2f} GB per GPU "
                      f"({result.gpu_memory_utilization:g} x {result.gpu_memory_bytes / GB:.2f} GB), headroom "
                      f"{result.headroom_bytes / GB:+.2f} GB; longest context at batch {result.batch}: "
                      f"**{result.max_context:,}** tokens (limited by {result.max_context_limited_by}); most "
                      f"sequences of {result.context:,} tokens: **{result.max_concurrency:,}**"]
    lines += [f"- ⚠ {warning}" for warning in result.warnings]
    return "\n".join(lines)


class PlannerWidget(widgets.VBox):
    """Controls for `llmlab.memory.plan` above the rendered plan; `.result` is the last Plan (None after a refusal)."""

    def __init__(self, model: str = "llama-3.1-8b", precision: str = "fp16", kv_dtype: str = "fp16",
                 context: int = 4096, batch: int = 1, gpu: str | None = "H100 SXM", tp: int = 1,
                 gpu_memory_utilization: float = 0.9, group_size: int = 128):
        self.controls = {
            "model": widgets.Dropdown(options=catalog_names(), value=model, description="model"),
            "precision": widgets.Dropdown(options=list(FORMATS), value=precision, description="weights"),
            "kv_dtype": widgets.Dropdown(options=list(KV_DTYPES), value=kv_dtype, description="KV cache"),
            "context": widgets.SelectionSlider(options=_with(CONTEXTS, context), value=context, description="context"),
            "batch": widgets.SelectionSlider(options=_with(BATCHES, batch), value=batch, description="batch"),
            "gpu": widgets.Dropdown(options=[NO_GPU, *gpu_names()], value=gpu or NO_GPU, description="GPU"),
            "tp": widgets.Dropdown(options=_with(TENSOR_PARALLEL, tp), value=tp, description="tp (GPUs)"),
            "gpu_memory_utilization": widgets.FloatSlider(value=gpu_memory_utilization, min=0.5, max=1.0, step=0.01,
                                                          description="utilization"),
            "group_size": widgets.Dropdown(options=_with(GROUP_SIZES, group_size), value=group_size,
                                           description="int4 group"),
        }
        self.output = widgets.Output()
        self.result: Plan | None = None
        for control in self.controls.values():
            control.observe(lambda change: self.refresh(), names="value")
        super().__init__([widgets.HBox(list(self.controls.values())[:3]),
                          widgets.HBox(list(self.controls.values())[3:6]),
                          widgets.HBox(list(self.controls.values())[6:]), self.output])
        self.refresh()

    def arguments(self) -> dict:
        """The controls' values as `plan`'s keyword arguments."""
        values = {name: control.value for name, control in self.controls.items()}
        return {**values, "gpu": None if values["gpu"] == NO_GPU else values["gpu"]}

    def refresh(self) -> None:
        """Call `plan` with the controls' values and show what it returns (or its refusal)."""
        try:
            self.result = plan(**self.arguments())
            text = plan_markdown(self.result)
        except (ValueError, LookupError) as refusal:
            self.result, text = None, f"**refused:** {refusal}"
        self.output.outputs = ()
        self.output.append_display_data(Markdown(text))

    @property
    def text(self) -> str:
        """The Markdown on display now."""
        return self.output.outputs[-1]["data"]["text/markdown"]


def planner_widget(**defaults) -> PlannerWidget:
    """The capacity-planner calculator of chapter 03; `defaults` are `plan`'s arguments (model, precision, ...)."""
    return PlannerWidget(**defaults)


def _with(options: tuple[int, ...], value: int) -> list[int]:
    """The offered options, plus `value` in its place when it is not one of them."""
    return sorted({*options, value})
