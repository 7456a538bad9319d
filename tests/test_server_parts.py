"""The emulator's parts without HTTP: fault specs, tokenizer, question set, output plans, flags."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from lab.server import questions
from lab.server.faults import FaultSet, applies, parse_fault
from lab.server.generation import plan_choice
from lab.server.tokenizer import Tokenizer, join_words
from sim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# --- fault specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, kind, value, target, start_s, end_s",
    [
        pytest.param("error-rate=0.02", "error-rate", 0.02, "canary", 0.0, None, id="plain"),
        pytest.param("stable:latency=3x", "latency", 3.0, "stable", 0.0, None, id="stable-target"),
        pytest.param("canary:slow-gpu=2@10m", "slow-gpu", 2.0, "canary", 600.0, None, id="start"),
        pytest.param("kv-leak=0.5@30m-1h", "kv-leak", 0.5, "canary", 1800.0, 3600.0, id="window"),
        pytest.param("crash-loop=10m", "crash-loop", 600.0, "canary", 0.0, None, id="crash-duration"),
        pytest.param("cost=2.5x@90s-1h30m", "cost", 2.5, "canary", 90.0, 5400.0, id="compound-duration"),
        pytest.param("quality=-0.15", "quality", -0.15, "canary", 0.0, None, id="negative-value"),
        pytest.param("quality=-0.15@5m", "quality", -0.15, "canary", 300.0, None, id="negative-with-start"),
    ],
)
def test_parse_fault(spec, kind, value, target, start_s, end_s):
    """The rollout simulator's parser, through the emulator's wrapper."""
    f = parse_fault(spec)
    assert (f.kind, f.value, f.target, f.start_s, f.end_s) == (kind, value, target, start_s, end_s)


@pytest.mark.parametrize(
    "where, spec, message",
    [
        pytest.param("--fault", "bogus=1", "unknown kind 'bogus'", id="kind"),
        pytest.param("--fault", "latency=fast", "expected a number for latency", id="multiplier"),
        pytest.param("POST /admin/faults", "latency=2x@soon", "START must be a duration", id="start-admin"),
        pytest.param("--fault", "crash-loop=2s", "at least 10s", id="crash-too-often"),
    ],
)
def test_parse_fault_errors_name_the_flag_or_route(where, spec, message):
    with pytest.raises(ConfigError) as info:
        parse_fault(spec, where=where)
    text = str(info.value)
    assert message in text and text.startswith(f"{where} {spec!r}")


@given(
    target=st.sampled_from(["", "canary:", "stable:"]),
    kind_value=st.sampled_from([("error-rate", "0.25"), ("latency", "3x"), ("slow-gpu", "1.5x"), ("kv-leak", "0.5"),
                                ("crash-loop", "10m"), ("cost", "2x"), ("quality", "-0.15")]),
    start_s=st.integers(0, 7200),
    length_s=st.one_of(st.none(), st.integers(1, 7200)),
)
def test_parse_fault_reads_what_was_written(target, kind_value, start_s, length_s):
    kind, value = kind_value
    window = "" if start_s == 0 and length_s is None else f"@{start_s}s" + ("" if length_s is None else f"-{start_s + length_s}s")
    f = parse_fault(f"{target}{kind}={value}{window}")
    assert f.kind == kind and f.target == (target.rstrip(":") or "canary")
    assert f.start_s == start_s and f.end_s == (None if length_s is None else start_s + length_s)
    assert f.active(start_s) and not f.active(start_s - 0.5)


@pytest.mark.parametrize(
    "service, target, applies_",
    [
        pytest.param("ai-api-canary", "canary", True, id="canary-canary"),
        pytest.param("ai-api-canary", "stable", False, id="canary-stable"),
        pytest.param("ai-api-stable", "stable", True, id="stable-stable"),
        pytest.param("ai-api", "stable", True, id="neutral-takes-all"),
    ],
)
def test_fault_target_against_service(service, target, applies_):
    assert applies(parse_fault(f"{target}:latency=2x"), service) is applies_


def test_fault_set_combines_and_respects_windows():
    fs = FaultSet("ai-api")
    for spec in ("latency=2x", "latency=3x@10s-20s", "error-rate=0.5", "error-rate=0.5", "quality=-0.2"):
        fs.add(parse_fault(spec))
    assert fs.product("latency", 5) == 2 and fs.product("latency", 15) == 6 and fs.product("latency", 20) == 2
    assert fs.error_rate(0) == pytest.approx(0.75)  # two independent 50 % failures
    assert fs.wrong_share(0) == pytest.approx(0.2)
    assert fs.product("slow-gpu", 0) == 1.0


# --- tokenizer ---------------------------------------------------------------------------------

words = st.text(alphabet=st.characters(categories=("Ll", "Lu", "Nd")), min_size=1, max_size=12)


@given(st.lists(words, min_size=1, max_size=40))
def test_tokenizer_round_trips_words(ws):
    tok = Tokenizer()
    text = " ".join(ws)
    ids = tok.encode(text)
    assert len(ids) == len(ws)
    assert tok.decode(ids) == text


@given(st.text(alphabet=st.sampled_from("ab_1é٣ .,!\t\n\u00a0\u2003-"), max_size=300))
def test_last_word_reads_what_the_pattern_finds(text):
    import re

    from lab.server.tokenizer import last_word

    def by_pattern(s: str) -> str | None:  # the definition: the pattern, searched near the end
        m = re.compile(r"(\w+|[^\w\s])\s*\Z").search(s, max(0, len(s.rstrip()) - 256))
        return m.group(1) if m else None

    for s in (text, "x" * 300 + text, text + "y" * 300):
        assert last_word(s) == by_pattern(s)


@pytest.mark.parametrize("prompt", [list(range(1000, 1512)), [], ["1", 2], [1, "2"], [True, 2], [1.0, 2],
                                    [[1, 2], [3]], "text", ["a", "b"], 5, [{}], [2**70], [-1, 5], [[3, -2]]])
def test_completion_prompt_validates_as_the_plain_union(prompt):
    from pydantic import BaseModel, ConfigDict, ValidationError

    from lab.server.protocol import CompletionRequest, TokenId

    # The field without the token-id fast path. (None and "" never reach the field: vLLM's
    # check before the fields refuses them, tests/test_server.py::test_errors_as_vllm_answers_them.)
    class Plain(BaseModel):
        model_config = ConfigDict(extra="allow")
        prompt: str | list[str] | list[TokenId] | list[list[TokenId]] | None = None

    def outcome(model):
        try:
            return model.model_validate({"prompt": prompt}).prompt
        except ValidationError as exc:
            return [(e["loc"], e["type"], e["msg"]) for e in exc.errors()]

    assert outcome(CompletionRequest) == outcome(Plain)


def test_tokenizer_is_deterministic_across_instances_and_punctuation_attaches():
    text = "What is the capital of France? It is Paris, of course."
    a, b = Tokenizer(), Tokenizer()
    assert a.encode(text) == b.encode(text)
    assert a.decode(a.encode(text)) == text
    assert join_words(["Paris", "."]) == "Paris."


# --- questions and plans ------------------------------------------------------------------------

def test_question_set_is_answerable_and_keys_are_unique():
    assert 20 <= len(questions.QUESTIONS) <= 40
    assert len({q.key for q in questions.QUESTIONS}) == len(questions.QUESTIONS)
    for q in questions.QUESTIONS:
        assert questions.find_question(f"Answer briefly.\n{q.text}") == q
        assert questions.is_correct(q, questions.answer_text(q))
        for pick in range(5):
            assert not questions.is_correct(q, questions.wrong_answer_text(q, pick))


@pytest.mark.parametrize(
    "prompt, max_tokens, kwargs, n_tokens, finish",
    [
        pytest.param("What is the capital of Italy?", 16, {}, 2, "stop", id="answer-stops"),
        pytest.param("What is the capital of Italy?", 1, {}, 1, "length", id="answer-cut"),
        pytest.param("What is the capital of Italy?", 16, {"ignore_eos": True}, 16, "length", id="ignore-eos"),
        pytest.param("What is the capital of Italy?", 16, {"cost_multiplier": 3.0}, 6, "stop", id="cost-fault"),
        pytest.param("Say something", 3, {}, 3, "length", id="filler-cut"),
    ],
)
def test_plan_choice(prompt, max_tokens, kwargs, n_tokens, finish):
    plan = plan_choice(tokenizer=Tokenizer(), prompt=prompt, index=0, max_tokens=max_tokens, seed=0, **kwargs)
    assert plan.max_tokens == len(plan.words) == n_tokens and plan.finish_reason == finish


def test_plans_are_deterministic_per_seed_and_differ_across_seeds():
    make = lambda seed, index=0: plan_choice(tokenizer=Tokenizer(), prompt="Say something", index=index,
                                             max_tokens=500, seed=seed)
    assert make(0) == make(0)
    assert make(0).words != make(1).words
    assert make(0).words != make(0, index=1).words


# --- flags --------------------------------------------------------------------------------------

def _parse(*argv):
    from lab.cli import serve

    parser = argparse.ArgumentParser()
    serve.add_cli_args(parser)
    return parser.parse_args(list(argv))


def test_vllm_flag_defaults():
    a = _parse("meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb")
    assert (a.tensor_parallel_size, a.gpu_memory_utilization, a.block_size, a.port, a.seed) == (1, 0.92, 16, 8000, 0)
    assert a.enable_prefix_caching is True and a.max_num_seqs is None and a.max_num_batched_tokens is None
    b = _parse("m", "--gpu", "g", "--no-enable-prefix-caching", "-tp", "2", "--max-model-len", "4096")
    assert b.enable_prefix_caching is False and b.tensor_parallel_size == 2 and b.max_model_len == 4096
    assert _parse("--model", "m", "--gpu", "g").model_flag == "m"


def test_host_defaults_to_loopback_or_the_environment(monkeypatch):
    monkeypatch.delenv("SERVELAB_HOST", raising=False)
    assert _parse("m", "--gpu", "g").host == "127.0.0.1"
    monkeypatch.setenv("SERVELAB_HOST", "0.0.0.0")
    assert _parse("m", "--gpu", "g").host == "0.0.0.0"
    assert _parse("m", "--gpu", "g", "--host", "::1").host == "::1"


def test_removed_flag_warns_with_its_replacement(caplog):
    from lab.cli.serve import build_server

    args = _parse("meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb", "--disable-log-requests")
    with caplog.at_level(logging.WARNING, logger="servelab"):
        logging.getLogger("servelab").propagate = True
        build_server(args)
    assert any("--disable-log-requests" in r.message and "--enable-log-requests" in r.message
               for r in caplog.records)


@pytest.mark.parametrize(
    "argv, needle",
    [
        pytest.param(["--no-such-flag"], "unrecognized arguments: --no-such-flag", id="unknown-flag"),
        pytest.param(["--fault", "latency=fast"], "--fault 'latency=fast'", id="bad-fault"),
        pytest.param(["--pipeline-parallel-size", "2"], "--pipeline-parallel-size: only 1 is simulated", id="pp"),
        pytest.param(["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization", id="bad-value"),
        pytest.param(["--tokenizer", "/no/such/dir"], "--tokenizer /no/such/dir: no tokenizer.json there", id="tokenizer"),
        pytest.param(["--lag-threshold-ms", "0"], "--lag-threshold-ms: expected a positive number", id="lag-threshold"),
    ],
)
def test_cli_errors_exit_2_without_traceback(argv, needle, capsys):
    from lab.cli.main import main

    try:
        code = main(["serve", "meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb", "--port", "1", *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


# --- delivery: chunk templates, lag, the driver -----------------------------------------------------


@pytest.mark.parametrize("chat", [False, True], ids=["completion", "chat"])
def test_token_chunk_template_gives_the_bytes_json_dumps_would(chat):
    from types import SimpleNamespace

    from lab.server import protocol as P
    from lab.server.delivery import ResponseBuilder
    from lab.server.generation import ChoicePlan

    from lab.server.tokenizer import piece

    words = ("Quote", '"', "\\", "é", "tab\t", "end")
    pieces = tuple(piece(w, words[k - 1] if k else "Say") for k, w in enumerate(words))
    plans = [ChoicePlan(words=words, max_tokens=len(words), finish_reason="length", pieces=pieces)] * 2
    prompts = [SimpleNamespace(last_word="Say")]
    a = ResponseBuilder(plans, prompts, 2, chat, "cmpl-x", 'm"odel', 7)
    b = ResponseBuilder(plans, prompts, 2, chat, "cmpl-x", 'm"odel', 7)
    b.created = a.created
    for index in (0, 1):
        for k in range(len(words)):
            finish = "length" if k == len(words) - 1 else None
            assert a.token_chunk(index, k) == P.sse(b.chunk(index, b.piece(index, k), finish))


@given(st.lists(st.floats(min_value=0.0, max_value=200.0, allow_nan=False), max_size=60))
def test_observe_each_matches_one_observe_per_value(values):
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    from lab.server.metrics import observe_each
    from sim.metrics import VLLM_BUCKETS

    buckets = list(VLLM_BUCKETS["inter_token_latency_seconds"])
    values = values + [buckets[0], buckets[3], 0.0]  # values on a bound land in that bucket
    one, batched = CollectorRegistry(), CollectorRegistry()
    h_one = Histogram("itl", "d", ["m"], buckets=buckets, registry=one).labels(m="x")
    h_batched = Histogram("itl", "d", ["m"], buckets=buckets, registry=batched).labels(m="x")
    h_one.observe(0.25)  # a sum that is not zero already
    h_batched.observe(0.25)
    for v in values:
        h_one.observe(v)
    observe_each(h_batched, values)
    def samples(registry):  # every line but the creation time
        return [line for line in generate_latest(registry).splitlines() if b"_created" not in line]

    assert samples(batched) == samples(one)


def test_vllm_series_exist_from_the_start_and_all_series_accumulate():
    from types import SimpleNamespace

    from lab.server.metrics import ServerMetrics

    m = ServerMetrics(model_name="m", service="svc", max_model_len=4096, stats_source=lambda: None)
    ttft = b'vllm:time_to_first_token_seconds_count{engine="0",model_name="m"}'
    start = m.exposition().splitlines()
    assert ttft + b" 0.0" in start  # as vLLM 0.33: each engine's series exists from the start
    assert not any(line.startswith(b"http_requests_total") and b'"404"' in line for line in start)
    request = SimpleNamespace(num_output_tokens=3, num_prompt_tokens=5, arrival_s=0.0,
                              first_scheduled_s=0.1, first_token_s=0.2, num_preemptions=0, num_cached_tokens=0)
    for family in ("request_num_preemptions", "request_prefill_kv_computed_tokens", "request_params_n",
                   "request_params_max_tokens", "request_max_num_generation_tokens"):
        assert b'vllm:%s_count{engine="0",model_name="m"} 0.0' % family.encode() in start, family
    assert b'vllm:prompt_tokens_by_source_total{engine="0",model_name="m",source="local_cache_hit"} 0.0' in start
    assert b'vllm:prompt_tokens_cached_total{engine="0",model_name="m"} 0.0' in start
    for n in (1, 2):
        m.observe_finished(request, 0.5, [0.2, 0.3, 0.5])
        m.observe_http(404, 0.01)
        lines = m.exposition().splitlines()
        assert ttft + b" %d.0" % n in lines
        assert b'http_requests_total{service="svc",status="404"} %d.0' % n in lines
        assert b'vllm:inter_token_latency_seconds_count{engine="0",model_name="m"} %d.0' % (2 * n) in lines


def test_lag_monitor_buckets_quantile_and_one_warning_per_window(caplog):
    from lab.server.lag import LAG_BUCKETS_S, WARN_EVERY_S, LagMonitor

    m = LagMonitor(threshold_s=0.010)
    with caplog.at_level(logging.WARNING, logger="servelab.serve"):
        for i in range(100):
            m.observe(0.0004 if i < 98 else 0.050, now_s=1.0)  # two late tokens, in one window
        m.observe(-0.001, now_s=1.0)  # early counts as on time
        m.observe(0.020, now_s=1.0 + WARN_EVERY_S)  # the next window: a second warning
    warnings = [r.getMessage() for r in caplog.records if "behind its simulated timeline" in r.getMessage()]
    assert len(warnings) == 2 and "50.0 ms late (threshold 10.0 ms)" in warnings[0]
    assert m.count == 101 + 1 and m.counts[0] == 99 and m.max_s == 0.050
    assert m.quantile(0.5) <= LAG_BUCKETS_S[0] and 0.03 < m.quantile(0.995) <= 0.05
    family = m.metric_family()
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets["0.0005"] == 99 and buckets["+Inf"] == 102


def test_a_burst_of_late_tokens_is_reported_when_its_window_closes_even_if_on_time_after(caplog):
    """The first late token warns at once; the burst after it is reported at the first token
    WARN_EVERY_S later, late or not (it waited for another late token, which may never come)."""
    from lab.server.lag import WARN_EVERY_S, LagMonitor

    m = LagMonitor(threshold_s=0.010)
    with caplog.at_level(logging.WARNING, logger="servelab.serve"):
        m.observe(0.001, now_s=0.0)
        for i in range(50):
            m.observe(0.030, now_s=1.0 + 0.1 * i)
        m.observe(0.001, now_s=1.0 + WARN_EVERY_S)  # on time, and the burst's window is due
        m.observe(0.001, now_s=1.0 + 3 * WARN_EVERY_S)  # nothing late since: nothing to say
    warnings = [r.getMessage() for r in caplog.records if "behind its simulated timeline" in r.getMessage()]
    assert len(warnings) == 2
    assert "1 of 2 tokens since the last report were late" in warnings[0]
    assert "30.0 ms late" in warnings[1] and "49 of 50 tokens since the last report were late" in warnings[1]
    assert m.late_count == 50


def test_driver_sleeps_between_events_instead_of_spinning():
    """SimPy 4.1 leaves run()'s until event in the queue; the driver must not take it for a due
    event. Over a stream of 32 tokens and idle time after it, the driver wakes about once per
    engine step (and every TICK_S when idle), not thousands of times."""
    import asyncio

    from lab.cli.serve import add_cli_args, build_server

    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    server = build_server(parser.parse_args(["meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb"]))
    runner = server.runner
    wakeups = 0
    advance = runner.advance

    def counted() -> None:
        nonlocal wakeups
        wakeups += 1
        advance()

    runner.advance = counted

    async def go() -> tuple[int, list]:
        await runner.start()
        handle = runner.submit([(list(range(64)), 32)], "r")
        events = []
        while not any(e[0] == "finish" for e in events):
            events += await handle.take()
        await asyncio.sleep(0.5)
        await runner.stop()
        return runner.engine.stats.num_steps, events

    steps, events = asyncio.run(go())
    assert [e[0] for e in events] == ["token"] * 32 + ["finish"]
    assert all(a[3] <= b[3] for a, b in zip(events, events[1:]))  # released in due order
    assert wakeups <= 2 * steps + 10, (wakeups, steps)


def test_requests_reach_the_engine_when_one_api_server_hands_them_over():
    """A request reaches the engine after the simulated API server's HTTP time plus its
    tokenization time a prompt token, first come first served (as `servelab bench serve`'s
    front end, sim/frontend.py); one aborted meanwhile never reaches it; --no-frontend hands
    it over at once. Simulated time follows a hand-driven clock here."""
    from lab.cli.serve import add_cli_args, build_server

    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    server = build_server(parser.parse_args(["meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb"]))
    runner, fe = server.runner, server.frontend
    assert fe.http_s > 0 and fe.tokenize_s_per_token > 0
    now = [0.0]
    runner.clock, runner.t0 = (lambda: now[0]), 0.0
    seen = {}

    class Arrivals:
        def on_step(self, record):
            for r in runner.engine.scheduler.requests.values():
                seen.setdefault(r.request_id, r.arrival_s)

    runner.engine.listeners.append(Arrivals())
    a = runner.submit([(list(range(500)), 4)], "a")
    b = runner.submit([(list(range(100)), 4)], "b")
    c = runner.submit([(list(range(100)), 4)], "c")
    runner.abort(c)
    assert runner.engine.scheduler.requests == {}  # nothing reached the engine yet
    now[0] = 1.0
    runner.advance()
    first = fe.http_s + 500 * fe.tokenize_s_per_token
    assert seen["a-0"] == pytest.approx(first)
    assert seen["b-0"] == pytest.approx(first + fe.http_s + 100 * fe.tokenize_s_per_token)
    assert "c-0" not in seen and a.arrival_s == b.arrival_s == 0.0
    # Counted from when the server began to read the request (its own parsing is that work):
    # received 1 ms ago, it is handed over after the rest; received long ago, at once.
    d = runner.submit([(list(range(100)), 4)], "d", received_s=now[0] - 0.001)
    assert d.arrival_s == pytest.approx(now[0] - 0.001)
    now[0] += 0.5
    runner.advance()
    assert seen["d-0"] == pytest.approx(1.0 - 0.001 + fe.http_s + 100 * fe.tokenize_s_per_token)
    runner.submit([(list(range(100)), 4)], "e", received_s=now[0] - 0.4)
    assert "e-0" in runner.engine.scheduler.requests  # its simulated intake ended before now
    quiet = build_server(parser.parse_args(["meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb", "--no-frontend"])).runner
    quiet.submit([(list(range(500)), 4)], "a")
    assert list(quiet.engine.scheduler.requests) == ["a-0"]
    with pytest.raises(ConfigError, match="prompt is empty"):  # refused at once, nothing queued
        runner.submit([([], 4)], "d")
    assert "d-0" not in runner._handles


def test_a_long_running_server_keeps_neither_every_finished_request_nor_every_step():
    """The engine keeps finished requests, a log of every step and every step's end time for
    offline results; the server's tick drops them (from 1,000 requests of 512 tokens the server's memory grew by 30 MB
    and kept growing: docs/emulator.md), keeping the last KEEP_FINISHED requests."""
    from lab.cli.serve import add_cli_args, build_server
    from lab.server.runner import KEEP_FINISHED

    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    runner = build_server(parser.parse_args(["meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb"])).runner
    now = [0.0]
    runner.clock, runner.t0 = (lambda: now[0]), 0.0
    most_finished = most_steps = most_ends = 0
    for i in range(500):
        runner.submit([(list(range(i, i + 64)), 4)], f"r{i}")
        now[0] += 0.01
        runner.advance()
        runner._tick()
        most_finished = max(most_finished, len(runner.engine.finished))
        most_steps = max(most_steps, len(runner.engine.step_log.arrays()["t_s"]))
        most_ends = max(most_ends, len(runner.engine.step_end_s))
    assert runner.engine.stats.request_success_total["length"] > 400  # the load did run
    # at most 2 x KEEP_FINISHED at a tick, plus what finishes before the next (50 ms: a few here)
    assert most_finished <= 2 * KEEP_FINISHED + 10 and len(runner.engine.finished) >= KEEP_FINISHED // 2
    assert most_steps <= 20  # a tick's steps (50 ms here), not the run's hundreds
    # the end times of the steps the live requests span, not of every step
    assert most_ends <= 40 and runner.engine.step_base > 400


def test_latency_multiplier_delays_release_through_the_timer_heap():
    import asyncio

    from lab.cli.serve import add_cli_args, build_server

    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    server = build_server(parser.parse_args(["meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb"]))
    runner = server.runner
    finished = {}  # token times as the request finishes (the server's tick forgets older steps)

    class Listener:
        def on_finish(self, request, now_s):
            finished[request.request_id] = runner.engine.token_times(request)

    runner.engine.listeners.append(Listener())

    async def go():
        await runner.start()
        handle = runner.submit([(list(range(64)), 8)], "r", latency_multiplier=3.0)
        got = []
        while not any(e[0] == "finish" for e in got):
            for e in await handle.take():
                got.append((e[0], e[3], runner.now_s()))
        await runner.stop()
        return handle.arrival_s, got

    arrival, got = asyncio.run(go())
    token_times = finished["r-0"]
    dues = [due for kind, due, _ in got if kind == "token"]
    stream_s = runner.stream_s_per_token  # the API server's streaming time (on by default)
    assert stream_s > 0
    assert dues == pytest.approx([arrival + 3.0 * (t - arrival) + stream_s for t in token_times])
    assert all(seen >= due for _, due, seen in got)  # never released before it is due


def test_a_steps_tokens_leave_one_after_another_as_one_api_server_streams_them():
    """The k-th token a step hands over is due k streaming times after the step's end (one API
    server process, first come first served); a step that ends after the server caught up starts
    afresh. --no-frontend releases every token at its step's end."""
    from lab.cli.serve import add_cli_args, build_server

    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    runner = build_server(parser.parse_args(["meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb"])).runner
    s = runner.stream_s_per_token
    assert s == pytest.approx(32.61e-6, rel=0.01)  # the shipped calibration's detokenize time a token
    first_step = [runner._streamed(1.0) for _ in range(256)]
    assert first_step == pytest.approx([1.0 + k * s for k in range(1, 257)])
    assert runner._streamed(1.001) == pytest.approx(1.0 + 257 * s)  # still busy with the first step
    assert runner._streamed(2.0) == pytest.approx(2.0 + s)  # caught up: starts at the step's end
    quiet = build_server(parser.parse_args(["meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb", "--no-frontend"])).runner
    assert quiet.stream_s_per_token == 0 and quiet._streamed(1.0) == 1.0 and quiet._streamed(1.0) == 1.0


