"""The serving front end (API servers between the clients and the engine) and the closed loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.config import EngineConfig
from sim.engine import run_engine
from sim.frontend import FrontendCoefficients
from sim.runner import frontend_ttft_s
from sim.steptime import StepCoefficients
from sim.workload import WorkloadSpec, build_workload

CONFIG = EngineConfig(model="meta-llama/Llama-3.1-8B", gpu="h100-80gb", max_model_len=4096)
HOST = StepCoefficients(overhead_s=0.001, per_seq_s=1e-5)


def _workload(num_prompts: int, isl: int, osl: int, rate: float = math.inf):
    spec = WorkloadSpec(dataset_name="random", num_prompts=num_prompts, random_input_len=isl,
                        random_output_len=osl, random_range_ratio=0.0, request_rate=rate)
    return build_workload(spec, np.random.default_rng(0))


def _run(workload, frontend=None, **kw):
    return run_engine(CONFIG, workload, usage="serve", coefficients=HOST, frontend=frontend, **kw)


def test_ttft_at_light_load_includes_http_tokenization_and_streaming():
    fe = FrontendCoefficients(http_s=0.004, tokenize_s_per_token=1e-5, detokenize_s_per_token=1e-4)
    from dataclasses import replace

    wl = replace(_workload(5, 1000, 20), arrival_s=np.arange(5) * 10.0)  # the engine is idle at each
    alone = _run(wl)
    served = _run(wl, fe)
    extra = 0.004 + 1e-5 * 1000 + 1e-4
    assert served.ttft_s == pytest.approx(alone.ttft_s + extra)
    assert frontend_ttft_s(served) == pytest.approx(np.full(5, extra))
    share = served.extra["frontend"]
    assert share["mean_frontend_ttft_ms"] == pytest.approx(extra * 1e3)
    assert share["frontend_share_of_ttft"] == pytest.approx(extra / served.ttft_s.mean())


def test_requests_reach_the_engine_between_steps():
    fe = FrontendCoefficients(http_s=0.002, tokenize_s_per_token=2e-6, detokenize_s_per_token=2e-5)
    res = _run(_workload(60, 512, 64, rate=20.0), fe)
    starts = set(np.round(res.steps["t_s"] - res.steps["duration_s"], 9))
    handed = res.engine_times["engine_arrival_s"]
    assert np.all(res.first_scheduled_s >= handed - 1e-12)
    # Each request is first scheduled at the start of a step, never in the middle of one.
    assert all(round(t, 9) in starts for t in res.first_scheduled_s)


def test_a_steps_tokens_are_streamed_from_its_end_one_after_another():
    """The API server gets a step's tokens at the step's end and streams them one after
    another: 64 requests prefilled in the same step get their first chunks 64 streaming times
    after that step, the last of them, even with the server idle before (the emulator's rule,
    lab/server/runner.py, token by token). Without fast forward every step is its own batch."""
    per_token = 1e-3
    fe = FrontendCoefficients(detokenize_s_per_token=per_token)
    wl = _workload(64, 16, 4)
    alone = run_engine(CONFIG, wl, usage="serve", coefficients=HOST, fast_forward=False)
    served = run_engine(CONFIG, wl, usage="serve", coefficients=HOST, frontend=fe, fast_forward=False)
    assert len(set(np.round(alone.first_token_s, 9))) == 1  # one step made every first token
    assert served.ttft_s == pytest.approx(alone.ttft_s + 64 * per_token)


def _admitted_together(res, skip: int) -> float:
    """Share of the requests (after the first ``skip``) admitted in the same step as another."""
    order = np.argsort(res.arrival_s, kind="stable")[skip:]
    admitted = np.round(res.first_scheduled_s[order], 9)
    _, counts = np.unique(admitted, return_counts=True)
    return float(counts[counts > 1].sum() / len(admitted))


def test_lock_step_is_broken_in_a_fixed_length_closed_loop():
    fe = FrontendCoefficients(http_s=0.002, tokenize_s_per_token=2e-6, detokenize_s_per_token=2e-5)
    wl = _workload(8 * 6, 1024, 256)
    together = _run(wl, fe, max_concurrency=8, closed_loop_start="together")
    spread = _run(wl, fe, max_concurrency=8, closed_loop_start="spread")
    # Sent at once, the clients stay in lock step: every round admits them in groups.
    assert _admitted_together(together, 8) > 0.5
    # Out of phase, they stay out of phase: each request is prefilled on its own.
    assert _admitted_together(spread, 8) < 0.2
    assert spread.ttft_s[8:].mean() < 0.5 * together.ttft_s[8:].mean()
    # The closed loop holds: never more than 8 requests in flight at the clients.
    events = sorted([(t, 1) for t in spread.arrival_s] + [(t, -1) for t in spread.finish_s])
    assert max(np.cumsum([d for _, d in events])) <= 8


def test_the_next_request_starts_when_the_client_has_the_answer():
    fe = FrontendCoefficients(http_s=0.003, tokenize_s_per_token=0.0, detokenize_s_per_token=1e-4)
    res = _run(_workload(4, 256, 32), fe, max_concurrency=1)
    order = np.argsort(res.arrival_s)
    for a, b in zip(order, order[1:]):
        assert res.arrival_s[b] == pytest.approx(res.finish_s[a])  # sent when the last chunk arrived


def test_same_seed_same_result():
    fe = FrontendCoefficients(http_s=0.002, tokenize_s_per_token=2e-6, detokenize_s_per_token=2e-5)
    wl = _workload(64, 700, 100)
    a = _run(wl, fe, max_concurrency=16, closed_loop_start="spread")
    b = _run(wl, fe, max_concurrency=16, closed_loop_start="spread")
    for field in ("arrival_s", "first_token_s", "finish_s"):
        assert np.array_equal(getattr(a, field), getattr(b, field))


def test_more_api_servers_take_the_queue_out_of_ttft():
    busy = FrontendCoefficients(http_s=0.02, tokenize_s_per_token=1e-5, detokenize_s_per_token=5e-5)
    wl = _workload(64, 1000, 16)
    one = _run(wl, busy, max_concurrency=32, api_server_count=1)
    four = _run(wl, busy, max_concurrency=32, api_server_count=4)
    assert four.extra["frontend"]["api_server_count"] == 4
    assert four.extra["frontend"]["mean_frontend_ttft_ms"] < 0.5 * one.extra["frontend"]["mean_frontend_ttft_ms"]


@pytest.mark.parametrize("field,value", [("http_s", -1.0), ("tokenize_s_per_token", math.inf),
                                         ("detokenize_s_per_token", "x")])
def test_bad_coefficients_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        FrontendCoefficients(**{field: value})


def test_bench_serve_json_reports_the_front_end_share(capsys):
    import json

    from lab.cli.main import main

    assert main(["bench", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-80gb", "--num-prompts", "40",
                 "--max-concurrency", "4", "--random-input-len", "512", "--random-output-len", "32",
                 "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    fe = data["servelab"]["frontend"]
    assert fe["api_server_count"] == 1 and 0 < fe["frontend_share_of_ttft"] < 1
    assert data["servelab"]["step_time_model"].startswith("operator tables: h100-80gb")


def test_a_clients_turnaround_delays_its_next_request_and_counts_in_its_ttft():
    """With a closed loop's turnaround, each request after the first waits for it between the
    client's stamp (the earlier answer's last chunk) and the API server: the engine gets it that
    much later, and the client's TTFT counts it. The first request did not wait for the cap."""
    fe = FrontendCoefficients(http_s=0.003, tokenize_s_per_token=0.0, detokenize_s_per_token=1e-4)
    wl = _workload(200, 64, 4)
    instant = _run(wl, fe, max_concurrency=1)
    slow = _run(wl, fe, max_concurrency=1, client_turnaround_s=0.05)
    order = np.argsort(slow.arrival_s)
    for a, b in zip(order, order[1:]):
        assert slow.arrival_s[b] == pytest.approx(slow.finish_s[a])  # stamped when the answer came
    waited = slow.engine_times["engine_arrival_s"] - slow.arrival_s - 0.003  # less the API server's work
    assert waited[order[0]] == pytest.approx(0.0)
    assert np.all(waited[order[1:]] > 0)
    assert waited[order[1:]].mean() == pytest.approx(0.05, rel=0.2)  # exponential, mean 50 ms
    assert slow.ttft_s == pytest.approx(instant.ttft_s + waited)  # one client: nothing else changes
    f = slow.extra["frontend"]
    assert f["mean_client_turnaround_ms"] == pytest.approx(1e3 * waited.mean())
    # The front end's share leaves the client's own time out.
    assert f["mean_frontend_ttft_ms"] == pytest.approx(instant.extra["frontend"]["mean_frontend_ttft_ms"])


