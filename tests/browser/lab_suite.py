"""Where the browser suite writes, and what this session measured (shared by conftest.py and the tests)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# the notebooks to run: the course's, or another folder (LLMLAB_BROWSER_NOTEBOOKS, e.g. to show a broken copy failing)
NOTEBOOKS = Path(os.environ.get("LLMLAB_BROWSER_NOTEBOOKS", REPO / "notebooks"))
BUILD = REPO / "build" / "browser"
EXECUTED = BUILD / "notebooks"
SCREENSHOTS = BUILD / "screenshots"
TIMINGS = BUILD / "timings.json"
SITE = REPO / "build" / "site"

# what this session measured, for the summary and for test_site (module state: imported once per session)
RESULTS: dict = {"notebooks": {}, "started": None, "suite_seconds": None, "site": None}


def notebook_names() -> list[str]:
    """Every notebook present in notebooks/, in reading order."""
    return sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))


def record(notebook: str, seconds: float) -> None:
    """Keep a notebook's time in the browser ('Run All Cells' to the last cell done)."""
    RESULTS["notebooks"][notebook] = round(seconds, 1)
    checkpoint()


def checkpoint() -> None:
    """The browser suite's time so far (since JupyterLab was started); rewrite timings.json."""
    RESULTS["suite_seconds"] = round(time.monotonic() - RESULTS["started"], 1)
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps({"notebooks": RESULTS["notebooks"], "suite_seconds": RESULTS["suite_seconds"],
                                   "budget": os.environ.get("LLMLAB_BUDGET", "full")}, indent=1) + "\n")
