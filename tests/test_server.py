"""The emulator server (``servelab serve``) through its HTTP API, with the official openai client.

Each test starts a real uvicorn server on a free loopback port in a thread, with the real
simulated engine behind it (Llama-3.1-8B on an H100 unless a test says otherwise), and stops
it in a ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from lab.cli import serve as serve_cli
from lab.server import questions
from lab.server.app import build_app
from lab.server.tokenizer import Tokenizer

MODEL = "meta-llama/Llama-3.1-8B"
GPU = "h100-80gb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    def __init__(self, server, port: int) -> None:
        self.server = server
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.client = openai.OpenAI(base_url=f"{self.base}/v1", api_key="unused", max_retries=0)

    @property
    def engine(self):
        return self.server.engine

    def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until every request the server knows has finished or been aborted."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.server.runner.num_open_requests == 0 and self.server.in_flight == 0:
                return
            time.sleep(0.02)
        raise AssertionError(f"still open after {timeout_s} s: {self.server.runner.num_open_requests}")


def serving(*flags: str):
    """``servelab serve MODEL --gpu GPU <flags>`` on a free port, stopped on exit."""
    return serving_on(GPU, *flags)


@contextlib.contextmanager
def serving_on(gpu: str, *flags: str):
    import uvicorn

    parser = argparse.ArgumentParser()
    serve_cli.add_cli_args(parser)
    args = parser.parse_args([MODEL, "--gpu", gpu, *flags])
    server = serve_cli.build_server(args)
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(build_app(server), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not uv.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.02)
        yield Running(server, port)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def emu():
    with serving("--service", "ai-api-canary", "--seed", "0") as running:
        yield running


# --- the openai client ------------------------------------------------------------------------

def test_completion_answers_a_builtin_question(emu):
    r = emu.client.completions.create(model=MODEL, prompt="Q: What is the capital of France? A:", max_tokens=8)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == MODEL
    assert r.choices[0].text == " Paris."
    assert r.choices[0].finish_reason == "stop"
    prompt_ids = Tokenizer().encode("Q: What is the capital of France? A:")
    assert r.usage.prompt_tokens == len(prompt_ids) + 1  # + BOS
    assert r.usage.completion_tokens == 2 and r.usage.total_tokens == r.usage.prompt_tokens + 2


def test_completion_stops_at_max_tokens_with_length(emu):
    r = emu.client.completions.create(model=MODEL, prompt="Write about GPUs", max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    assert len(Tokenizer().split(r.choices[0].text)) == 5


def test_same_prompt_same_text_per_seed(emu):
    ask = lambda: emu.client.completions.create(model=MODEL, prompt="Tell me about caches", max_tokens=12)
    assert ask().choices[0].text == ask().choices[0].text


def test_chat_not_streamed_with_n(emu):
    r = emu.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 7 times 8?"}], n=3)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.role == "assistant" and c.message.content == "56." for c in r.choices)
    assert all(c.finish_reason == "stop" for c in r.choices)
    assert r.usage.completion_tokens == 3 * 2


def test_chat_stream_role_chunk_tokens_and_usage(emu):
    stream = emu.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me a story"}], max_completion_tokens=20,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    token_chunks = [c for c in chunks[1:] if c.choices]
    assert len(token_chunks) == 20
    assert token_chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in token_chunks[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 20
    text = "".join(c.choices[0].delta.content for c in token_chunks)
    assert len(Tokenizer().split(text)) == 20


def test_completion_stream_with_n_and_done_marker(emu):
    with httpx.stream("POST", f"{emu.base}/v1/completions", json={
        "model": MODEL, "prompt": "What is the capital of Japan?", "n": 2, "max_tokens": 10, "stream": True,
    }) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    import json

    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    by_index = {0: "", 1: ""}
    for c in chunks:
        by_index[c["choices"][0]["index"]] += c["choices"][0]["text"]
    assert by_index == {0: " Tokyo.", 1: " Tokyo."}


def test_streamed_tokens_arrive_over_time_not_at_once(emu):
    """Tokens leave when the simulated engine produces them: 200 decode steps of an 8B model
    on an H100 take a few milliseconds each, so the stream spans their sum, not one instant."""
    sim = emu.server.engine.step_model
    start = time.monotonic()
    arrivals = []
    stream = emu.client.completions.create(model=MODEL, prompt="Describe a long road", max_tokens=200,
                                           stream=True, extra_body={"ignore_eos": True})
    for chunk in stream:
        arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 200
    # The engine's own record of this request: its last token came at finish_s - arrival_s.
    request = emu.server.engine.finished[-1]
    simulated_span = request.finish_s - request.first_token_s
    assert simulated_span > 0.2  # 199 decode steps
    measured_span = arrivals[-1] - arrivals[0]
    assert measured_span == pytest.approx(simulated_span, rel=0.3, abs=0.1)
    assert sim is not None


# --- errors -------------------------------------------------------------------------------------

VLLM_CHECK = "(parameter={}, value={})"  # the tail vLLM's VLLMValidationError adds to its message


@pytest.mark.parametrize(
    "path, body, status, err_type, param, needle",
    [
        pytest.param("/v1/completions", b"{not json", 400, "Bad Request", "body.1",
                     "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.1', 'msg': 'JSON decode error'",
                     id="malformed-json"),
        pytest.param("/v1/chat/completions", {"model": MODEL}, 400, "Bad Request", "body.messages",
                     "1 validation error:\n  {'type': 'missing', 'loc': 'body.messages', 'msg': 'Field required', "
                     "'input': '<dict of 1 items>'", id="missing-messages"),
        pytest.param("/v1/completions", {"model": MODEL, "prompt": 5}, 400, "Bad Request", "body.prompt",
                     "4 validation errors:\n  {'type': 'string_type', 'loc': 'body.prompt'",
                     id="prompt-not-text-or-ids"),
        pytest.param("/v1/completions", {"model": MODEL}, 400, "BadRequestError", "prompt",
                     "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
                     id="missing-prompt"),
        pytest.param("/v1/completions", {"model": "gpt-4", "prompt": ""}, 400, "BadRequestError", "prompt",
                     "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
                     id="empty-prompt-before-model"),
        pytest.param("/v1/completions", {"model": "gpt-4", "prompt": "hi"}, 404, "NotFoundError", "model",
                     f"The model `gpt-4` does not exist. Valid aliases: {MODEL}.", id="unknown-model"),
        pytest.param("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 0}, 400, "BadRequestError",
                     "max_tokens", "max_tokens must be at least 1, got 0. " + VLLM_CHECK.format("max_tokens", 0),
                     id="max-tokens-zero"),
        pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                              "max_completion_tokens": -3}, 400, "BadRequestError", "max_tokens",
                     "max_tokens must be at least 1, got -3. " + VLLM_CHECK.format("max_tokens", -3),
                     id="max-completion-tokens-negative"),
        pytest.param("/v1/completions", {"model": MODEL, "prompt": "hi", "n": 0}, 400, "BadRequestError", None,
                     "n must be at least 1, got 0.", id="n-zero"),
        pytest.param("/v1/completions", {"prompt": "hi", "temperature": -1}, 400, "BadRequestError", "temperature",
                     "temperature must be non-negative, got -1.0. " + VLLM_CHECK.format("temperature", -1.0),
                     id="temperature-negative"),
        pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5},
                     400, "BadRequestError", "temperature", "temperature must be in [0, 2], got 2.5.",
                     id="temperature-above-two"),
        pytest.param("/v1/completions", {"prompt": "hi", "top_p": 0}, 400, "BadRequestError", "top_p",
                     "top_p must be in (0, 1], got 0.0. " + VLLM_CHECK.format("top_p", 0.0), id="top-p-zero"),
        pytest.param("/v1/completions", {"model": MODEL, "prompt": "hi", "stream_options": {"include_usage": True}},
                     400, "BadRequestError", "stream_options",
                     "Stream options can only be defined when `stream=True`. (parameter=stream_options)",
                     id="stream-options-without-stream"),
        pytest.param("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 200_000}, 400,
                     "BadRequestError", "max_tokens", "max_tokens=200000 cannot be greater than max_model_len=131072. "
                     "Please request fewer output tokens. " + VLLM_CHECK.format("max_tokens", 200000),
                     id="max-tokens-past-the-context"),
        pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                              "max_completion_tokens": 131073}, 400, "BadRequestError",
                     "max_completion_tokens",
                     "max_completion_tokens=131073 cannot be greater than max_model_len=131072.",
                     id="max-completion-tokens-past-the-context"),
    ],
)
def test_errors_as_vllm_answers_them(emu, path, body, status, err_type, param, needle):
    """Status, type, param and message as vLLM 0.33's handlers give them (read from its
    entrypoints/serve/exception_handling and the request models' validators)."""
    if isinstance(body, bytes):
        r = httpx.post(f"{emu.base}{path}", content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.post(f"{emu.base}{path}", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == (err_type, status, param)
    assert error["message"].startswith(needle), error["message"]


@pytest.mark.parametrize(
    "prompt, max_tokens, outcome",
    [
        pytest.param(list(range(1, 251)), 100, 6, id="prompt-plus-max-tokens-past-the-context-is-clipped"),
        pytest.param(list(range(1, 101)), None, 16, id="completion-null-max-tokens-is-16"),
        pytest.param(list(range(1, 257)), 4, "max_tokens must be at least 1, got 0. "
                     + VLLM_CHECK.format("max_tokens", 0), id="prompt-fills-the-context"),
        pytest.param(list(range(1, 301)), 4, "This model's maximum context length is 256 tokens. However, your "
                     "prompt contains 300 input tokens, which exceeds this limit even without any output tokens. "
                     "Please reduce the length of the input prompt. " + VLLM_CHECK.format("input_tokens", 300),
                     id="token-ids-past-the-context"),
        pytest.param("word " * 300, 4, "This model's maximum context length is 256 tokens. However, your prompt "
                     "contains at least 257 input tokens", id="text-past-the-context-counted-as-far-as-vllm-reads"),
    ],
)
def test_output_length_against_the_context_as_vllm_0_33(context_256, prompt, max_tokens, outcome):
    """vLLM 0.33 clips the output to what the context leaves (no error), and refuses a prompt
    that leaves nothing."""
    ask = dict(model=MODEL, prompt=prompt, max_tokens=max_tokens, extra_body={"ignore_eos": True})
    if isinstance(outcome, int):
        r = context_256.client.completions.create(**ask)
        assert r.usage.completion_tokens == outcome and r.choices[0].finish_reason == "length"
        return
    with pytest.raises(openai.BadRequestError) as info:
        context_256.client.completions.create(**ask)
    assert info.value.body["message"].startswith(outcome), info.value.body


def test_chat_without_max_tokens_gets_the_rest_of_the_context(context_256):
    r = context_256.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                   extra_body={"ignore_eos": True})
    assert r.usage.prompt_tokens + r.usage.completion_tokens == 256
    assert httpx.get(f"{context_256.base}/v1/models").json()["data"][0]["max_model_len"] == 256


@pytest.fixture(scope="module")
def context_256():
    with serving("--max-model-len", "256") as running:
        yield running


def test_api_key_required_when_set():
    with serving("--api-key", "sekret", "--served-model-name", "llama", "other") as emu:
        assert httpx.get(f"{emu.base}/v1/models").status_code == 401
        # vLLM checks the key in a middleware, before the body: a bad body without the key is 401.
        for body in ({"model": "llama"}, {"model": "llama", "prompt": "hi", "n": "x"}):
            r = httpx.post(f"{emu.base}/v1/completions", json=body)
            assert (r.status_code, r.json()) == (401, {"error": "Unauthorized"})
        ok = openai.OpenAI(base_url=f"{emu.base}/v1", api_key="sekret", max_retries=0)
        assert [m.id for m in ok.models.list().data] == ["llama", "other"]
        assert ok.completions.create(model="other", prompt="What is 9 times 9?", max_tokens=4).choices[0].text == " 81."


# --- probes ---------------------------------------------------------------------------------------

def test_probe_routes(emu):
    assert httpx.get(f"{emu.base}/health").status_code == 200
    assert httpx.get(f"{emu.base}/ping").status_code == 200
    assert httpx.get(f"{emu.base}/version").json() == {"version": "0.33.0"}
    assert httpx.get(f"{emu.base}/load").json() == {"server_load": 0}
    models = emu.client.models.list().data
    assert [m.id for m in models] == [MODEL] and models[0].owned_by == "vllm"


# --- faults ---------------------------------------------------------------------------------------

def test_admin_error_rate_one_fails_every_request_then_clears():
    with serving("--service", "ai-api-canary") as emu:
        r = httpx.post(f"{emu.base}/admin/faults", json={"spec": "error-rate=1.0"})
        assert r.status_code == 200 and [f["kind"] for f in r.json()["faults"]] == ["error-rate"]
        for _ in range(5):
            with pytest.raises(openai.InternalServerError):
                emu.client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
        bad = httpx.post(f"{emu.base}/v1/completions", json={"model": MODEL, "prompt": "hi"})
        assert bad.status_code == 500 and bad.json()["error"]["type"] == "InternalServerError"
        assert httpx.delete(f"{emu.base}/admin/faults").json()["faults"] == []
        assert emu.client.completions.create(model=MODEL, prompt="hi", max_tokens=2).usage.completion_tokens == 2
        samples = scrape(emu)
        assert samples[("http_requests_total", frozenset({("service", "ai-api-canary"), ("status", "500")}))] == 6
        assert samples[("http_requests_total", frozenset({("service", "ai-api-canary"), ("status", "200")}))] == 1


def test_fault_for_the_other_version_is_skipped():
    with serving("--service", "ai-api-stable", "--fault", "error-rate=1.0") as emu:
        assert httpx.get(f"{emu.base}/admin/faults").json()["faults"] == []
        r = httpx.post(f"{emu.base}/admin/faults", json={"spec": "stable:error-rate=1.0"}).json()
        assert r["skipped"] == [] and len(r["faults"]) == 1


def test_quality_fault_turns_answers_wrong():
    with serving("--fault", "quality=-1.0", "--judge-metrics", "--service", "ai-api-canary") as emu:
        for q in questions.QUESTIONS[:8]:
            text = emu.client.completions.create(model=MODEL, prompt=q.text, max_tokens=8).choices[0].text
            assert not questions.is_correct(q, text), (q, text)
        httpx.delete(f"{emu.base}/admin/faults")
        for q in questions.QUESTIONS[:8]:
            text = emu.client.completions.create(model=MODEL, prompt=q.text, max_tokens=8).choices[0].text
            assert questions.is_correct(q, text), (q, text)
        emu.client.completions.create(model=MODEL, prompt="Not a question", max_tokens=8)  # not judged
        samples = scrape(emu)
    service = frozenset({("service", "ai-api-canary")})
    assert samples[("llm_judge_quality_score_count", service)] == 16
    assert samples[("llm_judge_quality_score_sum", service)] == 8


def test_partial_quality_fault_is_about_its_share():
    with serving("--fault", "quality=-0.5", "--seed", "3") as emu:
        right = sum(
            questions.is_correct(q, emu.client.completions.create(model=MODEL, prompt=q.text, max_tokens=8)
                                 .choices[0].text)
            for q in questions.QUESTIONS)
    assert 0.2 * len(questions.QUESTIONS) <= right <= 0.8 * len(questions.QUESTIONS)


def test_bad_fault_spec_is_400():
    with serving() as emu:
        r = httpx.post(f"{emu.base}/admin/faults", json={"spec": "latency=fast"})
        message = r.json()["error"]["message"]
        assert r.status_code == 400 and message.startswith("POST /admin/faults 'latency=fast'")
        assert "expected a number for latency" in message


@pytest.mark.slow
def test_crash_loop_health_503_and_requests_fail_while_down():
    # With seed 16 the first crash comes 1.5 s in (the draw is seeded); downtime is 2.5 s.
    with serving("--fault", "crash-loop=10s", "--seed", "16") as emu:
        deadline = time.monotonic() + 20
        while httpx.get(f"{emu.base}/health").status_code == 200:
            assert time.monotonic() < deadline, "no crash within 20 s, though the seeded first one is due at 1.5 s"
            time.sleep(0.05)
        r = httpx.post(f"{emu.base}/v1/completions", json={"model": MODEL, "prompt": "hi"})
        assert r.status_code == 503
        assert emu.server.runner.crashes >= 1


@pytest.mark.slow
def test_latency_fault_stretches_the_stream():
    """latency=4x delivers each token at 4x its delay since arrival. Measured from the first
    streamed token to the last, so the fixed cost of a request (connection, client) does not
    dilute the ratio."""
    def span(emu) -> float:
        times = []
        stream = emu.client.completions.create(model=MODEL, prompt="Describe a long road", max_tokens=120,
                                               stream=True, extra_body={"ignore_eos": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                times.append(time.monotonic())
        return times[-1] - times[0]

    with serving() as emu:
        plain = span(emu)
        httpx.post(f"{emu.base}/admin/faults", json={"spec": "latency=4x"})
        slow = span(emu)
    assert slow > 2.5 * plain, (slow, plain)


def test_kv_leak_fault_takes_blocks_and_delete_returns_them():
    with serving("--fault", "kv-leak=1.0") as emu:  # all blocks per hour: ~8 blocks a second here
        total_free = emu.engine.num_gpu_blocks - 1
        time.sleep(1.0)
        leaked = len(emu.server.runner.leaked_blocks)
        assert leaked > 0 and emu.engine.kv.num_free_blocks == total_free - leaked
        httpx.delete(f"{emu.base}/admin/faults")
        assert emu.engine.kv.num_free_blocks == total_free


# --- aborts free KV blocks -------------------------------------------------------------------------

def test_aborted_streams_free_their_kv_blocks(emu):
    engine = emu.engine
    total_free = engine.num_gpu_blocks - 1  # the null block is never free
    emu.wait_idle()
    aborted_before = engine.stats.request_success_total["abort"]
    streams = []
    for i in range(8):
        cm = httpx.stream("POST", f"{emu.base}/v1/completions", json={
            "model": MODEL, "prompt": f"Story number {i} " * 200, "max_tokens": 2000, "stream": True,
            "ignore_eos": True})
        r = cm.__enter__()
        lines = r.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
        streams.append(cm)
    assert engine.kv.num_free_blocks < total_free  # they hold blocks now
    for cm in streams:
        cm.__exit__(None, None, None)
    # A client that gives up on a request that is not streamed aborts it too.
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{emu.base}/v1/completions", json={"model": MODEL, "prompt": "Impatient " * 300,
                                                       "max_tokens": 2000, "ignore_eos": True}, timeout=0.5)
    emu.wait_idle()
    assert engine.stats.request_success_total["abort"] - aborted_before == 9
    assert engine.kv.num_free_blocks == total_free
    assert engine.stats.num_requests_running == 0


# --- metrics ----------------------------------------------------------------------------------------

def scrape(emu) -> dict[tuple[str, frozenset], float]:
    """``/metrics`` parsed: (sample name, its labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{emu.base}/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_tokenize_and_detokenize_as_vllm_serves_them(emu):
    text = "What is the capital of France?"
    r = httpx.post(f"{emu.base}/tokenize", json={"model": MODEL, "prompt": text})
    body = r.json()
    ids = Tokenizer().encode(text)
    assert r.status_code == 200 and set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["tokens"][1:] == ids and body["count"] == len(ids) + 1  # add_special_tokens: BOS
    assert body["max_model_len"] == 131072 and body["token_strs"] is None
    plain = httpx.post(f"{emu.base}/tokenize", json={"prompt": text, "add_special_tokens": False,
                                                      "return_token_strs": True}).json()
    assert plain["tokens"] == ids and plain["token_strs"][:2] == ["What", "is"]
    chat = httpx.post(f"{emu.base}/tokenize", json={"messages": [{"role": "user", "content": text}]}).json()
    usage = emu.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                               max_tokens=2).usage
    assert chat["count"] == usage.prompt_tokens  # the same template the chat route uses
    back = httpx.post(f"{emu.base}/detokenize", json={"model": MODEL, "tokens": ids}).json()
    assert back == {"prompt": text}
    assert httpx.post(f"{emu.base}/tokenize", json={"model": "gpt-4", "prompt": "x"}).status_code == 404
    assert httpx.post(f"{emu.base}/detokenize", json={"tokens": [-1]}).status_code == 400


def test_price_fault_raises_cost_not_tokens_or_latency():
    ask = {"model": MODEL, "prompt": "Write about caches", "max_tokens": 6, "ignore_eos": True}
    costs = []
    for flags in ((), ("--fault", "price=3x")):
        with serving("--service", "ai-api-canary", *flags) as emu:
            r = httpx.post(f"{emu.base}/v1/completions", json=ask).json()
            assert r["usage"]["completion_tokens"] == 6
            costs.append(scrape(emu)[("llm_request_cost_dollars_total", frozenset({("service", "ai-api-canary")}))])
    assert costs[1] == pytest.approx(3 * costs[0])


def test_lag_histogram_counts_every_streamed_token(emu):
    before = scrape(emu).get(("servelab:emulator_lag_seconds_count", frozenset()), 0.0)
    stream = emu.client.completions.create(model=MODEL, prompt="Write about GPUs", max_tokens=12, stream=True,
                                           extra_body={"ignore_eos": True})
    assert sum(1 for c in stream if c.choices) == 12
    samples = scrape(emu)
    assert samples[("servelab:emulator_lag_seconds_count", frozenset())] == before + 12
    assert samples[("servelab:emulator_lag_seconds_bucket", frozenset({("le", "+Inf")}))] == before + 12


def test_metrics_carry_vllm_and_http_series(emu):
    emu.client.completions.create(model=MODEL, prompt="What is the capital of Peru?", max_tokens=4)
    samples = scrape(emu)
    vllm = {("model_name", MODEL), ("engine", "0")}
    for series in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                   "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:num_preemptions_total",
                   "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
        assert (series, frozenset(vllm)) in samples, series
    for hist in ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
                 "request_queue_time_seconds", "request_time_per_output_token_seconds", "iteration_tokens_total",
                 "request_prompt_tokens", "request_generation_tokens", "request_prefill_time_seconds",
                 "request_decode_time_seconds", "request_inference_time_seconds"):
        assert samples[(f"vllm:{hist}_count", frozenset(vllm))] >= 1, hist
    # vLLM's buckets, up to TTFT's 2560 s.
    assert ("vllm:time_to_first_token_seconds_bucket", frozenset(vllm | {("le", "2560.0")})) in samples
    assert ("vllm:request_success_total", frozenset(vllm | {("finished_reason", "stop")})) in samples
    http = {("service", "ai-api-canary")}
    assert samples[("http_requests_total", frozenset(http | {("status", "200")}))] >= 1
    assert ("http_request_duration_seconds_bucket", frozenset(http | {("le", "0.5")})) in samples
    assert ("llm_request_cost_dollars_total", frozenset(http)) in samples
    assert samples[("servelab:emulator_max_lag_seconds", frozenset(vllm))] >= 0
    assert not any(name.startswith("llm_judge") for name, _ in samples)  # the judge job's, by default
    # Counters agree with the engine's own; the prompt tokens are counted when a request's first
    # token comes out (as vLLM 0.33), with the prompt tokens by source, not at admission.
    assert samples[("vllm:generation_tokens_total", frozenset(vllm))] == emu.engine.stats.generation_tokens_total
    by_source = sum(samples[("vllm:prompt_tokens_by_source_total", frozenset(vllm | {("source", src)}))]
                    for src in ("local_compute", "local_cache_hit", "external_kv_transfer"))
    assert samples[("vllm:prompt_tokens_total", frozenset(vllm))] == by_source > 0


def test_prompt_tokens_are_counted_when_the_first_token_comes_out():
    """vLLM 0.33 counts a prompt in vllm:prompt_tokens_total from the output that carries its
    first token (IterationStats.update_from_output, while the request is prefilling), not when
    its scheduler admits it. A 2,048-token prompt prefilled in 512-token chunks on a GPU slowed
    20 times takes about a second, and a scrape in that second does not count it yet."""
    from concurrent.futures import ThreadPoolExecutor

    vllm = frozenset({("model_name", MODEL), ("engine", "0")})
    with serving("--max-num-batched-tokens", "512", "--fault", "slow-gpu=20x") as emu:
        assert scrape(emu)[("vllm:prompt_tokens_total", vllm)] == 0
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(httpx.post, f"{emu.base}/v1/completions", timeout=60, json={
                "model": MODEL, "prompt": list(range(1000, 3048)), "max_tokens": 2, "ignore_eos": True})
            deadline = time.monotonic() + 10
            while emu.engine.stats.prompt_tokens_total == 0:  # the engine's own count, at admission
                assert time.monotonic() < deadline
                time.sleep(0.005)
            during = scrape(emu)
            scraped_s = emu.server.runner.now_s()
            assert answer.result().json()["usage"]["prompt_tokens"] == 2048
        request = emu.engine.finished[-1]
        assert request.first_scheduled_s < scraped_s < request.first_token_s  # the scrape came during the prefill
        assert during[("vllm:prompt_tokens_total", vllm)] == 0
        assert scrape(emu)[("vllm:prompt_tokens_total", vllm)] == 2048


def _cache_config_fields() -> list[str]:
    """vLLM 0.33's CacheConfig fields, in order, read from its source in .venv-vllm (``ast``; the
    import needs torch): ``metrics_info()`` is the instance's ``__dict__``, these fields."""
    import ast
    from pathlib import Path

    from tests.conftest import require

    path = Path(__file__).resolve().parents[1] / ".venv-vllm/lib/python3.11/site-packages/vllm/config/cache.py"
    require(path.is_file(), "the vLLM reference venv (.venv-vllm)")
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CacheConfig")
    return [n.target.id for n in cls.body
            if isinstance(n, ast.AnnAssign) and "ClassVar" not in ast.unparse(n.annotation)]


