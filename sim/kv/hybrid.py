"""The KV cache manager of a hybrid model: several KV cache groups, one shared block pool.

vLLM 0.33 gives a model with sliding-window and full-attention layers (Gemma 3: five sliding to
one global; gpt-oss: alternating) several KV cache groups of equal size (``sim.memory.kv_cache_groups``)
and, per request, one block table per group (``HybridKVCacheCoordinator``, ``v1/core/kv_cache_coordinator.py``).
This class is that coordinator behind the interface of :class:`sim.kv.kv_manager.KVCacheManager`,
so the scheduler drives both alike. The tables themselves are :mod:`sim.kv.single_type`.

One allocation (``KVCacheManager.allocate_slots`` in vLLM), for a request with ``computed`` tokens:

1. admission gate (a request being admitted): the whole sequence must fit, each sliding group
   counting at most its admission cap (``SlidingWindowSpec.max_admission_blocks_per_request``);
2. every sliding group frees the blocks that fell out of its window (``remove_skipped_blocks``),
   before anything is counted, so they can be reused at once;
3. the blocks the step needs, summed over the groups, must be free; else ``None``;
4. prefix-cache hits are claimed (per group), new blocks taken, full blocks cached per group.

Prefix caching: a hit must be served by every group. Full attention finds the longest run of
cached blocks from the start; each sliding group then finds, within that length, the longest
prefix whose last window of blocks is cached; the shorter length wins and the full-attention hit
is cut to it (``HybridKVCacheCoordinator.find_longest_cache_hit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sim.config import cdiv
from sim.kv.block_pool import KVCacheBlock
from sim.kv.kv_manager import KVCacheManager
from sim.kv.single_type import FullAttentionTable, SlidingWindowTable
from sim.request import Request

GroupHits = tuple[list[KVCacheBlock], ...]


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """What the allocator needs to know of one KV cache group."""

    sliding_window: int | None = None  # None: full attention (or MLA)
    admission_cap_blocks: int | None = None  # sliding windows: blocks the admission gate counts at most


def group_specs_from_plan(plan) -> list[GroupSpec]:
    """The groups of a :class:`sim.memory.MemoryPlan` (its ``kv_cache_groups``)."""
    return [GroupSpec(g.sliding_window, g.blocks_per_request if g.sliding_window else None)
            for g in plan.kv_cache_groups]


class HybridKVCacheManager(KVCacheManager):
    """Requests' block tables in several KV cache groups. Counters, the pool, usage and the
    prefix-cache statistics are :class:`KVCacheManager`'s; ``req_to_blocks`` is not used."""

    def __init__(self, num_gpu_blocks: int, block_size: int, groups: Sequence[GroupSpec],
                 enable_caching: bool = True, max_model_len: int | None = None) -> None:
        if not groups:
            raise ValueError("a hybrid KV cache manager needs at least one group")
        super().__init__(num_gpu_blocks, block_size, enable_caching, max_model_len)
        self.tables: list[FullAttentionTable] = [
            SlidingWindowTable(self.pool, i, block_size, enable_caching, g.sliding_window, g.admission_cap_blocks)
            if g.sliding_window else FullAttentionTable(self.pool, i, block_size, enable_caching)
            for i, g in enumerate(groups)
        ]
        self.sliding_windows = tuple(sorted({t.sliding_window for t in self.tables if t.sliding_window}))
        # Groups of the same kind are looked up together, full attention first (vLLM's attention_groups).
        kinds: dict[int | None, list[int]] = {}
        for t in self.tables:
            kinds.setdefault(t.sliding_window, []).append(t.group_id)
        self._lookup = sorted(kinds.items(), key=lambda kv: kv[0] is not None)
        self._no_hits: GroupHits = tuple([] for _ in self.tables)
        # Per request, the computed-token count at which its next block leaves a window (set each
        # time its sliding groups free blocks); below it a decode frees nothing.
        self.window_moves_at: dict[str, int] = {}

    # --- queries ---
    def get_blocks(self, request_id: str) -> list[KVCacheBlock]:
        """All groups' tables of the request, one after the other (null entries included)."""
        return [b for t in self.tables for b in t.req_to_blocks.get(request_id, ())]

    def get_group_blocks(self, request_id: str) -> tuple[list[KVCacheBlock], ...]:
        return tuple(t.req_to_blocks.get(request_id, []) for t in self.tables)

    def blocks_per_group(self, request_id: str) -> int:
        """Entries in each of the request's block tables (every group's has as many)."""
        return len(self.tables[0].req_to_blocks.get(request_id, ()))

    def held_and_filled(self, requests) -> tuple[int, int]:
        # The groups of one kind (same window) hold the same entries: the first speaks for all.
        held = filled = 0
        for request in requests:
            for _, ids in self._lookup:
                h, f = self.tables[ids[0]].held_and_filled(request)
                held += h * len(ids)
                filled += f * len(ids)
        return held, filled

    def _free_out_of_window(self, request_id: str, num_computed_tokens: int) -> None:
        """Every sliding group frees the request's blocks that left its window; note when the
        next one will."""
        bs = self.block_size
        moves_at = 1 << 62
        for t in self.tables:
            w = t.sliding_window
            if w:
                t.remove_skipped_blocks(request_id, num_computed_tokens)
                # the smallest c with (c - w + 1) // bs past today's count of skipped blocks
                moves_at = min(moves_at, (max(0, num_computed_tokens - w + 1) // bs + 1) * bs + w - 1)
        self.window_moves_at[request_id] = moves_at

    def max_blocks_for(self, num_tokens: int) -> int:
        """The most blocks one request of ``num_tokens`` tokens can need at once (the admission
        gate's count, with the caps of the sliding groups)."""
        full = cdiv(num_tokens, self.block_size)
        return sum(min(full, t.admission_cap_blocks) if t.admission_cap_blocks else full for t in self.tables)

    def get_computed_blocks(self, request: Request) -> tuple[GroupHits, int]:
        """Per group, the prefix-cache hit every group can serve, and its length in tokens."""
        if not self.enable_caching:
            return self._no_hits, 0
        request.extend_block_hashes()
        hashes = request.block_hashes
        bs = self.block_size
        hits: list[list[KVCacheBlock] | None] = [None] * len(self.tables)
        hit_length = request.num_tokens - 1
        full_length = None
        while True:
            length = hit_length
            for window, ids in self._lookup:
                if window is None and full_length is not None:
                    length = min(length, full_length)  # a full-attention hit only shrinks
                    continue
                table = self.tables[ids[0]]
                found, length = table.find_longest_cache_hit(self.pool, hashes, length, ids, bs, window)
                if window is None:
                    full_length = length
                for gid, blocks in zip(ids, found):
                    hits[gid] = blocks
            if length >= hit_length:
                break
            hit_length = length
            if len(self._lookup) == 2 and self._lookup[0][0] is None:
                break  # one full and one sliding kind: one pass settles it (as vLLM)
        num_blocks = cdiv(hit_length, bs)
        for t in self.tables:
            if t.sliding_window is None and hits[t.group_id] is not None:
                del hits[t.group_id][num_blocks:]
        return tuple(h if h is not None else [] for h in hits), hit_length

    # --- changes ---
    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        new_computed_blocks: GroupHits | None = None,
        full_sequence_must_fit: bool = False,
    ) -> list[KVCacheBlock] | None:
        """As :meth:`KVCacheManager.allocate_slots`, in every group (see the module's docstring)."""
        rid = request.request_id
        tables = self.tables
        pool = self.pool
        first = tables[0]
        held = first.req_to_blocks.get(rid)
        if new_computed_blocks is None and not full_sequence_must_fit and held is not None \
                and rid in self.window_moves_at:
            # A running request (most calls). Every group's table has the same length and the same
            # count of cached entries (they grow together), so the first one speaks for all.
            computed = min(request.num_computed_tokens, self.max_model_len)
            if computed >= self.window_moves_at[rid]:
                self._free_out_of_window(rid, computed)
            end = min(computed + num_new_tokens, self.max_model_len)
            per_group = cdiv(end, self.block_size) - len(held)
            new_blocks = []
            if per_group > 0:
                if per_group * len(tables) > pool.num_free_blocks:
                    return None
                # One call for every group, in group order: the blocks each group's own call would take.
                new_blocks = pool.get_new_blocks(per_group * len(tables))
                for i, t in enumerate(tables):
                    t.req_to_blocks[rid] += new_blocks[i * per_group:(i + 1) * per_group]
            if self.enable_caching:
                num_tokens = min(end, request.num_tokens)
                done = first.num_cached_blocks.get(rid, 0)
                if num_tokens // self.block_size > done:
                    self._cache_running(request, num_tokens, done)
            return new_blocks
        hits = new_computed_blocks or self._no_hits
        local_computed = request.num_computed_tokens + num_new_computed_tokens
        total_computed = min(local_computed, self.max_model_len)
        if full_sequence_must_fit:
            full_tokens = min(request.num_tokens, self.max_model_len)
            need = sum(t.blocks_to_allocate(rid, full_tokens, h, total_computed, admission=True)
                       for t, h in zip(tables, hits))
            if need > pool.num_free_blocks:
                return None
        num_tokens_need_slot = min(total_computed + num_new_tokens, self.max_model_len)
        self._free_out_of_window(rid, total_computed)  # even if the allocation then fails, as vLLM
        need = sum(t.blocks_to_allocate(rid, num_tokens_need_slot, h, local_computed)
                   for t, h in zip(tables, hits))
        if need > pool.num_free_blocks:
            return None
        if new_computed_blocks is not None and not any(rid in t.num_cached_blocks for t in tables):
            for t, h in zip(tables, hits):  # claim every group's hits before taking new blocks
                t.add_hits(rid, h, local_computed)
        new_blocks = [b for t in tables for b in t.allocate(rid, num_tokens_need_slot)]
        if self.enable_caching:
            request.extend_block_hashes()
            num_tokens = min(total_computed + num_new_tokens, request.num_tokens)
            for t in tables:
                t.cache_blocks(request, num_tokens)
        return new_blocks

    def _cache_running(self, request: Request, num_tokens: int, done: int) -> None:
        """Every group's ``cache_blocks`` for a running request whose tables have ``done`` cached
        entries each, as one call to the pool in group order (the same blocks in the same order)."""
        request.extend_block_hashes()
        rid = request.request_id
        num_full = min(num_tokens, len(request.block_hashes) * self.block_size) // self.block_size
        if num_full <= done:
            return
        hashes = request.block_hashes[done:num_full]
        blocks, keys = [], []
        for t in self.tables:
            blocks += t.req_to_blocks[rid][done:num_full]
            keys += [(h, t.group_id) for h in hashes]
            t.num_cached_blocks[rid] = num_full
        self.pool.cache_full_blocks(blocks, keys)

    def cache_blocks(self, request: Request, num_tokens: int) -> None:
        request.extend_block_hashes()
        for t in self.tables:
            t.cache_blocks(request, num_tokens)

    def fork(self, parent: Request, child: Request) -> None:
        raise NotImplementedError("copy-on-write parallel sampling is not modelled for hybrid KV cache groups")

    def free(self, request: Request) -> None:
        """Release the request's blocks, group by group, each tail first (as vLLM)."""
        self.window_moves_at.pop(request.request_id, None)
        for t in self.tables:
            t.free(request.request_id)
