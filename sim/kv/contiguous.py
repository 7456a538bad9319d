"""Contiguous KV reservations, as the systems before PagedAttention made them.

Each request gets one contiguous range of token slots at admission, sized in advance:
``orca-max`` reserves ``max_model_len``, ``orca-pow2`` the prompt plus the next power of two of
the true output, ``orca-oracle`` exactly the prompt plus the true output. A first-fit allocator
over the slot range places them. What the memory holds is split as the vLLM paper's Fig. 2:

- token states: KV of tokens already computed;
- reservation: slots reserved for tokens the request will still generate;
- internal fragmentation: reserved slots the request will never use (over-reservation);
- external fragmentation: free slots outside the largest free range, which no single new
  reservation of that size can use.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MemoryBreakdown:
    """Slots by use; they add up to ``capacity_tokens``."""

    capacity_tokens: int
    token_states: int
    reservation: int
    internal_fragmentation: int
    external_fragmentation: int
    free: int  # free slots in the largest free range (usable)

    def fractions(self) -> dict[str, float]:
        c = self.capacity_tokens or 1
        return {
            "token_states": self.token_states / c,
            "reservation": self.reservation / c,
            "internal_fragmentation": self.internal_fragmentation / c,
            "external_fragmentation": self.external_fragmentation / c,
            "free": self.free / c,
        }


class ContiguousAllocator:
    """First-fit allocation of contiguous slot ranges in ``[0, capacity_tokens)``."""

    def __init__(self, capacity_tokens: int) -> None:
        if capacity_tokens <= 0:
            raise ValueError(f"capacity_tokens(={capacity_tokens}) must be > 0")
        self.capacity_tokens = capacity_tokens
        self._free_starts = [0]  # sorted starts of free ranges
        self._free_len = {0: capacity_tokens}  # start -> length
        self.allocations: dict[str, tuple[int, int]] = {}  # id -> (start, length)

    @property
    def num_free_tokens(self) -> int:
        return sum(self._free_len.values())

    @property
    def largest_free_range(self) -> int:
        return max(self._free_len.values(), default=0)

    def usage(self) -> float:
        return 1.0 - self.num_free_tokens / self.capacity_tokens

    def allocate(self, owner: str, size: int) -> int | None:
        if size <= 0:
            raise ValueError(f"size(={size}) must be > 0")
        if owner in self.allocations:
            raise ValueError(f"{owner!r} already holds a reservation")
        for start in self._free_starts:
            length = self._free_len[start]
            if length >= size:
                self._free_starts.remove(start)
                del self._free_len[start]
                if length > size:
                    self._insert_free(start + size, length - size)
                self.allocations[owner] = (start, size)
                return start
        return None

    def free(self, owner: str) -> None:
        start, size = self.allocations.pop(owner)
        # Merge with the neighbouring free ranges.
        i = bisect.bisect_left(self._free_starts, start)
        if i < len(self._free_starts) and self._free_starts[i] == start + size:
            nxt = self._free_starts.pop(i)
            size += self._free_len.pop(nxt)
        if i > 0:
            prev = self._free_starts[i - 1]
            if prev + self._free_len[prev] == start:
                self._free_len[prev] += size
                return
        self._insert_free(start, size)

    def _insert_free(self, start: int, length: int) -> None:
        bisect.insort(self._free_starts, start)
        self._free_len[start] = length
