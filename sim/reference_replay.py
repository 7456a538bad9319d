"""Replay a scheduling trace through ServeLab's scheduler, recording vLLM-comparable decisions.

The ServeLab half of the decision-for-decision check: tools/vllm_reference/driver.py runs the
same trace through vLLM 0.33's own ``Scheduler`` and writes step records of the same shape
(documented in tools/vllm_reference/README.md); tests/test_vllm_reference.py compares them.

It follows the driver's engine loop exactly:
- a step index counts up from 0; the requests whose ``arrival_step`` has come are added (in
  trace order) before the step's ``schedule()``;
- a step with no unfinished request is idle: nothing is scheduled or recorded (vLLM's
  ``EngineCore.step`` returns at once when the scheduler has no requests);
- ``n > 1`` fans out into ``n`` requests named ``"{k}_{request_id}"``, k = 0..n-1, as vLLM's
  ``ParentRequest.get_child_info`` names them (the engine's own ``add_request`` names them
  the same way);
- a prompt of ``max_model_len`` tokens or more is rejected, as vLLM's input processor does;
- after ``schedule()``, every scheduled request whose sequence is fully computed samples one
  token, and ``update_from_output`` finishes the requests at ``max_tokens`` or
  ``max_model_len``.

Pure: no I/O; the trace is a dict.
"""

from __future__ import annotations

import zlib
from typing import Any

from sim.kv.hybrid import GroupSpec, HybridKVCacheManager
from sim.kv.kv_manager import KVCacheManager
from sim.request import Request, synthetic_token
from sim.sched.lazy import LazyDecodeScheduler
from sim.sched.lazy_hybrid import HybridLazyScheduler
from sim.sched.scheduler import Scheduler, SchedulerLimits

DEFAULT_MAX_STEPS = 20_000
VOCAB_SIZE = 32000


def sampled_token_id(request_id: str, position_in_output: int) -> int:
    """The fake model's token: ServeLab's own synthetic token (the driver uses the same formula)."""
    return synthetic_token(zlib.crc32(request_id.encode()), position_in_output, VOCAB_SIZE)