def test_hf_tokenizer_folder(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from lab.server.hf_tokenizer import HFTokenizer, load_tokenizer

    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<s>": 0, "[UNK]": 1, "hello": 2, "world": 3},
                                                           unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece()
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text('{"bos_token": "<s>"}')
    hf = load_tokenizer(tmp_path)
    assert isinstance(hf, HFTokenizer) and hf.bos_ids == [0]
    assert hf.encode("hello world") == [2, 3] and hf.decode([2, 3]) == "hello world"
    assert hf.token_strs([2, 3]) == ["hello", "world"] and hf.last_word("hello world ") == "world"
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read tokenizer.json"):
        HFTokenizer(tmp_path)


def test_the_shutdown_summary_names_the_lag_and_the_clients_turnaround():
    from lab.server.metrics import ServerMetrics

    m = ServerMetrics(model_name="m", service="svc", max_model_len=4096, stats_source=lambda: None)
    assert m.summary() == []  # nothing served: nothing to say
    for i in range(10):
        m.lag.observe(0.001, now_s=float(i))
    m.turnaround.response_ended(("127.0.0.1", 5000), 1.0)
    m.turnaround.request_started(("127.0.0.1", 5000), 1.025)
    lag_line, turn_line = m.summary()
    assert lag_line.startswith("Streamed 10 tokens; lag behind the simulated timeline: p50 ")
    assert lag_line.endswith("; 0 (0.0%) later than the 10.0 ms threshold")
    m.lag.observe(0.050, now_s=20.0)
    assert m.summary()[0].endswith("; 1 (9.1%) later than the 10.0 ms threshold")
    assert "mean 25.0 ms over 1 request;" in turn_line
    assert "`servelab bench serve --client-turnaround-ms 25.0`" in turn_line


# The series added for vLLM 0.33's per-request and prompt-source metrics; the rest of /metrics
# was checked by hand against a running vLLM (docs/emulator.md, "A new user's pass under load").
NEW_VLLM_SERIES = ("vllm:num_requests_waiting_by_reason", "vllm:prompt_tokens_by_source", "vllm:prompt_tokens_cached",
                   "vllm:request_params_n", "vllm:request_params_max_tokens", "vllm:request_max_num_generation_tokens",
                   "vllm:request_num_preemptions", "vllm:request_prefill_kv_computed_tokens", "vllm:prompt_tokens",
                   "vllm:admission_rejections")


def _vllm_metric_definitions(max_model_len: int) -> dict[str, tuple[str, str, set[str], list[float] | None]]:
    """Name -> (type, help, label names, buckets) of each metric vLLM 0.33's
    ``PrometheusStatLogger`` creates, read from its source in .venv-vllm (``ast``, no import:
    that needs torch), with the buckets from its ``buckets.py``."""
    import ast
    import importlib.util

    from tests.conftest import require

    metrics = ROOT / ".venv-vllm/lib/python3.11/site-packages/vllm/v1/metrics"
    require((metrics / "loggers.py").is_file(), "the vLLM reference venv (.venv-vllm)")
    spec = importlib.util.spec_from_file_location("vllm_buckets", metrics / "buckets.py")
    buckets_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(buckets_mod)
    tree = ast.parse((metrics / "loggers.py").read_text())
    init = next(node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == "PrometheusStatLogger")
    init = next(f for f in init.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")

    families = {}  # e.g. request_tokens_buckets -> "request_tokens"
    for node in ast.walk(init):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == "histogram_buckets"):
            families[node.targets[0].id] = node.value.args[0].value

    def labels(expr) -> set[str]:
        if isinstance(expr, ast.Name) and expr.id == "labelnames":
            return {"model_name", "engine"}
        if isinstance(expr, ast.BinOp):
            return labels(expr.left) | labels(expr.right)
        return {e.value for e in expr.elts}

    out = {}
    for node in ast.walk(init):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("_counter_cls", "_gauge_cls", "_histogram_cls")):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        buckets = None
        if "buckets" in kw:
            buckets = [float(b) for b in buckets_mod.histogram_buckets(families[kw["buckets"].id],
                                                                       max_model_len=max_model_len)]
        out[kw["name"].value] = (node.func.attr[1:-4], kw["documentation"].value, labels(kw["labelnames"]), buckets)
    return out


