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
