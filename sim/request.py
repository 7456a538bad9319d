"""One sequence moving through the engine.

A request's progress is one number, ``num_computed_tokens``, catching up with ``num_tokens``
(prompt plus output so far), as in vLLM V1: there is no prefill or decode phase, only how far
the KV cache has been computed. Parallel sampling (``n > 1``) fans out into ``n`` requests
with the same prompt, as vLLM V1's frontend does (``ParentRequest``); they share the prompt's
full blocks through the prefix cache.

Output tokens are synthetic: token ``j`` of a request is a fixed function of its id and ``j``
(:func:`synthetic_token`), so runs repeat exactly and nothing needs to be stored per token.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

BlockHash = int

# The parent hash of a request's first block, as vLLM's NONE_HASH.
NONE_HASH: BlockHash = 0


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"

    @property
    def is_finished(self) -> bool:
        return self in (
            RequestStatus.FINISHED_STOPPED,
            RequestStatus.FINISHED_LENGTH,
            RequestStatus.FINISHED_ABORTED,
        )


def hash_block_tokens(parent: BlockHash, token_ids, extra_keys=None) -> BlockHash:
    """Chained hash of one full block: the parent's hash, the block's tokens and extra keys.

    vLLM hashes with sha256 by default; a simulator needs no cryptographic strength, so we use
    Python's tuple hash. Equal prefixes give equal hashes, which is all prefix caching needs.
    Python salts str/bytes hashes per process, but these are tuples of ints, so the values are
    stable across runs too.
    """
    return hash((parent, token_ids, extra_keys))


# Per-position odd multipliers for block fingerprints (fixed, so runs repeat exactly).
_FP_WEIGHTS = np.random.default_rng(20230906).integers(1, 2**63, size=4096, dtype=np.uint64) | np.uint64(1)


def block_fingerprints(token_ids: Sequence[int] | np.ndarray, block_size: int) -> list[int]:
    """A 64-bit fingerprint of each full block's tokens, for all full blocks at once.

    Hashing a tuple of 16 ints per block in Python is the slowest part of admitting a long
    prompt; a weighted sum with odd 64-bit multipliers (mixed to break its linearity) names
    the same content with one numpy call per prompt. Equal blocks give equal fingerprints;
    distinct ones collide with negligible probability.
    """
    n = len(token_ids) // block_size
    if n == 0:
        return []
    blocks = np.asarray(token_ids[: n * block_size], dtype=np.int64).astype(np.uint64).reshape(n, block_size)
    fp = (blocks * _FP_WEIGHTS[:block_size]).sum(axis=1, dtype=np.uint64)
    fp ^= fp >> np.uint64(31)
    fp *= np.uint64(0x9E3779B97F4A7C15)
    fp ^= fp >> np.uint64(29)
    return fp.tolist()


def synthetic_token(key: int, position: int, vocab_size: int = 32000) -> int:
    """The ``position``-th output token of the request whose key is ``key``."""
    return (key * 2654435761 + position * 40503 + 12345) % vocab_size


@dataclass(eq=False, slots=True)
class Request:
    request_id: str
    prompt_token_ids: Sequence[int]  # a list, or a 1-D integer numpy array
    max_tokens: int
    arrival_s: float = 0.0
    priority: int = 0
    block_size: int = 16
    vocab_size: int = 32000
    # --- state, changed only by the scheduler ---
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    num_output_tokens: int = 0
    num_tokens: int = 0  # prompt + output so far (kept as a field: read in every step)
    num_preemptions: int = 0
    num_cached_tokens: int = -1  # prefix-cache hit at first admission; -1 before
    # Hashes of full blocks of prompt + output, computed when first needed
    # (extend_block_hashes: the KV manager calls it before a lookup or caching).
    block_hashes: list[BlockHash] = field(default_factory=list)
    output_anchor: BlockHash | None = None  # names the blocks holding output tokens (see there)
    # --- timeline, filled by the engine ---
    first_scheduled_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    # Runs [first, last] of the engine's global step indices in which this request produced
    # a token. The engine turns them into times (see Engine.token_times).
    token_steps: list[list[int]] = field(default_factory=list)
    token_key: int = 0
    # Only for LazyDecodeScheduler (sim/sched/lazy.py): the step from which this request's
    # counters are behind by one token per step (-1: they are current).
    lazy_step: int = -1
    run_seq: int = 0  # order of (re)admission into the running list

    def __post_init__(self) -> None:
        if not isinstance(self.prompt_token_ids, (list, np.ndarray)):
            self.prompt_token_ids = list(self.prompt_token_ids)
        self.token_key = zlib.crc32(self.request_id.encode())
        self.num_tokens = len(self.prompt_token_ids) + self.num_output_tokens

    # --- sizes ---
    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def output_token_ids(self) -> list[int]:
        return [self.output_token(j) for j in range(self.num_output_tokens)]

    def output_token(self, j: int) -> int:
        return synthetic_token(self.token_key, j, self.vocab_size)

    def token_id(self, i: int) -> int:
        """Token ``i`` of prompt + output."""
        p = len(self.prompt_token_ids)
        return self.prompt_token_ids[i] if i < p else self.output_token(i - p)

    # --- changes ---
    def append_output_tokens(self, count: int) -> None:
        """Append ``count`` sampled tokens."""
        self.num_output_tokens += count
        self.num_tokens += count

    def extend_block_hashes(self) -> None:
        """Hash every full block not hashed yet (chained: each hash covers its whole prefix)."""
        bs = self.block_size
        num_full = self.num_tokens // bs
        hashes = self.block_hashes
        if len(hashes) >= num_full:
            return
        prompt = self.prompt_token_ids
        p = len(prompt)
        num_prompt_blocks = p // bs  # blocks made of prompt tokens only
        if not hashes and num_prompt_blocks:
            parent = NONE_HASH
            for fingerprint in block_fingerprints(prompt, bs):
                parent = hash((parent, fingerprint, None))  # hash_block_tokens, inlined (hot)
                hashes.append(parent)
        if len(hashes) < num_full:
            # Blocks holding output tokens. Those tokens are a function of (token_key,
            # position), so the prompt's full blocks, its tail and token_key fix the whole
            # rest of the sequence: block b is named by that anchor and b, with no chain to
            # walk (a request writes a new block every block_size tokens, so this is hot).
            anchor = self.output_anchor
            if anchor is None:
                parent = hashes[num_prompt_blocks - 1] if num_prompt_blocks else NONE_HASH
                tail = tuple(int(t) for t in prompt[num_prompt_blocks * bs:])
                anchor = self.output_anchor = hash_block_tokens(parent, (tail, self.token_key))
            hashes.extend([hash((anchor, b)) for b in range(len(hashes), num_full)])

    def record_token_steps(self, first: int, last: int) -> None:
        runs = self.token_steps
        if runs and runs[-1][1] == first - 1:
            runs[-1][1] = last
        else:
            runs.append([first, last])

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, prompt={self.num_prompt_tokens}, "
            f"out={self.num_output_tokens}/{self.max_tokens}, computed={self.num_computed_tokens}, "
            f"{self.status.name})"
        )