def test_cache_config_info_and_admission_rejections_as_vllm_exports_them(emu):
    samples = scrape(emu)
    (labels, value), = [(dict(k), v) for (name, k), v in samples.items() if name == "vllm:cache_config_info"]
    assert value == 1.0
    fields = _cache_config_fields()
    assert len(fields) == 37 and set(labels) == set(fields) | {"engine"}  # every field, then engine
    engine = emu.engine
    assert (labels["engine"], labels["block_size"], labels["user_specified_block_size"]) == ("0", "16", "False")
    assert (labels["gpu_memory_utilization"], labels["cache_dtype"],
            labels["enable_prefix_caching"]) == ("0.92", "auto", "True")
    assert labels["num_gpu_blocks"] == str(engine.num_gpu_blocks) == "27879"
    assert labels["kv_cache_size_tokens"] == "446064"  # the start-up log's "GPU KV cache size: 446,064 tokens"
    assert float(labels["kv_cache_max_concurrency"]) == pytest.approx(3.40, abs=0.005)  # its "3.40x"
    assert (labels["kv_cache_layout"], labels["hash_block_size"],
            labels["_block_size_resolved"]) == ("None", "None", "True")
    # vLLM labels both reasons when it starts; the emulator takes no queue limit, so they stay 0.
    rejections = {dict(k)["reason"]: v for (name, k), v in samples.items() if name == "vllm:admission_rejections_total"}
    assert rejections == {"max_num_queued_reqs": 0.0, "max_num_queued_tokens": 0.0}
    assert ("vllm:admission_rejections_total",
            frozenset({("model_name", MODEL), ("reason", "max_num_queued_reqs")})) in samples
    with serving("--block-size", "32", "--no-enable-prefix-caching", "--gpu-memory-utilization", "0.8") as other:
        (labels,) = [dict(k) for (name, k), _ in scrape(other).items() if name == "vllm:cache_config_info"]
        assert (labels["block_size"], labels["user_specified_block_size"], labels["effective_attention_block_size"],
                labels["enable_prefix_caching"], labels["gpu_memory_utilization"]) == \
            ("32", "True", "32", "False", "0.8")
        assert labels["num_gpu_blocks"] == str(other.engine.num_gpu_blocks)


