"""The readable site: the notebooks as the browser run saved them, rendered to HTML without running them again.

Runs after test_notebooks_in_browser.py (file order) in the same session, from build/browser/notebooks/.
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from lab_suite import EXECUTED, REPO, RESULTS, SITE, notebook_names


def _site_builder():
    spec = importlib.util.spec_from_file_location("build_site", REPO / "scripts" / "build_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_site_builds_from_the_browser_run(browser_ready):
    ran = list(RESULTS["notebooks"])
    if not ran:
        pytest.skip("no notebook ran in the browser in this session (run tests/browser/test_notebooks_in_browser.py "
                    "with it); `make site` builds from an earlier run")
    pages = _site_builder().build_site(EXECUTED, SITE, names=notebook_names())
    RESULTS["site"] = SITE / "index.html"
    index = (SITE / "index.html").read_text()
    for page in pages:
        assert f'href="{page["page"]}"' in index, f"index.html does not link {page['page']}"
        if page["name"] not in ran:
            continue
        html = (SITE / page["page"]).read_text()
        images = len(re.findall(r'<img[^>]+src="data:image/png;base64,', html))
        assert page["executed"] == page["code_cells"], f"{page['name']}: {page['executed']}/{page['code_cells']} run"
        assert page["errors"] == 0, f"{page['name']} was saved with {page['errors']} error outputs"
        # every plot the run drew is on the page, embedded as PNG
        assert images == page["images"], f"{page['name']}: {page['images']} plots saved, {images} on the page"
        if page["widgets"]:  # JupyterLab saved the widgets' state, so the page can draw them
            assert "application/vnd.jupyter.widget-state+json" in html, f"{page['name']}: no widget state"
    assert "Stored GPU results" in index and "gpu-memory-anatomy" in index  # the stored H100 runs, with provenance
