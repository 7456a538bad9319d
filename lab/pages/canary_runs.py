"""The Canary rollout page's simulator runs: the course's manifests with the thresholds the page
sets, run by ``sim.rollout.simulate`` and read back as plain data for charts."""

from __future__ import annotations

import io
import re
import shutil
import zipfile
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"

# The background analysis' thresholds a student may move: (template, metric) -> (label, default, help).
THRESHOLDS = {
    ("ai-api-health", "error-rate"): ("error rate below", 0.01, "success while the canary's 5-minute error rate is below this"),
    ("ai-api-health", "latency-p99"): ("p99 latency below (ms)", 3000.0, "success while the canary's p99 is below this"),
    ("ai-api-quality", "llm-judge-score"): ("judge score above", 0.85, "success while the canary's mean judge score is above this"),
    ("ai-api-rollback", "p99-vs-stable"): ("fail when p99 / stable's above", 3.0, "the course's 3x-baseline rollback trigger"),
    ("ai-api-rollback", "cost-per-request-vs-stable"): ("fail when cost / stable's above", 2.0, "the course's 2x cost trigger"),
    ("ai-api-rollback", "quality-vs-stable"): ("fail when quality / stable's below", 0.9, "the course's 10% quality-drop trigger"),
}
FAULT_PRESETS = {
    "error-rate=0.02": "2% of the canary's requests fail",
    "latency=4x": "the canary answers 4x slower",
    "latency=1.3x": "30% slower: under every threshold, should promote",
    "quality=-0.15": "the canary's answers score 0.15 lower with the judge",
    "cost=2.5x": "the canary writes 2.5x longer answers",
    "price=3x": "the same tokens at 3x the price per token (a bigger model)",
    "kv-leak=0.5": "the canary loses half its KV blocks an hour",
    "slow-gpu=2x": "every engine step takes twice as long",
    "crash-loop=10m": "each canary pod crashes every 10 minutes on average",
}
_LAST_NUMBER = re.compile(r"(-?[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*$")


def manifests_with(thresholds: tuple[tuple[str, str, float], ...], into: Path) -> Path:
    """Copy the course's manifests into ``into`` with the given metrics' last number replaced."""
    shutil.copytree(MANIFESTS, into, dirs_exist_ok=True)
    wanted = {(t, m): v for t, m, v in thresholds}
    for path in sorted(into.glob("analysis-*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        changed = False
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "AnalysisTemplate":
                continue
            name = doc["metadata"]["name"]
            for metric in doc["spec"].get("metrics", []):
                value = wanted.get((name, metric.get("name")))
                if value is None:
                    continue
                for key in ("successCondition", "failureCondition"):
                    if key in metric:
                        metric[key] = _LAST_NUMBER.sub(f"{value:g}", str(metric[key]).rstrip())
                        changed = True
        if changed:
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return into


@st.cache_data(show_spinner=False, max_entries=32)
def run_rollout(
    thresholds: tuple[tuple[str, str, float], ...], faults: tuple[str, ...], seed: int = 0, rate: float = 20.0,
    abort_at: str | None = None,
) -> dict:
    """One simulated rollout: the JSON contract plus series every 5 minutes for the charts;
    ``abort_at`` (a duration such as ``2h30m``) aborts by hand then."""
    from sim.rollout.durations import parse_go_duration

    from sim.rollout import simulate
    from sim.rollout.report import timeseries

    with tempfile.TemporaryDirectory(prefix="servelab-canary-") as tmp:
        folder = manifests_with(thresholds, Path(tmp))
        result = simulate(folder, faults=list(faults), seed=seed, rate=rate,
                          abort_at_s=None if abort_at is None else parse_go_duration(abort_at))
    series = timeseries(result.simulation, step_s=300.0)
    plain = {"t_s": np.asarray(series["t_s"]), "weight": np.asarray(series["weight"])}
    for key, value in series.items():
        if isinstance(value, dict):
            plain[key] = {k: np.asarray(v) for k, v in value.items()}
    return {"result": result.to_json(), "series": plain}


# The folder the page's command line names when the thresholds are moved (the download unzips to it).
EDITED_MANIFESTS = "canary-manifests"


def thresholds_edited(thresholds: tuple[tuple[str, str, float], ...]) -> bool:
    """Whether any threshold differs from the course's manifests."""
    return any(v != THRESHOLDS[(t, m)][1] for t, m, v in thresholds)


def _number(x: float) -> str:
    """``x`` as short as argparse's float() reads back exactly (20.0 -> "20")."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def cli_args(thresholds: tuple[tuple[str, str, float], ...], faults: tuple[str, ...], seed: int, rate: float,
             abort_at: str | None) -> list[str]:
    """``servelab`` arguments that repeat :func:`run_rollout` with the same inputs (the CLI's
    defaults are simulate's: Poisson traffic, the threshold judge). Moved thresholds live in
    the manifests, so the command names the folder :func:`manifests_zip` unzips to."""
    args = ["rollout", "simulate"]
    if thresholds_edited(thresholds):
        args += ["--manifests", EDITED_MANIFESTS]
    for fault in faults:
        args += ["--fault", fault]
    if abort_at is not None:
        args += ["--abort-at", abort_at]
    return args + ["--seed", str(int(seed)), "--rate", _number(float(rate)), "--json", "result.json"]


@st.cache_data(show_spinner=False, max_entries=8)
def manifests_zip(thresholds: tuple[tuple[str, str, float], ...]) -> bytes:
    """The course's manifests with the page's thresholds, zipped under ``canary-manifests/``."""
    with tempfile.TemporaryDirectory(prefix="servelab-canary-") as tmp:
        folder = manifests_with(thresholds, Path(tmp) / EDITED_MANIFESTS)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    z.write(path, path.relative_to(Path(tmp)).as_posix())
    return buf.getvalue()
