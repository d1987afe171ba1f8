"""Each chapter's main calculator widget, moved in the browser: the result it shows must become the library's.

One row per move. To check a new chapter's widget, add a row:

    WidgetCheck(notebook="05_",                      # file-name prefix of the notebook
                cell="def show_alpha",               # a string in the source of the cell that displays the widget
                control="α",                         # the control's label, as shown beside it
                move="+2",                           # a dropdown option's label, or '+N'/'-N' arrow presses on a slider
                expected=lambda: [...])              # strings the result must show after the move, computed by
                                                     # the library for the new setting (never typed by hand)

Rows of one notebook run in table order, each starting from where the notebook (after 'Run All Cells') or the
previous row left the widget; `before` (optional) is what the widget shows before the move; the text shown must
change with the move in every case. Chapters 00, 01, 08 and 10 show no calculator widget, so they have no row.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
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


# ---- chapters 04-07: the explorers over one layer of the embedded model. The test rebuilds the layer's tensors as
# the notebook does (same calibration, same layer), then calls the library for the new setting. Each first row has
# `before`: the widget's starting result, computed here, must be on the page, so a notebook whose settings drift
# from the ones mirrored below fails with "does not show ... before the move", not with a wrong expectation.

# calibration (samples, tokens per sample) per budget, as each notebook's SETTINGS has it
CALIBRATION = {"05_": {"small": (4, 256), "full": (8, 256)}, "06_": {"small": (4, 128), "full": (8, 256)},
               "07_": {"small": (8, 256), "full": (32, 512)}}


@contextmanager
def _threads_as_in_the_notebooks():
    """One torch thread on a machine of <= 2 cores, as chapters 04-07 set it (the same sums, the same digits)."""
    import torch

    threads = torch.get_num_threads()
    if (os.cpu_count() or 1) <= 2:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _calibration(notebook: str, tokenizer):
    from llmlab.data import calibration_batches
    from llmlab.paths import budget

    return calibration_batches(tokenizer, *CALIBRATION[notebook][budget()])  # [n_samples, seq_len]


@lru_cache(maxsize=None)
def _layer5_weights() -> dict:
    """Chapter 04's `layer_weights`: every linear weight of decoder layer 5, name -> W [out, in]."""
    import torch

    from llmlab.zoo import load_model

    model, _, _ = load_model()
    return {name: module.weight.detach().clone() for name, module in model.model.layers[5].named_modules()
            if isinstance(module, torch.nn.Linear)}


def _grid_error(layer="mlp.down_proj", bits=4, group_size=64, symmetric=True) -> list[str]:
    """Chapter 04's grid-error explorer: heading and table row of `llmlab.quant.formats.int_grid_error`."""
    from llmlab.quant.formats import int_grid_error

    r = int_grid_error(_layer5_weights()[layer], bits, group_size, symmetric)
    group = f"group {group_size}" if group_size else "one scale per row"
    kind = "symmetric" if symmetric else "asymmetric (with zero point)"
    return [f"int{bits}, {group}, {kind}",
            f"{r['bits_per_weight']:.3f}\t{r['relative_error']:.4f}\t{r['sqnr_db']:.1f}\t{r['max_abs_error']:.3g}"]


@lru_cache(maxsize=None)
def _smoothquant_layer():
    """Chapter 05's layer: the q/k/v input with the largest outlier ratio; (act_max [in], W_qkv, X [tokens, in])."""
    import numpy as np

    from llmlab.quant.smoothquant import activation_scales, linear_inputs, outlier_ratio
    from llmlab.zoo import load_model

    model, tokenizer, _ = load_model()
    calibration = _calibration("05_", tokenizer)
    with _threads_as_in_the_notebooks():
        stats = activation_scales(model, calibration)
        layer = int(np.argmax([outlier_ratio(stats[f"model.layers.{i}.self_attn.q_proj"].abs_max)
                               for i in range(model.config.num_hidden_layers)]))
        name = f"model.layers.{layer}.self_attn.q_proj"
        X = linear_inputs(model, calibration, [name])[name]  # [tokens, 576]
    attention = model.model.layers[layer].self_attn
    W_qkv = [attention.q_proj.weight.detach().clone(), attention.k_proj.weight.detach().clone(),
             attention.v_proj.weight.detach().clone()]
    return stats[name].abs_max, W_qkv, X


def _smoothing(alpha=0.5) -> list[str]:
    """Chapter 05's α slider: spreads from `smoothing_ranges` and the three errors of `w8a8_output_error`."""
    import torch

    from llmlab.quant.smoothquant import smoothing_ranges, w8a8_output_error

    act_max, W_qkv, X = _smoothquant_layer()
    with _threads_as_in_the_notebooks():
        r = smoothing_ranges(act_max, W_qkv, alpha)
        W = torch.cat(W_qkv)  # [960, 576]: q, k, v stacked
        errors = (w8a8_output_error(X, W, r.s, weights=False), w8a8_output_error(X, W, r.s, activations=None),
                  w8a8_output_error(X, W, r.s))
    spread = r.spread()
    return [f"X {spread['act_before']:.1f}× → {spread['act_after']:.1f}×, "
            f"W {spread['weight_before']:.1f}× → {spread['weight_after']:.1f}×",
            f"INT8 X only {errors[0]:.4f}, INT8 W only {errors[1]:.4f}, W8A8 {errors[2]:.4f}"]


