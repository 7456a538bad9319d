"""Hybrid KV cache groups (sim.kv.hybrid, sim.kv.single_type): sliding-window and full-attention
block tables over one shared pool, as vLLM 0.33's HybridKVCacheCoordinator.

The strongest check is the first: vLLM's own Scheduler and KVCacheManager, given the same
sliding-window and full-attention groups (tools/vllm_reference/driver.py builds them), run seeded
random traces on the CPU, and ServeLab must agree at every step (free blocks, prefix hits,
admissions, preemptions). The rest run without vLLM.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config import EngineConfig, cdiv
from sim.engine import Engine, run_engine
from sim.errors import ConfigError
from sim.kv.hybrid import GroupSpec, HybridKVCacheManager, group_specs_from_plan
from sim.memory import plan_for_config
from sim.reference_replay import replay_result
from sim.reference_trace import random_trace
from sim.request import Request
from sim.sched.scheduler import Scheduler, SchedulerLimits
from sim.workload import WorkloadSpec, build_workload
from tests.conftest import add_summary_line, require

ROOT = Path(__file__).resolve().parents[1]
GEMMA = EngineConfig(model="gemma-3-27b", gpu="h200", max_model_len=32768)


def _load_harness():
    spec = importlib.util.spec_from_file_location(
        "servelab_vllm_reference_harness", ROOT / "tools" / "vllm_reference" / "harness.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()
SEED = 20261206
NUM_TRACES = 90


def hybrid_trace(rng: np.random.Generator, i: int) -> dict:
    """A random reference trace whose engine has a sliding-window group (or two) and a full one.
    The pool is scaled by the number of groups, so each request still fits alone."""
    trace = random_trace(rng, name=f"hybrid{SEED}-{i}")
    engine = trace["engine"]
    bs = engine["block_size"]
    window = int(rng.choice([5, bs + 1, 2 * bs, 2 * bs + 3, 3 * bs - 1]))
    windows = [[window, None], [window, window, None], [None, window]][i % 3]
    engine["kv_cache_groups"] = [{"sliding_window": w} for w in windows]
    engine["num_gpu_blocks"] = (engine["num_gpu_blocks"] - 1) * len(windows) + 1
    return trace


@pytest.mark.vllm_reference
def test_hybrid_groups_match_vllm_step_for_step(record_property, request):
    require(harness.reference_venv_ready(), "the vLLM reference venv (.venv-vllm)")
    rng = np.random.default_rng(SEED)
    traces = [hybrid_trace(rng, i) for i in range(NUM_TRACES)]
    doc = harness.run_vllm(traces)
    for trace, res in zip(traces, doc["results"]):
        assert res.get("error") is None, res.get("error")
        # Without prefix caching vLLM coordinates the same groups with no lookup.
        expected = "HybridKVCacheCoordinator" if trace["engine"]["enable_prefix_caching"] else \
            "KVCacheCoordinatorNoPrefixCache"
        assert res["effective_config"]["kv_cache_coordinator"] == expected
    ours = [replay_result(t) for t in traces]
    summary = harness.compare_all(traces, doc, ours)
    line = f"{summary.line()} [hybrid KV cache groups; vLLM {doc['vllm_version']}, seed {SEED}]"
    record_property("vllm_match_hybrid", line)
    add_summary_line(request.config, line)
    # The engine's default, fast-forward (sim.sched.lazy_hybrid), against vLLM too.
    fast = harness.compare_all(traces, doc, [replay_result(t, fast_forward=True) for t in traces])
    add_summary_line(request.config, f"{fast.line()} [hybrid KV cache groups, fast-forward; vLLM {doc['vllm_version']}]")
    assert fast.traces_identical == len(traces), fast.describe_mismatches()
    # The traces must exercise what matters: prefix hits, preemptions, blocks leaving windows.
    steps = [s for r in doc["results"] for s in r["steps"]]
    assert sum(1 for s in steps if any(s["cached_tokens"].values())) >= 20
    assert sum(1 for s in steps if s["preempted"]) >= 5
    assert summary.traces_identical == len(traces), summary.describe_mismatches()


def test_hybrid_fast_forward_replay_makes_the_reference_schedulers_decisions():
    """Without vLLM: HybridLazyScheduler, driven as the engine drives it, decides every step of
    the hybrid traces as the reference Scheduler does, free KV blocks after every step included,
    while skipping runs of steps."""
    rng = np.random.default_rng(SEED)
    skipped = 0
    for trace in [hybrid_trace(rng, i) for i in range(NUM_TRACES)]:
        ref, fast = replay_result(trace), replay_result(trace, fast_forward=True)
        comparison = harness.compare_trace(trace["name"], ref, fast)
        assert comparison.identical, harness.MatchSummary([comparison]).describe_mismatches()
        skipped += fast["num_steps"] - fast["decisions"]
    assert skipped > 0


# --- window freeing and capacity ---


def _gemma_scheduler(max_num_batched_tokens: int = 8192, config: EngineConfig = GEMMA):
    plan = plan_for_config(config)
    limits = SchedulerLimits(max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=256,
                             max_model_len=plan.max_model_len)
    kv = HybridKVCacheManager(plan.num_gpu_blocks, 16, group_specs_from_plan(plan), True, plan.max_model_len)
    return Scheduler(limits, kv), kv, plan


def _step(sched: Scheduler) -> None:
    out = sched.schedule()
    sched.update_from_output(out)


@pytest.mark.parametrize("config, expected_window, num_sliding_groups", [
    (GEMMA, 1024, 6),  # 5 sliding : 1 global, groups of 10 layers
    (EngineConfig(model="gpt-oss-20b", gpu="h100-80gb", max_model_len=32768), 128, 1),  # alternating
])
def test_long_request_holds_one_window_of_sliding_blocks(config, expected_window, num_sliding_groups):
    sched, kv, plan = _gemma_scheduler(config=config)
    window = plan.kv_cache_groups[0].sliding_window
    assert window == expected_window
    sliding = [t for t in kv.tables if t.sliding_window]
    full = [t for t in kv.tables if not t.sliding_window]
    assert len(sliding) == num_sliding_groups and len(full) == 1
    request = Request("long", list(range(10_000)), 200, block_size=16)
    sched.add_request(request)
    held_in_decode = []
    while sched.has_unfinished_requests():
        _step(sched)
        if request.is_finished:
            break
        held = [t.held_and_filled(request)[0] for t in sliding]
        assert len(set(held)) == 1  # the sliding groups move together
        # full attention keeps every block of the sequence
        assert full[0].held_and_filled(request)[0] == cdiv(request.num_computed_tokens, 16)
        if request.num_output_tokens >= 2:  # the last prefill chunk's blocks go at the first decode
            held_in_decode.append(held[0])
    bound = math.ceil(window / 16) + 1
    assert max(held_in_decode) == bound  # gemma3: 65 blocks of 16 tokens, not 10,000 / 16 = 625
    assert min(held_in_decode) >= bound - 1
    # Freed blocks went back to the pool: once the request is done every block is free.
    assert kv.num_free_blocks == plan.num_gpu_blocks - 1


def test_sliding_blocks_are_freed_during_prefill_chunks():
    sched, kv, _ = _gemma_scheduler(max_num_batched_tokens=2048)
    request = Request("chunked", list(range(10_000)), 4, block_size=16)
    sched.add_request(request)
    peaks = []
    while not request.is_finished:
        _step(sched)
        peaks.append(kv.tables[0].held_and_filled(request)[0])
    # At most the window before the chunk plus the chunk (vLLM's admission cap with one batch
    # in flight): cdiv(1023 + 2048, 16) + 1.
    assert max(peaks) <= cdiv(1023 + 2048, 16) + 1


def test_gemma3_runs_far_more_long_requests_at_once_than_full_attention_only():
    workload = build_workload(WorkloadSpec(num_prompts=64, random_input_len=16_000, random_output_len=64),
                              np.random.default_rng(0))
    full_only = run_engine(GEMMA.with_(disable_hybrid_kv_cache_manager=True), workload, usage="offline")
    hybrid = run_engine(GEMMA, workload, usage="offline")
    peak_full = int(full_only.steps["num_running"].max())
    peak_hybrid = int(hybrid.steps["num_running"].max())
    # Full-attention-only: every layer holds the whole 16k context; the hybrid groups hold it
    # in 10 of 62 layers (one group of seven) and one window in the others.
    assert peak_hybrid >= 3 * peak_full
    assert hybrid.elapsed_s < full_only.elapsed_s
    plan = hybrid.memory
    assert full_only.memory.full_attention_blocks == plan.full_attention_blocks


def test_engine_builds_groups_for_hybrid_models_only():
    env_engine = Engine(__import__("simpy").Environment(), GEMMA)
    assert isinstance(env_engine.kv, HybridKVCacheManager)
    assert env_engine.num_gpu_blocks == env_engine.memory.num_gpu_blocks
    off = Engine(__import__("simpy").Environment(), GEMMA.with_(disable_hybrid_kv_cache_manager=True))
    assert not isinstance(off.kv, HybridKVCacheManager)
    assert off.num_gpu_blocks == off.memory.full_attention_blocks
    dense = Engine(__import__("simpy").Environment(), EngineConfig(model="meta-llama/Llama-2-7b-hf", gpu="a100-80gb"))
    assert not isinstance(dense.kv, HybridKVCacheManager)
    with pytest.raises(ConfigError, match="copy-on-write"):
        Engine(__import__("simpy").Environment(), GEMMA.with_(parallel_sampling="copy-on-write"))


# --- prefix caching: vLLM's rule for sliding-window groups ---


def _run_to_end(kv: HybridKVCacheManager, request: Request) -> None:
    hits, num_hits = kv.get_computed_blocks(request)
    assert kv.allocate_slots(request, request.num_tokens - num_hits, num_hits, hits, True) is not None
    request.num_computed_tokens = request.num_tokens
    request.append_output_tokens(1)
    kv.free(request)


def test_prefix_hit_needs_only_the_last_window_of_sliding_blocks():
    bs, window = 4, 9  # a hit needs cdiv(9 - 1, 4) = 2 sliding blocks before its end
    kv = HybridKVCacheManager(200, bs, [GroupSpec(window), GroupSpec(None)])
    prompt = list(range(100, 141))  # 41 tokens: a lookup covers 40 = 10 blocks
    _run_to_end(kv, Request("a", prompt, 1, block_size=bs))

    b = Request("b", prompt, 1, block_size=bs)
    (sliding, full), n = kv.get_computed_blocks(b)
    assert n == 40
    assert len(full) == 10 and not any(x.is_null for x in full)
    assert [x.is_null for x in sliding] == [True] * 8 + [False, False]

    # Drop sliding block 8 from the cache: the longest prefix whose last two sliding blocks are
    # cached now ends at block 8 (blocks 6, 7), and the full-attention hit is cut to match.
    pool = kv.pool
    b.extend_block_hashes()
    pool._evict(pool.get_cached_block((b.block_hashes[8], 0)))
    (sliding, full), n = kv.get_computed_blocks(b)
    assert n == 32 and len(full) == 8 and len(sliding) == 8
    assert [x.is_null for x in sliding] == [True] * 6 + [False, False]

    # Drop full-attention block 3: full attention hits 3 blocks; within them the sliding group
    # has its last two (1, 2) cached.
    pool._evict(pool.get_cached_block((b.block_hashes[3], 1)))
    (sliding, full), n = kv.get_computed_blocks(b)
    assert n == 12 and len(full) == 3
    assert [x.is_null for x in sliding] == [True, False, False]

    # Claiming the hit touches only the real sliding blocks; the null ones stay out of the pool.
    free_before = kv.num_free_blocks
    assert kv.allocate_slots(b, b.num_tokens - n, n, (sliding, full), True) is not None
    table = kv.get_group_blocks("b")[0]
    assert table[0].is_null and not table[1].is_null
    kv.free(b)
    assert kv.num_free_blocks == free_before


def test_no_prefix_hit_when_caching_is_off():
    kv = HybridKVCacheManager(100, 4, [GroupSpec(9), GroupSpec(None)], enable_caching=False)
    prompt = list(range(30))
    _run_to_end(kv, Request("a", prompt, 1, block_size=4))
    hits, n = kv.get_computed_blocks(Request("b", prompt, 1, block_size=4))
    assert n == 0 and hits == ([], [])


# --- the allocator never leaks or double-frees (hypothesis) ---


def _check_invariants(kv: HybridKVCacheManager, live: dict[str, Request], called_at: dict[str, int]) -> None:
    pool = kv.pool
    refs: dict[int, int] = {}
    for t in kv.tables:
        assert set(t.req_to_blocks) <= set(live)
        for rid, table in t.req_to_blocks.items():
            for block in table:
                if not block.is_null:
                    refs[block.block_id] = refs.get(block.block_id, 0) + 1
            # nothing wholly out of the window is still held
            if t.sliding_window and rid in called_at:
                # nothing wholly out of the window as of the request's last allocation
                skipped = t.num_skipped_tokens(called_at[rid]) // t.block_size
                assert all(b.is_null for b in table[:skipped])
    for block in pool.blocks[1:]:
        assert block.ref_cnt == refs.get(block.block_id, 0), block
        assert (block.block_id in pool.free_queue) == (block.ref_cnt == 0), block
    assert pool.null_block.block_id not in pool.free_queue
    assert pool.num_free_blocks + len(refs) == pool.num_gpu_blocks - 1
    for key, block in pool.cached_blocks.items():
        assert block.block_hash == key


op = st.tuples(st.sampled_from(["new", "step", "free"]), st.integers(0, 7), st.integers(1, 40))


@settings(max_examples=150, deadline=None)
@given(
    window=st.integers(2, 20),
    layout=st.sampled_from([(True, False), (True, True, False), (False, True)]),
    num_blocks=st.integers(8, 60),
    caching=st.booleans(),
    ops=st.lists(op, min_size=1, max_size=60),
)
def test_grouped_allocator_conserves_blocks(window, layout, num_blocks, caching, ops):
    bs = 4
    kv = HybridKVCacheManager(num_blocks, bs, [GroupSpec(window if s else None, 50 if s else None) for s in layout],
                              enable_caching=caching, max_model_len=400)
    live: dict[str, Request] = {}
    waiting: dict[str, Request] = {}
    called_at: dict[str, int] = {}  # computed tokens at each request's last allocate_slots
    counter = 0
    for kind, pick, size in ops:
        if kind == "new":
            # Prompts share prefixes (a few system prompts), so hits happen.
            prompt = [pick % 3] * (pick % 3 * 8) + list(range(1000 * counter, 1000 * counter + size))
            request = Request(f"r{counter}", prompt, 30, block_size=bs)
            counter += 1
            hits, n = kv.get_computed_blocks(request)
            called_at[request.request_id] = n
            if kv.allocate_slots(request, min(request.num_tokens - n, size), n, hits, True) is None:
                waiting[request.request_id] = request
            else:
                request.num_computed_tokens = n + min(request.num_tokens - n, size)
                live[request.request_id] = request
        elif kind == "step" and live:
            request = list(live.values())[pick % len(live)]
            if request.num_computed_tokens >= request.num_tokens:
                request.append_output_tokens(1)
            n = min(request.num_tokens - request.num_computed_tokens, size)
            if request.num_tokens >= 400:
                continue
            called_at[request.request_id] = request.num_computed_tokens
            if kv.allocate_slots(request, n) is not None:
                request.num_computed_tokens += n
        elif kind == "free" and live:
            request = list(live.values())[pick % len(live)]
            kv.free(request)
            del live[request.request_id]
            called_at.pop(request.request_id, None)
        _check_invariants(kv, live, called_at)
    for request in list(live.values()):
        kv.free(request)
    _check_invariants(kv, {}, {})
    assert kv.num_free_blocks == num_blocks - 1
