"""JupyterLab in a real browser, for the browser tests: start the server, open a notebook, run it, read what it shows.

The server runs on 127.0.0.1 on a free port, without a token, on a COPY of notebooks/ (the committed notebooks stay
output-free; the copies are saved after the run and become the site). The browser is Debian's chromium driven by
Playwright (`executable_path`): Playwright's own browser download cannot work on a closed network.

Every wait here is bounded and says what it waited for: a server that does not answer raises `LabStartError` with the
tail of its log, a notebook that does not finish raises `NotebookTimeout` with the cells still running.

The page is driven through JupyterLab's own commands (`window.jupyterapp`, exposed by --expose-app-in-browser) and
read from the DOM, i.e. from what a learner sees: prompts, rendered outputs, images, widget views.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("LLMLAB_CHROMIUM", "/usr/bin/chromium")
INSTALL_HINT = "install Debian's chromium (`apt-get install chromium`, as `make test` does when it can)"
# the network is closed and there is no display: no sandbox (root in a container), no GPU, nothing phoning home
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1280, "height": 900}
SCREENSHOT_MAX_HEIGHT = 12000  # px per screenshot; a taller notebook is shot in several parts

# JupyterLab settings for the test server: every cell attached to the DOM (the default 'contentVisibility' windowing
# leaves off-screen cells unrendered), widget state saved with the notebook (so the site can show widgets), no news.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}
WIDGET_SETTLE_SECONDS = 20  # the longest wait for widget views to be drawn after the run
WIDGET_ERRORS = ("Error displaying widget", "model not found", "Failed to load model class")


class LabStartError(RuntimeError):
    """JupyterLab did not start; the message carries the tail of its log."""


class NotebookTimeout(AssertionError):
    """A notebook did not finish within its time limit; the message names the cells still running."""


def chromium_problem() -> str | None:
    """Why the browser tests cannot run here (one line saying how to fix it), or None when they can."""
    if not Path(CHROMIUM).is_file():
        return f"no chromium at {CHROMIUM}: {INSTALL_HINT}"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is missing: `pip install -e '.[dev]'` (scripts/install.sh does it)"
    return None


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 serving `root_dir`; use as a context manager, it always stops."""

    def __init__(self, root_dir: Path, work_dir: Path, start_timeout: float = 90, extra_args: tuple[str, ...] = ()):
        self.root_dir = Path(root_dir)  # the folder the server shows (a copy of notebooks/)
        self.work_dir = Path(work_dir)  # its settings, runtime files and log
        self.start_timeout = start_timeout  # seconds to wait for /api/status
        self.extra_args = extra_args  # more command-line options (the tests pass broken ones)
        self.port = free_port()
        self.log_path = self.work_dir / "jupyterlab.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "JupyterLab":
        settings = self.work_dir / "user-settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        # its own config, data and runtime folders: nothing from the user's Jupyter set-up (kernels included) leaks in
        environment = {**os.environ, "JUPYTER_CONFIG_DIR": str(self.work_dir / "config"),
                       "JUPYTER_DATA_DIR": str(self.work_dir / "data"),
                       "JUPYTER_RUNTIME_DIR": str(self.work_dir / "runtime")}
        environment.pop("MPLBACKEND", None)  # a learner's kernel draws with the inline backend
        command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
                   "--ServerApp.password=", f"--ServerApp.root_dir={self.root_dir}",
                   f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={self.work_dir / 'workspaces'}",
                   "--LabApp.expose_app_in_browser=True", *self.extra_args]
        if hasattr(os, "getuid") and os.getuid() == 0:
            command.append("--allow-root")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # its own process group: stop() takes the kernels down with the server
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=environment, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabStartError(f"JupyterLab exited with code {self.process.returncode} before answering; "
                                    f"last lines of {self.log_path}:\n{log_tail(self.log_path)}")
            if self._answers():
                return self
            time.sleep(0.5)
        self.stop()
        raise LabStartError(f"JupyterLab did not answer on {self.url} within {self.start_timeout:.0f} s; last lines "
                            f"of {self.log_path}:\n{log_tail(self.log_path)}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM the server's process group (kernels included), SIGKILL what is left after 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # kernels started their own sessions? none survive the group kill above, but be sure
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "JupyterLab":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def copy_notebooks(source: Path, target: Path) -> list[Path]:
    """A fresh copy of every notebook in `source` under `target` (which is emptied first); the copies' paths."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    copies = []
    for notebook in sorted(Path(source).glob("*.ipynb")):
        shutil.copy2(notebook, target / notebook.name)
        copies.append(target / notebook.name)
    return copies


def launch_chromium(playwright):
    """Debian's chromium, headless, through Playwright (never Playwright's own browser build)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


