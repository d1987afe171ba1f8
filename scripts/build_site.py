"""Render the executed notebooks to a static HTML site: `python scripts/build_site.py [EXECUTED] [--out build/site]`.

The pages are the notebooks exactly as the browser tests ran them (build/browser/notebooks/, saved by JupyterLab after
'Run All Cells'); nothing is executed again. Built with nbconvert's `lab` template, so a page looks like the notebook
in JupyterLab: plots are embedded PNGs, the stored GPU results are the printed tables, widgets are drawn from the
state JupyterLab saved with the notebook (live controls need a kernel: Binder or Colab, linked from each page).

Why nbconvert and not Jupyter Book / MyST: it is already installed with JupyterLab (no Sphinx stack, no Node.js), it
renders saved outputs as they are without a second execution, and the course is a sequence of notebooks, which an
index page with one link per chapter serves as well as a book's table of contents.

`make test` builds it (tests/browser/test_site.py, after the browser run); `make site` rebuilds it from the last run.
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

REPO = Path(__file__).resolve().parents[1]
EXECUTED = REPO / "build" / "browser" / "notebooks"
SITE = REPO / "build" / "site"
BINDER = "https://mybinder.org/v2/gh/llmlab-course/llmlab/main?urlpath=lab/tree/notebooks/{name}"
COLAB = "https://colab.research.google.com/github/llmlab-course/llmlab/blob/main/notebooks/{name}"

STYLE = """body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
                 color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { border-bottom: 1px solid #ddd; padding: .3rem .6rem;
text-align: left; vertical-align: top; } th { background: #f4f4f4; } .muted { color: #666; font-size: .9em; }
code { background: #f4f4f4; padding: 0 .2rem; }"""
PAGE_BANNER = ("<div style=\"font-family: system-ui, sans-serif; padding: .5rem 1rem; background: #f4f4f4; "
               "border-bottom: 1px solid #ddd\"><a href=\"index.html\">llmlab</a> · {title} · executed on a CPU "
               "by the browser tests ({budget} budget) · run it yourself: <a href=\"{binder}\">Binder</a> · "
               "<a href=\"{colab}\">Colab</a></div>")


def executed_outputs(notebook: nbformat.NotebookNode) -> dict:
    """How many code cells ran, and how many outputs of each kind the notebook holds."""
    counts = {"code_cells": 0, "executed": 0, "images": 0, "errors": 0, "widgets": 0}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        counts["code_cells"] += 1
        counts["executed"] += cell.get("execution_count") is not None
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            counts["images"] += "image/png" in data or "image/svg+xml" in data
            counts["errors"] += output.get("output_type") == "error"
            counts["widgets"] += "application/vnd.jupyter.widget-view+json" in data
    return counts


def render_page(path: Path, out_dir: Path, budget: str) -> dict:
    """One notebook as `<stem>.html` in out_dir; returns what the index shows about it."""
    notebook = nbformat.read(path, as_version=4)
    title = next((cell.source.splitlines()[0].lstrip("# ").strip() for cell in notebook.cells
                  if cell.cell_type == "markdown" and cell.source.strip()), path.stem)
    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": title}})
    banner = PAGE_BANNER.format(title=html.escape(title), budget=html.escape(budget),
                                binder=BINDER.format(name=path.name), colab=COLAB.format(name=path.name))
    start = body.index(">", body.index("<body")) + 1
    page = out_dir / f"{path.stem}.html"
    page.write_text(body[:start] + banner + body[start:])
    return {"name": path.name, "page": page.name, "title": title, **executed_outputs(notebook)}


def stored_results() -> list[tuple[str, str]]:
    """(name, provenance line) of every stored GPU result, as the notebooks print them."""
    sys.path.insert(0, str(REPO / "lib"))
    from llmlab.paths import results_dir
    from llmlab.results import describe, load_result

    return [(path.stem, describe(load_result(path.stem))) for path in sorted(results_dir().glob("*.json"))]


def index_page(pages: list[dict], timings: dict, budget: str) -> str:
    chapters = {row["notebook"]: row for row in json.loads((REPO / "data" / "chapters.json").read_text())["chapters"]}
    rows = []
    for page in pages:
        chapter = chapters.get(page["name"], {})
        runs_on = "CPU" + (f"; GPU cells: {chapter['gpu']}" if chapter.get("gpu") else "") if chapter else ""
        seconds = timings.get(page["name"])
        ran = (f"{page['executed']}/{page['code_cells']} cells" if page["executed"] else "not executed")
        rows.append(f"<tr><td><a href=\"{page['page']}\">{html.escape(page['title'])}</a></td>"
                    f"<td>{html.escape(runs_on)}</td><td>{ran}, {page['images']} plots, {page['widgets']} widgets"
                    f"{', <b>' + str(page['errors']) + ' errors</b>' if page['errors'] else ''}</td>"
                    f"<td>{f'{seconds:.0f} s' if seconds is not None else '–'}</td></tr>")
    results = "".join(f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(line)}</td></tr>"
                      for name, line in stored_results())
    built = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>llmlab — size, quantize and serve LLMs, measured</title>
<style>{STYLE}</style></head><body>
<h1>llmlab — size, quantize and serve LLMs, measured</h1>
<p>A course you can run: numbered notebooks backed by a small tested library. These pages are the notebooks as the
course's browser tests ran them in JupyterLab on a 2-core CPU ({html.escape(budget)} budget): every plot is the one
drawn there; numbers from GPUs this machine does not have come from the stored runs listed below, each with its
provenance. To run a chapter yourself, open it on Binder or Colab from its page, or clone the repository and run
<code>make course</code>.</p>
<h2>Chapters</h2>
<table><tr><th>chapter</th><th>runs on</th><th>this run</th><th>time in the browser</th></tr>{''.join(rows)}</table>
<h2>Stored GPU results</h2>
<p>And the stored CPU runs; each line says where and how it was measured.</p>
<table><tr><th>file (data/results/)</th><th>provenance</th></tr>{results}</table>
<p class="muted">Built {built} by scripts/build_site.py (nbconvert, lab template) from the executed notebooks; nothing
was re-executed.</p>
</body></html>
"""


def build_site(executed: Path = EXECUTED, out_dir: Path = SITE, names: list[str] | None = None) -> list[dict]:
    """Render every notebook in `executed` (or the named ones) and an index; return one summary per page."""
    executed, out_dir = Path(executed), Path(out_dir)
    paths = [executed / name for name in names] if names else sorted(executed.glob("*.ipynb"))
    missing = [str(path) for path in paths if not path.is_file()]
    if not paths or missing:
        raise FileNotFoundError(f"no executed notebooks {missing or 'at ' + str(executed)}: run the browser tests "
                                "first (`make test`, or `pytest tests/browser`), they save them there")
    timings_file = executed.parent / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    budget = timings.get("budget", "small")
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = [render_page(path, out_dir, budget) for path in paths]
    (out_dir / "index.html").write_text(index_page(pages, timings.get("notebooks", {}), budget))
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("executed", nargs="?", default=str(EXECUTED), help=f"executed notebooks (default {EXECUTED})")
    parser.add_argument("--out", default=str(SITE), help=f"output folder (default {SITE})")
    args = parser.parse_args(argv)
    try:
        pages = build_site(Path(args.executed), Path(args.out))
    except FileNotFoundError as error:
        print(f"build_site: {error}", file=sys.stderr)
        return 2
    for page in pages:
        print(f"{page['page']:45s} {page['executed']:>3}/{page['code_cells']} cells run, {page['images']} plots, "
              f"{page['widgets']} widgets, {page['errors']} errors")
    print(f"site: {Path(args.out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
