"""Random scheduling traces for the decision-for-decision check against vLLM's own scheduler.

A trace is a plain dict (JSON-ready): engine settings with vLLM's names and a list of
requests that arrive by step index. Both tools/vllm_reference/driver.py (vLLM's real
Scheduler) and :mod:`sim.reference_replay` (ServeLab's) run it, and the test compares every
step. The format is documented in tools/vllm_reference/README.md.

The generator aims at what a scheduler gets wrong: shared prefixes (block-aligned and not,
whole prompts repeated), prompts longer than the token budget (chunked prefill, the long
prefill threshold), too few KV blocks (preemption and resumption), parallel sampling (n > 1),
arrivals spread over steps and bursts in one step, and max_model_len edges (a prompt one
token short of it, prompt plus max_tokens past it).

Pure: no I/O, randomness only from the Generator passed in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TRACE_FORMAT = "servelab-sched-trace/1"
# Prompt token ids stay below 1000; the fake model samples ids in [1000, 31000), so a
# prompt never collides with a sampled token by accident.
PROMPT_VOCAB = (3, 1000)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def random_trace(rng: np.random.Generator, *, name: str = "random") -> dict[str, Any]:
    """One random trace; the same generator state gives the same trace, byte for byte."""
    block_size = int(rng.choice([4, 8, 16]))
    max_model_len = int(rng.choice([48, 64, 96, 128, 200, 256]))
    chunked = bool(rng.random() < 0.85)
    if chunked:
        budget = int(rng.choice([8, 16, 24, 32, 48, 64, 128, 256]))
    else:
        # vLLM refuses chunked prefill off with max_num_batched_tokens < max_model_len.
        budget = max_model_len + int(rng.integers(0, 64))
    threshold = int(rng.choice([0, 0, 0, 4, 8, 16, 32])) if chunked else 0
    # vLLM requires max_num_batched_tokens >= max_num_seqs.
    max_num_seqs = min(int(rng.choice([1, 2, 3, 4, 6, 8, 16])), budget)
    caching = bool(rng.random() < 0.8)
    policy = "priority" if rng.random() < 0.2 else "fcfs"

    requests = _random_requests(rng, block_size=block_size, max_model_len=max_model_len)
    if policy == "priority":
        for r in requests:
            r["priority"] = int(rng.integers(0, 3))
    if rng.random() < 0.25:  # clients that go away: aborts of waiting and running requests
        for r in requests:
            if rng.random() < 0.35:
                r["abort_step"] = r["arrival_step"] + int(rng.integers(0, 30))
    # The longest sequence any single request can reach, in blocks: it must fit alone, or
    # the request could never be (re)admitted and the trace would stall (in vLLM too).
    need_blocks = max(
        _cdiv(min(len(r["prompt_token_ids"]) + r["max_tokens"], max_model_len), block_size)
        for r in requests
    )
    pressure = rng.random()
    if pressure < 0.45:  # tight: preemptions are likely
        num_gpu_blocks = need_blocks + 1 + int(rng.integers(0, 4))
    elif pressure < 0.8:  # a few requests' worth
        num_gpu_blocks = need_blocks * int(rng.integers(2, 5)) + 1
    else:  # ample: only prefix caching and budgets matter
        num_gpu_blocks = 1 + sum(
            r.get("n", 1) * _cdiv(len(r["prompt_token_ids"]) + r["max_tokens"], block_size)
            for r in requests
        )
    return {
        "format": TRACE_FORMAT,
        "name": name,
        "engine": {
            "block_size": block_size,
            "num_gpu_blocks": int(num_gpu_blocks),
            "enable_prefix_caching": caching,
            "enable_chunked_prefill": chunked,
            "max_num_batched_tokens": budget,
            "max_num_seqs": max_num_seqs,
            "max_model_len": max_model_len,
            "long_prefill_token_threshold": threshold,
            "policy": policy,
        },
        "requests": requests,
    }


def _random_requests(
    rng: np.random.Generator, *, block_size: int, max_model_len: int
) -> list[dict[str, Any]]:
    # A few shared prefixes: some a whole number of blocks, some not.
    prefixes: list[list[int]] = []
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.5:
            length = block_size * int(rng.integers(1, 5))
        else:
            length = int(rng.integers(1, 4 * block_size))
        length = min(length, max_model_len - 2)
        prefixes.append(_tokens(rng, length))

    requests: list[dict[str, Any]] = []
    step = 0
    burst = rng.random() < 0.3  # everything arrives at step 0
    previous: list[list[int]] = []
    for i in range(int(rng.integers(2, 13))):
        kind = rng.random()
        if kind < 0.15 and previous:  # the same prompt again: the hit is capped at len - 1
            prompt = list(previous[int(rng.integers(0, len(previous)))])
        elif kind < 0.65:  # a shared prefix plus a suffix
            prefix = prefixes[int(rng.integers(0, len(prefixes)))]
            prompt = prefix + _tokens(rng, int(rng.integers(0, 3 * block_size)))
        else:  # unrelated
            prompt = _tokens(rng, int(rng.integers(1, max_model_len)))
        edge = rng.random()
        if edge < 0.07:  # the longest prompt vLLM accepts
            prompt = (prompt + _tokens(rng, max_model_len))[: max_model_len - 1]
        prompt = prompt[: max_model_len - 1] or _tokens(rng, 1)
        max_tokens = int(rng.integers(1, 24))
        if edge > 0.9:  # runs into max_model_len before max_tokens
            max_tokens = max_model_len - len(prompt) + int(rng.integers(1, 8))
        n = 1 if rng.random() < 0.8 else int(rng.integers(2, 5))
        if not burst and i > 0:
            step += int(rng.choice([0, 0, 1, 1, 2, 3, 5, 10]))
        requests.append(
            {
                "request_id": f"r{i}",
                "prompt_token_ids": prompt,
                "max_tokens": max_tokens,
                "arrival_step": step,
                # Distinct arrival times, as a real clock gives (n > 1 children share theirs).
                "arrival_time": step + i / 1000,
                "n": n,
            }
        )
        previous.append(prompt)
    return requests


def _tokens(rng: np.random.Generator, length: int) -> list[int]:
    return [int(t) for t in rng.integers(PROMPT_VOCAB[0], PROMPT_VOCAB[1], size=length)]