# --------------------------------------------------------------------------------------------------------------
# One notebook in the page
# --------------------------------------------------------------------------------------------------------------

# JavaScript run in the page. `window.__llmlab` holds the open notebook panel and the run's outcome.
_OPEN = """async (path) => {
  const app = window.jupyterapp;
  await app.started; await app.restored;
  const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  await panel.context.ready; await panel.sessionContext.ready;
  app.shell.activateById(panel.id);
  app.shell.collapseLeft(); app.shell.collapseRight();
  window.__llmlab = {panel, done: false, error: null, ok: null};
  return panel.sessionContext.session ? panel.sessionContext.session.kernel.name : null;
}"""
_KERNEL_IDLE = """() => {
  const s = window.__llmlab.panel.sessionContext;
  return s.session && s.session.kernel && s.session.kernel.status === 'idle';
}"""
_RUN_ALL = """() => {
  const state = window.__llmlab, app = window.jupyterapp;
  app.shell.activateById(state.panel.id);
  app.commands.execute('notebook:run-all-cells').then(
      ok => { state.ok = ok; state.done = true; }, error => { state.error = String(error); state.done = true; });
}"""
# Each code cell as the learner sees it: prompt, source, outputs (mime type, text, images and whether they loaded).
_CELLS = """() => {
  const panel = window.__llmlab.panel;
  return panel.content.widgets.filter(cell => cell.model.type === 'code').map((cell) => {
    const index = panel.content.widgets.indexOf(cell);
    const prompt = cell.node.querySelector('.jp-InputPrompt');
    const outputs = [...cell.node.querySelectorAll('.jp-OutputArea-child')].map(child => {
      const rendered = child.querySelector('.jp-OutputArea-output');
      return {mime: rendered ? (rendered.getAttribute('data-mime-type') || '') : '',
              text: child.innerText,
              images: [...child.querySelectorAll('img')].map(img => ({loaded: img.complete && img.naturalWidth > 0,
                                                                       width: img.naturalWidth})),
              widgets: child.querySelectorAll('.jupyter-widgets').length};
    });
    return {index, prompt: prompt ? prompt.innerText.trim() : '', source: cell.model.sharedModel.getSource(),
            outputs,
            model_outputs: cell.model.outputs.toJSON().map(o => Object.keys(o.data || {}).concat(o.output_type))};
  });
}"""
# every widget output of the notebook has drawn a view (a widget, or the manager's error message)
_WIDGETS_SETTLED = """() => window.__llmlab.panel.content.widgets.filter(c => c.model.type === 'code').every(cell => {
  const expected = cell.model.outputs.toJSON().filter(
      o => o.data && o.data['application/vnd.jupyter.widget-view+json']);
  const drawn = [...cell.node.querySelectorAll('.jp-Cell-outputArea > .jp-OutputArea-child')].filter(
      child => child.querySelector('.jupyter-widgets'));
  return drawn.length >= expected.length;
})"""
_SAVE = """async () => {
  const panel = window.__llmlab.panel;
  await panel.context.save();
  return panel.context.model.dirty;
}"""
_CLOSE = """async () => {
  const state = window.__llmlab;
  if (!state) return;
  try { await state.panel.sessionContext.shutdown(); } catch (e) {}
  state.panel.context.model.dirty = false;
  state.panel.dispose();
  window.__llmlab = null;
}"""
_SCROLLER = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer"


