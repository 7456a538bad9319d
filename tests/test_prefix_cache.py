"""Prefix caching as vLLM documents it."""

import pytest

from sim.kv.kv_manager import KVCacheManager
from sim.request import Request
from sim.sched.scheduler import Scheduler, SchedulerLimits


def run_to_end(sched):
    while sched.has_unfinished_requests():
        out = sched.schedule()
        sched.update_from_output(out)


@pytest.mark.parametrize(
    "prompt_len, hit",
    [
        pytest.param(48, 32, id="48-token prompt hits 32 (last token recomputed)"),
        pytest.param(300, 288, id="300-token prompt hits 288"),
        pytest.param(15, 0, id="shorter than a block: nothing to hit"),
        pytest.param(17, 16, id="one full block"),
        pytest.param(16, 0, id="exactly one block: last token recomputed, so no hit"),
    ],
)
def test_repeated_prompt_hits(prompt_len, hit):
    kv = KVCacheManager(100, 16, True)
    sched = Scheduler(SchedulerLimits(2048, 16, 4096), kv)
    sched.add_request(Request("a", list(range(prompt_len)), 2))
    run_to_end(sched)
    sched.add_request(Request("b", list(range(prompt_len)), 2))
    out = sched.schedule()
    assert out.num_cached_tokens["b"] == hit
    assert out.num_scheduled_tokens["b"] == prompt_len - hit
    assert kv.stats.queries == 2 * prompt_len and kv.stats.hits == hit


def test_hit_on_kv_still_being_computed_in_the_same_step():
    """Blocks are cached at schedule time: a request admitted later in the same step hits them."""
    kv = KVCacheManager(100, 16, True)
    sched = Scheduler(SchedulerLimits(2048, 16, 4096), kv)
    sched.add_request(Request("a", list(range(64)), 2))
    sched.add_request(Request("b", list(range(64)), 2))
    out = sched.schedule()
    assert out.num_cached_tokens == {"a": 0, "b": 48}


def test_shared_system_prompt_blocks_counted_once():
    kv = KVCacheManager(100, 16, True)
    sched = Scheduler(SchedulerLimits(4096, 16, 4096), kv)
    system = list(range(1000, 1064))  # 4 full blocks
    for i in range(3):
        sched.add_request(Request(f"r{i}", system + [i] * 20, 4))
    sched.schedule()
    held = {rid: [b.block_id for b in kv.get_blocks(rid)] for rid in ("r0", "r1", "r2")}
    assert held["r0"][:4] == held["r1"][:4] == held["r2"][:4]
    assert len({b for blocks in held.values() for b in blocks}) == 4 + 3 * 2


def test_preempted_request_hits_its_own_blocks_and_is_counted_apart():
    kv = KVCacheManager(6, 16, True)  # 5 usable blocks
    sched = Scheduler(SchedulerLimits(2048, 16, 4096), kv)
    sched.add_request(Request("a", list(range(40)), 30))  # needs 3 blocks at first, grows to 5
    sched.add_request(Request("b", list(range(100, 132)), 30))  # 2 blocks at first
    preempted = []
    while sched.has_unfinished_requests():
        out = sched.schedule()
        preempted += out.preempted_request_ids
        sched.update_from_output(out)
    assert preempted, "the cache is too small for both: one must be preempted"
    assert kv.stats.preempted_queries > 0
    assert kv.stats.requests == 2  # resumed requests are not counted as new lookups
