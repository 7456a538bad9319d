"""The KV cache manager knows requests: which blocks each one holds and what it hit.

It hands the scheduler a yes or no: :meth:`KVCacheManager.allocate_slots` returns the new
blocks, or ``None`` when they do not fit, and the scheduler decides whom to preempt.

Token layout of one request at allocation time (as in vLLM's ``allocate_slots``)::

    | computed | new hits (prefix cache) | new tokens to compute |
    |<-- already held -->|<-- touched -->|<---- to allocate ---->|

Only full blocks are ever hit. The last prompt token is always recomputed (the model must
produce its logits), so a lookup covers at most ``num_tokens - 1`` tokens: a repeated 48-token
prompt hits 32 tokens, not 48.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config import cdiv
from sim.kv.block_pool import BlockPool, KVCacheBlock
from sim.request import Request, RequestStatus


@dataclass(slots=True)
class PrefixCacheStats:
    """vLLM's prefix-cache counters. Resumed (preempted) requests are counted apart."""

    queries: int = 0  # prompt tokens looked up by new requests
    hits: int = 0  # of which found in the cache
    requests: int = 0
    preempted_queries: int = 0
    preempted_hits: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


class KVCacheManager:
    def __init__(
        self, num_gpu_blocks: int, block_size: int = 16, enable_caching: bool = True,
        max_model_len: int | None = None,
    ) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.max_model_len = max_model_len if max_model_len is not None else 1 << 62
        self.pool = BlockPool(num_gpu_blocks, enable_caching)
        self.req_to_blocks: dict[str, list[KVCacheBlock]] = {}
        # How many of each request's leading blocks are already registered in the cache.
        self.num_cached_blocks: dict[str, int] = {}
        self.stats = PrefixCacheStats()
        self.num_cow_copies = 0  # blocks copied on write (parallel sampling, copy-on-write mode)
        self.copy_on_write = False  # set by the engine in copy-on-write mode
        self.sliding_windows: tuple[int, ...] = ()  # one table a request, full attention (see sim.kv.hybrid)

    # --- queries ---
    @property
    def usage(self) -> float:
        return self.pool.usage()

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def prefix_cache_queries(self) -> int:
        return self.stats.queries

    @property
    def prefix_cache_hits(self) -> int:
        return self.stats.hits

    def get_blocks(self, request_id: str) -> list[KVCacheBlock]:
        return self.req_to_blocks.get(request_id, [])

    def blocks_per_group(self, request_id: str) -> int:
        """Entries in each of the request's block tables (one table here)."""
        return len(self.req_to_blocks.get(request_id, ()))

    def held_and_filled(self, requests) -> tuple[int, int]:
        """Blocks the requests hold (a shared block counted per holder), and the computed tokens
        in them."""
        table = self.req_to_blocks
        return (sum(len(table.get(r.request_id, ())) for r in requests),
                sum(r.num_computed_tokens for r in requests))

    def max_blocks_for(self, num_tokens: int) -> int:
        """The blocks one request of ``num_tokens`` tokens holds at the most."""
        return cdiv(num_tokens, self.block_size)

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """The longest run of cached full blocks from the prompt's start, and its length in tokens."""
        if not self.enable_caching:
            return [], 0
        max_blocks = (request.num_tokens - 1) // self.block_size
        request.extend_block_hashes()
        hits: list[KVCacheBlock] = []
        get = self.pool.get_cached_block
        for block_hash in request.block_hashes[:max_blocks]:
            block = get(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits, len(hits) * self.block_size

    def record_prefix_cache_stats(self, request: Request, num_hits: int) -> None:
        if not self.enable_caching:
            return
        if request.num_preemptions > 0:
            self.stats.preempted_queries += request.num_tokens
            self.stats.preempted_hits += num_hits
        else:
            self.stats.requests += 1
            self.stats.queries += request.num_tokens
            self.stats.hits += num_hits

    # --- changes ---
    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        new_computed_blocks: list[KVCacheBlock] | None = None,
        full_sequence_must_fit: bool = False,
    ) -> list[KVCacheBlock] | None:
        """Make room for ``num_new_tokens`` more tokens of ``request``; ``None`` if they do not fit.

        ``new_computed_blocks`` are prefix-cache hits found by :meth:`get_computed_blocks` for a
        request being admitted. With ``full_sequence_must_fit`` (vLLM's admission gate,
        ``scheduler_reserve_full_isl``) the whole current sequence must fit, not only this
        chunk, though only this chunk's blocks are taken.
        """
        bs = self.block_size
        held = self.req_to_blocks.get(request.request_id)
        num_held = len(held) if held else 0
        if self.copy_on_write and num_held and not self._copy_if_shared(request, held):
            return None
        if new_computed_blocks is None and not full_sequence_must_fit and num_held:
            # Fast path for a running request (most calls): no hits, no admission gate.
            end = request.num_computed_tokens + num_new_tokens
            if end > self.max_model_len:
                end = self.max_model_len
            num_new_blocks = -(-end // bs) - num_held
            if num_new_blocks > 0:
                if num_new_blocks > self.pool.num_free_blocks:
                    return None
                new_blocks = self.pool.get_new_blocks(num_new_blocks)
                held.extend(new_blocks)
            else:
                new_blocks = []
            if self.enable_caching:
                self.cache_blocks(request, min(end, request.num_tokens))
            return new_blocks
        hits = new_computed_blocks or []
        total_computed = min(request.num_computed_tokens + num_new_computed_tokens, self.max_model_len)
        # A cached block with no holder sits in the free queue: claiming it uses up a free slot.
        num_evictable_hits = sum(1 for b in hits if b.ref_cnt == 0)
        free = self.pool.num_free_blocks

        if full_sequence_must_fit:
            full_tokens = min(request.num_tokens, self.max_model_len)
            need = max(cdiv(full_tokens, bs) - num_held - len(hits), 0) + num_evictable_hits
            if need > free:
                return None

        num_tokens_need_slot = min(total_computed + num_new_tokens, self.max_model_len)
        num_new_blocks = max(cdiv(num_tokens_need_slot, bs) - num_held - len(hits), 0)
        if num_new_blocks + num_evictable_hits > free:
            return None

        if held is None:
            held = self.req_to_blocks[request.request_id] = []
        if hits:
            self.pool.touch(hits)
            held.extend(hits)
            self.num_cached_blocks[request.request_id] = len(held)
        new_blocks = self.pool.get_new_blocks(num_new_blocks) if num_new_blocks else []
        held.extend(new_blocks)

        # Cache the blocks this step will fill, at schedule time (a request admitted later in
        # the same step can already hit them).
        if self.enable_caching:
            self.cache_blocks(request, min(total_computed + num_new_tokens, request.num_tokens))
        return new_blocks

    def cache_blocks(self, request: Request, num_tokens: int) -> None:
        rid = request.request_id
        done = self.num_cached_blocks.get(rid, 0)
        num_full = num_tokens // self.block_size
        if done >= num_full:
            return
        request.extend_block_hashes()
        num_full = min(num_full, len(request.block_hashes))
        blocks = self.req_to_blocks[rid]
        self.pool.cache_full_blocks(blocks[done:num_full], request.block_hashes[done:num_full])
        self.num_cached_blocks[rid] = num_full

    def fork(self, parent: Request, child: Request) -> None:
        """Parallel sampling, copy-on-write: the child shares every block of the parent, the
        partial last one included (reference counts go up; nothing is copied yet)."""
        blocks = self.req_to_blocks[parent.request_id]
        self.pool.touch(blocks)
        self.req_to_blocks[child.request_id] = list(blocks)
        self.num_cached_blocks[child.request_id] = self.num_cached_blocks.get(parent.request_id, 0)

    def _copy_if_shared(self, request: Request, held: list[KVCacheBlock]) -> bool:
        """Before a request writes into its partial last block, give it its own copy if other
        sequences share that block. False if no block is free for the copy."""
        computed = request.num_computed_tokens
        if computed % self.block_size == 0 or computed // self.block_size >= len(held):
            return True  # the next token starts a new block: nothing shared is written
        block = held[computed // self.block_size]
        if block.ref_cnt <= 1:
            return True  # the last holder writes in place
        if self.pool.num_free_blocks < 1:
            return False
        (copy,) = self.pool.get_new_blocks(1)
        held[computed // self.block_size] = copy
        self.pool.free_blocks([block])  # one reference fewer; the others keep it
        self.num_cow_copies += 1
        return True

    def free(self, request: Request) -> None:
        """Release all of the request's blocks, tail first, so a chain's tail is evicted first."""
        blocks = self.req_to_blocks.pop(request.request_id, None)
        self.num_cached_blocks.pop(request.request_id, None)
        if blocks:
            self.pool.free_blocks(reversed(blocks))

    def reset_prefix_cache(self) -> None:
        self.pool.reset_prefix_cache()


def is_waiting(request: Request) -> bool:
    return request.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED)
