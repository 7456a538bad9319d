"""Helpers every page uses: state defaults, optional parts of the simulator, downloads."""

from __future__ import annotations

import importlib
import io
import json
from pathlib import Path
from typing import Any

import streamlit as st

ROOT = Path(__file__).resolve().parents[2]
# The code the lab's worker processes import: a change under these replaces the workers
# (sim.tune.executors.OnePool), as the lab itself reruns with the edited code.
SOURCES = (ROOT / "sim", ROOT / "lab")


def defaults(**values: Any) -> None:
    """Set session-state keys only where absent, so a page works when opened first."""
    for key, value in values.items():
        if key not in st.session_state:
            st.session_state[key] = value


def need(module: str, what: str):
    """Import a part of the simulator, or explain on the page that this build lacks it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        st.warning(
            f"This page needs `{module}` ({what}), which this checkout does not have yet "
            f"({exc}). Update the repository and reload."
        )
        st.stop()


def download_table(df, file_stem: str, label: str = "Download the table (CSV)", key: str | None = None) -> None:
    st.download_button(
        label,
        df.to_csv(index=False).encode("utf-8"),
        file_name=f"{file_stem}.csv",
        mime="text/csv",
        key=key or f"dl-{file_stem}",
        icon=":material/download:",
    )


def download_json(payload: Any, file_stem: str, label: str = "Download the results (JSON)", key: str | None = None) -> None:
    buf = io.StringIO()
    json.dump(payload, buf, indent=2, sort_keys=True, default=_plain)
    st.download_button(
        label,
        buf.getvalue().encode("utf-8"),
        file_name=f"{file_stem}.json",
        mime="application/json",
        key=key or f"dl-{file_stem}-json",
        icon=":material/download:",
    )


def _plain(value: Any) -> Any:
    # numpy scalars and arrays, enums and dataclasses, as plain JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "value"):
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return str(value)
