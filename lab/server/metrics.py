"""The emulator's ``/metrics``: vLLM's series, fed by the simulated engine, and the HTTP series.

vLLM's names, labels (``model_name``, ``engine``) and buckets follow vLLM 0.33 (the reference's
section 5). Counters and gauges are read from the engine's live ``stats`` at scrape time, so
they can never drift from the simulation; histograms are observed from the engine's listener
hooks (through ``lab/server/runner.py``) as requests finish and steps end, and the prompt-token
counters when a request's first token comes out, each when vLLM 0.33 records it. Each server has
its own ``CollectorRegistry`` (never prometheus_client's global one), so several servers in one
process (tests) do not collide.

The HTTP series are what the course's AnalysisTemplates query:
``http_requests_total{service,status}`` and ``http_request_duration_seconds{service}``. vLLM
itself exports ``http_requests_total`` through prometheus-fastapi-instrumentator with other
labels (``handler``, ``method``, ``status`` as ``2xx``); we use the course's labels, because the
analyses must run unchanged, and count only the inference routes, so health checks and scrapes
do not dilute the error rate. Two more series feed the course's other rollback triggers:
``llm_request_cost_dollars_total{service}`` (token cost at the simulated fleet's prices) and
``llm_judge_quality_score{service}`` (a summary of judge scores, with ``--judge-metrics``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from lab.server.lag import LagMonitor
from lab.server.turnaround import TurnaroundMonitor
from sim.metrics import VLLM_BUCKETS, request_length_buckets

# The buckets of the simulated fleet (``sim/rollout/fleet.py``), so that the emulator and the
# simulated cluster give the same p99 for the same latencies. They reach two minutes: an LLM
# request often takes longer than prometheus_client's default top bucket (10 s).
HTTP_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0,
                         15.0, 20.0, 30.0, 60.0, 120.0)

# The simulated fleet's prices, for llm_request_cost_dollars_total (dollars per million tokens).
INPUT_PRICE_PER_MTOK = 0.10
OUTPUT_PRICE_PER_MTOK = 0.30

FINISHED_REASONS = ("stop", "length", "abort", "error")

# vLLM 0.33's v1/metrics/buckets.py: REQUEST_PARAMS_N_BUCKETS and REQUEST_NUM_PREEMPTIONS_BUCKETS.
REQUEST_PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
REQUEST_NUM_PREEMPTIONS_BUCKETS = (1, 2, 3, 4, 5, 10, 20)

# vLLM 0.33's v1/metrics/loggers.py ADMISSION_REASONS: the queue limits that refuse a request.
ADMISSION_REASONS = ("max_num_queued_reqs", "max_num_queued_tokens")

# vLLM's PromptTokenStats.ALL_SOURCES, the ``source`` label of vllm:prompt_tokens_by_source_total.
# The emulator has no KV connector, so "external_kv_transfer" stays 0, as in a vLLM without one.
PROMPT_TOKEN_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")


WAITING_BY_REASON_DOC = (
    "Number of waiting requests by reason. "
    "Reason labels: 'capacity' = waiting for scheduling capacity; "
    "'deferred' = deferred by transient constraints "
    "(LoRA budget, KV transfer, blocked status). "
    "Sum of all reasons equals vllm:num_requests_waiting."
)


class _EngineStatsCollector:
    """Counters and gauges read from the engine's ``stats`` when Prometheus scrapes."""

    def __init__(self, server: "ServerMetrics") -> None:
        self.server = server

    def describe(self):  # no pre-declared families: the registry then calls collect lazily
        return []

    def collect(self):
        m = self.server
        stats = m.stats_source()
        labels = [m.model_name, m.engine_index]
        names = ["model_name", "engine"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(labels, float(value))
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=names)
            c.add_metric(labels, float(value))
            return c

        if stats is None:
            return
        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                    stats.num_requests_running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                    stats.num_requests_waiting)
        # vLLM counts as "deferred" the waiting requests its scheduler skips for a LoRA budget, a
        # KV transfer or a blocked status; the simulator has none of these, so every waiting
        # request waits for capacity (and the two sum to vllm:num_requests_waiting, as in vLLM).
        by_reason = GaugeMetricFamily("vllm:num_requests_waiting_by_reason", WAITING_BY_REASON_DOC,
                                      labels=names + ["reason"])
        by_reason.add_metric(labels + ["capacity"], float(stats.num_requests_waiting))
        by_reason.add_metric(labels + ["deferred"], 0.0)
        yield by_reason
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                    stats.kv_cache_usage_perc)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.",
                      stats.generation_tokens_total)
        yield counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
                      stats.num_preemptions_total)
        yield counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                      stats.prefix_cache_queries_total)
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                      stats.prefix_cache_hits_total)
        success = CounterMetricFamily("vllm:request_success", "Count of successfully processed requests.",
                                      labels=names + ["finished_reason"])
        done = dict(stats.request_success_total)
        # Requests killed by a crash reach the engine as aborts; vLLM reports them as errors.
        done["abort"] = done.get("abort", 0) - m.errors_source()
        done["error"] = done.get("error", 0) + m.errors_source()
        # The simulated engine ends every request at its length; the answers that stopped by
        # themselves or on a stop (their plan's "stop") are vLLM's finished_reason="stop".
        done["length"] = done.get("length", 0) - m.stopped
        done["stop"] = done.get("stop", 0) + m.stopped
        for reason in FINISHED_REASONS:
            success.add_metric(labels + [reason], float(done.get(reason, 0)))
        yield success
        # ServeLab's own: how late the wall-clock simulation has run (CPU starvation). Near zero
        # means the latencies above are the simulator's; large values mean the machine is slow.
        yield gauge("servelab:emulator_max_lag_seconds",
                    "Most the simulation or a token has lagged the simulated timeline since start, in seconds.",
                    max(m.lag_source(), m.lag.max_s))
        yield m.lag.metric_family()
        yield m.turnaround.metric_family()


