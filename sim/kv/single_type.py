"""One KV cache group's block tables: full attention or a sliding window (vLLM's single-type managers).

A hybrid model (Gemma 3, gpt-oss) has several KV cache groups (``sim.memory.kv_cache_groups``).
Each group keeps its own block table per request; all groups draw their blocks from one shared
:class:`~sim.kv.block_pool.BlockPool`. The tables of the groups grow together: entry ``i`` of every
group's table holds tokens ``[i * block_size, (i + 1) * block_size)`` for that group's layers.

What differs between the kinds (as vLLM 0.33's ``v1/core/single_type_kv_cache_manager.py``):

- :class:`FullAttentionTable` keeps every block until the request finishes; a prefix-cache hit is
  the longest run of cached blocks from the prompt's start.
- :class:`SlidingWindowTable` needs only the last ``sliding_window - 1`` tokens before the next
  one. Once ``num_computed_tokens - sliding_window + 1`` tokens fall out of the window, the whole
  blocks among them are freed (back to the shared pool, where their cached contents stay hittable
  until evicted) and their entries in the table become the null block. A prefix-cache hit needs
  only the ``cdiv(sliding_window - 1, block_size)`` blocks just before the hit's end; the earlier
  entries of the hit are null blocks.

Cached blocks are registered under ``(block hash, group id)``: the same tokens hold different KV in
different groups' layers, as vLLM's ``BlockHashWithGroupId``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sim.config import cdiv
from sim.kv.block_pool import BlockPool, KVCacheBlock
from sim.request import Request


class FullAttentionTable:
    """The block tables of one full-attention group."""

    sliding_window: int | None = None

    def __init__(self, pool: BlockPool, group_id: int, block_size: int, enable_caching: bool,
                 admission_cap_blocks: int | None = None) -> None:
        self.pool = pool
        self.group_id = group_id
        self.block_size = block_size
        self.enable_caching = enable_caching
        # Most blocks the admission gate asks for per request (vLLM's max_admission_blocks_per_request;
        # only sliding windows have one: their blocks are recycled while the request runs).
        self.admission_cap_blocks = admission_cap_blocks
        self.req_to_blocks: dict[str, list[KVCacheBlock]] = {}
        # Leading entries of each request's table already registered in the prefix cache (or null).
        self.num_cached_blocks: dict[str, int] = {}

    def num_skipped_tokens(self, num_computed_tokens: int) -> int:
        """Tokens before the next one that attention no longer reads (none for full attention)."""
        return 0

    def blocks_to_allocate(self, request_id: str, num_tokens: int, hits: Sequence[KVCacheBlock],
                           num_computed_tokens: int, admission: bool = False) -> int:
        """Free blocks this group takes to give ``request_id`` ``num_tokens`` slots, counting the
        cached hits that sit in the free queue (``get_num_blocks_to_allocate``). With ``admission``
        the request's need is capped at :attr:`admission_cap_blocks`."""
        required = cdiv(num_tokens, self.block_size)
        if admission and self.admission_cap_blocks is not None:
            required = min(required, self.admission_cap_blocks)
        held = len(self.req_to_blocks.get(request_id, ()))
        if request_id in self.num_cached_blocks:  # running: no new hits
            return max(required - held, 0)
        num_skipped_blocks = self.num_skipped_tokens(num_computed_tokens) // self.block_size
        new = max(required - max(num_skipped_blocks, len(hits) + held), 0)
        # Hits that fell out of the window are not claimed; the rest leave the free queue if free.
        kept = hits[max(0, num_skipped_blocks - held):]
        return new + sum(1 for b in kept if b.ref_cnt == 0 and not b.is_null)

    def add_hits(self, request_id: str, hits: Sequence[KVCacheBlock], num_computed_tokens: int) -> None:
        """Give a request being admitted its prefix-cache hits; the ones already out of the
        window become null entries."""
        table = self.req_to_blocks.setdefault(request_id, [])
        num_skipped_blocks = self.num_skipped_tokens(num_computed_tokens) // self.block_size
        kept = list(hits[num_skipped_blocks:]) if num_skipped_blocks else list(hits)
        if self.enable_caching:
            self.pool.touch(kept)
        table.extend([self.pool.null_block] * num_skipped_blocks)
        table.extend(kept)
        self.num_cached_blocks[request_id] = len(table)

    def allocate(self, request_id: str, num_tokens: int) -> list[KVCacheBlock]:
        """New blocks so the table covers ``num_tokens`` tokens."""
        table = self.req_to_blocks.setdefault(request_id, [])
        num_new = cdiv(num_tokens, self.block_size) - len(table)
        if num_new <= 0:
            return []
        new_blocks = self.pool.get_new_blocks(num_new)
        table.extend(new_blocks)
        return new_blocks

    def cache_blocks(self, request: Request, num_tokens: int) -> None:
        """Register the request's full blocks up to ``num_tokens`` under (hash, group id)."""
        rid = request.request_id
        done = self.num_cached_blocks.get(rid, 0)
        num_full = min(num_tokens, len(request.block_hashes) * self.block_size) // self.block_size
        if done >= num_full:
            return
        gid = self.group_id
        keys = [(h, gid) for h in request.block_hashes[done:num_full]]
        self.pool.cache_full_blocks(self.req_to_blocks[rid][done:num_full], keys)
        self.num_cached_blocks[rid] = num_full

    def remove_skipped_blocks(self, request_id: str, num_computed_tokens: int) -> None:
        """Free the blocks wholly out of the window, newest first, and null their entries."""
        num_skipped = self.num_skipped_tokens(num_computed_tokens)
        if num_skipped <= 0:
            return
        table = self.req_to_blocks.get(request_id)
        if not table:
            return
        null = self.pool.null_block
        freed = []
        for i in range(min(num_skipped // self.block_size, len(table)) - 1, -1, -1):
            if table[i].is_null:
                break  # everything before was freed by an earlier call
            freed.append(table[i])
            table[i] = null
        if freed:
            self.pool.free_blocks(freed)

    def free(self, request_id: str) -> None:
        """Release the request's blocks, tail first (null entries are skipped by the pool)."""
        table = self.req_to_blocks.pop(request_id, None)
        self.num_cached_blocks.pop(request_id, None)
        if table:
            self.pool.free_blocks(reversed(table))

    def held_and_filled(self, request: Request) -> tuple[int, int]:
        """Real (non-null) blocks the request holds here, and the computed tokens they hold."""
        table = self.req_to_blocks.get(request.request_id)
        if not table:
            return 0, 0
        bs = self.block_size
        first = 0
        while first < len(table) and table[first].is_null:
            first += 1
        held = len(table) - first
        filled = max(0, min(request.num_computed_tokens, len(table) * bs) - first * bs)
        return held, filled

    # --- prefix-cache lookup (a class method in vLLM: it serves every group of the same kind) ---
    @staticmethod
    def find_longest_cache_hit(pool: BlockPool, block_hashes: Sequence[int], max_length: int,
                               group_ids: Sequence[int], block_size: int,
                               sliding_window: int | None = None) -> tuple[list[list[KVCacheBlock]], int]:
        """The longest run of blocks cached in every group of ``group_ids`` from the start."""
        hits: list[list[KVCacheBlock]] = [[] for _ in group_ids]
        get = pool.get_cached_block
        for block_hash in block_hashes[:max_length // block_size]:
            found = [get((block_hash, gid)) for gid in group_ids]
            if any(b is None for b in found):
                break
            for out, block in zip(hits, found):
                out.append(block)
        return hits, len(hits[0]) * block_size


class SlidingWindowTable(FullAttentionTable):
    """The block tables of one sliding-window group: blocks out of the window are given back."""

    def __init__(self, pool: BlockPool, group_id: int, block_size: int, enable_caching: bool,
                 sliding_window: int, admission_cap_blocks: int | None = None) -> None:
        if sliding_window < 1:
            raise ValueError(f"sliding_window(={sliding_window}) must be >= 1")
        super().__init__(pool, group_id, block_size, enable_caching, admission_cap_blocks)
        self.sliding_window = sliding_window

    def num_skipped_tokens(self, num_computed_tokens: int) -> int:
        # The next token (position num_computed_tokens) attends to the window - 1 tokens before it.
        return max(0, num_computed_tokens - self.sliding_window + 1)

    @staticmethod
    def find_longest_cache_hit(pool: BlockPool, block_hashes: Sequence[int], max_length: int,
                               group_ids: Sequence[int], block_size: int,
                               sliding_window: int | None = None) -> tuple[list[list[KVCacheBlock]], int]:
        """The longest prefix whose last ``cdiv(sliding_window - 1, block_size)`` blocks are all
        cached, searched from the right; its earlier entries are null blocks. If no such run
        exists, the run of cached blocks from the start (shorter than a window) is the hit."""
        assert sliding_window is not None
        needed = cdiv(sliding_window - 1, block_size)
        max_blocks = max_length // block_size
        null = pool.null_block
        hits = [[null] * max_blocks for _ in group_ids]
        get = pool.get_cached_block
        run = 0
        for i in range(max_blocks - 1, -1, -1):
            found = [get((block_hashes[i], gid)) for gid in group_ids]
            if any(b is None for b in found):
                run = 0
                continue
            for out, block in zip(hits, found):
                out[i] = block
            run += 1
            if run >= needed:
                for out in hits:
                    del out[i + run:]
                return hits, (i + run) * block_size
        for out in hits:  # no full window: only a run reaching the start counts
            del out[run:]
        return hits, run * block_size
