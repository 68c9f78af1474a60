"""Every lesson opens in JupyterLab in a real browser, runs its first cells without an error and draws a figure.

`attention-course lab` is started as a student starts it, on a free port, headless, and driven in
Debian's Chromium through Playwright (nothing is downloaded: the browser is the system's). Each
lesson's notebook is opened in the JupyterLab page, its code cells are run one by one with
Shift+Enter, as a student runs them, until one draws a figure. Screenshots of what the browser
showed go to build/screenshots/<lesson>.png, passed or failed.

The lessons are those of a student who has done the exercises (the ``full_marks`` sample of the
demo: the release with the instructor's answers filled in), because in the blank release every
exercise's test cell rightly raises NotImplementedError, and most first figures draw with the
student's function. The server runs on a temporary copy of the course with its own Jupyter
settings, runtime and workspace folders, so nothing is written into the checkout.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from autograde.course import NBGRADER_CONFIG
from autograde.demo import fill_in, solution_answers
from autograde.lessons import LESSONS, Lesson

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser driver is not installed: pip install -e '.[test]' (./course test does)")
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed: `apt-get install chromium` as root (./course test does, when it can)",
                allow_module_level=True)
expect = sync_api.expect
pytestmark = pytest.mark.slow  # a JupyterLab server and a browser: minutes

PROJECT = Path(__file__).resolve().parents[1]
SCREENSHOTS = PROJECT / "build" / "screenshots"

# Generous limits, met in seconds on a quiet machine: the first cell starts the kernel and imports
# torch, and CI shares two cores with other jobs.
SERVER_START_S = 120
CELL_TIMEOUT_MS = 180_000
PAGE_TIMEOUT_MS = 90_000
# The first figure of every lesson is drawn within its first 16 code cells; more means something is wrong.
MAX_CODE_CELLS = 20

# The machine may have no network: without these flags Chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# JupyterLab's user settings for a test: no news or update pop-ups over the notebook, every cell in the
# page (no windowing), and no autosave (the notebook in the browser keeps its outputs to itself).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}
ERROR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'  # tracebacks and stderr
# A figure's output (png or svg), marked as soon as JupyterLab adds it; the picture is its <img>.
FIGURE_OUTPUT = '.jp-OutputArea-output[data-mime-type^="image/"]'
# The status bar's kernel item once the notebook's kernel is connected and waiting ("No Kernel | Initializing"
# before): a cell run earlier is dropped, or JupyterLab asks which kernel to start.
KERNEL_IDLE = re.compile(r"^(?!No Kernel).+ \| Idle$")


def course_with_answers(root: Path) -> Path:
    """A copy of the course at ``root`` whose lessons hold the instructor's answers; what ``lab`` serves."""
    shutil.copytree(PROJECT / "lessons", root / "lessons")
    shutil.copytree(PROJECT / "solutions", root / "solutions")  # with the config, what marks a course root
    (root / NBGRADER_CONFIG).parent.mkdir(parents=True)
    shutil.copy(PROJECT / NBGRADER_CONFIG, root / NBGRADER_CONFIG)
    for lesson in LESSONS:
        path = root / "lessons" / lesson.id / f"{lesson.notebook}.ipynb"
        nbformat.write(fill_in(nbformat.read(path, as_version=4), solution_answers(PROJECT, lesson)), path)
    return root


