"""A light streaming client, to load the emulator without the cost of a real client.

`vllm bench serve` parses every chunk as JSON and times it: at 256 streams it uses about four
times the emulator's CPU. This one opens N connections at a time, sends each request's prompt
as token ids (no tokenizer on either side) and only looks for the end of the stream, so nearly
all the CPU goes to the emulator. It measures nothing but lost requests; the lag comes from the
emulator's own histogram. Used by ``benchmarks/emulator_load.py --client raw``.

    python3 tools/vllm_bench_client/raw_client.py URL NUM_PROMPTS CONCURRENCY INPUT_LEN OUTPUT_LEN MODEL
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlparse

import numpy as np


async def one(host: str, port: int, body: bytes) -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    writer.write(head + body)
    tail = b""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return False
            tail = tail[-32:] + data
            if b"data: [DONE]" in tail:
                return True
    finally:
        writer.close()


async def main(url: str, n: int, concurrency: int, input_len: int, output_len: int, model: str) -> None:
    u = urlparse(url)
    rng = np.random.default_rng(0)
    sem = asyncio.Semaphore(concurrency)
    results: list[bool] = []

    async def guarded(i: int) -> None:
        body = json.dumps({"model": model, "prompt": rng.integers(10, 1000, input_len).tolist(),
                           "max_tokens": output_len, "ignore_eos": True, "stream": True}).encode()
        async with sem:
            try:
                results.append(await one(u.hostname, u.port, body))
            except OSError:
                results.append(False)

    t0 = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(n)))
    print(json.dumps({"completed": sum(results), "lost": n - sum(results), "wall_s": time.perf_counter() - t0}))


if __name__ == "__main__":
    url, n, c, i, o, model = sys.argv[1:7]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(url, int(n), int(c), int(i), int(o), model))
