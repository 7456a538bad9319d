"""A real Prometheus for tests: backfill it with promtool or let it scrape, then query its API.

Reusable pieces (the emulator's Prometheus test uses them too):

- :func:`backfill` writes OpenMetrics text to a file and runs
  ``promtool tsdb create-blocks-from openmetrics FILE DIR``;
- :func:`prometheus_server` starts ``prometheus`` on a free loopback port, waits for
  ``/-/ready``, yields the base URL and always stops the process;
- :func:`query` asks ``/api/v1/query`` and returns the result as ``("vector", [(labels, value)])``
  or ``("scalar", value)``, labels being a sorted tuple of pairs as in ``sim.promql``;
- :func:`realistic_store` builds the series the agreement test backfills: HTTP counters with
  resets and a quiet spell, latency histograms, vLLM's colon-named series, cost and quality.

Callers check for the binaries first with ``conftest.require_program`` (skip locally, fail in CI).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sim.promql import SeriesStore

MINIMAL_CONFIG = """\
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs: []
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backfill(openmetrics_text: str, workdir: Path, *, promtool: str = "promtool") -> Path:
    """Turn OpenMetrics text into TSDB blocks under ``workdir/data``; returns that directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "series.om"
    source.write_text(openmetrics_text)
    data = workdir / "data"
    proc = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"promtool backfill failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return data


@contextlib.contextmanager
def prometheus_server(
    workdir: Path,
    *,
    storage_dir: Path | None = None,
    config_yaml: str = MINIMAL_CONFIG,
    prometheus: str = "prometheus",
    ready_timeout_s: float = 60.0,
) -> Iterator[str]:
    """Run Prometheus on 127.0.0.1 until the ``with`` block ends; yields ``http://127.0.0.1:PORT``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(config_yaml)
    storage = storage_dir if storage_dir is not None else workdir / "data"
    port = free_port()
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={storage}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, proc, log_path, ready_timeout_s)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def _wait_ready(base: str, proc: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(base + "/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"prometheus not ready after {timeout_s} s:\n{log_path.read_text()[-4000:]}")


def query(base: str, promql: str, at_s: float) -> tuple[str, object]:
    """``/api/v1/query`` at ``at_s``: ("vector", [(labels, value), ...] sorted) or ("scalar", value).

    A query Prometheus rejects gives ("error", message).
    """
    params = urllib.parse.urlencode({"query": promql, "time": f"{at_s:.3f}"})
    try:
        with urllib.request.urlopen(f"{base}/api/v1/query?{params}", timeout=30) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    if body.get("status") != "success":
        return "error", body.get("error", "")
    data = body["data"]
    if data["resultType"] == "scalar":
        return "scalar", float(data["result"][1])
    if data["resultType"] != "vector":
        return data["resultType"], data["result"]
    vector = [(tuple(sorted(e["metric"].items())), float(e["value"][1])) for e in data["result"]]
    return "vector", sorted(vector, key=lambda e: e[0])


def query_range(base: str, promql: str, start_s: float, end_s: float, step_s: float) -> dict:
    """``/api/v1/query_range``: {labels: {t_ms: value}} for a matrix result, or raises."""
    params = urllib.parse.urlencode(
        {"query": promql, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}", "step": f"{step_s:.3f}"}
    )
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=60) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success" or body["data"]["resultType"] != "matrix":
        raise RuntimeError(f"query_range {promql!r} failed: {body}")
    return {
        tuple(sorted(e["metric"].items())): {round(float(t) * 1000): float(v) for t, v in e["values"]}
        for e in body["data"]["result"]
    }


# -- the agreement test's series ------------------------------------------------------------------

T0_S = 1_700_000_000  # 2023-11-14T22:13:20Z: any fixed past time works
SCRAPE_S = 15
DURATION_S = 3 * 3600
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # Prometheus' defaults
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# Times (seconds after T0) that shape the data, and that the test's instants sit on.
CANARY_START_S = 600  # canary series appear 10 minutes in
CANARY_QUIET_S = (3600, 4500)  # no canary traffic: error rate 0/0 = NaN, quantiles NaN
CANARY_RESTART_S = 5400  # the canary restarts: every canary counter resets
GAUGE_GAP_S = (7200, 7800)  # vllm gauges not scraped for 10 minutes: lookback runs out


def _le(bound: float) -> str:
    return "+Inf" if bound == np.inf else repr(float(bound))


def _histogram(store, name, labels, t, observations_per_scrape, draw, buckets, rng, reset_at=None, lag_bucket=None):
    """Cumulative bucket/sum/count series of a histogram observed at scrape times ``t``."""
    n = observations_per_scrape
    total = int(n.sum())
    values = draw(rng, total)
    which = np.repeat(np.arange(n.size), n)
    bounds = np.array([*buckets, np.inf])
    idx = np.searchsorted(bounds, values, side="left")  # le is inclusive: value <= bound
    per_scrape = np.zeros((n.size, bounds.size))
    np.add.at(per_scrape, (which, idx), 1.0)
    sums = np.zeros(n.size)
    np.add.at(sums, which, values)
    if reset_at is not None:
        cumulative = np.empty_like(per_scrape)
        cumulative[:reset_at] = np.cumsum(per_scrape[:reset_at], axis=0)
        cumulative[reset_at:] = np.cumsum(per_scrape[reset_at:], axis=0)
        sum_c = np.concatenate([np.cumsum(sums[:reset_at]), np.cumsum(sums[reset_at:])])
    else:
        cumulative = np.cumsum(per_scrape, axis=0)
        sum_c = np.cumsum(sums)
    by_bucket = np.cumsum(cumulative, axis=1)  # cumulative over le
    for j, bound in enumerate(bounds):
        series = by_bucket[:, j]
        if lag_bucket is not None and j == lag_bucket:
            # This bucket is one scrape behind the others, as with a non-atomic scrape:
            # rate() then breaks monotonicity, which histogram_quantile has to repair.
            series = np.concatenate([[0.0], series[:-1]])
        store.append(name + "_bucket", {**labels, "le": _le(bound)}, t, series)
    store.append(name + "_sum", labels, t, sum_c)
    store.append(name + "_count", labels, t, by_bucket[:, -1])


def realistic_store(seed: int = 7) -> SeriesStore:
    """Three hours of 15-second scrapes of a stable and a canary ai-api, as a fleet would export."""
    rng = np.random.default_rng(seed)
    store = SeriesStore()
    store.declare("http_requests_total", "counter", "HTTP requests by service and status.")
    store.declare("http_request_duration_seconds", "histogram", "HTTP request latency.")
    store.declare("llm_request_cost_dollars_total", "counter", "Cost of served tokens.")
    store.declare("llm_judge_quality_score", "gauge", "LLM-judge score of sampled answers.")
    store.declare("vllm:num_requests_running", "gauge", "Requests in the running batch.")
    store.declare("vllm:gpu_cache_usage_perc", "gauge", "KV-cache usage, 0 to 1.")
    store.declare("vllm:prompt_tokens_total", "counter", "Prefill tokens processed.")
    store.declare("vllm:time_to_first_token_seconds", "histogram", "Time to first token.")
    store.declare("skewed_latency_seconds", "histogram", "A histogram with a lagging bucket.")

    n_scrapes = DURATION_S // SCRAPE_S
    offsets_s = np.arange(n_scrapes) * SCRAPE_S
    for service, rps, error_p, median_s, start_s in (
        ("ai-api-stable", 19.8, 0.002, 0.35, 0),
        ("ai-api-canary", 0.2, 0.02, 0.6, CANARY_START_S),
    ):
        # Real scrapes jitter: each target keeps a fixed millisecond phase.
        phase_ms = 0 if service == "ai-api-stable" else 250
        keep = offsets_s >= start_s
        rel = offsets_s[keep]
        t = T0_S + rel + phase_ms / 1000
        rate = np.full(rel.size, rps)
        if service == "ai-api-canary":
            rate[(rel >= CANARY_QUIET_S[0]) & (rel < CANARY_QUIET_S[1])] = 0.0
        requests = rng.poisson(rate * SCRAPE_S)
        errors = rng.binomial(requests, error_p)
        reset = int(np.searchsorted(rel, CANARY_RESTART_S)) if service == "ai-api-canary" else None

        def counter(increments, reset=reset):
            if reset is None:
                return np.cumsum(increments).astype(float)
            return np.concatenate([np.cumsum(increments[:reset]), np.cumsum(increments[reset:])]).astype(float)

        store.append("http_requests_total", {"service": service, "status": "200"}, t, counter(requests - errors))
        store.append("http_requests_total", {"service": service, "status": "500"}, t, counter(errors))
        cost = rng.gamma(2.0, 0.0004, size=rel.size) * requests
        store.append("llm_request_cost_dollars_total", {"service": service}, t, counter(cost))
        _histogram(
            store,
            "http_request_duration_seconds",
            {"service": service},
            t,
            requests,
            lambda g, k, m=median_s: g.lognormal(np.log(m), 0.8, size=k),
            DEFAULT_BUCKETS,
            rng,
            reset_at=reset,
        )
        quality = np.clip(0.9 + 0.03 * rng.standard_normal(rel.size), 0.0, 1.0)
        store.append("llm_judge_quality_score", {"service": service}, t, quality)

        # vLLM's own series, per pod, scraped separately with a gap.
        pod = f"{service}-0"
        gap = (rel >= GAUGE_GAP_S[0]) & (rel < GAUGE_GAP_S[1])
        vt = t[~gap]
        labels = {"model_name": "meta-llama/Llama-3.1-8B", "pod": pod, "service": service}
        running = np.maximum(0, np.round(np.cumsum(rng.normal(0, 1.5, vt.size)) % 40))
        store.append("vllm:num_requests_running", labels, vt, running)
        store.append("vllm:gpu_cache_usage_perc", labels, vt, np.clip(running / 40 + rng.normal(0, 0.02, vt.size), 0, 1))
        prompt = rng.poisson(np.maximum(rps, 0.1) * SCRAPE_S * 500, vt.size)
        store.append("vllm:prompt_tokens_total", labels, vt, np.cumsum(prompt).astype(float))
        _histogram(
            store,
            "vllm:time_to_first_token_seconds",
            labels,
            vt,
            rng.poisson(np.maximum(rps, 0.1) * SCRAPE_S, vt.size),
            lambda g, k: g.gamma(2.0, 0.06, size=k),
            TTFT_BUCKETS,
            rng,
        )

    t_all = T0_S + offsets_s
    _histogram(
        store,
        "skewed_latency_seconds",
        {"job": "federated"},
        t_all,
        rng.poisson(30, n_scrapes),
        lambda g, k: g.exponential(0.3, size=k),
        # 0.26 sits just above 0.25, so the lagging 0.26 bucket often counts less than 0.25.
        (0.1, 0.25, 0.26, 0.5, 1.0),
        rng,
        lag_bucket=2,
    )
    _flaky_target(store, rng)
    return store


def _flaky_target(store: SeriesStore, rng: np.random.Generator) -> None:
    """A target scraped irregularly: 30% of scrapes lost, up to a second of jitter.

    Regular scrapes leave every gap to a window edge under one interval, so they never test
    the 1.1x extrapolation threshold; these do. One counter starts near zero (the zero-point
    cap applies), one starts high (it does not).
    """
    n = DURATION_S // SCRAPE_S
    kept = rng.random(n) > 0.3
    t = T0_S + (np.arange(n) * SCRAPE_S * 1000 + rng.integers(0, 1000, n))[kept] / 1000
    store.declare("batch_jobs_total", "counter", "Jobs done by a flaky batch target.")
    store.declare("queue_depth", "gauge", "Queue depth of the flaky target.")
    for target, start in (("fresh", 3.0), ("old", 1e6)):
        jobs = start + np.cumsum(rng.poisson(4.0, t.size)).astype(float)
        jobs[t.size // 2 :] -= jobs[t.size // 2] - 1.0  # a reset half-way
        store.append("batch_jobs_total", {"target": target}, t, jobs)
    store.append("queue_depth", {"target": "fresh"}, t, np.abs(np.cumsum(rng.normal(0, 3, t.size))))
