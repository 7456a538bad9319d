"""Drive vLLM's scheduler and KV manager (``sim.sched``, ``sim.kv``) step by step, and record
what the PagedAttention page shows at each step: block tables, the physical blocks with their
owners and reference counts, the free queue, and what contiguous reservations would hold.

Nothing here reimplements the cache: each snapshot is read off the real ``KVCacheManager`` and
``BlockPool`` after the real ``Scheduler.schedule()`` and ``update_from_output()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.config import cdiv, next_power_of_two
from sim.kv.hybrid import GroupSpec, HybridKVCacheManager
from sim.kv.kv_manager import KVCacheManager
from sim.request import Request
from sim.sched.scheduler import Scheduler, SchedulerLimits


@dataclass(frozen=True)
class DemoRequest:
    name: str
    arrival_step: int
    own_prompt_tokens: int  # tokens after the shared system prompt (if any)
    max_tokens: int
    shares_system_prompt: bool = False
    n: int = 1  # parallel samples: n requests with the same prompt, as vLLM V1 fans them out


@dataclass(frozen=True)
class PagedScenario:
    num_gpu_blocks: int = 16  # including vLLM's null block 0; 16 makes D get preempted once
    block_size: int = 4  # small so every block shows; vLLM's default is 16
    system_prompt_tokens: int = 8
    max_num_batched_tokens: int = 32
    max_num_seqs: int = 8
    max_model_len: int = 64
    enable_caching: bool = True
    # > 0: a sliding-window model (as Gemma 3, gpt-oss): a sliding-window KV cache group of this
    # window and a full-attention group, each with its own block tables, over one pool (sim.kv.hybrid)
    sliding_window: int = 0
    requests: tuple[DemoRequest, ...] = (
        DemoRequest("A", 0, 5, 6, shares_system_prompt=True),
        DemoRequest("B", 0, 3, 12, shares_system_prompt=True),
        DemoRequest("C", 1, 9, 8, n=2),
        DemoRequest("D", 2, 10, 14),
    )


@dataclass
class RequestView:
    request_id: str
    status: str
    num_prompt_tokens: int
    num_tokens: int
    num_computed_tokens: int
    max_tokens: int
    block_table: list[int]  # logical block i -> physical block id
    num_preemptions: int
    num_cached_tokens: int
    # A sliding-window model: one block table per group (sliding first), None for the null block.
    group_tables: list[list[int | None]] = field(default_factory=list)


@dataclass
class StepView:
    step: int
    events: list[str]
    scheduled: dict[str, int]
    requests: list[RequestView]
    # physical block id -> (ref_cnt, cached, owners)
    blocks: list[dict]
    free_queue: list[int]  # front (next to allocate) first
    num_free_blocks: int
    usage: float
    prefix_hits_tokens: int
    prefix_queries_tokens: int
    contiguous: dict = field(default_factory=dict)
    # Set on the last step when the waiting queue's head can never be admitted (the run stops there).
    never_admitted: str = ""


def _requests(s: PagedScenario) -> list[tuple[int, Request]]:
    """(arrival step, Request) in arrival order; prompt tokens are distinct per request."""
    system = list(range(1000, 1000 + s.system_prompt_tokens))
    out = []
    for k, d in enumerate(s.requests):
        own = [2000 + 100 * k + i for i in range(d.own_prompt_tokens)]
        prompt = (system if d.shares_system_prompt else []) + own
        names = [d.name] if d.n == 1 else [f"{d.name}#{j}" for j in range(d.n)]
        for name in names:
            out.append((d.arrival_step, Request(name, list(prompt), d.max_tokens, block_size=s.block_size)))
    return out


def make_kv(s: PagedScenario) -> KVCacheManager:
    """One block table a request, or (``sliding_window``) a sliding-window and a full-attention
    group. The sliding group's admission cap is vLLM's with one batch in flight."""
    if not s.sliding_window:
        return KVCacheManager(s.num_gpu_blocks, s.block_size, s.enable_caching, max_model_len=s.max_model_len)
    cap = cdiv(min(s.sliding_window - 1 + s.max_num_batched_tokens, s.max_model_len), s.block_size) + 1
    groups = [GroupSpec(s.sliding_window, cap), GroupSpec(None)]
    return HybridKVCacheManager(s.num_gpu_blocks, s.block_size, groups, s.enable_caching, s.max_model_len)


def run_scenario(s: PagedScenario, max_steps: int = 200) -> list[StepView]:
    kv = make_kv(s)
    sched = Scheduler(SchedulerLimits(s.max_num_batched_tokens, s.max_num_seqs, s.max_model_len), kv)
    pending = _requests(s)
    final_len = {r.request_id: r.num_prompt_tokens + r.max_tokens for _, r in pending}
    alive: dict[str, Request] = {}
    left_window: dict[str, int] = {}  # sliding-window model: blocks each request gave back so far
    views: list[StepView] = []
    step = 0
    while step < max_steps and (pending or sched.has_unfinished_requests()):
        events: list[str] = []
        while pending and pending[0][0] <= step:
            _, r = pending.pop(0)
            sched.add_request(r)
            alive[r.request_id] = r
            events.append(f"{r.request_id} arrives: {r.num_prompt_tokens} prompt tokens, will write {r.max_tokens}")
        out = sched.schedule()
        for rid in out.new_request_ids + out.resumed_request_ids:
            hit = out.num_cached_tokens.get(rid, 0)
            resumed = rid in out.resumed_request_ids
            verb = "resumes and recomputes its tokens" if resumed else "is admitted"
            extra = ""
            if hit:
                whose = " (its own freed blocks, not evicted yet)" if resumed else ""
                extra = f"; {hit} tokens ({hit // s.block_size} blocks) come from the prefix cache{whose}"
            events.append(f"{rid} {verb}{extra}")
        for rid in out.preempted_request_ids:
            events.append(
                f"{rid} is preempted: no free block for the running requests, so the most recently "
                "admitted one gives all its blocks back and waits at the front of the queue"
            )
        finished = sched.update_from_output(out, now_s=float(step))
        if isinstance(kv, HybridKVCacheManager):
            events += _window_events(kv, alive, left_window, s.sliding_window)
        for r in finished:
            events.append(f"{r.request_id} finishes after {r.num_output_tokens} tokens; its blocks are freed")
        views.append(_snapshot(step, s, kv, alive, out.num_scheduled_tokens, events, final_len))
        stuck = _never_admitted(s, sched, kv, out.num_scheduled_tokens)
        if stuck:
            views[-1].events.append(stuck)
            views[-1].never_admitted = stuck
            break
        for r in finished:
            alive.pop(r.request_id, None)
        step += 1
    return views


def _never_admitted(s: PagedScenario, sched: Scheduler, kv: KVCacheManager, scheduled: dict[str, int]) -> str:
    """Why the waiting queue's head can never be admitted, or "".

    A step that scheduled nothing, with nothing running, had every block free (or cached and
    evictable): if the head did not fit then it never will, and FCFS lets no request pass it. vLLM
    refuses at start-up a cache too small for one request of max_model_len; this tiny GPU is
    allowed, so the page says it here instead of stepping on with nothing to do.
    """
    if scheduled or sched.running or not len(sched.waiting) or not sched.head_blocked:
        return ""
    head = sched.waiting.peek()
    need, usable = kv.max_blocks_for(head.num_tokens), s.num_gpu_blocks - 1
    if need > usable:
        why = (f"its {head.num_tokens} tokens need {need} KV blocks, but only {usable} of the {s.num_gpu_blocks} "
               "are usable (block 0 is the null block); vLLM would refuse to start with a KV cache this small")
    else:
        why = f"its {head.num_tokens} tokens do not fit the {usable} usable KV blocks"
    return (f"{head.request_id} can never be admitted: {why}. It waits at the head of the queue forever, and "
            "every request behind it with it. Add KV blocks or shorten the system prompt.")


def _window_events(kv: HybridKVCacheManager, alive: dict[str, Request], left_window: dict[str, int],
                   window: int) -> list[str]:
    """Which requests' oldest sliding-window blocks left the window in this step."""
    events = []
    for rid in alive:
        table = kv.get_group_blocks(rid)[0]
        nulls = sum(1 for b in table if b.is_null)
        before = left_window.get(rid, 0)
        if nulls > before:
            gone = nulls - before
            events.append(f"{rid}'s oldest {gone} sliding-window block{'' if gone == 1 else 's'} fell out of the "
                          f"{window}-token window: back to the free queue (the full-attention group keeps "
                          f"{'it' if gone == 1 else 'them'})")
        left_window[rid] = nulls
    return events


