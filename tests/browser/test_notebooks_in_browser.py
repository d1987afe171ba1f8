"""Every notebook as a learner meets it: JupyterLab in chromium, 'Run All Cells', then what the page shows.

For each notebook present in notebooks/: every code cell finished, no error output, no 'Error displaying widget' or
'model not found', no widget drawn as text, and every cell that calls plt.show() shows a loaded image. Then each
chapter's main calculator widget (widget_checks.CHECKS) has a control moved, and the result it shows must become the
value the library computes for the new setting. The executed notebook is saved (it becomes the site's page) and
screenshotted (build/browser/screenshots/).
"""

from __future__ import annotations

import os

import pytest

from lab_harness import (cell_with, close_notebook, move, open_notebook, output_text, run_all, save_notebook,
                     screenshot_notebook, wait_for_text)
from lab_suite import EXECUTED, SCREENSHOTS, checkpoint, notebook_names, record
from widget_checks import checks_for

# the longest a notebook may take in the browser; the small budget runs each in under ~2 min on 2 cores
NOTEBOOK_TIMEOUT = float(os.environ.get("LLMLAB_NOTEBOOK_TIMEOUT", 600))


@pytest.mark.parametrize("notebook", notebook_names())
def test_notebook_in_browser(notebook, lab, page):
    stem = notebook.removesuffix(".ipynb")
    open_notebook(page, lab, notebook)
    try:
        run = run_all(page, notebook, NOTEBOOK_TIMEOUT)
        record(notebook, run.seconds)
        save_notebook(page, notebook)  # the executed copy in build/browser/notebooks/ becomes the site's page
        screenshot_notebook(page, SCREENSHOTS / stem)
        problems = run.problems()
        assert not problems, (f"{notebook} in JupyterLab ({len(problems)} problem(s); screenshots in {SCREENSHOTS}, "
                              f"executed copy in {EXECUTED}):\n  " + "\n  ".join(problems))
        for number, check in enumerate(checks_for(notebook), start=1):
            cell = cell_with(page, check.cell)
            shown_before = output_text(cell)
            if check.before is not None:
                missing = [piece for piece in check.before() if piece not in shown_before]
                assert not missing, f"{check.control!r} widget does not show {missing} before the move"
            move(cell, check.control, check.move)
            shown_after = wait_for_text(cell, check.expected())
            assert shown_after != shown_before, f"moving {check.control!r} to {check.move!r} changed nothing"
            cell.screenshot(path=str(SCREENSHOTS / f"{stem}-widget-{number}-{check.control.replace(' ', '_')}.png"))
    except BaseException:
        try:
            screenshot_notebook(page, SCREENSHOTS / f"{stem}-FAILED")
        except Exception:  # the page itself may be gone; the failure above says why
            pass
        raise
    finally:
        close_notebook(page)
        checkpoint()
