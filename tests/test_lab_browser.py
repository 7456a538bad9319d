"""The lab in a real browser: serve app.py with Streamlit on a loopback port, open every page in
headless Chromium (Playwright), run one simulation per page where there is one, and save a
screenshot of each. ``scripts/screenshots`` runs this with SERVELAB_SCREENSHOTS_DIR set to
docs/screenshots/ to refresh the README's pictures; otherwise they go to a temporary folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import require_program

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory):
    port = free_port()
    env = dict(os.environ, SERVELAB_STATE_DIR=str(tmp_path_factory.mktemp("state")), PYTHONPATH=str(ROOT))
    log = tmp_path_factory.mktemp("log") / "streamlit.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "app.py",
                "--server.headless", "true",
                "--server.address", "127.0.0.1",
                "--server.port", str(port),
                "--browser.gatherUsageStats", "false",
                "--server.fileWatcherType", "none",
                "--client.toolbarMode", "minimal",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    chromium = require_program("chromium")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("SERVELAB_SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("screenshots")


def settle(page, timeout_ms: int = 180_000) -> None:
    """Wait until Streamlit has finished running the script.

    The app's root carries the script's state (``data-test-script-state``: running, notRunning,
    ...). A rerun starts a moment after a click, so the state must read "not running" several
    times in a row before the page counts as drawn.
    """
    page.wait_for_selector("h1", timeout=timeout_ms)
    quiet = 0
    deadline = time.monotonic() + timeout_ms / 1000
    while quiet < 4:
        state = page.get_attribute('[data-testid="stApp"]', "data-test-script-state")
        running = state in (None, "initial", "running", "rerunRequested")
        quiet = 0 if running else quiet + 1
        if time.monotonic() > deadline:
            pytest.fail("the page kept running")
        page.wait_for_timeout(500)
    page.wait_for_timeout(500)  # plotly draws after the script ends


def no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


# (url path, heading, (button key, clicks), what must show afterwards, screenshot name)
PAGES = [
    ("", "ServeLab", None, None, "home"),
    ("paged-attention", "PagedAttention", ("pa_next", 5), "is preempted", "paged-attention"),
    ("batching", "Continuous vs static batching", ("bt_run", 1), "Where \"2-24x\" comes from", "batching"),
    ("what-if", "Serving what-if", ("wi_run", 1), "Take it to a real GPU", "what-if"),
    ("capacity", "Capacity planner", ("cp_run", 1), "Ship the winner", "capacity"),
    ("canary", "Canary rollout", ("cn_demo", 1), "Rolled back", "canary"),
    ("cluster", "Cluster", ("cl_deploy", 1), "Canary weight", "cluster"),
    ("exercises", "Exercises", ("ex_run_6", 1), "What to do", "exercises"),
]


@pytest.mark.parametrize("path, heading, action, expect, name", PAGES, ids=[p[4] for p in PAGES])
def test_page_in_browser(lab_url, browser, shots, path, heading, action, expect, name):
    page = browser.new_page(viewport={"width": 1500, "height": 1900})
    try:
        page.goto(f"{lab_url}/{path}")
        settle(page)
        assert page.locator("h1").first.inner_text().strip() == heading
        no_exception(page)
        if action is not None:
            key, times = action
            for _ in range(times):
                # Streamlit marks each keyed widget's container with the class st-key-<key>.
                page.locator(f'[class*="st-key-{key}"] button').first.click()
                page.wait_for_timeout(300)
                settle(page)
        if expect is not None:
            page.get_by_text(expect, exact=False).first.wait_for(timeout=180_000)
            settle(page)
        no_exception(page)
        page.mouse.move(1, 1)  # no tooltip in the picture
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    finally:
        page.close()
    assert (shots / f"{name}.png").stat().st_size > 10_000


def test_exercise_check_of_uploaded_files(lab_url, browser):
    # The upload path of the Exercises page (AppTest cannot drive a file uploader).
    page = browser.new_page(viewport={"width": 1500, "height": 1900})
    try:
        page.goto(f"{lab_url}/exercises")
        settle(page)
        page.get_by_text("6.2 · Route code generation", exact=False).first.click()
        settle(page)
        page.get_by_text("Upload files", exact=True).click()
        settle(page)
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
            str(ROOT / "exercises" / "6.2" / "solution" / "router.py")
        )
        settle(page)
        page.locator('[class*="st-key-ex_run_6"] button').first.click()
        page.get_by_text("All checks passed", exact=False).first.wait_for(timeout=60_000)
        no_exception(page)
    finally:
        page.close()


# In a 900 px window the sidebar leaves the page about 450 px. Each check reads the drawn page.
NARROW_COLUMNS = """() => [...document.querySelectorAll('[data-testid="stColumn"]')]
    .filter(c => c.querySelector('[data-testid="stWidgetLabel"], [data-testid="stMetric"]'))
    .map(c => Math.round(c.getBoundingClientRect().width))"""


@pytest.mark.parametrize("path", ["what-if", "capacity", "canary", "batching", "paged-attention"])
def test_controls_and_metrics_keep_their_width_in_a_900px_window(lab_url, browser, path):
    # A column with a labelled control or a metric is at least 150 px wide: the [1, 3] columns had
    # squeezed the what-if, capacity and canary controls to 78 px and cut the metrics to "4...".
    page = browser.new_page(viewport={"width": 900, "height": 1200})
    try:
        page.goto(f"{lab_url}/{path}")
        settle(page)
        no_exception(page)
        widths = page.evaluate(NARROW_COLUMNS)
        assert widths and min(widths) >= 150, widths
    finally:
        page.close()


def test_narrow_window_cuts_no_text_or_chart(lab_url, browser):
    page = browser.new_page(viewport={"width": 900, "height": 1200})
    try:
        # Home: each card shows all its text (a fixed height had made them scroll boxes).
        page.goto(lab_url)
        settle(page)
        clipped = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stVerticalBlock"]')]
            .filter(e => getComputedStyle(e).borderStyle === 'solid' && e.querySelector('[data-testid="stPageLink"]'))
            .map(e => e.scrollHeight - e.clientHeight)""")
        assert len(clipped) == 7 and max(clipped) <= 2, clipped
        # PagedAttention: 16 blocks, none drawn over its neighbour (fixed-size squares overlapped).
        page.goto(f"{lab_url}/paged-attention")
        settle(page)
        boxes = page.evaluate("""() => [...document.querySelectorAll('.st-key-pa_blocks_chart .shapelayer path')]
            .map(p => { const r = p.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })""")
        assert len(boxes) == 16, boxes
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                overlap_x = min(a[2], b[2]) - max(a[0], b[0])
                overlap_y = min(a[3], b[3]) - max(a[1], b[1])
                assert overlap_x <= 1 or overlap_y <= 1, (a, b)
        # What-if: the memory chart's six parts all in its legend, none scrolled out of sight.
        page.goto(f"{lab_url}/what-if")
        settle(page)
        assert page.locator('.st-key-wi_memory_chart .legend .traces').count() == 6
        scrollbars = page.evaluate("""() => [...document.querySelectorAll('.st-key-wi_memory_chart .legend rect.scrollbar')]
            .map(r => r.getBoundingClientRect().height)""")
        assert all(h == 0 for h in scrollbars), scrollbars
    finally:
        page.close()