def _snapshot(step, s, kv: KVCacheManager, alive, scheduled, events, final_len) -> StepView:
    pool = kv.pool
    owners: dict[int, list[str]] = {}
    requests = []
    group_of: dict[int, int] = {}
    for rid, r in alive.items():
        group_tables = []
        if isinstance(kv, HybridKVCacheManager):
            for g, blocks in enumerate(kv.get_group_blocks(rid)):
                group_tables.append([None if b.is_null else b.block_id for b in blocks])
                for b in blocks:
                    if not b.is_null:
                        group_of[b.block_id] = g
            table = [b for t in group_tables for b in t if b is not None]
        else:
            table = [b.block_id for b in kv.get_blocks(rid)]
        for b in table:
            owners.setdefault(b, []).append(rid)
        requests.append(
            RequestView(
                rid,
                r.status.value,
                r.num_prompt_tokens,
                r.num_tokens,
                r.num_computed_tokens,
                r.max_tokens,
                table,
                r.num_preemptions,
                r.num_cached_tokens,
                group_tables,
            )
        )
    free_order = list(pool.free_queue)
    position = {b: i for i, b in enumerate(free_order)}
    blocks = [
        {
            "block_id": b.block_id,
            "ref_cnt": b.ref_cnt,
            "cached": b.block_hash is not None,
            "null": b.is_null,
            "owners": owners.get(b.block_id, []),
            "group": group_of.get(b.block_id),  # sliding-window model: 0 sliding, 1 full
            "free_position": position.get(b.block_id),
        }
        for b in pool.blocks
    ]
    return StepView(
        step=step,
        events=events,
        scheduled=dict(scheduled),
        requests=requests,
        blocks=blocks,
        free_queue=free_order,
        num_free_blocks=pool.num_free_blocks,
        usage=kv.usage,
        prefix_hits_tokens=kv.prefix_cache_hits,
        prefix_queries_tokens=kv.prefix_cache_queries,
        contiguous=contiguous_view(s, requests, final_len),
    )


