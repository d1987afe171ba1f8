"""Thin ipywidgets over the library's pure functions (STYLE.md #13: a widget never holds logic).

A builder lays out controls, calls ONE library function with their values whenever one changes, keeps what it
returned in `.result` and shows it rendered as Markdown. Every number on screen comes from that call, so a test can
set a control's value and compare `.result` with the same call made directly.

    planner_widget()   llmlab.memory.plan: model, precision, KV dtype, context, batch, GPU, tensor parallel,
                       gpu_memory_utilization, int4 group size
    plan_markdown()    how a Plan is shown (bytes in GB = 10**9 and GiB = 2**30, as the course writes them)
    gptq_layer_widget(W, H)   llmlab.quant.gptq.compare_with_rtn: bits, group size, act-order on one layer (ch. 07)
    grid_error_widget(weights)   llmlab.quant.formats.int_grid_error: layer, bits, group size, symmetry (ch. 04)
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


class _ExplorerWidget(widgets.VBox):
    """Controls in rows above one Markdown output: every change calls `compute()` (a library function) and shows
    `render(result)`, or the library's refusal. `.result` is the last result (None after a refusal).
    `per_row`: how many controls each row holds (default: all in one)."""

    def __init__(self, controls: dict, per_row: int | None = None):
        self.controls = controls
        self.output = widgets.Output()
        self.result = None
        for control in self.controls.values():
            control.observe(lambda change: self.refresh(), names="value")
        boxes = list(self.controls.values())
        step = per_row or len(boxes)
        super().__init__([widgets.HBox(boxes[i:i + step]) for i in range(0, len(boxes), step)] + [self.output])
        self.refresh()

    def refresh(self) -> None:
        """Call the library with the controls' values and show what it returns (or its refusal)."""
        try:
            self.result = self.compute()
            text = self.render(self.result)
        except (ValueError, LookupError) as refusal:
            self.result, text = None, f"**refused:** {refusal}"
        self.output.outputs = ()
        self.output.append_display_data(Markdown(text))

    @property
    def text(self) -> str:
        """The Markdown on display now."""
        return self.output.outputs[-1]["data"]["text/markdown"]


class PlannerWidget(_ExplorerWidget):
    """Controls for `llmlab.memory.plan` above the rendered plan; `.result` is the last Plan (None after a refusal)."""

    def __init__(self, model: str = "llama-3.1-8b", precision: str = "fp16", kv_dtype: str = "fp16",
                 context: int = 4096, batch: int = 1, gpu: str | None = "H100 SXM", tp: int = 1,
                 gpu_memory_utilization: float = 0.9, group_size: int = 128):
        super().__init__({
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
        }, per_row=3)

    def arguments(self) -> dict:
        """The controls' values as `plan`'s keyword arguments."""
        values = {name: control.value for name, control in self.controls.items()}
        return {**values, "gpu": None if values["gpu"] == NO_GPU else values["gpu"]}

    def compute(self) -> Plan:
        return plan(**self.arguments())

    def render(self, result: Plan) -> str:
        return plan_markdown(result)


def planner_widget(**defaults) -> PlannerWidget:
    """The capacity-planner calculator of chapter 03; `defaults` are `plan`'s arguments (model, precision, ...)."""
    return PlannerWidget(**defaults)


def _with(options: tuple[int, ...], value: int) -> list[int]:
    """The offered options, plus `value` in its place when it is not one of them."""
    return sorted({*options, value})


# ---------------------------------------------------------------- chapter 07: RTN vs GPTQ on one layer

PER_ROW = "per row"  # the group-size choice meaning one grid per output row (group_size=None)
LAYER_BITS = (2, 3, 4, 8)  # integer widths the GPTQ layer widget offers


def layer_comparison_markdown(result) -> str:
    """A `llmlab.quant.gptq.LayerComparison` as Markdown: weight error and layer-output error of RTN and GPTQ."""
    group = f"group {result.group_size}" if result.group_size else "one grid per row"
    rows = [{"method": name, "weight MSE": f"{weight:.3g}", "output error ‖WX − ŴX‖²/N": f"{output:.4g}"}
            for name, weight, output in (("RTN", result.rtn_weight_mse, result.rtn_output_error),
                                         ("GPTQ" + (" (act-order)" if result.act_order else ""),
                                          result.gptq_weight_mse, result.gptq_output_error))]
    ratio = result.gptq_output_error / result.rtn_output_error if result.rtn_output_error else float("nan")
    return "\n".join([f"**int{result.bits}, {group}**", "", markdown_table(rows), "",
                      f"GPTQ's output error is **{ratio:.2f}×** RTN's; its weight MSE is "
                      f"{result.gptq_weight_mse / result.rtn_weight_mse:.2f}× RTN's."])


