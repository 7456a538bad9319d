"""The block pool knows blocks: ids, reference counts, the free queue and the prefix cache.

It keeps no table of requests (that is :class:`sim.kv.kv_manager.KVCacheManager`'s job).

States of a block:

- in use: ``ref_cnt > 0``; not in the free queue;
- free and cached: ``ref_cnt == 0`` with a ``block_hash``; in the free queue, so it counts as
  free and may be evicted, but a prefix-cache hit can still claim it back (``touch``);
- free: ``ref_cnt == 0``, no hash.

Block 0 is vLLM's null block: a placeholder that is never handed out and never freed.

The free queue follows vLLM's order. Allocation takes blocks from the front. Freed blocks with
a hash go to the back, so cached blocks are evicted least recently used first; freed blocks
without a hash go to the front, since they can never be hit and reusing them at once keeps
the GPU's working set small. vLLM writes a doubly linked list by hand for O(1) removal from the
middle; an ``OrderedDict`` gives the same O(1) operations in C and reads more plainly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sim.request import BlockHash


@dataclass(eq=False, slots=True)
class KVCacheBlock:
    block_id: int
    ref_cnt: int = 0  # number of requests holding the block
    block_hash: BlockHash | None = None  # set once the block is full and cached
    is_null: bool = False

    def __repr__(self) -> str:
        h = "" if self.block_hash is None else " cached"
        return f"Block({self.block_id}, ref={self.ref_cnt}{h})"


class BlockPool:
    def __init__(self, num_gpu_blocks: int, enable_caching: bool = True) -> None:
        if num_gpu_blocks < 2:
            raise ValueError(f"num_gpu_blocks(={num_gpu_blocks}) must be >= 2 (one is the null block)")
        self.num_gpu_blocks = num_gpu_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVCacheBlock(i) for i in range(num_gpu_blocks)]
        # Free queue: block_id -> block, front = next to allocate.
        self.free_queue: OrderedDict[int, KVCacheBlock] = OrderedDict(
            (b.block_id, b) for b in self.blocks
        )
        # Prefix cache: hash -> the block a hit gets. Several blocks may hold the same content
        # (two requests computed it before either was cached): the later ones wait in
        # `duplicates`, in caching order, and the next takes over when the first is evicted
        # (vLLM keeps a dict of blocks per hash and hands out the first; same order).
        self.cached_blocks: dict[BlockHash, KVCacheBlock] = {}
        self.duplicates: dict[BlockHash, list[KVCacheBlock]] = {}
        self.null_block = self.free_queue.popitem(last=False)[1]
        self.null_block.is_null = True
        self.num_evictions = 0

    # --- queries ---
    @property
    def num_free_blocks(self) -> int:
        return len(self.free_queue)

    def usage(self) -> float:
        """Fraction of blocks in use. The null block is not counted, as in vLLM."""
        return 1.0 - self.num_free_blocks / (self.num_gpu_blocks - 1)

    def get_cached_block(self, block_hash: BlockHash) -> KVCacheBlock | None:
        return self.cached_blocks.get(block_hash)

    # --- changes ---
    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """Take ``num_blocks`` from the front of the free queue, evicting cached ones."""
        if num_blocks > len(self.free_queue):
            raise ValueError(f"cannot get {num_blocks} free blocks from the pool ({len(self.free_queue)} free)")
        popitem = self.free_queue.popitem
        out = []
        for _ in range(num_blocks):
            block = popitem(last=False)[1]
            if block.block_hash is not None:
                self._evict(block)
            block.ref_cnt = 1
            out.append(block)
        return out

    def touch(self, blocks: Sequence[KVCacheBlock]) -> None:
        """A prefix-cache hit: claim the blocks, taking free ones out of the free queue."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self.free_queue[block.block_id]
            block.ref_cnt += 1

    def free_blocks(self, ordered_blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference from each block, in eviction order (first = evicted first)."""
        to_front = []
        for block in ordered_blocks:
            if block.is_null:
                continue
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                if block.block_hash is None or not self.enable_caching:
                    to_front.append(block)
                else:
                    self.free_queue[block.block_id] = block  # to the back (LRU)
            elif block.ref_cnt < 0:
                raise AssertionError(f"{block} freed more often than it was allocated")
        # vLLM's prepend_n keeps the given order at the front.
        move = self.free_queue.move_to_end
        for block in reversed(to_front):
            self.free_queue[block.block_id] = block
            move(block.block_id, last=False)

    def cache_full_blocks(self, blocks: Sequence[KVCacheBlock], hashes: Sequence[BlockHash]) -> None:
        """Register full blocks under their hashes so later requests can hit them."""
        cached = self.cached_blocks
        for block, block_hash in zip(blocks, hashes):
            if block.block_hash is not None or block.is_null:
                continue
            block.block_hash = block_hash
            if cached.setdefault(block_hash, block) is not block:
                self.duplicates.setdefault(block_hash, []).append(block)

    def _evict(self, block: KVCacheBlock) -> None:
        h = block.block_hash
        block.block_hash = None
        self.num_evictions += 1
        if self.cached_blocks.get(h) is block:
            waiting = self.duplicates.get(h)
            if waiting:
                self.cached_blocks[h] = waiting.pop(0)
                if not waiting:
                    del self.duplicates[h]
            else:
                del self.cached_blocks[h]
        else:
            waiting = self.duplicates[h]
            waiting.remove(block)
            if not waiting:
                del self.duplicates[h]

    def reset_prefix_cache(self) -> None:
        for block in self.blocks:
            if block.block_hash is not None:
                self._evict(block)