def lab_environment(course: Path, state: Path) -> dict[str, str]:
    """The environment of the server: the course copy, and Jupyter's own files kept under ``state``."""
    for plugin, settings in LAB_SETTINGS.items():
        path = state / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    env = dict(os.environ, ATTENTION_COURSE_ROOT=str(course), JUPYTER_CONFIG_DIR=str(state / "config"),
               JUPYTER_RUNTIME_DIR=str(state / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"))
    env.pop("MPLBACKEND", None)  # a backend set here (agg) would stop the kernel's inline figures
    return env


@dataclass
class Lab:
    url: str  # http://127.0.0.1:PORT/
    token: str

    def request(self, method: str, path: str) -> bytes:
        request = urllib.request.Request(self.url + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is on this machine
        with no_proxy.open(request, timeout=30) as response:
            return response.read()

    def notebook_url(self, lesson: Lesson) -> str:
        # A workspace of its own per lesson: JupyterLab restores no tab of an earlier lesson over it.
        return f"{self.url}lab/workspaces/{lesson.id}/tree/{lesson.id}/{lesson.notebook}.ipynb?token={self.token}"

    def shut_down_kernels(self) -> None:
        for session in json.loads(self.request("GET", "api/sessions")):
            self.request("DELETE", f"api/sessions/{session['id']}")


def wait_for_server(server: subprocess.Popen, runtime: Path, token: str, log: Path) -> Lab:
    """The server once it answers; it writes its port into its runtime folder when it has bound one."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"attention-course lab exited with status {server.returncode}:\n{log.read_text()[-3000:]}")
        for info in glob.glob(str(runtime / "jpserver-*.json")):
            lab = Lab(f"http://127.0.0.1:{json.loads(Path(info).read_text())['port']}/", token)
            try:
                lab.request("GET", "api/status")
                return lab
            except (urllib.error.URLError, ConnectionError):
                pass  # bound, not serving yet
        time.sleep(0.25)
    pytest.fail(f"attention-course lab did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen, lab: Lab | None) -> None:
    """Shut the server down with its kernels, through its API if it answers, else by signal."""
    if lab is not None:
        try:
            lab.request("POST", "api/shutdown")
            server.wait(timeout=30)
            return
        except (urllib.error.URLError, ConnectionError, subprocess.TimeoutExpired):
            pass
    server.terminate()  # jupyter shuts its kernels down on SIGTERM too
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`attention-course lab` on a free port, headless, with a token of the test's own."""
    course = course_with_answers(tmp_path_factory.mktemp("course"))
    state = tmp_path_factory.mktemp("jupyter")
    token = secrets.token_hex(16)
    log = state / "lab.log"
    # python -m autograde.cli is the console script `attention-course` without the script's path.
    command = [sys.executable, "-m", "autograde.cli", "lab", "--no-browser", "--ServerApp.port=0",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"]
    with open(log, "w") as output:
        server = subprocess.Popen(command, cwd=PROJECT, env=lab_environment(course, state), stdout=output,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    running = None
    try:
        running = wait_for_server(server, state / "runtime", token, log)
        yield running
    finally:
        stop_server(server, running)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system's packages, with a fresh profile of Playwright's making."""
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def run_until_first_figure(page, lesson: Lesson):
    """Run the notebook's code cells in order with Shift+Enter until one draws a figure; return its <img>.

    Fails at the first cell whose output shows an error (or anything on stderr), quoting it.
    """
    code_cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-CodeCell")
    for index in range(MAX_CODE_CELLS):
        cell = code_cells.nth(index)
        prompt = cell.locator(".jp-InputPrompt")
        prompt.click()  # selects the cell, the notebook in command mode
        expect(cell).to_have_class(re.compile(r"\bjp-mod-active\b"), timeout=PAGE_TIMEOUT_MS)
        page.keyboard.press("Shift+Enter")
        expect(prompt).to_have_text(re.compile(r"^\[\d+\]:$"), timeout=CELL_TIMEOUT_MS)  # [*]: while it runs
        errors = cell.locator(ERROR_OUTPUT)
        assert errors.count() == 0, (f"{lesson.id}, code cell {index + 1} shows an error in JupyterLab:\n"
                                     + "\n".join(errors.all_inner_texts()))
        if cell.locator(FIGURE_OUTPUT).count():
            return cell.locator(FIGURE_OUTPUT).first.locator("img")
    pytest.fail(f"{lesson.id}: no figure in the output of its first {MAX_CODE_CELLS} code cells")


@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.id for lesson in LESSONS])
def test_lesson_runs_in_jupyterlab_and_draws_its_first_figure(lesson, lab, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(lab.notebook_url(lesson))
        cells = len(nbformat.read(PROJECT / "lessons" / lesson.id / f"{lesson.notebook}.ipynb", as_version=4).cells)
        expect(page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")).to_have_count(cells, timeout=PAGE_TIMEOUT_MS)
        kernel_status = page.locator("#jp-main-statusbar .jp-StatusBar-TextItem", has_text=KERNEL_IDLE)
        expect(kernel_status).to_have_count(1, timeout=CELL_TIMEOUT_MS)
        figure = run_until_first_figure(page, lesson)
        # Rendered: the browser decoded the picture and it has a size (a broken image fails to decode).
        size = figure.evaluate("img => img.decode().then(() => [img.naturalWidth, img.naturalHeight], () => [0, 0])")
        assert min(size) > 0, f"{lesson.id}: the first figure did not render (image of natural size {size})"
        figure.evaluate("img => img.scrollIntoView({block: 'end'})")  # the whole figure, its code above it
    finally:
        page.screenshot(path=SCREENSHOTS / f"{lesson.id}.png")
        context.close()
        lab.shut_down_kernels()
