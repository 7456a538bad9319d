"""ServeLab's scheduler against vLLM 0.33's own Scheduler, decision for decision.

240 seeded random traces (sim/reference_trace.py) plus the hand-made cases in
tools/vllm_reference/cases/ go through vLLM's real Scheduler and KVCacheManager in ONE
subprocess of the reference venv (tools/vllm_reference/driver.py), and through ServeLab's
(sim/reference_replay.py). Every step must agree: which requests run and with how many tokens,
which are admitted, resumed, preempted, finished or aborted, their prefix hits, free KV blocks
after scheduling and after the step, KV usage and the prefix-cache counters.

Needs .venv-vllm (bash scripts/setup-vllm-reference; .ci/run calls it). Without it the
marked tests skip on a developer machine and fail in CI (tests/conftest.py:require).

    python3 -m pytest tests/test_vllm_reference.py            # match rate in the summary
    python3 benchmarks/vllm_match.py                          # the same, with first mismatches
"""

from __future__ import annotations

import importlib.util
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from sim.reference_replay import expand_requests, replay_result, sampled_token_id
from sim.reference_trace import random_trace
from sim.request import Request
from tests.conftest import add_summary_line, require

ROOT = Path(__file__).resolve().parents[1]


def _load_harness():
    # By file path: a top-level package named "tools" installed elsewhere would shadow ours.
    spec = importlib.util.spec_from_file_location(
        "servelab_vllm_reference_harness", ROOT / "tools" / "vllm_reference" / "harness.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


harness = _load_harness()

SEED = 20261126
NUM_TRACES = 240
CASES_DIR = ROOT / "tools" / "vllm_reference" / "cases"

# Documented, deliberate simplifications: trace name -> reason. Nothing may go here for a bug.
KNOWN_DIFFERENCES: dict[str, str] = {}


def _random_traces() -> list[dict]:
    rng = np.random.default_rng(SEED)
    return [random_trace(rng, name=f"seed{SEED}-{i}") for i in range(NUM_TRACES)]


def _cases() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(CASES_DIR.glob("*.json"))]


@pytest.fixture(scope="module")
def vllm_run() -> tuple[list[dict], dict]:
    require(harness.reference_venv_ready(), "the vLLM reference venv (.venv-vllm)")
    traces = _random_traces() + _cases()
    return traces, harness.run_vllm(traces)


# --- against vLLM (need the reference venv) ---


@pytest.mark.vllm_reference
def test_reference_is_the_pinned_vllm_running_the_trace_config(vllm_run):
    traces, doc = vllm_run
    assert doc["vllm_version"] == harness.pinned_vllm_version()
    for trace, res in zip(traces, doc["results"]):
        assert not res.get("error"), res.get("error")
        eff = res["effective_config"]
        assert eff["scheduler_cls"] == "vllm.v1.core.sched.scheduler.Scheduler"
        assert eff["async_scheduling"] is False
        for key, value in trace["engine"].items():
            assert eff[key] == value, (trace["name"], key, eff[key], value)


@pytest.mark.vllm_reference
def test_traces_exercise_what_they_claim(vllm_run):
    """Each behaviour the traces are meant to stress really happens, counted on vLLM's side."""
    traces, doc = vllm_run
    results = doc["results"][:NUM_TRACES]
    prompt_len = {}
    for t in traces[:NUM_TRACES]:
        for r in expand_requests(t):
            prompt_len[(t["name"], r["request_id"])] = len(r["prompt_token_ids"])
    steps = [(res["name"], s) for res in results for s in res["steps"]]

    def count(pred) -> int:
        return sum(1 for name, s in steps if pred(name, s))

    assert count(lambda n, s: s["preempted"]) >= 50, "preemption"
    assert count(lambda n, s: s["resumed"]) >= 50, "resumption"
    assert count(lambda n, s: s["prefix_hits"] > 0) >= 50, "prefix hits at admission"
    assert count(lambda n, s: s["aborted"]) >= 20, "aborts"
    # Chunked prefill: a request admitted with less than the rest of its prompt.
    assert count(
        lambda n, s: any(
            s["cached_tokens"][rid] + k < prompt_len[(n, rid)]
            for rid, k in s["scheduled"]
            if rid in s["new"]
        )
    ) >= 50, "chunked prefill"
    reasons = [r for _, s in steps for r in s["finish_reasons"].values()]
    assert reasons.count("length") >= 500
    assert sum(1 for t in traces if any(r["n"] > 1 for r in t["requests"])) >= 50, "n > 1"
    assert sum(1 for t in traces if t["engine"]["policy"] == "priority") >= 20
    assert sum(1 for t in traces if not t["engine"]["enable_prefix_caching"]) >= 20
    assert sum(1 for t in traces if not t["engine"]["enable_chunked_prefill"]) >= 20
    assert sum(1 for t in traces if t["engine"]["long_prefill_token_threshold"]) >= 20
    assert not any(res["stalled"] for res in results)