# --- load: TTFT under 64 concurrent streams, against the simulator ---------------------------------

@pytest.mark.slow
def test_ttft_under_64_streams_follows_the_simulator():
    """64 streams at once, each a 1,500-token prompt, on a simulated A100 (vLLM's default
    budget there is 2,048 tokens a step): about one prompt is admitted per step, so TTFT climbs
    with queue position, from a fraction of a second to several seconds.

    Each request's TTFT, from its arrival at the server to its first token at the client, is
    compared with ``run_engine``'s for the same workload: the same prompt ids, arriving at the
    times the server saw them. What differs is only the delivery path (engine step end ->
    SSE chunk -> client), which on a loaded two-core machine adds a few hundred milliseconds;
    the simulated times here run to seconds, so the shape is the simulator's."""
    from types import SimpleNamespace

    from sim.config import EngineConfig
    from sim.engine import run_engine

    prompts = [f"topic{i} " * 1500 for i in range(64)]
    with serving_on("a100-80gb") as emu:
        solo = _stream_ttfts(emu, ["alone " * 1500])[0]
        runs = _stream_ttfts(emu, prompts)
        by_id = {r.request_id: r for r in emu.engine.finished}
        engine_requests = [by_id[f"{request_id}-0"] for request_id, _, _ in runs]
        measured = np.array([first - emu.server.runner.wall_of(r.arrival_s)
                             for (_, _, first), r in zip(runs, engine_requests)])
        max_lag_s = emu.server.runner.max_lag_s
    arrivals = np.array([r.arrival_s for r in engine_requests])
    order = np.argsort(arrivals, kind="stable")
    ids = [list(engine_requests[i].prompt_token_ids) for i in order]
    workload = SimpleNamespace(arrival_s=arrivals[order] - arrivals.min(), output_len=np.full(64, 16), n=1,
                               prompt_token_ids=lambda i, vocab: ids[i])
    predicted = np.empty(64)
    predicted[order] = run_engine(EngineConfig(model=MODEL, gpu="a100-80gb"), workload, usage="serve").ttft_s
    client = np.array([first - sent for _, sent, first in runs])
    gap = measured - predicted
    print(f"\nclient TTFT: 1 stream {(solo[2] - solo[1]) * 1e3:.0f} ms; 64 streams median "
          f"{np.median(client) * 1e3:.0f} ms, max {client.max() * 1e3:.0f} ms (arrivals spread over "
          f"{np.ptp(arrivals) * 1e3:.0f} ms). Server-side TTFT vs run_engine: predicted median "
          f"{np.median(predicted) * 1e3:.0f} ms, max {predicted.max() * 1e3:.0f} ms; measured - predicted: "
          f"median {np.median(gap) * 1e3:.0f} ms, p90 {np.quantile(gap, 0.9) * 1e3:.0f} ms, max {gap.max() * 1e3:.0f} ms; "
          f"the simulation ran up to "
          f"{max_lag_s * 1e3:.0f} ms late")
    from scipy.stats import spearmanr

    assert client.max() > 10 * (solo[2] - solo[1])  # it rises under load
    assert predicted.max() > 10 * predicted.min()
    assert np.all(gap > -0.02)  # a token never leaves before the simulation made it
    # The order of first tokens is the simulator's, and the delay past its prediction is what
    # a loaded machine adds (measured here at load averages of 7 to 9 on two cores).
    assert spearmanr(measured, predicted).statistic > 0.8
    assert np.median(gap) < 0.5 + 0.1 * np.median(predicted)
    assert np.quantile(gap, 0.9) < 1.0 + 0.2 * predicted.max()