@dataclass
class NotebookRun:
    """What one notebook showed after 'Run All Cells'."""

    name: str  # file name
    seconds: float  # wall time from 'Run All Cells' to the last cell finished
    cells: list = field(default_factory=list)  # per code cell: prompt, source, outputs as the DOM shows them
    run_error: str | None = None  # an exception from JupyterLab's run command itself

    def problems(self) -> list[str]:
        """Everything a learner would see go wrong, one line each (empty when the notebook is fine)."""
        found = []
        if self.run_error:
            found.append(f"'Run All Cells' failed: {self.run_error}")
        for cell in self.cells:
            where = f"cell {cell['index']} ({_first_line(cell['source'])})"
            if not cell["prompt"].strip("[]: ").isdigit():
                found.append(f"{where} did not finish: its prompt is {cell['prompt'] or 'empty'!r}")
                continue  # a cell that never ran shows nothing else worth reporting
            errors = [output["text"] for output in cell["outputs"] if _is_traceback(output)]
            errors += [""] * (sum(keys[-1] == "error" for keys in cell["model_outputs"]) - len(errors))
            for text in errors:
                found.append(f"{where} shows an error: {_last_line(text) or '(traceback not drawn)'}")
            for output in cell["outputs"]:
                text = output["text"]
                for message in WIDGET_ERRORS:
                    if message in text:
                        found.append(f"{where} shows {message!r}: {_first_line(text)}")
                if any(not image["loaded"] for image in output["images"]):
                    found.append(f"{where} has an image that did not load")
                if _looks_like_unrendered_widget(text, output):
                    found.append(f"{where} shows a widget as text, not as a widget: {_first_line(text)}")
                if text.lstrip().startswith("<Figure size"):
                    found.append(f"{where} shows a figure as text ({_first_line(text)}): no plot drawn")
            widget_outputs = sum("application/vnd.jupyter.widget-view+json" in keys for keys in cell["model_outputs"])
            drawn = sum(1 for output in cell["outputs"] if output["widgets"]
                        and not any(message in output["text"] for message in WIDGET_ERRORS))
            if widget_outputs > drawn:
                found.append(f"{where}: {widget_outputs} widget output(s), {drawn} drawn")
            if _draws_a_plot(cell["source"]) and not any(image["loaded"] for output in cell["outputs"]
                                                          for image in output["images"]):
                found.append(f"{where} calls plt.show() but shows no plot")
        return found


def _first_line(text: str) -> str:
    line = next((line for line in text.splitlines() if line.strip()), "")
    return line[:100]


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def _is_traceback(output: dict) -> bool:
    """An error output (JupyterLab draws tracebacks as stderr text), in the cell or inside a widget's output."""
    return output["mime"].endswith("stderr") and "Traceback" in output["text"]


def _draws_a_plot(source: str) -> bool:
    return "plt.show()" in source or "fig.show()" in source


def _looks_like_unrendered_widget(text: str, output: dict) -> bool:
    """A widget's text fallback ('VBox(children=...', 'interactive(children=...') shown instead of the widget."""
    return not output["widgets"] and "(children=(" in text.split("\n", 1)[0]


def open_notebook(page, lab: JupyterLab, name: str, timeout: float = 120) -> None:
    """Load JupyterLab, open `name` (relative to the server's root) and wait for its kernel to be idle."""
    page.goto(f"{lab.url}/lab?reset", wait_until="domcontentloaded", timeout=timeout * 1000)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=timeout * 1000)
    kernel = page.evaluate(_OPEN, name)
    if kernel is None:
        raise AssertionError(f"{name} opened without a kernel (is the python3 kernel installed?)")
    page.wait_for_function(_KERNEL_IDLE, timeout=timeout * 1000)


def run_all(page, name: str, timeout: float) -> NotebookRun:
    """'Run All Cells', wait (at most `timeout` s) until it is done, and read every code cell from the DOM."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    start = time.monotonic()
    page.evaluate(_RUN_ALL)
    deadline = start + timeout
    while not page.evaluate("() => window.__llmlab.done"):
        if time.monotonic() > deadline:
            running = [f"cell {cell['index']} ({_first_line(cell['source'])})" for cell in page.evaluate(_CELLS)
                       if cell["prompt"] == "[*]:"]
            raise NotebookTimeout(f"{name} did not finish within {timeout:.0f} s; still running: "
                                  f"{', '.join(running) or 'none (the kernel may have died)'}")
        time.sleep(0.5)
    seconds = time.monotonic() - start
    page.wait_for_timeout(500)  # the last output's images decode
    page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output img')].every(i => i.complete)",
                           timeout=30_000)
    try:  # a widget whose model is missing shows 'Error displaying widget' only after the manager gives up on it
        page.wait_for_function(_WIDGETS_SETTLED, timeout=WIDGET_SETTLE_SECONDS * 1000)
    except PlaywrightTimeout:
        pass  # problems() reports the widget outputs that were never drawn
    return NotebookRun(name=name, seconds=seconds, cells=page.evaluate(_CELLS), run_error=page.evaluate(
        "() => window.__llmlab.error"))


def save_notebook(page, name: str) -> None:
    if page.evaluate(_SAVE):
        raise AssertionError(f"{name} is still marked modified after saving")


def close_notebook(page) -> None:
    """Shut the notebook's kernel down and close it (its outputs were saved first)."""
    page.evaluate(_CLOSE)