@pytest.mark.vllm_reference
@pytest.mark.parametrize(
    "fast_forward",
    [
        pytest.param(False, id="reference-scheduler"),
        # What run_engine uses by default: LazyDecodeScheduler, runs of decode steps at once.
        pytest.param(True, id="fast-forward"),
    ],
)
def test_servelab_matches_vllm_step_for_step(vllm_run, fast_forward, record_property, request):
    traces, doc = vllm_run
    ours = [replay_result(t, fast_forward=fast_forward) for t in traces]
    summary = harness.compare_all(traces, doc, ours)
    mode = "fast-forward" if fast_forward else "reference scheduler"
    line = (
        f"{summary.line()} [ServeLab {mode}; vLLM {doc['vllm_version']}, seed {SEED}, "
        f"{len(traces)} traces]"
    )
    record_property("vllm_match", line)
    add_summary_line(request.config, line)
    unexpected = [
        c for c in summary.comparisons if not c.identical and c.name not in KNOWN_DIFFERENCES
    ]
    assert not unexpected, (
        f"{line}\nServeLab's scheduler departs from vLLM's (python3 benchmarks/vllm_match.py "
        f"shows the steps around each first mismatch):\n"
        + harness.MatchSummary(unexpected).describe_mismatches()
    )


# --- the harness itself (no venv needed) ---


def test_trace_generator_is_deterministic():
    assert json.dumps(_random_traces()[:30]) == json.dumps(_random_traces()[:30])


def test_traces_respect_vllm_input_limits():
    """vLLM would refuse these configs or prompts; the generator must not produce them."""
    for t in _random_traces():
        e = t["engine"]
        assert e["max_num_batched_tokens"] >= e["max_num_seqs"]
        if not e["enable_chunked_prefill"]:
            assert e["max_num_batched_tokens"] >= e["max_model_len"]
        for r in t["requests"]:
            assert 1 <= len(r["prompt_token_ids"]) < e["max_model_len"]
            # Every request fits alone (else it could never be readmitted: a stall).
            need = -(-min(len(r["prompt_token_ids"]) + r["max_tokens"], e["max_model_len"]) // e["block_size"])
            assert need <= e["num_gpu_blocks"] - 1


def test_fake_model_tokens_are_servelabs_synthetic_tokens():
    """The driver samples ServeLab's own synthetic tokens, so both sides hash the same content."""
    req = Request("0_r3", [5, 6, 7], 4)
    assert [sampled_token_id("0_r3", j) for j in range(4)] == [req.output_token(j) for j in range(4)]
    driver = (ROOT / "tools" / "vllm_reference" / "driver.py").read_text()
    assert "(key * 2654435761 + output_index * 40503 + 12345) % VOCAB_SIZE" in driver
    assert sampled_token_id("x", 0) == (zlib.crc32(b"x") * 2654435761 + 12345) % 32000


def test_parallel_sampling_fans_out_like_vllms_parent_request():
    trace = {
        "requests": [
            {"request_id": "a", "prompt_token_ids": [1, 2], "max_tokens": 3, "arrival_step": 2, "n": 3},
            {"request_id": "b", "prompt_token_ids": [3], "max_tokens": 1, "arrival_step": 0},
        ]
    }
    ids = [r["request_id"] for r in expand_requests(trace)]
    assert ids == ["b", "0_a", "1_a", "2_a"]  # vLLM's f"{index}_{parent_id}", stable by arrival


def test_replay_rejects_prompts_vllm_rejects():
    trace = {
        "engine": {
            "block_size": 4, "num_gpu_blocks": 8, "enable_prefix_caching": True,
            "enable_chunked_prefill": True, "max_num_batched_tokens": 16, "max_num_seqs": 2,
            "max_model_len": 8, "long_prefill_token_threshold": 0,
        },
        "requests": [
            {"request_id": "long", "prompt_token_ids": list(range(3, 11)), "max_tokens": 1, "arrival_step": 0},
            {"request_id": "ok", "prompt_token_ids": list(range(3, 10)), "max_tokens": 5, "arrival_step": 0},
        ],
    }
    res = replay_result(trace)
    assert res["rejected"] == ["long"]
    # 7 prompt tokens + 1 output reach max_model_len: finished by length after one token.
    assert res["steps"][-1]["finished"] == ["ok"]
    assert len(res["steps"]) == 1


def test_fast_forward_replay_makes_the_reference_schedulers_decisions():
    """Without vLLM: the engine's LazyDecodeScheduler, driven as the engine drives it, decides
    every step as the reference Scheduler does, free KV blocks included."""
    traces = _random_traces()[:80]
    for trace in traces:
        ref, fast = replay_result(trace), replay_result(trace, fast_forward=True)
        comparison = harness.compare_trace(trace["name"], ref, fast)
        assert comparison.identical, harness.MatchSummary([comparison]).describe_mismatches()
    skipped = sum(r["num_steps"] - r["decisions"] for r in map(lambda t: replay_result(t, fast_forward=True), traces))
    assert skipped > 0  # runs of steps were skipped over