class GPTQLayerWidget(_ExplorerWidget):
    """Bits, group size and act-order for `llmlab.quant.gptq.compare_with_rtn` on one layer's W [out, in] and
    H [in, in]; `.result` is the last LayerComparison (None after a refusal)."""

    def __init__(self, W, H, bits: int = 4, group_size: int | None = 64, act_order: bool = False):
        in_features = W.shape[1]
        sizes = [g for g in (32, 64, 96, 128, 192, 256) if in_features % g == 0]
        self.W, self.H = W, H
        super().__init__({
            "bits": widgets.Dropdown(options=_with(LAYER_BITS, bits), value=bits, description="bits"),
            "group_size": widgets.Dropdown(options=[PER_ROW, *_with(tuple(sizes), group_size or sizes[0])],
                                           value=group_size or PER_ROW, description="group size"),
            "act_order": widgets.Checkbox(value=act_order, description="act-order"),
        })

    def arguments(self) -> dict:
        """The controls' values as `compare_with_rtn`'s keyword arguments."""
        values = {name: control.value for name, control in self.controls.items()}
        return {**values, "group_size": None if values["group_size"] == PER_ROW else values["group_size"]}

    def compute(self):
        from llmlab.quant.gptq import compare_with_rtn

        return compare_with_rtn(self.W, self.H, **self.arguments())

    def render(self, result) -> str:
        return layer_comparison_markdown(result)


def gptq_layer_widget(W, H, **defaults) -> GPTQLayerWidget:
    """Chapter 07's bits × group size explorer on one layer (W [out, in], its Hessian H [in, in])."""
    return GPTQLayerWidget(W, H, **defaults)


# ---------------------------------------------------------------- chapter 04: an INT grid's error on one layer

GRID_BITS = (2, 3, 4, 5, 6, 8)  # integer widths the grid-error widget offers
GRID_GROUPS = (32, 64, 96, 128, 192, 256)  # group sizes offered (those not dividing the layer are refused)


def grid_error_markdown(result: dict) -> str:
    """An `llmlab.quant.formats.int_grid_error` result as Markdown: storage cost beside the error."""
    group = f"group {result['group_size']}" if result["group_size"] else "one scale per row"
    kind = "symmetric" if result["symmetric"] else "asymmetric (with zero point)"
    row = {"bits per weight (16-bit scales incl.)": f"{result['bits_per_weight']:.3f}",
           "relative error ‖W − Ŵ‖/‖W‖": f"{result['relative_error']:.4f}",
           "SQNR (dB)": f"{result['sqnr_db']:.1f}",
           "largest error max(abs(W − Ŵ))": f"{result['max_abs_error']:.3g}"}
    return "\n".join([f"**int{result['bits']}, {group}, {kind}**", "", markdown_table([row])])


class GridErrorWidget(_ExplorerWidget):
    """Layer, bits, group size and symmetry for `llmlab.quant.formats.int_grid_error` on one of `weights`
    (name -> W [out, in]); `.result` is the last report (None after a refusal)."""

    def __init__(self, weights, layer: str | None = None, bits: int = 4, group_size: int | None = 64,
                 symmetric: bool = True):
        self.weights = dict(weights)
        super().__init__({
            "layer": widgets.Dropdown(options=list(self.weights), value=layer or next(iter(self.weights)),
                                      description="layer"),
            "bits": widgets.Dropdown(options=_with(GRID_BITS, bits), value=bits, description="bits"),
            "group_size": widgets.Dropdown(options=[PER_ROW, *_with(GRID_GROUPS, group_size or GRID_GROUPS[0])],
                                           value=group_size or PER_ROW, description="group size"),
            "symmetric": widgets.Checkbox(value=symmetric, description="symmetric"),
        })

    def arguments(self) -> dict:
        """The controls' values as `int_grid_error`'s arguments (W picked by the layer name)."""
        values = {name: control.value for name, control in self.controls.items()}
        return {"W": self.weights[values["layer"]], "bits": values["bits"], "symmetric": values["symmetric"],
                "group_size": None if values["group_size"] == PER_ROW else values["group_size"]}

    def compute(self):
        from llmlab.quant.formats import int_grid_error

        return int_grid_error(**self.arguments())

    def render(self, result) -> str:
        return grid_error_markdown(result)


def grid_error_widget(weights, **defaults) -> GridErrorWidget:
    """Chapter 04's bits × group size explorer: an INT grid's error on one layer of `weights` (name -> W)."""
    return GridErrorWidget(weights, **defaults)
