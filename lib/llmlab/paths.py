"""Where llmlab finds its catalogs (`data/`) and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The project's `data/` folder (catalogs, offline text, stored GPU results); `LLMLAB_DATA` overrides it."""
    override = os.environ.get("LLMLAB_DATA")
    folder = Path(override) if override else REPO_ROOT / "data"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"llmlab's data folder is missing at {folder}; install llmlab from a clone of the repository "
            "(pip install -e .) or point LLMLAB_DATA at its data/ folder"
        )
    return folder


def cache_dir() -> Path:
    """Where converted models are cached: `LLMLAB_CACHE`, else ~/.cache/llmlab."""
    folder = Path(os.environ.get("LLMLAB_CACHE", Path.home() / ".cache" / "llmlab"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def results_dir() -> Path:
    """Stored GPU results with provenance (`data/results/*.json`)."""
    return data_dir() / "results"


def budget() -> str:
    """`small` in CI (fewer calibration and evaluation tokens, same code path), else `full`; set by LLMLAB_BUDGET."""
    value = os.environ.get("LLMLAB_BUDGET", "full")
    if value not in ("small", "full"):
        raise ValueError(f"LLMLAB_BUDGET must be 'small' or 'full', not {value!r}")
    return value