def test_new_vllm_series_match_vllm_names_types_help_labels_and_buckets():
    from prometheus_client.parser import text_string_to_metric_families

    from lab.server.metrics import ServerMetrics
    from sim.metrics import EngineStats

    definitions = _vllm_metric_definitions(max_model_len=4096)
    m = ServerMetrics(model_name="m", service="svc", max_model_len=4096, stats_source=EngineStats)
    ours = {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}
    for name in NEW_VLLM_SERIES:
        kind, doc, label_names, buckets = definitions[name]
        family = ours[name]  # prometheus_client's parser names a counter without its _total
        assert (family.type, family.documentation) == (kind, doc), name
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        assert samples, name
        for sample in samples:
            assert set(sample.labels) - {"le"} == label_names, (name, sample.labels)
        if buckets is not None:
            bounds = [float(s.labels["le"]) for s in samples if s.name.endswith("_bucket")]
            assert bounds == buckets + [float("inf")], name


def test_prompt_tokens_and_stops_are_counted_as_vllm_counts_them():
    """vllm:prompt_tokens_total grows when a request's first token is out (observe_prefilled),
    not from the engine's own count at admission; an answer the plan ends with "stop" (by itself
    or on a stop string) is a finished_reason="stop", though the engine ran it to its length."""
    from types import SimpleNamespace

    from lab.server.metrics import ServerMetrics
    from sim.metrics import EngineStats

    stats = EngineStats(prompt_tokens_total=100)  # admitted: 100 prompt tokens
    stats.request_success_total["length"] = 2
    m = ServerMetrics(model_name="m", service="svc", max_model_len=4096, stats_source=lambda: stats)
    labels = b'{engine="0",model_name="m"}'
    assert b"vllm:prompt_tokens_total" + labels + b" 0.0" in m.exposition().splitlines()
    request = SimpleNamespace(num_output_tokens=3, num_prompt_tokens=40, arrival_s=0.0, first_scheduled_s=0.1,
                              first_token_s=0.2, num_preemptions=0, num_cached_tokens=16,
                              status=SimpleNamespace(value="length"))
    m.observe_prefilled(request)
    m.observe_finished(request, 0.5, [0.2, 0.3, 0.5], 8, finish_reason="stop")
    m.observe_finished(request, 0.5, [0.2, 0.3, 0.5], 8, finish_reason="length")
    lines = m.exposition().splitlines()
    assert b"vllm:prompt_tokens_total" + labels + b" 40.0" in lines
    success = b'vllm:request_success_total{engine="0",finished_reason="%s",model_name="m"} %s'
    assert success % (b"stop", b"1.0") in lines and success % (b"length", b"1.0") in lines
