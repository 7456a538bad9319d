"""vLLM's own benchmark client, `vllm bench serve`, against `servelab serve`, at moderate load.

The client comes from the vLLM reference venv (.venv-vllm: vLLM 0.33 and the few modules its
client imports; scripts/setup-vllm-reference installs them). There is no model hub here, so
the test trains a small byte-level BPE tokenizer (tools/vllm_bench_client/make_tokenizer.py,
about a second) and gives it to both sides: the client builds its prompts with it, and the
emulator counts prompt tokens with it (``--tokenizer DIR``). Before sending anything the client
checks the server's /tokenize against its own count; a mismatch would re-align the prompts.

What the client measures must be what the simulator says: its mean TTFT and TPOT within 15%
of `servelab bench serve` on the same workload (whatever that prints on this checkout), every
request answered, every token accounted for in the emulator's lag histogram. The heavy-load
runs (256 and 1,000 streams) are benchmarks/emulator_load.py.

Without .venv-vllm this skips on a developer machine and fails in CI (tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]


def _load_harness():
    # By file path, like tests/test_vllm_reference.py: "tools" is no package.
    spec = importlib.util.spec_from_file_location(
        "servelab_vllm_bench_harness", ROOT / "tools" / "vllm_bench_client" / "harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()

# Moderate load on a simulated A100: 4 req/s (about 10 requests in flight), 1,024-token prompts,
# so TTFT is about 100 ms and the emulator's own HTTP and tokenizer time (a few ms, overlapping
# the simulated API server's) is small beside it. Constant gaps (burstiness inf) give both sides the same arrival times; with
# Poisson arrivals the client's draws and the simulator's differ, and so would their means.
WORK = harness.Workload(num_prompts=120, input_len=1024, output_len=128, max_concurrency=64, request_rate=4.0,
                        burstiness=math.inf, gpu="a100-80gb")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    require(harness.client_ready(), "vLLM's benchmark client in the reference venv (.venv-vllm)")
    tmp = tmp_path_factory.mktemp("vllm-bench")
    tokenizer = harness.make_tokenizer(tmp / "tokenizer")
    with harness.emulator(tokenizer, tmp / "serve.log", gpu=WORK.gpu) as base:
        before, tokens_before = harness.lag_histogram(base), harness.generation_tokens(base)
        client = harness.vllm_bench_serve(base, tokenizer, WORK, tmp, timeout_s=600)
        lag = harness.lag_delta(before, harness.lag_histogram(base))
        tokens = harness.generation_tokens(base) - tokens_before
        turnaround = harness.client_turnaround(base)
        probe = _post(base + "/tokenize", {"prompt": "The KV cache holds blocks.", "add_special_tokens": False})
        back = _post(base + "/detokenize", {"tokens": probe["tokens"]})
    predicted = harness.servelab_bench_serve(WORK, tmp, tokenizer)
    for key, (measured, sim, diff) in harness.compare(client, predicted).items():  # shown with pytest -s
        print(f"{key}: vllm bench serve {measured:.2f}, servelab bench serve {sim:.2f} ({100 * diff:+.1f}%)")
    print(f"lag p50 {1000 * harness.quantile(0.5, lag):.2f} ms, p99 {1000 * harness.quantile(0.99, lag):.2f} ms")
    return {"client": client, "predicted": predicted, "lag": lag, "tokens": tokens, "probe": probe, "back": back,
            "turnaround": turnaround, "log": (tmp / "serve.log").read_text()}


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.vllm_client
def test_every_request_answered_with_the_asked_lengths(bench_run):
    client = bench_run["client"]
    assert client["completed"] == WORK.num_prompts and client.get("failed", 0) == 0, client["stdout"][-2000:]
    assert client["total_output_tokens"] == WORK.num_prompts * WORK.output_len
    # The client's prompts, counted by the server with the same tokenizer: no re-alignment.
    assert "tokenizer mismatch" not in client["stdout"] and "/tokenize unavailable" not in client["stdout"]
    assert abs(client["total_input_tokens"] / WORK.num_prompts - WORK.input_len) <= 2


@pytest.mark.vllm_client
@pytest.mark.parametrize("metric", ["mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms"])
def test_client_latencies_follow_the_simulator(bench_run, metric):
    measured, predicted = bench_run["client"][metric], bench_run["predicted"][metric]
    assert predicted > 0
    assert abs(measured / predicted - 1) <= 0.15, (metric, measured, predicted)


@pytest.mark.vllm_client
def test_every_token_is_in_the_lag_histogram(bench_run):
    lag = bench_run["lag"]
    assert bench_run["tokens"] >= WORK.num_prompts * WORK.output_len
    assert lag[-1][1] == bench_run["tokens"]  # every token the engine made was delivered and timed
    assert math.isfinite(harness.quantile(0.99, lag))


@pytest.mark.vllm_client
def test_tokenize_and_detokenize_round_trip_with_the_model_tokenizer(bench_run):
    probe, back = bench_run["probe"], bench_run["back"]
    assert probe["count"] == len(probe["tokens"]) > 0 and probe["max_model_len"] == 131072
    assert back == {"prompt": "The KV cache holds blocks."}



@pytest.mark.vllm_client
def test_the_clients_kept_alive_connections_give_its_turnaround(bench_run):
    """vLLM's client (aiohttp) reuses its connections, so the emulator times the gaps between a
    response and the next request on one (servelab:emulator_client_turnaround_seconds)."""
    t = bench_run["turnaround"]
    assert 0 < t["count"] < WORK.num_prompts
    assert 0 < t["mean_ms"] < 1000
