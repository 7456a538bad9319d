"""How long the Serving what-if page's "Simulate the rates" takes in a real browser.

Starts the lab (``streamlit run app.py`` on a loopback port), opens the what-if page in
headless Chromium (Playwright), clicks "Simulate the rates" with the page's defaults
(Llama-3.1-8B on an H100, five rates of 200 requests) and times, from the click:
* the first point of the load curve on screen (the page draws each rate as it finishes);
* the whole curve and table, with the script finished.
Each repeat uses a fresh browser session of a fresh server, so nothing comes from Streamlit's cache.
``--think S`` waits S seconds between the page being drawn and the click, as a person would.

Usage: python benchmarks/what_if_speed.py [--repeat R] [--think S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(state_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, SERVELAB_STATE_DIR=state_dir, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("streamlit did not start")


def script_running(page) -> bool:
    state = page.get_attribute('[data-testid="stApp"]', "data-test-script-state")
    return state in (None, "initial", "running", "rerunRequested")


def wait_idle(page, timeout_s: float = 300) -> None:
    deadline, quiet = time.monotonic() + timeout_s, 0
    while quiet < 3:
        quiet = 0 if script_running(page) else quiet + 1
        if time.monotonic() > deadline:
            raise SystemExit("the page kept running")
        time.sleep(0.05)


def one_run(browser, think_s: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as state:
        proc, url = start_lab(state)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1900})
            page.goto(f"{url}/what-if")
            page.wait_for_selector("h1", timeout=120_000)
            wait_idle(page)
            time.sleep(think_s)  # a person reads the page before pressing the button
            page.locator('[class*="st-key-wi_run"] button').first.click()
            t0 = time.perf_counter()
            chart = page.locator('[class*="st-key-wi_load_chart"] .js-plotly-plot')
            chart.first.wait_for(timeout=300_000)
            first = time.perf_counter() - t0
            time.sleep(0.2)
            wait_idle(page)
            page.get_by_text("Download the table", exact=False).first.wait_for(timeout=300_000)
            total = time.perf_counter() - t0
            page.close()
            return first, total
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--think", type=float, default=0.0,
                   help="seconds between the page being drawn and the click (default 0: at once)")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("skipped: chromium is not installed")
    print(f"machine: {os.cpu_count()} cores, 1-minute load average {os.getloadavg()[0]:.2f}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            for i in range(args.repeat):
                first, total = one_run(browser, args.think)
                print(f"run {i + 1}: first point of the curve after {first:.2f} s, whole curve and table after {total:.2f} s")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