def observe_each(histogram, values: list[float]) -> None:
    """``histogram.observe(v)`` for each of ``values`` (a labelled child), in one pass.

    The result is the same as one call per value, to the last bit: each value lands in the
    first bucket whose upper bound is at least the value, and the sum adds the values one by
    one, in order. But the bounds are searched in numpy and each bucket's count is added once,
    instead of a linear search and two locked additions per value (a request's inter-token
    latencies are one value per token)."""
    if not values:
        return
    bounds = histogram._upper_bounds  # prometheus_client's Histogram child: no public batch call
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(counts).tolist():
        histogram._buckets[i].inc(int(counts[i]))
    total = histogram._sum.get()
    for v in values:
        total += v
    histogram._sum.set(total)


class ServerMetrics:
    """Every series the emulator exports, in one registry of its own."""

    def __init__(self, *, model_name: str, service: str, max_model_len: int, stats_source,
                 errors_source=lambda: 0, lag_source=lambda: 0.0, judge_enabled: bool = False,
                 lag_threshold_s: float = 0.010, cache_config: dict[str, str] | None = None) -> None:
        self.lag_source = lag_source  # the driver's lateness to simulated events
        self.lag = LagMonitor(lag_threshold_s)  # every token's lateness (lab/server/lag.py)
        self.turnaround = TurnaroundMonitor()  # the clients' own time between answer and request
        self.judge_enabled = judge_enabled
        self.model_name = model_name
        self.service = service
        self.engine_index = "0"
        self.stats_source = stats_source  # a callable returning the engine's live stats (or None)
        self.errors_source = errors_source  # a callable: requests killed by a crash so far
        self.stopped = 0  # finished requests whose plan said "stop" (the engine counted a "length")
        self.registry = CollectorRegistry()
        self._children: dict[tuple, Any] = {}  # labelled series already looked up (_series)
        reg = self.registry
        names = ["model_name", "engine"]

        def hist(name: str, doc: str, buckets) -> Histogram:
            return Histogram(name, doc, names, buckets=list(buckets), registry=reg)

        self.ttft = hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                         VLLM_BUCKETS["time_to_first_token_seconds"])
        self.itl = hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                        VLLM_BUCKETS["inter_token_latency_seconds"])
        self.tpot = hist("vllm:request_time_per_output_token_seconds",
                         "Histogram of time_per_output_token_seconds per request.",
                         VLLM_BUCKETS["request_time_per_output_token_seconds"])
        self.e2e = hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                        VLLM_BUCKETS["e2e_request_latency_seconds"])
        self.queue = hist("vllm:request_queue_time_seconds",
                          "Histogram of time spent in WAITING phase for request.",
                          VLLM_BUCKETS["e2e_request_latency_seconds"])
        self.inference = hist("vllm:request_inference_time_seconds",
                              "Histogram of time spent in RUNNING phase for request.",
                              VLLM_BUCKETS["e2e_request_latency_seconds"])
        self.prefill = hist("vllm:request_prefill_time_seconds",
                            "Histogram of time spent in PREFILL phase for request.",
                            VLLM_BUCKETS["e2e_request_latency_seconds"])
        self.decode = hist("vllm:request_decode_time_seconds",
                           "Histogram of time spent in DECODE phase for request.",
                           VLLM_BUCKETS["e2e_request_latency_seconds"])
        self.iteration_tokens = hist("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
                                     VLLM_BUCKETS["iteration_tokens_total"])
        self.prompt_tokens = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.",
                                  request_length_buckets(max_model_len))
        self.generation_tokens = hist("vllm:request_generation_tokens", "Number of generation tokens processed.",
                                      request_length_buckets(max_model_len))
        # Per finished request (vLLM's FinishedRequestStats), as the histograms above.
        self.num_preemptions = hist("vllm:request_num_preemptions",
                                    "Histogram of the number of times a request was preempted.",
                                    REQUEST_NUM_PREEMPTIONS_BUCKETS)
        self.prefill_kv_computed = hist("vllm:request_prefill_kv_computed_tokens",
                                        "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
                                        request_length_buckets(max_model_len))
        self.max_tokens_param = hist("vllm:request_params_max_tokens",
                                     "Histogram of the max_tokens request parameter.",
                                     request_length_buckets(max_model_len))
        # Per API request, once all its n engine requests have finished (vLLM's ParentRequest).
        self.params_n = hist("vllm:request_params_n", "Histogram of the n request parameter.",
                             REQUEST_PARAMS_N_BUCKETS)
        self.max_generation_tokens = hist("vllm:request_max_num_generation_tokens",
                                          "Histogram of maximum number of requested generation tokens.",
                                          request_length_buckets(max_model_len))
        # Counted when a request's first token comes out, from its prefix-cache hit at its first
        # admission (vLLM's PrefillStats, read by IterationStats while the request is prefilling):
        # vLLM 0.33's vllm:prompt_tokens too (PrometheusStatLogger.record adds
        # IterationStats.num_prompt_tokens, PromptTokenStats.total), not at admission.
        self.prompt_tokens_total = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", names,
                                           registry=reg)
        self.prompt_tokens_by_source = Counter("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.",
                                               names + ["source"], registry=reg)
        self.prompt_tokens_cached = Counter("vllm:prompt_tokens_cached",
                                            "Number of cached prompt tokens (local + external).", names, registry=reg)
        # vLLM 0.33 creates each engine's labelled series at start (create_metric_per_engine), so
        # its histograms read 0, not "no data", before the first request: so do ours.
        for family in (self.ttft, self.itl, self.tpot, self.e2e, self.queue, self.inference, self.prefill,
                       self.decode, self.iteration_tokens, self.prompt_tokens, self.generation_tokens,
                       self.num_preemptions, self.prefill_kv_computed, self.max_tokens_param, self.params_n,
                       self.max_generation_tokens, self.prompt_tokens_cached, self.prompt_tokens_total):
            self._engine_series(family)
        for source in PROMPT_TOKEN_SOURCES:
            self._series(self.prompt_tokens_by_source, model_name=model_name, engine=self.engine_index,
                         source=source)
        # vLLM's frontend admission counter (labels model_name and reason, no engine): a request
        # refused by --max-num-queued-reqs or --max-num-queued-tokens. vLLM labels both reasons at
        # start, so both read 0 until then; the emulator takes neither flag (as vLLM by default,
        # where both limits are off), so they stay 0.
        self.admission_rejections = Counter("vllm:admission_rejections",
                                            "Number of admission attempts rejected by a queue limit, by reason.",
                                            ["model_name", "reason"], registry=reg)
        for reason in ADMISSION_REASONS:
            self.admission_rejections.labels(model_name=model_name, reason=reason)
        # vLLM's info gauge of its CacheConfig (PrometheusStatLogger.log_metrics_info): one series,
        # value 1, the config's fields as labels and then ``engine`` (no model_name).
        if cache_config is not None:
            info = Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
                         [*cache_config, "engine"], registry=reg)
            info.labels(**cache_config, engine=self.engine_index).set(1)
        reg.register(_EngineStatsCollector(self))

        self.http_requests = Counter("http_requests_total", "HTTP requests to the inference routes.",
                                     ["service", "status"], registry=reg)
        self.http_duration = Histogram("http_request_duration_seconds",
                                       "Time from receiving an inference request to its last byte.",
                                       ["service"], buckets=list(HTTP_DURATION_BUCKETS), registry=reg)
        # Both statuses exist from the start, at 0: an error-rate query then reads 0, not an
        # empty vector, before the first error (the simulated fleet does the same).
        for status in ("200", "500"):
            self.http_requests.labels(service=service, status=status)
        self.cost = Counter("llm_request_cost_dollars_total",
                            "Token cost of the answered requests, in dollars.", ["service"], registry=reg)
        self.cost.labels(service=service)
        # With --judge-metrics: what an exact-match judge scores the built-in questions this
        # server answered (1 right, 0 wrong), the series the quality analyses read. Off by
        # default, because the judge job (lab/judge.py) exports it in the course's cluster.
        self.judge = Summary("llm_judge_quality_score", "LLM-judge scores (0 to 1) of judged responses.",
                             ["service"], registry=reg)
        if judge_enabled:
            self.judge.labels(service=service)

    def _labels(self) -> dict[str, str]:
        return {"model_name": self.model_name, "engine": self.engine_index}

    def _series(self, family, **labels: str):
        """``family.labels(**labels)``, the same child, remembered: ``labels()`` checks the
        values and takes a lock on every call, and a finished request observes a dozen series.
        A series appears on /metrics once first looked up."""
        key = (id(family), *labels.values())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(**labels)
        return child

    def _engine_series(self, family):
        return self._series(family, model_name=self.model_name, engine=self.engine_index)

    # -- fed by the engine's listener hooks ---------------------------------------------------
    def observe_step(self, record: Any) -> None:
        if record.num_batched_tokens > 0:
            self._engine_series(self.iteration_tokens).observe(record.num_batched_tokens)

    def observe_prefilled(self, request: Any) -> None:
        """A request's first token is out: its prompt tokens, in all and by source (vLLM counts them then,
        once per request, with the prefix-cache hit of its first admission; a preempted request
        that prefills again is not counted again)."""
        cached = max(request.num_cached_tokens, 0)
        computed = request.num_prompt_tokens - cached
        labels = dict(model_name=self.model_name, engine=self.engine_index)
        self._engine_series(self.prompt_tokens_total).inc(request.num_prompt_tokens)
        self._series(self.prompt_tokens_by_source, **labels, source="local_compute").inc(computed)
        self._series(self.prompt_tokens_by_source, **labels, source="local_cache_hit").inc(cached)
        self._engine_series(self.prompt_tokens_cached).inc(cached)

    def observe_finished(self, request: Any, now_s: float, token_times_s, max_tokens_param: int | None = None,
                         finish_reason: str | None = None) -> None:
        """vLLM's per-request definitions (``v1/metrics/stats.py``), from the request's times.

        ``finish_reason`` is the emulator's plan's: a "stop" the engine finished as a "length"
        moves to vLLM's ``finished_reason="stop"`` in ``vllm:request_success_total``.

        ``max_tokens_param`` is the request's ``max_tokens`` as vLLM's sampling parameters hold
        it (after clipping to the context), not the engine length the emulator plans; None, or
        0, is not observed, as in vLLM. Only requests that finished by themselves (stop or
        length) are observed; aborted ones appear in
        ``vllm:request_success_total{finished_reason="abort"}`` only."""
        if finish_reason == "stop" and request.status.value == "length":
            self.stopped += 1
        n_out = request.num_output_tokens
        series = self._engine_series
        series(self.prompt_tokens).observe(request.num_prompt_tokens)
        series(self.generation_tokens).observe(n_out)
        series(self.e2e).observe(now_s - request.arrival_s)
        series(self.num_preemptions).observe(request.num_preemptions)
        series(self.prefill_kv_computed).observe(request.num_prompt_tokens - max(request.num_cached_tokens, 0))
        if max_tokens_param:
            series(self.max_tokens_param).observe(max_tokens_param)
        if request.first_scheduled_s is None or request.first_token_s is None:
            return  # aborted before it ran: only the token counts and e2e apply
        times = np.asarray(token_times_s, dtype=float)
        last_token_s = float(times[-1]) if len(times) else request.first_token_s
        series(self.ttft).observe(request.first_token_s - request.arrival_s)
        series(self.queue).observe(request.first_scheduled_s - request.arrival_s)
        series(self.prefill).observe(request.first_token_s - request.first_scheduled_s)
        decode_s = last_token_s - request.first_token_s
        series(self.decode).observe(decode_s)
        series(self.inference).observe(last_token_s - request.first_scheduled_s)
        if n_out > 1:
            series(self.tpot).observe(decode_s / (n_out - 1))
        observe_each(series(self.itl), np.diff(times).tolist())

    def observe_parent_finished(self, n: int, max_generation_tokens: int) -> None:
        """All ``n`` engine requests of one prompt have finished: vLLM's ``n`` parameter and the
        most tokens any of them generated (``ParentRequest.observe_finished_request``)."""
        self._engine_series(self.params_n).observe(n)
        self._engine_series(self.max_generation_tokens).observe(max_generation_tokens)

    # -- fed by the HTTP layer -------------------------------------------------------------------
    def observe_http(self, status: int, duration_s: float) -> None:
        self._series(self.http_requests, service=self.service, status=str(status)).inc()
        self._series(self.http_duration, service=self.service).observe(duration_s)

    def observe_answer(self, prompt_tokens: int, completion_tokens: int, judged: list[bool],
                       price_multiplier: float = 1.0) -> None:
        """A request answered in full: its token cost (times the price fault), and the judge's
        score of each built-in question among its choices."""
        dollars = (prompt_tokens * INPUT_PRICE_PER_MTOK + completion_tokens * OUTPUT_PRICE_PER_MTOK) / 1e6
        dollars *= price_multiplier
        self._series(self.cost, service=self.service).inc(dollars)
        if self.judge_enabled:
            for correct in judged:
                self._series(self.judge, service=self.service).observe(1.0 if correct else 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def summary(self) -> list[str]:
        """What the server logs when it stops: how late its tokens left, and how long its clients
        took between an answer and their next request (with the flag that simulates them)."""
        lines = []
        lag, turn = self.lag, self.turnaround
        if lag.count:
            lines.append(f"Streamed {lag.count} tokens; lag behind the simulated timeline: p50 "
                         f"{1e3 * lag.quantile(0.5):.1f} ms, p99 {1e3 * lag.quantile(0.99):.1f} ms, "
                         f"max {1e3 * lag.max_s:.1f} ms; {lag.late_count} ({100 * lag.late_count / lag.count:.1f}%) "
                         f"later than the {1e3 * lag.threshold_s:.1f} ms threshold")
        if turn.count:
            mean_ms = 1e3 * turn.mean_s
            lines.append(f"The clients' turnaround (a response's end to the next request on its connection): "
                         f"mean {mean_ms:.1f} ms over {turn.count} request{'' if turn.count == 1 else 's'}; "
                         f"`servelab bench serve --client-turnaround-ms {mean_ms:.1f}` simulates such a client")
        return lines