def test_turnaround_is_the_same_with_and_without_fast_forward_and_follows_the_seed():
    fe = FrontendCoefficients(http_s=0.002, tokenize_s_per_token=2e-6, detokenize_s_per_token=2e-5)
    wl = _workload(96, 300, 40)
    runs = [run_engine(CONFIG, wl, usage="serve", coefficients=HOST, frontend=fe, max_concurrency=16,
                       closed_loop_start="together", client_turnaround_s=0.01, fast_forward=ff, seed=seed)
            for ff, seed in ((True, 0), (False, 0), (True, 1))]
    for field in ("arrival_s", "first_token_s", "finish_s"):
        assert np.allclose(getattr(runs[0], field), getattr(runs[1], field), rtol=0, atol=1e-9)
    assert not np.allclose(runs[0].first_token_s, runs[2].first_token_s)


@pytest.mark.parametrize("kw,match", [({"client_turnaround_s": -0.001}, "client_turnaround_s"),
                                      ({"client_turnaround_s": 0.01, "frontend": None}, "front end")])
def test_bad_turnaround_is_refused(kw, match):
    fe = FrontendCoefficients(http_s=0.002)
    with pytest.raises(ValueError, match=match):
        run_engine(CONFIG, _workload(4, 64, 4), usage="serve", max_concurrency=2, **{"frontend": fe, **kw})


@pytest.mark.parametrize("flags,message", [
    (["--client-turnaround-ms", "-1"], "--client-turnaround-ms: expected milliseconds >= 0"),
    (["--client-turnaround-ms", "nan"], "--client-turnaround-ms: expected milliseconds >= 0"),
    (["--client-turnaround-ms", "5", "--no-frontend"], "needs the simulated front end"),
])
def test_bench_serve_refuses_a_bad_turnaround(capsys, flags, message):
    from lab.cli.main import main

    assert main(["bench", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-80gb", "--num-prompts", "8",
                 "--max-concurrency", "2", *flags]) == 2
    assert message in capsys.readouterr().err
