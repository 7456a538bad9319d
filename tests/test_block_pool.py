"""The block pool: a stateful property test against a plain-dict shadow, and vLLM's documented order."""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

from sim.kv.block_pool import BlockPool
from sim.kv.kv_manager import KVCacheManager
from sim.request import Request

NUM_BLOCKS = 12


class BlockPoolMachine(RuleBasedStateMachine):
    """Rules allocate, cache, hit (touch) and free; a shadow of ref counts must agree."""

    held = Bundle("held")  # lists of blocks one owner holds

    def __init__(self):
        super().__init__()
        self.pool = BlockPool(NUM_BLOCKS, enable_caching=True)
        self.refs: dict[int, int] = {}  # shadow: block id -> ref count (absent = 0)
        self.next_hash = 1

    @precondition(lambda self: self.pool.num_free_blocks > 0)
    @rule(target=held, data=st.data())
    def allocate(self, data):
        n = data.draw(st.integers(1, self.pool.num_free_blocks))
        blocks = self.pool.get_new_blocks(n)
        for b in blocks:
            assert self.refs.get(b.block_id, 0) == 0, "allocated a block still in use"
            self.refs[b.block_id] = 1
            assert b.block_hash is None, "a reused block must lose its old hash"
        return blocks

    @rule(blocks=held, reuse=st.booleans())
    def cache(self, blocks, reuse):
        """Cache full blocks; with ``reuse``, under a hash already cached (the same content
        computed twice), which must queue as a duplicate and take over on eviction."""
        for b in blocks:
            if b.block_hash is None:
                if reuse and self.pool.cached_blocks:
                    h = next(iter(self.pool.cached_blocks))
                else:
                    h, self.next_hash = self.next_hash, self.next_hash + 1
                first = self.pool.get_cached_block(h)
                self.pool.cache_full_blocks([b], [h])
                assert self.pool.get_cached_block(h) is (first or b)

    @rule(target=held, blocks=held)
    def share(self, blocks):
        """Another request hits these blocks (only cached ones can be hit)."""
        hits = [b for b in blocks if b.block_hash is not None and self.pool.get_cached_block(b.block_hash) is b]
        self.pool.touch(hits)
        for b in hits:
            self.refs[b.block_id] += 1
        return hits

    @rule(blocks=consumes(held))
    def free(self, blocks):
        self.pool.free_blocks(reversed(blocks))
        for b in blocks:
            self.refs[b.block_id] -= 1

    @rule()
    def hit_free_cached_block(self):
        """A prefix hit on a cached block that sits in the free queue takes it out again."""
        for b in list(self.pool.free_queue.values()):
            if b.block_hash is not None:
                self.pool.touch([b])
                self.refs[b.block_id] = self.refs.get(b.block_id, 0) + 1
                self.pool.free_blocks([b])
                self.refs[b.block_id] -= 1
                return

    @invariant()
    def conserved(self):
        in_use = sum(1 for v in self.refs.values() if v > 0)
        assert self.pool.num_free_blocks + in_use == NUM_BLOCKS - 1  # the null block is neither

    @invariant()
    def ref_counts_agree(self):
        for block in self.pool.blocks[1:]:
            assert block.ref_cnt >= 0
            assert block.ref_cnt == self.refs.get(block.block_id, 0)
            assert (block.ref_cnt == 0) == (block.block_id in self.pool.free_queue)

    @invariant()
    def null_block_never_free(self):
        assert 0 not in self.pool.free_queue
        assert self.pool.null_block.is_null

    @invariant()
    def hash_map_consistent(self):
        for h, block in self.pool.cached_blocks.items():
            assert block.block_hash == h
        for h, blocks in self.pool.duplicates.items():
            assert blocks and h in self.pool.cached_blocks
            assert all(b.block_hash == h for b in blocks)


TestBlockPoolMachine = BlockPoolMachine.TestCase
TestBlockPoolMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_double_free_is_detected():
    pool = BlockPool(4)
    (b,) = pool.get_new_blocks(1)
    pool.free_blocks([b])
    try:
        pool.free_blocks([b])
    except AssertionError as exc:
        assert "freed more often" in str(exc)
    else:
        raise AssertionError("a double free went unnoticed")


def test_free_queue_order_after_frees():
    """vLLM: freeing hashed blocks 1, 2, 3 from [4..10] gives [4..10, 3, 2, 1]."""
    kv = KVCacheManager(11, 16, enable_caching=True)
    r = Request("x", list(range(48)), 1)
    blocks = kv.allocate_slots(r, 48)
    assert [b.block_id for b in blocks] == [1, 2, 3]
    assert list(kv.pool.free_queue) == [4, 5, 6, 7, 8, 9, 10]
    kv.free(r)
    assert list(kv.pool.free_queue) == [4, 5, 6, 7, 8, 9, 10, 3, 2, 1]


def test_uncached_blocks_are_reused_first():
    """Blocks without a hash go to the front of the queue (LIFO reuse), tail first."""
    kv = KVCacheManager(11, 16, enable_caching=True)
    r = Request("x", list(range(40)), 1)  # two full blocks, one partial
    kv.allocate_slots(r, 40)
    kv.free(r)
    assert list(kv.pool.free_queue)[:1] == [3]  # the partial (unhashed) block is next to go
    assert list(kv.pool.free_queue)[-2:] == [2, 1]


def test_caching_disabled_frees_to_front():
    kv = KVCacheManager(11, 16, enable_caching=False)
    r = Request("x", list(range(48)), 1)
    kv.allocate_slots(r, 48)
    kv.free(r)
    assert list(kv.pool.free_queue)[:3] == [3, 2, 1]


def test_usage_excludes_null_block():
    pool = BlockPool(11)
    assert pool.usage() == 0.0
    pool.get_new_blocks(10)
    assert pool.usage() == 1.0
