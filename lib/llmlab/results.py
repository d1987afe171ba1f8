"""Stored results from GPUs this machine may not have (DESIGN.md contract).

Every number a notebook shows from a GPU it was not run on comes from `data/results/<name>.json`, and each file
carries its provenance: GPU name, driver, torch/transformers versions, date, the exact command, and the raw
measurements. `provenance()` gathers it where the run happens; `save_result` writes it; `load_result` reads it back
and `describe` prints the one line the notebooks show beside "measured here".
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from llmlab.paths import results_dir

REQUIRED = ("gpu", "driver", "torch", "transformers", "date", "command")


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def provenance(command: str | None = None) -> dict:
    """Where and how a measurement is being made: device, versions, date, command line."""
    import torch
    import transformers

    on_gpu = torch.cuda.is_available()
    return {
        "gpu": torch.cuda.get_device_name(0) if on_gpu else None,
        "gpu_count": torch.cuda.device_count() if on_gpu else 0,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if on_gpu else None,
        "gpu_total_memory_bytes": torch.cuda.get_device_properties(0).total_memory if on_gpu else None,
        "driver": _driver_version(),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def save_result(name: str, measurements: dict, command: str | None = None, folder: Path | None = None) -> Path:
    """Write `<folder or data/results>/<name>.json` = {"provenance": ..., "measurements": ...}."""
    path = (folder or results_dir()) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": provenance(command), "measurements": measurements}, indent=1) + "\n")
    return path


def load_result(name: str) -> dict:
    """Read a stored result; refuse one without provenance."""
    path = results_dir() / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in results_dir().glob("*.json"))
        raise LookupError(f"no stored result {name!r}; stored: {', '.join(known) or 'none'}")
    result = json.loads(path.read_text())
    missing = [key for key in REQUIRED if key not in result.get("provenance", {})]
    if missing:
        raise ValueError(f"{path.name} lacks provenance fields {missing}; re-run the command that made it")
    return result


def describe(result: dict) -> str:
    """One line: 'stored run on NVIDIA H100 80GB HBM3 (2026-11-25, driver 580.x, torch 2.11)'."""
    p = result["provenance"]
    return (f"stored run on {p['gpu'] or 'CPU'} ({p['date'][:10]}, driver {p['driver']}, torch {p['torch']}, "
            f"transformers {p['transformers']}): {p['command']}")