_TTFT_CLIENT = """
import asyncio, json, sys, time
import httpx, openai

base, model = sys.argv[1], sys.argv[2]
prompts = json.load(sys.stdin)

async def one(client, prompt):
    sent = time.monotonic()
    stream = await client.completions.create(model=model, prompt=prompt, max_tokens=16, stream=True,
                                             extra_body={"ignore_eos": True})
    first = request_id = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].text:
            first, request_id = time.monotonic(), chunk.id
    return request_id, sent, first

async def main():
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0,
                                http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=100)))
    try:
        await client.models.list()  # warm up: the client's lazy imports and first connection
        return await asyncio.gather(*(one(client, p) for p in prompts))
    finally:
        await client.close()

print(json.dumps(asyncio.run(main())))
"""


def _stream_ttfts(emu, prompts: list[str]) -> list[tuple[str, float, float]]:
    """(request id, when sent, when its first token arrived) per prompt, all streamed at once.

    The client runs in a subprocess, so that it does not share the server thread's GIL; Linux's
    monotonic clock is the same in both processes."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _TTFT_CLIENT, emu.base, MODEL], input=json.dumps(prompts),
                         capture_output=True, text=True, timeout=120, check=True)
    return [tuple(row) for row in json.loads(out.stdout)]


# --- the command itself -------------------------------------------------------------------------

@pytest.mark.slow
def test_servelab_serve_command_starts_logs_and_answers(tmp_path):
    """``python3 -m lab serve MODEL --gpu GPU --port P``, as a student runs it."""
    import subprocess
    import sys
    from pathlib import Path

    port = _free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lab", "serve", MODEL, "--gpu", GPU, "--port", str(port),
             "--disable-log-requests", "--fault", "canary:latency=1.0x"],
            cwd=Path(__file__).resolve().parents[1], stdout=log_file, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        assert client.completions.create(model=MODEL, prompt="What is 6 times 7?", max_tokens=4).choices[0].text == " 42."
        assert "vllm:generation_tokens_total" in httpx.get(f"{base}/metrics").text
        ask = {"model": MODEL, "prompt": "Write about caches", "max_tokens": 3, "stream": True}
        with httpx.Client(base_url=base) as one_connection:  # two streams on one kept-alive connection
            for _ in range(2):
                assert one_connection.post("/v1/completions", json=ask).status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert "--disable-log-requests has been removed from vLLM" in log and "--enable-log-requests" in log
    assert "Available KV cache memory:" in log
    assert "GPU KV cache size: " in log and "Maximum concurrency for 131,072 tokens per request" in log
    assert f"Starting vLLM API server 0 on http://127.0.0.1:{port}" in log
    assert "ServeLab step time: operator tables:" in log or "ServeLab step time: roofline fallback" in log
    # On stopping, what its clients saw: the tokens' lag, and their own turnaround.
    assert "lag behind the simulated timeline: p50" in log
    assert "over 1 request; `servelab bench serve --client-turnaround-ms" in log
    assert "Traceback" not in log


def test_client_turnaround_is_timed_per_kept_alive_connection(emu):
    """Two requests on one kept-alive connection give one turnaround (the time between them);
    a request on a fresh connection gives none."""
    name = ("servelab:emulator_client_turnaround_seconds_count", frozenset())
    total_name = ("servelab:emulator_client_turnaround_seconds_sum", frozenset())
    earlier = scrape(emu)  # the module's server: other tests' kept-alive clients count too
    before, sum_before = earlier.get(name, 0.0), earlier.get(total_name, 0.0)  # a scrape's own connection is closed
    ask = {"model": MODEL, "prompt": "Write about caches", "max_tokens": 3, "stream": True, "ignore_eos": True}
    with httpx.Client(base_url=emu.base) as one_connection:
        first = one_connection.post("/v1/completions", json=ask)
        assert first.status_code == 200 and "[DONE]" in first.text
        time.sleep(0.05)
        assert one_connection.post("/v1/completions", json=ask).status_code == 200
    samples = scrape(emu)
    assert samples[name] == before + 1
    gap = samples[total_name] - sum_before
    assert 0.05 <= gap < 1.0  # the sleep, plus the client's own time


def test_vllm_per_request_series_follow_the_requests():
    """vLLM 0.33's per-request series after a known set of requests, on a KV cache of 23 usable
    blocks (16 tokens each): a prompt repeated (a prefix-cache hit of its two full blocks, as
    vLLM caps a hit below the prompt's last token), ``n`` = 2, a question answered in two
    tokens under max_tokens 8, and two long requests that cannot both fit, so one is
    preempted. Token-id prompts, each starting with its own id, share no block by accident."""
    from concurrent.futures import ThreadPoolExecutor

    def ids(first: int, length: int) -> list[int]:
        return list(range(first, first + length))

    def complete(prompt, max_tokens: int, n: int = 1, ignore_eos: bool = True) -> dict:
        r = httpx.post(f"{emu.base}/v1/completions", timeout=60, json={
            "model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "n": n, "ignore_eos": ignore_eos})
        assert r.status_code == 200, r.text
        return r.json()["usage"]

    with serving("--num-gpu-blocks-override", "24", "--seed", "0") as emu:
        vllm = {("model_name", MODEL), ("engine", "0")}
        complete(ids(1000, 40), 5)
        complete(ids(1000, 40), 5)  # the same 40 tokens: blocks 1 and 2 (32 tokens) from the cache
        complete(ids(2000, 10), 3, n=2)  # no full block: no hit between the two samples
        question = complete("Q: What is the capital of France? A:", 8, ignore_eos=False)
        assert question["completion_tokens"] == 2  # " Paris."
        waiting = []

        def scrape_while_busy():
            while emu.server.runner.num_open_requests:
                s = scrape(emu)
                waiting.append((s[("vllm:num_requests_waiting", frozenset(vllm))],
                                s[("vllm:num_requests_waiting_by_reason", frozenset(vllm | {("reason", "capacity")}))],
                                s[("vllm:num_requests_waiting_by_reason", frozenset(vllm | {("reason", "deferred")}))]))
                time.sleep(0.05)

        with ThreadPoolExecutor(3) as pool:  # 2 x 15 blocks at their end: one is preempted
            long_runs = [pool.submit(complete, ids(3000 + 1000 * k, 32), 200) for k in range(2)]
            time.sleep(0.1)
            pool.submit(scrape_while_busy).result()
            assert [f.result()["completion_tokens"] for f in long_runs] == [200, 200]
        emu.wait_idle()
        s = scrape(emu)

    def hist(name: str) -> tuple[float, float]:
        return s[(f"vllm:{name}_count", frozenset(vllm))], s[(f"vllm:{name}_sum", frozenset(vllm))]

    def le(name: str, bound: str) -> float:
        return s[(f"vllm:{name}_bucket", frozenset(vllm | {("le", bound)}))]

    prompt_lens = [40, 40, 10, 10, question["prompt_tokens"], 32, 32]  # one per engine request
    assert s[("vllm:prompt_tokens_cached_total", frozenset(vllm))] == 32
    by_source = {src: s[("vllm:prompt_tokens_by_source_total", frozenset(vllm | {("source", src)}))]
                 for src in ("local_compute", "local_cache_hit", "external_kv_transfer")}
    assert by_source == {"local_compute": sum(prompt_lens) - 32, "local_cache_hit": 32, "external_kv_transfer": 0}
    assert sum(by_source.values()) == s[("vllm:prompt_tokens_total", frozenset(vllm))]
    assert hist("request_prefill_kv_computed_tokens") == (7, sum(prompt_lens) - 32)
    # max_tokens as the client asked, not the two tokens the question took.
    assert hist("request_params_max_tokens") == (7, 5 + 5 + 3 + 3 + 8 + 200 + 200)
    assert le("request_params_max_tokens", "5.0") == 4  # 5, 5, 3, 3
    # Once per prompt (vLLM's parent request): n, and the most tokens one of its samples made.
    assert hist("request_params_n") == (6, 1 + 1 + 2 + 1 + 1 + 1)
    assert (le("request_params_n", "1.0"), le("request_params_n", "2.0")) == (5, 6)
    assert hist("request_max_num_generation_tokens") == (6, 5 + 5 + 3 + 2 + 200 + 200)
    preemptions = s[("vllm:num_preemptions_total", frozenset(vllm))]
    assert preemptions >= 1
    assert hist("request_num_preemptions") == (7, preemptions)
    # Every scrape: all waiting requests wait for capacity; the simulator defers none.
    assert waiting and all(total == capacity and deferred == 0 for total, capacity, deferred in waiting)
    assert s[("vllm:num_requests_waiting_by_reason", frozenset(vllm | {("reason", "capacity")}))] == 0
