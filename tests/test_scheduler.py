"""vLLM V1 scheduler: invariants under random traffic (hypothesis) and documented decisions."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.kv.kv_manager import KVCacheManager
from sim.request import Request, RequestStatus
from sim.sched.scheduler import Scheduler, SchedulerLimits

BS = 16


@st.composite
def traces(draw):
    limits = SchedulerLimits(
        max_num_batched_tokens=draw(st.integers(8, 256)),
        max_num_seqs=draw(st.integers(1, 12)),
        max_model_len=draw(st.sampled_from([128, 256])),
        long_prefill_token_threshold=draw(st.sampled_from([0, 0, 32])),
        policy=draw(st.sampled_from(["fcfs", "fcfs", "priority"])),
    )
    num_blocks = draw(st.integers(limits.max_model_len // BS + 2, 60))
    caching = draw(st.booleans())
    shared = draw(st.lists(st.integers(0, 50), min_size=0, max_size=40))
    reqs = []
    for i in range(draw(st.integers(1, 14))):
        own = draw(st.lists(st.integers(0, 50), min_size=1, max_size=90))
        prompt = (shared + own)[: limits.max_model_len - 1] if draw(st.booleans()) else own[: limits.max_model_len - 1]
        max_tokens = draw(st.integers(1, 60))
        arrival_step = draw(st.integers(0, 30))
        reqs.append((arrival_step, Request(f"r{i}", prompt, max_tokens, arrival_s=float(arrival_step),
                                           priority=draw(st.integers(0, 2)))))
    return limits, num_blocks, caching, reqs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces())
def test_invariants_hold_every_step(trace):
    limits, num_blocks, caching, reqs = trace
    kv = KVCacheManager(num_blocks, BS, caching, limits.max_model_len)
    sched = Scheduler(limits, kv)
    pending = sorted(reqs, key=lambda x: x[0])
    step = 0
    while pending or sched.has_unfinished_requests():
        while pending and pending[0][0] <= step:
            sched.add_request(pending.pop(0)[1])
        out = sched.schedule()
        # The token budget and max_num_seqs are never exceeded.
        assert out.total_num_scheduled_tokens == sum(out.num_scheduled_tokens.values())
        assert out.total_num_scheduled_tokens <= limits.max_num_batched_tokens
        assert len(sched.running) <= limits.max_num_seqs
        assert all(n > 0 for n in out.num_scheduled_tokens.values())
        if out.preempted_request_ids:
            assert not out.new_request_ids and not out.resumed_request_ids
        # Every running request holds enough blocks for what it has computed.
        for r in sched.running:
            assert len(kv.get_blocks(r.request_id)) * BS >= r.num_computed_tokens
            assert r.num_computed_tokens <= r.num_tokens
        # Blocks are conserved: free + distinct blocks held == usable blocks.
        held = {id(b) for r in sched.running for b in kv.get_blocks(r.request_id)}
        assert kv.num_free_blocks + len(held) == num_blocks - 1
        assert all(b.ref_cnt >= 0 for b in kv.pool.blocks)
        sched.update_from_output(out)
        step += 1
        assert step < 5000, "the scheduler stopped making progress"
    # Every request ends with exactly its output length; all blocks are free again.
    for _, r in reqs:
        assert r.status == RequestStatus.FINISHED_LENGTH
        assert r.num_output_tokens == min(r.max_tokens, limits.max_model_len - r.num_prompt_tokens)
    assert kv.num_free_blocks == num_blocks - 1
    assert all(b.ref_cnt == 0 for b in kv.pool.blocks)


def _decode_all(sched, steps):
    outs = []
    for _ in range(steps):
        out = sched.schedule()
        outs.append(out)
        sched.update_from_output(out)
    return outs


def test_preemption_victim_is_most_recently_admitted_and_goes_to_front():
    kv = KVCacheManager(8, BS, False)  # 7 usable blocks
    sched = Scheduler(SchedulerLimits(512, 8, 512), kv)
    for name in ("a", "b", "c"):
        sched.add_request(Request(name, list(range(32)), 100))  # 2 blocks each at admission
    out = sched.schedule()
    assert out.new_request_ids == ["a", "b", "c"]
    sched.update_from_output(out)
    preempted = []
    for _ in range(100):
        out = sched.schedule()
        preempted = out.preempted_request_ids
        sched.update_from_output(out)
        if preempted:
            break
    assert preempted == ["c"]
    assert sched.waiting.peek().request_id == "c"
    assert sched.requests["c"].num_computed_tokens == 0
    assert sched.requests["c"].status == RequestStatus.PREEMPTED


def test_head_of_line_blocking_stops_admission():
    """FCFS stops at the first request that does not fit, even if a later one would."""
    kv = KVCacheManager(6, BS, False)  # 5 usable blocks
    sched = Scheduler(SchedulerLimits(2048, 8, 2048), kv)
    sched.add_request(Request("small1", list(range(30)), 5))  # 2 blocks
    sched.add_request(Request("big", list(range(70)), 5))  # 5 blocks: does not fit next to small1
    sched.add_request(Request("small2", list(range(10)), 5))  # 1 block: would fit
    out = sched.schedule()
    assert out.new_request_ids == ["small1"]
    assert sched.head_blocked


def test_chunked_prefill_shares_budget_with_decodes():
    kv = KVCacheManager(100, BS, False)
    sched = Scheduler(SchedulerLimits(64, 8, 1024), kv)
    sched.add_request(Request("a", list(range(10)), 50))
    _decode_all(sched, 1)
    sched.add_request(Request("long", list(range(200)), 5))
    out = sched.schedule()
    assert out.num_scheduled_tokens == {"a": 1, "long": 63}
    sched.update_from_output(out)
    out = sched.schedule()
    assert out.num_scheduled_tokens == {"a": 1, "long": 63}  # the partial prefill continues first


def test_whole_prompt_must_fit_to_be_admitted():
    kv = KVCacheManager(5, BS, False)  # 4 usable blocks = 64 tokens
    sched = Scheduler(SchedulerLimits(16, 8, 1024), kv)
    sched.add_request(Request("too-big-now", list(range(65)), 1))
    out = sched.schedule()
    assert out.total_num_scheduled_tokens == 0 and sched.head_blocked


def test_long_prefill_threshold_caps_chunks():
    kv = KVCacheManager(100, BS, False)
    sched = Scheduler(SchedulerLimits(512, 8, 1024, long_prefill_token_threshold=32), kv)
    sched.add_request(Request("a", list(range(100)), 3))
    sched.add_request(Request("b", list(range(100)), 3))
    out = sched.schedule()
    assert out.num_scheduled_tokens == {"a": 32, "b": 32}


def test_abort_frees_blocks_at_once():
    kv = KVCacheManager(20, BS, True)
    sched = Scheduler(SchedulerLimits(512, 8, 1024), kv)
    sched.add_request(Request("a", list(range(100)), 30))
    _decode_all(sched, 3)
    assert kv.num_free_blocks < 19
    sched.abort_request("a")
    assert kv.num_free_blocks == 19 and not sched.has_unfinished_requests()
