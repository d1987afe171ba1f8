"""What the course needs from a machine, chapter by chapter (`data/chapters.json`), and notebook conveniences."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass

from llmlab.paths import budget, data_dir


@dataclass(frozen=True)
class Chapter:
    number: str  # "00" … "11"
    notebook: str  # file name under notebooks/
    title: str
    cpu: bool  # runs end to end on a CPU (GPU cells then show stored results)
    gpu: str | None  # what its GPU cells need, None when it has none
    formats: tuple[str, ...]  # precisions whose native GPU kernels its GPU cells use
    ram_gib: float  # RAM it needs on a CPU machine


def chapters() -> list[Chapter]:
    rows = json.loads((data_dir() / "chapters.json").read_text())["chapters"]
    return [Chapter(**{**row, "formats": tuple(row["formats"])}) for row in rows]


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch: every cell that samples calls this (STYLE.md #12)."""
    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


SMALL_CPU_CORES = 2  # at or below this many cores (CI, Binder, Colab), quantization chapters run torch on one thread


def setup_notebook(seed: int = 0, small_ops: bool = False) -> str:
    """The first library call of every notebook: seeds, quiet progress bars, plot defaults; returns the budget.

    `small_ops`: the chapter runs thousands of small tensor ops (fake-quant, GPTQ's column loop); on a small shared
    CPU two threads wait on each other at every op (2-8x slower measured on CI's 2 cores), so use one."""
    import matplotlib
    import torch

    if small_ops and (os.cpu_count() or 1) <= SMALL_CPU_CORES:
        torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    matplotlib.rcParams.update({"figure.figsize": (7.5, 4), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3})
    seed_everything(seed)
    return budget()


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A list of dicts as a Markdown table (notebooks display it with IPython.display.Markdown)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(column, "")).replace("|", "\\|").replace("\n", " ") for column in columns) + " |")
    return "\n".join(lines)