@lru_cache(maxsize=None)
def _awq_mlp():
    """Chapter 06's layer (the largest q/k/v input value) and its post_attention_layernorm -> gate, up pair."""
    import numpy as np

    from llmlab.quant.awq import balance_pair_inputs
    from llmlab.quant.smoothquant import activation_scales
    from llmlab.zoo import load_model

    model, tokenizer, _ = load_model()
    calibration = _calibration("06_", tokenizer)
    with _threads_as_in_the_notebooks():
        stats = activation_scales(model, calibration)
        layer = int(np.argmax([stats[f"model.layers.{i}.self_attn.q_proj"].abs_max.max().item()
                               for i in range(model.config.num_hidden_layers)]))
        return layer, balance_pair_inputs(model, calibration, layer)[1]  # keeps layer's MLP alive, not the model


def _awq_layer_error(bits=4, group_size=64) -> list[str]:
    """Chapter 06's bits x group explorer: RTN's and AWQ's block output MSE from `awq_search_scale` (grid 10)."""
    from llmlab.quant.awq import awq_search_scale

    layer, mlp = _awq_mlp()
    with _threads_as_in_the_notebooks():
        _, curve = awq_search_scale(mlp.X, mlp.weights, mlp.forward, bits=bits, group_size=group_size, grid=10)
    best = min(range(len(curve)), key=curve.__getitem__)
    return [f"layer {layer} MLP, w{bits}g{group_size}", f"output MSE RTN {curve[0]:.3e}, AWQ {curve[best]:.3e} "
            f"(α* = {best / 10:.1f}"]


@lru_cache(maxsize=None)
def _gptq_layer():
    """Chapter 07's layer: W [576, 576] of layer 2's q_proj and its Hessian H [576, 576] from the calibration."""
    from llmlab.quant.gptq import hessian
    from llmlab.quant.smoothquant import linear_inputs
    from llmlab.zoo import load_model

    model, tokenizer, _ = load_model()
    name = "model.layers.2.self_attn.q_proj"
    with _threads_as_in_the_notebooks():
        X = linear_inputs(model, _calibration("07_", tokenizer), [name])[name]  # [N tokens, 576]
        return model.get_submodule(name).weight.detach().clone(), hessian(X)


def _gptq_comparison(bits=4, group_size=64) -> list[str]:
    """Chapter 07's layer explorer: weight MSE and output error of RTN and GPTQ from `compare_with_rtn`."""
    from llmlab.quant.gptq import compare_with_rtn

    W, H = _gptq_layer()
    with _threads_as_in_the_notebooks():
        r = compare_with_rtn(W, H, bits, group_size)
    return [f"int{bits}, {f'group {group_size}' if group_size else 'one grid per row'}",
            f"RTN\t{r.rtn_weight_mse:.3g}\t{r.rtn_output_error:.4g}",
            f"GPTQ\t{r.gptq_weight_mse:.3g}\t{r.gptq_output_error:.4g}"]


CHECKS = [
    WidgetCheck("02_", "show_kv", "KV dtype", "fp8", lambda: _kv_calculator(kv_dtype="fp8"),
                before=lambda: _kv_calculator()),
    WidgetCheck("02_", "show_kv", "batch", "+3", lambda: _kv_calculator(kv_dtype="fp8", batch=4)),
    WidgetCheck("03_", "planner_widget(", "weights", "int4", lambda: _planner(precision="int4"),
                before=lambda: _planner()),
    WidgetCheck("03_", "planner_widget(", "context", "+1", lambda: _planner(precision="int4", context=4096)),
    WidgetCheck("04_", "grid_error_widget(", "bits", "3", lambda: _grid_error(bits=3),
                before=lambda: _grid_error()),
    WidgetCheck("04_", "grid_error_widget(", "group size", "per row", lambda: _grid_error(bits=3, group_size=None)),
    # 05: the slider steps by 0.05 from 0.5; the plot it redraws is checked as an image by the notebook run
    WidgetCheck("05_", "def show_alpha", "α", "+2", lambda: _smoothing(alpha=0.6), before=lambda: _smoothing()),
    WidgetCheck("06_", "def show_layer_error", "bits", "3", lambda: _awq_layer_error(bits=3),
                before=lambda: _awq_layer_error()),
    WidgetCheck("06_", "def show_layer_error", "group", "32", lambda: _awq_layer_error(bits=3, group_size=32)),
    WidgetCheck("07_", "gptq_layer_widget(W", "bits", "3", lambda: _gptq_comparison(bits=3),
                before=lambda: _gptq_comparison()),
    WidgetCheck("07_", "gptq_layer_widget(W", "group size", "192", lambda: _gptq_comparison(bits=3, group_size=192)),
    WidgetCheck("09_", "show_comparison", "block_size", "64", lambda: _paged_comparison(block_size=64),
                before=lambda: _paged_comparison()),
    WidgetCheck("11_", "show_advice", "priority", "cost", lambda: _advice(priority="cost"),
                before=lambda: _advice()),
    WidgetCheck("11_", "show_use", "use", "commercial-service", lambda: _licence(use="commercial-service"),
                before=lambda: _licence()),
]


def checks_for(notebook: str) -> list[WidgetCheck]:
    return [check for check in CHECKS if notebook.startswith(check.notebook)]