def expand_requests(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """The trace's requests as the engine core sees them: n > 1 fanned out, in add order."""
    out = []
    for req in trace["requests"]:
        n = int(req.get("n", 1))
        rid = req["request_id"]
        ids = [rid] if n == 1 else [f"{k}_{rid}" for k in range(n)]
        for child in ids:
            out.append(
                {
                    "request_id": child,
                    "prompt_token_ids": list(req["prompt_token_ids"]),
                    "max_tokens": int(req["max_tokens"]),
                    "arrival_step": int(req["arrival_step"]),
                    "arrival_time": float(req.get("arrival_time", req["arrival_step"])),
                    "priority": int(req.get("priority", 0)),
                    "abort_step": req.get("abort_step"),
                }
            )
    out.sort(key=lambda r: r["arrival_step"])  # stable: same-step arrivals keep trace order
    return out


def build(engine: dict[str, Any], fast_forward: bool = False) -> Scheduler:
    """ServeLab's scheduler and KV manager with the trace's engine settings: the reference
    :class:`Scheduler`, or with ``fast_forward`` the :class:`LazyDecodeScheduler` (with KV cache
    groups :class:`HybridLazyScheduler`) that ``run_engine`` uses by default."""
    limits = SchedulerLimits(
        max_num_batched_tokens=int(engine["max_num_batched_tokens"]),
        max_num_seqs=int(engine["max_num_seqs"]),
        max_model_len=int(engine["max_model_len"]),
        long_prefill_token_threshold=int(engine["long_prefill_token_threshold"]),
        policy=engine.get("policy", "fcfs"),
        enable_chunked_prefill=bool(engine["enable_chunked_prefill"]),
    )
    if engine.get("kv_cache_groups"):
        kv = _hybrid_kv(engine, limits)
        return HybridLazyScheduler(limits, kv) if fast_forward else Scheduler(limits, kv)
    kv = KVCacheManager(
        int(engine["num_gpu_blocks"]),
        int(engine["block_size"]),
        bool(engine["enable_prefix_caching"]),
        limits.max_model_len,
    )
    return LazyDecodeScheduler(limits, kv) if fast_forward else Scheduler(limits, kv)


def _hybrid_kv(engine: dict[str, Any], limits: SchedulerLimits) -> HybridKVCacheManager:
    """The trace's KV cache groups. A sliding group's admission cap is vLLM's
    ``SlidingWindowSpec.max_admission_blocks_per_request`` with the driver's synchronous
    scheduling (one batch in flight: ``max_num_batched_tokens`` tokens)."""
    bs = int(engine["block_size"])
    groups = []
    for g in engine["kv_cache_groups"]:
        w = g.get("sliding_window")
        cap = -(-min(w - 1 + limits.max_num_batched_tokens, limits.max_model_len) // bs) + 1 if w else None
        groups.append(GroupSpec(w or None, cap))
    return HybridKVCacheManager(int(engine["num_gpu_blocks"]), bs, groups,
                                bool(engine["enable_prefix_caching"]), limits.max_model_len)


def replay(trace: dict[str, Any], *, fast_forward: bool = False) -> list[dict[str, Any]]:
    """The step records of one trace (see :func:`replay_result` for rejections and stalls)."""
    return replay_result(trace, fast_forward=fast_forward)["steps"]


def replay_result(trace: dict[str, Any], *, fast_forward: bool = False) -> dict[str, Any]:
    """Replay one trace. With ``fast_forward``, drive :class:`LazyDecodeScheduler` (with KV cache
    groups :class:`HybridLazyScheduler`) the way the engine does (runs of identical decode steps done at once, bounded by the next arrival or
    abort) and write one record per step all the same; ``decisions`` counts the calls to
    ``schedule``, fewer than the steps when runs were skipped over."""
    engine = trace["engine"]
    sched = build(engine, fast_forward)
    block_size = int(engine["block_size"])
    max_model_len = int(engine["max_model_len"])
    pending = expand_requests(trace)
    requests: dict[str, Request] = {}
    rejected: list[str] = []
    steps: list[dict[str, Any]] = []
    max_steps = int(trace.get("max_steps", DEFAULT_MAX_STEPS))
    stalled = False
    step = decisions = 0
    next_arrival = 0
    while next_arrival < len(pending) or sched.has_unfinished_requests():
        if step >= max_steps:
            stalled = True
            break
        while next_arrival < len(pending) and pending[next_arrival]["arrival_step"] <= step:
            spec = pending[next_arrival]
            next_arrival += 1
            if len(spec["prompt_token_ids"]) >= max_model_len:
                rejected.append(spec["request_id"])
                continue
            req = Request(
                spec["request_id"],
                spec["prompt_token_ids"],
                spec["max_tokens"],
                arrival_s=spec["arrival_time"],
                priority=spec["priority"],
                block_size=block_size,
                vocab_size=VOCAB_SIZE,
            )
            requests[req.request_id] = req
            sched.add_request(req)
        aborted = []
        for spec in pending[:next_arrival]:
            if spec["abort_step"] == step and spec["request_id"] in requests:
                if sched.abort_request(spec["request_id"]) is not None:
                    aborted.append(spec["request_id"])
        if not sched.has_unfinished_requests():
            step += 1
            continue
        if fast_forward:
            events = [p["arrival_step"] for p in pending[next_arrival:]]
            events += [
                p["abort_step"]
                for p in pending[:next_arrival]
                if p["abort_step"] is not None and p["abort_step"] > step
                and p["request_id"] in sched.requests
            ]
            limit = min(events) - step if events else 1 << 30
            records = _fast_steps(sched, step, min(limit, max_steps - step))
        else:
            records = [_one_step(sched, step)]
        records[0]["aborted"] = aborted
        steps.extend(records)
        decisions += 1
        step += len(records)
    return {
        "name": trace.get("name"),
        "steps": steps,
        "rejected": rejected,
        "stalled": stalled,
        "num_steps": step,
        "decisions": decisions,
    }


def _one_step(sched: Scheduler, step: int) -> dict[str, Any]:
    kv = sched.kv
    stats = kv.stats
    q0, h0, pq0, ph0 = stats.queries, stats.hits, stats.preempted_queries, stats.preempted_hits
    out = sched.schedule()
    free_after_schedule = kv.num_free_blocks
    scheduled = [[rid, n] for rid, n in out.num_scheduled_tokens.items()]
    sampled = {
        r.request_id: [sampled_token_id(r.request_id, r.num_output_tokens)]
        for r in out.scheduled
        if r.num_computed_tokens >= r.num_tokens
    }
    finished = sched.update_from_output(out, sampled)
    finished_ids = {r.request_id for r in finished}
    return {
        "step": step,
        "scheduled": scheduled,
        "new": list(out.new_request_ids),
        "resumed": list(out.resumed_request_ids),
        "preempted": list(out.preempted_request_ids),
        "cached_tokens": dict(out.num_cached_tokens),
        # In scheduling order, as the driver reports them.
        "finished": [rid for rid in out.num_scheduled_tokens if rid in finished_ids],
        "finish_reasons": {r.request_id: r.status.value for r in finished},
        "num_running": sched.num_running,
        "num_waiting": sched.num_waiting,
        "kv_free_blocks_after_schedule": free_after_schedule,
        "kv_free_blocks": kv.num_free_blocks,
        "kv_usage": round(kv.usage, 9),
        "prefix_queries": stats.queries - q0,
        "prefix_hits": stats.hits - h0,
        "preempted_prefix_queries": stats.preempted_queries - pq0,
        "preempted_prefix_hits": stats.preempted_hits - ph0,
    }


def _fast_steps(sched: LazyDecodeScheduler, step: int, limit: int) -> list[dict[str, Any]]:
    """One scheduling decision of the lazy scheduler and the run of steps it stands for,
    exactly as ``Engine._run`` / ``Engine._finish_step`` drive it."""
    kv = sched.kv
    stats = kv.stats
    q0, h0, pq0, ph0 = stats.queries, stats.hits, stats.preempted_queries, stats.preempted_hits
    out = sched.schedule()
    free_after_schedule = kv.num_free_blocks
    # Parked requests compute one token each without being listed: put them back in
    # running order, as vLLM lists every scheduled request.
    counts = out.num_scheduled_tokens
    scheduled = []
    for request in sched.running:
        n = counts.get(request.request_id)
        if n is None and request.request_id in sched.steady:
            n = 1
        if n:
            scheduled.append([request.request_id, n])
    first = {
        "step": step,
        "scheduled": scheduled,
        "new": list(out.new_request_ids),
        "resumed": list(out.resumed_request_ids),
        "preempted": list(out.preempted_request_ids),
        "cached_tokens": dict(out.num_cached_tokens),
        "prefix_queries": stats.queries - q0,
        "prefix_hits": stats.hits - h0,
        "preempted_prefix_queries": stats.preempted_queries - pq0,
        "preempted_prefix_hits": stats.preempted_hits - ph0,
    }
    k = 1
    if out.total_num_scheduled_tokens:
        k = sched.steady_run_length(out, limit)
    # Free blocks after each step's scheduling: parked requests take theirs at their block
    # boundaries, and (with one table a request) nothing is freed inside a run.
    # (The scheduler numbers only the steps that ran; the trace also counts idle ones.)
    free_after = [free_after_schedule]
    if isinstance(sched, HybridLazyScheduler):
        for _ in range(1, k):  # windows give blocks back inside a run: do its steps one by one
            sched.skip(1)
            free_after.append(kv.num_free_blocks)
    else:
        for j in range(1, k):
            free_after.append(free_after[-1] - sched.parked_block_allocations(sched.step - 1 + j))
        if k > 1:
            sched.skip(k - 1)
    finished = sched.update_from_output(out, None)
    finished_ids = {r.request_id for r in finished}
    records = []
    for j in range(k):
        last = j == k - 1
        rec = dict(first) if j == 0 else {
            "step": step + j, "aborted": [], "scheduled": scheduled, "new": [], "resumed": [], "preempted": [],
            "cached_tokens": {}, "prefix_queries": 0, "prefix_hits": 0,
            "preempted_prefix_queries": 0, "preempted_prefix_hits": 0,
        }
        rec["finished"] = [rid for rid, _ in scheduled if rid in finished_ids] if last else []
        rec["finish_reasons"] = {r.request_id: r.status.value for r in finished} if last else {}
        rec["num_running"] = sched.num_running if last else len(scheduled)
        rec["num_waiting"] = sched.num_waiting
        rec["kv_free_blocks_after_schedule"] = free_after[j]
        rec["kv_free_blocks"] = kv.num_free_blocks if last else free_after[j]
        rec["kv_usage"] = round(1.0 - rec["kv_free_blocks"] / (kv.pool.num_gpu_blocks - 1), 9)
        records.append(rec)
    return records
