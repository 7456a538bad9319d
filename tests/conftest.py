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
