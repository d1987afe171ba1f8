"""Matplotlib figures the sizing chapters (01–03) share: thin drawing over numbers the library computed.

    memory_breakdown(rows)   stacked bars of weights / KV cache / activations / overhead, one bar per plan or
                             measurement (a `llmlab.memory.Plan`, or a dict with the same *_bytes keys)
    bytes_bars(values)       one bar per label (e.g. a model's weight bytes per precision), each value written on it

A function here draws; it never computes a byte. Each returns its Axes; the notebook calls plt.show().
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt

UNITS = {"GiB": 2**30, "GB": 10**9, "MiB": 2**20, "MB": 10**6}  # the course writes GiB (2**30) or GB (10**9)
PARTS = (  # (key in a Plan / row, legend label, colour): the guide's three pillars plus the runtime's overhead
    ("weight_bytes", "weights", "#4c72b0"),
    ("kv_bytes", "KV cache", "#dd8452"),
    ("activation_bytes", "activations", "#55a868"),
    ("overhead_bytes", "overhead", "#8c8c8c"),
)


def _scale(unit: str) -> int:
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
    return UNITS[unit]


def _as_row(item) -> dict:
    """A Plan or a dict, as a dict of *_bytes (a Plan planned over tp > 1 GPUs mixes whole-model and per-GPU
    numbers, so it is refused)."""
    if isinstance(item, Mapping):
        return dict(item)
    if getattr(item, "tp", 1) != 1:
        raise ValueError(f"memory_breakdown draws tp=1 plans; this one has tp={item.tp}: pass a dict of per-GPU bytes "
                         "(weight_bytes, kv_bytes, activation_bytes, overhead_bytes) instead")
    row = item.to_dict()
    row.setdefault("label", f"{row['batch']}×{row['context']}")
    return row


def memory_breakdown(plans_or_rows: Sequence, ax=None, labels: Sequence[str] | None = None, unit: str = "GiB",
                     title: str = "GPU memory, part by part", budget_bytes: int | None = None,
                     budget_label: str = "GPU budget"):
    """Stacked bars of weights, KV cache, activations and overhead, one bar per plan or row.

    plans_or_rows: `Plan`s (tp = 1) or dicts with any of weight_bytes, kv_bytes, activation_bytes, overhead_bytes
    (missing parts count 0), optionally "label", and "measured": True to hatch the bar (measured beside predicted).
    labels overrides the bar labels. budget_bytes draws a dashed line (a GPU's budget), named budget_label.
    """
    scale = _scale(unit)
    rows = [_as_row(item) for item in plans_or_rows]
    if not rows:
        raise ValueError("memory_breakdown needs at least one plan or row")
    names = list(labels) if labels is not None else [str(row.get("label", index)) for index, row in enumerate(rows)]
    if len(names) != len(rows):
        raise ValueError(f"{len(names)} labels for {len(rows)} bars; give one label per bar")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(rows) + 2), 4))
    positions = range(len(rows))
    bottom = [0.0] * len(rows)
    for key, legend, colour in PARTS:
        heights = [row.get(key, 0) / scale for row in rows]
        bars = ax.bar(positions, heights, bottom=bottom, color=colour, label=legend, edgecolor="white", linewidth=0.5)
        for bar, row in zip(bars, rows):
            bar.set_hatch("//" if row.get("measured") else "")
        bottom = [low + height for low, height in zip(bottom, heights)]
    if budget_bytes is not None:
        ax.axhline(budget_bytes / scale, color="black", linestyle="--", linewidth=1, label=budget_label)
    if any(row.get("measured") for row in rows):
        ax.bar([0], [0], color="white", edgecolor="black", hatch="//", label="measured (hatched)")
    ax.set_xticks(list(positions), names, fontsize=8)
    ax.set_ylabel(f"memory ({unit})")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def bytes_bars(values: Mapping[str, int], ax=None, unit: str = "MB", title: str = "bytes", xlabel: str = "",
               quantity: str = "bytes", color: str = "#4c72b0"):
    """One bar per label, its value (in `unit`) written above it; the y axis reads "<quantity> (<unit>)"."""
    scale = _scale(unit)
    if not values:
        raise ValueError("bytes_bars needs at least one value")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(values) + 2), 3.5))
    heights = [value / scale for value in values.values()]
    bars = ax.bar(list(values), heights, color=color)
    ax.bar_label(bars, labels=[f"{height:.3g}" for height in heights], fontsize=8)
    ax.set_ylabel(f"{quantity} ({unit})")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.margins(y=0.15)
    return ax


# ---------------------------------------------------------------- quantization chapters (05–06): per-channel ranges


def channel_ranges(act_before, weight_before, act_after=None, weight_after=None, highlight: Sequence[int] = (),
                   title: str = "per-channel ranges", axes=None):
    """SmoothQuant's Figure 4 as lines: max |X_j| (activations) and max |W_j| (weights) per input channel j, on a log
    scale, before and — when given — after smoothing, in two panels sharing the y axis. `highlight` marks channels
    (the outliers) with dotted vertical lines. Takes 1-D tensors or arrays; returns the list of Axes."""
    panels = [("before", act_before, weight_before)]
    if act_after is not None and weight_after is not None:
        panels.append(("after", act_after, weight_after))
    if axes is None:
        _, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 0.5, 3.6), sharey=True, squeeze=False)
        axes = list(axes[0])
    for ax, (name, act, weight) in zip(axes, panels):
        ax.plot(range(len(act)), list(map(float, act)), color="#dd8452", linewidth=0.8, label="activations max |X_j|")
        ax.plot(range(len(weight)), list(map(float, weight)), color="#4c72b0", linewidth=0.8,
                label="weights max |W_j|")
        for j in highlight:
            ax.axvline(j, color="gray", linestyle=":", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("input channel j")
        ax.set_title(f"{title}: {name}", fontsize=10)
    axes[0].set_ylabel("max |value| over tokens / rows")
    axes[0].legend(fontsize=8)
    return axes


def channel_heatmap(values, ax=None, title: str = "per-channel max |X|", row_label: str = "layer",
                    column_label: str = "input channel", colorbar_label: str = "log10 max |X_j|", log: bool = True):
    """An image of `values` [rows, channels] (e.g. max |X_j| of every layer's input), log10 of it when `log`: the
    outlier channels show as bright columns. Takes a 2-D tensor or array; returns the Axes."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"channel_heatmap needs a 2-D [rows, channels] array, got shape {data.shape}")
    if log:
        data = np.log10(np.maximum(data, 1e-12))
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.6))
    image = ax.imshow(data, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
    ax.grid(False)
    ax.set_xlabel(column_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, label=colorbar_label)
    return ax


def quality_vs_size(rows: Sequence[Mapping], ax=None, title: str = "quality vs size", unit: str = "MB"):
    """One point per quantization-matrix row (`llmlab.quant.matrix`): weight bytes (x) against perplexity (y, log),
    labelled with the method; llm-compressor's rows as hollow markers. Skipped rows are left out."""
    scale = _scale(unit)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.2))
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        ours = not row["method"].startswith(("llmc-", "bnb-"))
        x, y = row["weight_bytes"] / scale, row["perplexity"]
        ax.scatter([x], [y], s=36, facecolors="#4c72b0" if ours else "none",
                   edgecolors="#4c72b0" if ours else "#dd8452", zorder=3)
        ax.annotate(row["method"], (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel(f"weight bytes of a checkpoint ({unit})")
    ax.set_ylabel("perplexity (log scale, lower is better)")
    ax.set_title(title)
    return ax


def speedup_curves(speedups: Mapping[str, Mapping[int, float]], ax=None, title: str = "speedup over bf16",
                   baseline: str = "bf16"):
    """Speedup over `baseline` against M (tokens per GEMM, log scale), one line per kernel (as
    `llmlab.quant.kernels.speedups` returns them); a dashed line at 1×."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.0))
    for kernel, by_m in speedups.items():
        ms = sorted(by_m)
        ax.plot(ms, [by_m[m] for m in ms], marker="o", markersize=3, label=kernel)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("M: tokens per GEMM (1 = one decode step, thousands = a prefill)")
    ax.set_ylabel(f"time({baseline}) / time(kernel)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def decode_vs_roofline(rows: Sequence[Mapping], batch: int = 1, ax=None, title: str = "decode speed vs roofline"):
    """Bars of measured decode tokens/s per weight format (eager and CUDA-graph static cache) beside the
    bandwidth roofline, for one batch size (rows as benchmarks/gpu_decode.py stores them)."""
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.8))
    points = [(row["kernel"], next(p for p in row["decode"] if p["batch"] == batch)) for row in rows]
    x = np.arange(len(points))
    series = (("eager_tokens_per_s", "eager generate", "#8c8c8c"),
              ("static_compiled_tokens_per_s", "static cache + CUDA graphs", "#4c72b0"),
              ("roofline_steps_per_s", "roofline (bandwidth / bytes per step)", "#dd8452"))
    for i, (key, label, colour) in enumerate(series):
        ax.bar(x + (i - 1) * 0.27, [p.get(key) or 0 for _, p in points], width=0.27, label=label, color=colour)
    ax.set_xticks(x, [kernel for kernel, _ in points])
    ax.set_ylabel("tokens/s per sequence")
    ax.set_title(f"{title} (batch {batch})")
    ax.legend(fontsize=8)
    return ax
