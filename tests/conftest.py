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


# -- golden files (tests/golden/) ----------------------------------------------------------------


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
