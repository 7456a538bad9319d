"""Shared test fixtures.

Tests that need a real external program (prometheus, redis-server, chromium, the vLLM
reference venv) call :func:`require` which skips on a developer machine without it, and
fails under CI (SERVELAB_REQUIRE_ALL=1), where .ci/run has installed everything.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require(condition: bool, what: str) -> None:
    if condition:
        return
    if os.environ.get("SERVELAB_REQUIRE_ALL") == "1":
        pytest.fail(f"{what} is required in CI but missing (see scripts/setup-test-env)")
    pytest.skip(f"{what} not available")


def require_program(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"program '{name}'")
    return path  # type: ignore[return-value]


@pytest.fixture
def start_prometheus(tmp_path):
    """Factory fixture: ``start_prometheus(openmetrics=TEXT or None, config_yaml=YAML) -> base URL``.

    With ``openmetrics``, the samples are backfilled with promtool before Prometheus starts; with
    ``config_yaml``, Prometheus scrapes what it says (e.g. the emulator's /metrics). Each call
    starts its own server on a free 127.0.0.1 port; all are stopped when the test ends. Skips
    locally, fails in CI, without the prometheus and promtool programs (see tests/prom_fixtures.py).
    """
    import contextlib

    from prom_fixtures import MINIMAL_CONFIG, backfill, prometheus_server

    prometheus = require_program("prometheus")
    promtool = require_program("promtool")
    with contextlib.ExitStack() as stack:
        count = 0

        def start(openmetrics: str | None = None, config_yaml: str = MINIMAL_CONFIG) -> str:
            nonlocal count
            count += 1
            workdir = tmp_path / f"prometheus-{count}"
            storage = backfill(openmetrics, workdir, promtool=promtool) if openmetrics is not None else None
            return stack.enter_context(
                prometheus_server(workdir, storage_dir=storage, config_yaml=config_yaml, prometheus=prometheus)
            )

        yield start

# -- golden files (tests/golden/) ----------------------------------------------------------------


@pytest.fixture
def course_copy(tmp_path):
    """``course_copy(file, old, new)``: a copy of the course's manifests/ with one edit (``old``
    must be in ``file``), as a student's folder with a typical mistake."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def make(file: str, old: str, new: str):
        folder = tmp_path / "m"
        shutil.copytree(root / "manifests", folder)
        text = (folder / file).read_text()
        assert old in text
        (folder / file).write_text(text.replace(old, new, 1))
        return folder

    return make


def pytest_addoption(parser):
    """``pytest --update-golden`` rewrites the golden files from the current output."""
    try:
        parser.addoption(
            "--update-golden", action="store_true", default=False,
            help="rewrite tests/golden/* from the current output (review the diff like code)",
        )
    except ValueError:  # already added by another conftest hook
        pass


@pytest.fixture()
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden"))


def normalise_json(value, digits: int = 6):
    """Sort keys and round floats, so golden comparisons ignore the last bits of a float."""
    if isinstance(value, dict):
        return {k: normalise_json(value[k], digits) for k in sorted(value)}
    if isinstance(value, list):
        return [normalise_json(v, digits) for v in value]
    if isinstance(value, float):
        return round(value, digits)
    return value



# Lines that tests want in the terminal summary (e.g. the vLLM reference match rate, see
# tests/test_vllm_reference.py). Kept on the config object itself: this module may be
# imported twice (as pytest's conftest and as tests.conftest), so a module-level key would not do.
def add_summary_line(config, line: str) -> None:
    config.__dict__.setdefault("servelab_summary_lines", []).append(line)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.__dict__.get("servelab_summary_lines", [])
    if lines:
        terminalreporter.section("servelab figures")
        for line in lines:
            terminalreporter.write_line(line)