def contiguous_view(s: PagedScenario, requests: list[RequestView], final_len: dict[str, int]) -> dict:
    """The same live requests on contiguous per-request reservations (the vLLM paper's baselines).

    For each policy, tokens held now: ``used`` (written: the request's computed tokens, not the
    token just sampled, whose KV the next step writes), ``reserved`` (set aside for tokens the
    request will write later) and ``internal`` (set aside and never written: the reservation
    outgrows the true length). A shared system prompt is stored once per request, since a
    contiguous buffer cannot point into another request's memory.
    """
    live = [r for r in requests if r.block_table or r.status == "running"]
    # A slot holds one token's KV for every layer. With a sliding window the pool's blocks are
    # split between two KV cache groups, each block holding its group's half of the layers, so a
    # block is worth half a block of slots; the sliding group keeps only its window's blocks.
    groups = 2 if s.sliding_window else 1
    capacity = (s.num_gpu_blocks - 1) * s.block_size // groups
    paged_held = len({b for r in live for b in r.block_table}) * s.block_size / groups
    if groups == 1:
        paged_used = sum(r.num_computed_tokens for r in live)
    else:  # the full group holds every computed token, the sliding group those in its window's blocks
        paged_used = sum(r.num_computed_tokens + min(r.num_computed_tokens,
                                                     sum(b is not None for b in r.group_tables[0]) * s.block_size)
                         for r in live if r.group_tables) / groups
    out = {"capacity_tokens": capacity, "paged": {"held": paged_held, "used_by_requests": paged_used}}
    for policy in ("orca-max", "orca-pow2", "orca-oracle"):
        used = reserved = internal = 0
        for r in live:
            true_len = final_len[r.request_id]
            if policy == "orca-max":
                size = s.max_model_len
            elif policy == "orca-pow2":
                size = r.num_prompt_tokens + next_power_of_two(r.max_tokens)
            else:
                size = true_len
            size = min(max(size, true_len), s.max_model_len) if policy != "orca-max" else size
            used += r.num_computed_tokens
            reserved += max(true_len - r.num_computed_tokens, 0)
            internal += max(size - true_len, 0)
        out[policy] = {
            "used": used,
            "reserved": reserved,
            "internal": internal,
            "held": used + reserved + internal,
            "fits": used + reserved + internal <= capacity,
        }
    return out
