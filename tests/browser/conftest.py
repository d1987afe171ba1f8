"""The browser suite's fixtures: one JupyterLab server and one chromium page, from the first browser test to the last.

Both are always stopped: after the last test of this folder, and at the end of the session whatever happened.

Where things go (all under build/, git-ignored):
    build/browser/notebooks/    the copy of notebooks/ JupyterLab runs; saved after each run, the site is built from it
    build/browser/screenshots/  each notebook after 'Run All Cells', and each widget after its control was moved
    build/browser/timings.json  seconds per notebook in the browser, and the suite's total
    build/browser/lab/          the server's settings and log (jupyterlab.log)

One execution per notebook per run: when this suite can run (chromium and playwright present), nbval's items for the
same notebooks are deselected; without chromium this suite skips (one line; in CI, where CI is set, it fails instead)
and nbval executes the notebooks as before.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lab_harness import VIEWPORT, JupyterLab, chromium_problem, copy_notebooks, launch_chromium
from lab_suite import BUILD, EXECUTED, NOTEBOOKS, RESULTS, SCREENSHOTS, TIMINGS


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected what they deselect
def pytest_collection_modifyitems(config, items):
    """Deselect nbval's execution of every notebook the browser suite executes in this run (never run one twice)."""
    in_browser = {item.callspec.params["notebook"] for item in items
                  if getattr(item, "originalname", "") == "test_notebook_in_browser" and hasattr(item, "callspec")}
    if not in_browser or chromium_problem() is not None:
        return  # no browser run: nbval stays the notebooks' executor
    by_nbval = [item for item in items if item.path.suffix == ".ipynb" and item.path.name in in_browser]
    if by_nbval:
        config.hook.pytest_deselected(items=by_nbval)
        items[:] = [item for item in items if item not in by_nbval]


@pytest.fixture(scope="session")
def browser_ready():
    """Skip (one line saying how to install chromium) where the browser cannot run; in CI, fail instead."""
    problem = chromium_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but {problem}", pytrace=False)
    pytest.skip(f"browser tests skipped: {problem}; nbval executes the notebooks instead")


# The server and the browser live from the first browser test to the last one of this folder, then they stop (not
# at the end of the session: Playwright's event loop would stay in the main thread under the unit tests that follow,
# and a JupyterLab would idle through them). pytest_sessionfinish stops them too, whatever happened.
RUNNING: dict = {}


@pytest.fixture
def lab(browser_ready):
    """JupyterLab on 127.0.0.1 (a free port, no token) serving a fresh copy of notebooks/."""
    if "lab" not in RUNNING:
        if RESULTS["started"] is None:  # once per session: the copies then keep what each run saved
            RESULTS["started"] = time.monotonic()
            copy_notebooks(NOTEBOOKS, EXECUTED)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            for old in SCREENSHOTS.glob("*.png"):
                old.unlink()
        server = JupyterLab(EXECUTED, BUILD / "lab")
        server.start()  # raises LabStartError with the log's tail; it stopped what it started
        RUNNING["lab"] = server
    return RUNNING["lab"]


@pytest.fixture
def page(lab):
    """One chromium page (Debian's chromium through Playwright), shared by the browser tests."""
    if "page" not in RUNNING:
        from playwright.sync_api import sync_playwright

        RUNNING["playwright"] = sync_playwright().start()
        RUNNING["browser"] = launch_chromium(RUNNING["playwright"])
        RUNNING["page"] = RUNNING["browser"].new_page(viewport=VIEWPORT)
        RUNNING["page"].set_default_timeout(60_000)
    return RUNNING["page"]


def stop_browser_and_lab() -> None:
    """Close the browser, stop Playwright, stop JupyterLab (each even if another step fails)."""
    for name, stop in (("browser", lambda thing: thing.close()), ("playwright", lambda thing: thing.stop()),
                       ("lab", lambda thing: thing.stop())):
        thing = RUNNING.pop(name, None)
        if thing is not None:
            try:
                stop(thing)
            except Exception as error:  # a browser that already died; go on stopping the rest
                print(f"llmlab browser tests: stopping {name}: {error}")
    RUNNING.clear()


def pytest_runtest_teardown(item, nextitem):
    """After the last test of tests/browser (the next one is elsewhere, or none), stop the server and browser."""
    here = Path(__file__).parent
    if RUNNING and (nextitem is None or here not in nextitem.path.parents):
        stop_browser_and_lab()


def pytest_sessionfinish(session):
    stop_browser_and_lab()


def pytest_terminal_summary(terminalreporter):
    if not RESULTS["notebooks"] and RESULTS["site"] is None:
        return
    write = terminalreporter.write_line
    terminalreporter.section("notebooks in the browser")
    for name, seconds in RESULTS["notebooks"].items():
        write(f"{name:40s} {seconds:7.1f} s")
    if RESULTS["suite_seconds"] is not None:
        write(f"browser suite, from JupyterLab's start to the last notebook checked: {RESULTS['suite_seconds']:.1f} s")
    write(f"screenshots: {SCREENSHOTS}")
    write(f"executed notebooks: {EXECUTED}  (timings: {TIMINGS})")
    if RESULTS["site"]:
        write(f"site: {RESULTS['site']}")
