"""The browser checks fail when they should: a notebook made to break in each way a learner could meet.

A notebook written here shows a widget whose model is missing ('Error displaying widget: model not found'), a plot
that never appears (a non-inline backend), a slider that changes nothing, and a cell that raises; each must be
reported. JupyterLab that cannot start must fail fast with its log, never hang.
"""

from __future__ import annotations

import time

import nbformat
import pytest

from lab_harness import (JupyterLab, LabStartError, cell_with, close_notebook, move, open_notebook, run_all,
                         wait_for_text)
from lab_suite import EXECUTED

BROKEN_CELLS = [
    # a widget view whose model the kernel never created
    'display({"application/vnd.jupyter.widget-view+json": {"model_id": "0" * 32, "version_major": 2, '
    '"version_minor": 0}, "text/plain": "IntSlider(value=0)"}, raw=True)',
    # a plot drawn with a backend that shows nothing
    'import matplotlib\nmatplotlib.use("agg")\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()',
    # a slider whose result never follows it
    'import ipywidgets as widgets\n\ndef stuck(n):\n    print("result: 1")\n\n'
    'slider = widgets.interactive(stuck, n=widgets.IntSlider(1, 1, 10, description="n"))\ndisplay(slider)',
    "1 / 0",
    'print("never reached")',
]


@pytest.fixture
def broken_notebook():
    """A notebook in the server's folder (a subfolder: the site renders only the course's notebooks)."""
    path = EXECUTED / "broken" / "broken.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in BROKEN_CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return "broken/broken.ipynb"


def test_broken_notebook_is_reported(lab, page, broken_notebook):
    open_notebook(page, lab, broken_notebook)
    try:
        run = run_all(page, broken_notebook, timeout=120)
        problems = "\n".join(run.problems())
        assert "shows 'Error displaying widget'" in problems, problems
        assert "1 widget output(s), 0 drawn" in problems, problems
        assert "calls plt.show() but shows no plot" in problems, problems
        assert "shows an error: ZeroDivisionError: division by zero" in problems, problems
        assert "(print(\"never reached\")) did not finish" in problems, problems
        cell = cell_with(page, "def stuck")
        move(cell, "n", "+2")
        with pytest.raises(AssertionError, match="still does not show"):
            wait_for_text(cell, ["result: 3"], timeout=5)  # what a library would compute for n=3
    finally:
        close_notebook(page)


def test_lab_that_cannot_start_fails_with_its_log(tmp_path):
    start = time.monotonic()
    with pytest.raises(LabStartError, match="exited with code") as failure:
        JupyterLab(tmp_path / "no-such-folder", tmp_path / "lab").start()
    assert "no-such-folder" in str(failure.value)  # the log's tail says why
    assert time.monotonic() - start < 60


def test_lab_that_never_answers_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(JupyterLab, "_answers", lambda self: False)
    server = JupyterLab(tmp_path, tmp_path / "lab", start_timeout=3)
    start = time.monotonic()
    with pytest.raises(LabStartError, match="did not answer .* within 3 s"):
        server.start()
    assert time.monotonic() - start < 20  # bounded: the wait, then SIGTERM
    assert server.process.poll() is not None  # and the server was stopped
