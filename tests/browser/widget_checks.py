"""Each chapter's main calculator widget, moved in the browser: the result it shows must become the library's.

One row per move. To check a new chapter's widget, add a row:

    WidgetCheck(notebook="05_",                      # file-name prefix of the notebook
                cell="smoothquant_widget(",          # a string in the source of the cell that displays the widget
                control="alpha",                     # the control's label, as shown beside it
                move="+2",                           # a dropdown option's label, or '+N'/'-N' arrow presses on a slider
                expected=lambda: [...])              # strings the result must show after the move, computed by
                                                     # the library for the new setting (never typed by hand)

Rows of one notebook run in table order, each starting from where the notebook (after 'Run All Cells') or the
previous row left the widget; `before`
(optional) is what the widget shows before the move; the text shown must change with the move in every case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

GiB = 2**30


@dataclass(frozen=True)
class WidgetCheck:
    notebook: str  # prefix of the notebook's file name, e.g. "03_"
    cell: str  # text found in the source of the cell that displays the widget
    control: str  # the control's label as the learner reads it
    move: str  # a dropdown option's label, or "+N" / "-N" arrow-key presses on a slider's handle
    expected: Callable[[], list[str]]  # strings shown after the move, computed by the library
    before: Callable[[], list[str]] | None = None  # strings shown before the move (and gone after it)


def _planner(**changes) -> list[str]:
    """Chapter 03's planner: the total bytes `llmlab.memory.plan` gives for these settings."""
    from llmlab.memory import plan

    # the notebook builds it at 4,096 tokens, then sets 2,048 from code (cell "Controls can be set from code too")
    settings = dict(model="llama-3.1-70b", precision="fp8", kv_dtype="fp8", context=2048, batch=1, gpu="H100 SXM",
                    tp=1, gpu_memory_utilization=0.9, group_size=128) | changes
    result = plan(**settings)
    return [f"total, all GPUs\t{result.total_bytes:,}"]


def _kv_calculator(model="llama-3.1-8b", kv_dtype="fp16", context=8192, batch=1) -> list[str]:
    """Chapter 02's KV calculator: bytes per token and the cache for batch x context, as `show_kv` prints them."""
    from llmlab.memory import kv_bytes_per_token, kv_cache_bytes
    from llmlab.models import load_spec

    spec = load_spec(model)
    total = kv_cache_bytes(spec, context, batch, kv_dtype)
    return [f"{kv_bytes_per_token(spec, kv_dtype):,} bytes per token", f"→ {total / GiB:.2f} GiB"]


def _paged_comparison(block_size=16, requests=500, max_model_len=2048, pool_in_requests=32) -> list[str]:
    """Chapter 09's paged-vs-contiguous comparison: each scheme's waste and decode steps from `compare`."""
    from llmlab.serving.paged import DISTRIBUTIONS, RESERVATIONS, compare, synthetic_trace

    trace = synthetic_trace(requests, list(DISTRIBUTIONS)[0], max_model_len, seed=0)
    result = compare(trace, pool_in_requests * max_model_len, block_size, max_model_len, list(RESERVATIONS)[0])
    return [f"paged\t{result.paged.waste_fraction:.1%}\t{result.paged.max_concurrency}\t{result.paged.steps:,}",
            f"contiguous\t{result.contiguous.waste_fraction:.1%}\t{result.contiguous.max_concurrency}\t"
            f"{result.contiguous.steps:,}"]


def _advice(priority="quality", gpu_name="H100 SXM") -> list[str]:
    """Chapter 11's advisor: the choice `llmlab.advisor.advise` makes."""
    from llmlab.advisor import advise

    a = advise("llama-3.1-70b", gpu_name, priority, 4096, 1, "vllm")
    return [f"chosen: {a.precision} weights + {a.kv_dtype} KV cache, {a.engine}, tp={a.tp}"]


def _licence(use="internal-research", model="llama-3.1-8b", transform="none") -> list[str]:
    """Chapter 11's licence checker: the verdict `llmlab.licensing.check_use` gives."""
    from llmlab.licensing import check_use, derive, model_terms

    terms = model_terms(model) if transform == "none" else derive([model], transform, f"{model} ({transform})")
    verdict, _ = check_use(terms, use)
    return [f"{use} with {terms.model}: {verdict}"]


CHECKS = [
    WidgetCheck("02_", "show_kv", "KV dtype", "fp8", lambda: _kv_calculator(kv_dtype="fp8"),
                before=lambda: _kv_calculator()),
    WidgetCheck("02_", "show_kv", "batch", "+3", lambda: _kv_calculator(kv_dtype="fp8", batch=4)),
    WidgetCheck("03_", "planner_widget(", "weights", "int4", lambda: _planner(precision="int4"),
                before=lambda: _planner()),
    WidgetCheck("03_", "planner_widget(", "context", "+1", lambda: _planner(precision="int4", context=4096)),
    WidgetCheck("09_", "show_comparison", "block_size", "64", lambda: _paged_comparison(block_size=64),
                before=lambda: _paged_comparison()),
    WidgetCheck("11_", "show_advice", "priority", "cost", lambda: _advice(priority="cost"),
                before=lambda: _advice()),
    WidgetCheck("11_", "show_use", "use", "commercial-service", lambda: _licence(use="commercial-service"),
                before=lambda: _licence()),
]


def checks_for(notebook: str) -> list[WidgetCheck]:
    return [check for check in CHECKS if notebook.startswith(check.notebook)]