def screenshot_notebook(page, path_stem: Path) -> list[Path]:
    """The whole notebook as PNG files `<stem>.png` (or `<stem>-1.png`, `-2`... when taller than one shot)."""
    scroller = page.locator(_SCROLLER)
    # the cells' height (scrollHeight would add JupyterLab's scroll-past-end padding, which grows with the window)
    height = scroller.evaluate("""(node) => { const cells = node.querySelectorAll('.jp-Cell');
        const last = cells[cells.length - 1];
        const bottom = last.getBoundingClientRect().bottom - node.getBoundingClientRect().top + node.scrollTop;
        return Math.ceil(bottom) + 20; }""")
    visible = scroller.evaluate("(node) => node.clientHeight")
    chrome = VIEWPORT["height"] - visible  # menus, tabs, status bar
    shot_height = min(height, SCREENSHOT_MAX_HEIGHT)
    page.set_viewport_size({"width": VIEWPORT["width"], "height": shot_height + chrome})
    page.wait_for_timeout(300)
    paths = []
    try:
        parts = range(0, height, shot_height)
        for number, offset in enumerate(parts, start=1):
            scroller.evaluate("(node, top) => { node.scrollTop = top; }", offset)
            page.wait_for_timeout(200)
            path = path_stem.with_name(path_stem.name + (f"-{number}" if len(parts) > 1 else "") + ".png")
            page.screenshot(path=str(path))
            paths.append(path)
    finally:
        page.set_viewport_size(VIEWPORT)
    return paths


# --------------------------------------------------------------------------------------------------------------
# Controls of a widget in the page
# --------------------------------------------------------------------------------------------------------------


def cell_with(page, marker: str):
    """The code cell whose source contains `marker` (a Playwright locator), e.g. 'planner_widget('."""
    index = page.evaluate("""(marker) => window.__llmlab.panel.content.widgets.findIndex(
        cell => cell.model.type === 'code' && cell.model.sharedModel.getSource().includes(marker))""", marker)
    if index < 0:
        raise AssertionError(f"no code cell contains {marker!r}")
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook > .jp-WindowedPanel-outer "
                        ".jp-WindowedPanel-viewport > .jp-Cell").nth(index)


def control(cell, label: str):
    """The widget control whose label reads `label` inside `cell`."""
    found = cell.locator(".jp-OutputArea-output .widget-inline-hbox", has=cell.page.locator(
        f"label.widget-label:text-is('{label}')"))
    if found.count() != 1:
        labels = cell.locator("label.widget-label").all_inner_texts()
        raise AssertionError(f"{found.count()} controls labelled {label!r}; labels here: {labels}")
    return found


def move(cell, label: str, how: str) -> None:
    """Move a control as a learner would: `how` is an option's label for a dropdown ('int4'), or '+N' / '-N' arrow
    presses on a slider's handle."""
    widget = control(cell, label)
    if widget.locator("select").count():
        widget.locator("select").select_option(label=how)
    elif widget.locator(".noUi-handle").count():
        handle = widget.locator(".noUi-handle").first
        handle.focus()
        for _ in range(abs(int(how))):
            handle.press("ArrowRight" if int(how) > 0 else "ArrowLeft")
    else:
        raise AssertionError(f"control {label!r} is neither a dropdown nor a slider")


def output_text(cell) -> str:
    """What the cell's outputs show (top-level outputs: a widget's own output area is inside one of them)."""
    outputs = cell.locator(".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output")
    return "\n".join(outputs.all_inner_texts())


def wait_for_text(cell, expected: list[str], timeout: float = 60) -> str:
    """Wait until the cell's outputs show every string in `expected`; return the text shown (bounded wait)."""
    deadline = time.monotonic() + timeout
    text = output_text(cell)
    while not all(piece in text for piece in expected):
        if time.monotonic() > deadline:
            missing = [piece for piece in expected if piece not in text]
            raise AssertionError(f"after {timeout:.0f} s the widget still does not show {missing}; it shows:\n"
                                 + text[:1500])
        time.sleep(0.3)
        text = output_text(cell)
    return text
