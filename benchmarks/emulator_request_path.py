"""CPU of the emulator's per-request work, in process, without sockets or a client.

`benchmarks/emulator_load.py` measures the whole emulator, but on a shared machine its CPU
figures move by 10% from run to run. This times the three steps every completion request
takes before it reaches the engine, the way `vllm bench serve --backend vllm` sends it (a
prompt of 512 token ids, 128 tokens asked for), each the best of five passes over 300
requests, which other jobs on the machine hardly move:

- validate: the JSON body read into ``CompletionRequest`` (what FastAPI does for the route);
- prompts: ``EmulatorServer._prompts_of_completion`` (decoding the ids with the Hugging Face
  tokenizer, the prompt's last word);
- plan: ``EmulatorServer.plan`` (the built-in question search, the seeded draws, the words).

    python3 benchmarks/emulator_request_path.py

Needs .venv-vllm, as emulator_load.py, to train the test tokenizer.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from emulator_load import _harness  # noqa: E402  (loads tools/vllm_bench_client/harness.py)

REQUESTS, PASSES, PROMPT_IDS = 300, 5, 512


def main() -> int:
    from lab.cli.serve import add_cli_args, build_server
    from lab.server import protocol as P

    h = _harness()
    with tempfile.TemporaryDirectory(prefix="servelab-reqpath-") as tmp:
        tokenizer = h.make_tokenizer(Path(tmp) / "tokenizer")
        parser = argparse.ArgumentParser()
        add_cli_args(parser)
        server = build_server(parser.parse_args([h.MODEL, "--gpu", h.GPU, "--tokenizer", str(tokenizer)]))
    rnd = random.Random(0)
    vocab = server.tokenizer.vocab_size
    bodies = [json.dumps({"model": h.MODEL, "prompt": [rnd.randrange(100, vocab) for _ in range(PROMPT_IDS)],
                          "max_tokens": 128, "stream": True, "ignore_eos": True}) for _ in range(REQUESTS)]
    best = {"validate": float("inf"), "prompts": float("inf"), "plan": float("inf")}
    for _ in range(PASSES):
        spent = dict.fromkeys(best, 0.0)
        for body in bodies:
            c0 = time.process_time()
            req = P.CompletionRequest.model_validate(json.loads(body))
            c1 = time.process_time()
            prompts = server._prompts_of_completion(req)
            c2 = time.process_time()
            server.plan(prompts, 1, req)
            c3 = time.process_time()
            spent["validate"] += c1 - c0
            spent["prompts"] += c2 - c1
            spent["plan"] += c3 - c2
        for step, seconds in spent.items():
            best[step] = min(best[step], 1e6 * seconds / REQUESTS)
    print(f"per request ({PROMPT_IDS} prompt ids), best of {PASSES} passes over {REQUESTS}: "
          + ", ".join(f"{step} {us:.0f} us" for step, us in best.items())
          + f"; {sum(best.values()):.0f} us in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
