"""The queue worker of exercise 6.1: prompts in a Redis list, answers from the serving pods.

Producers ``RPUSH`` jobs onto a Redis list (``prompts`` by default). Each worker ``BLPOP``s one
job at a time, sends it to an OpenAI-compatible ``/v1/completions`` endpoint (vLLM, or
ServeLab's emulator), and ``RPUSH``es the outcome onto a results list. KEDA scales the worker
Deployment on the length of the prompts list (manifests/queue-scaling/), so a deeper queue
means more workers and more concurrent requests to the serving pods.

A job is JSON ``{"id": ..., "prompt": ..., "max_tokens": ...}``; a bare string is taken as the
prompt. A result is JSON ``{"id", "status": "ok"|"error", "text", "latency_s", "attempts",
"error"}``. Delivery is at most once: a worker killed mid-request loses that job (BLPOP has
already removed it). ``BLMOVE`` into a per-worker processing list would make it at least once,
at the cost of a reaper for dead workers; the exercise keeps the simple form and says so.

Metrics (Prometheus, on ``--metrics-port``): ``queue_worker_jobs_total{status}``,
``queue_worker_job_duration_seconds`` and ``queue_worker_busy``.

Run: ``python3 -m lab.queue_worker --redis-url redis://redis:6379/0 --base-url http://ai-api:8000/v1``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

log = logging.getLogger("servelab.queue_worker")


@dataclass(frozen=True)
class WorkerConfig:
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue: str = "prompts"
    results: str = "results"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = None  # None: the first model the endpoint lists
    max_tokens: int = 64
    request_timeout_s: float = 60.0
    max_attempts: int = 3
    retry_backoff_s: float = 0.5
    max_jobs: int = 0  # 0: run until stopped
    idle_timeout_s: float = 0.0  # 0: wait for jobs forever; else stop after this long idle
    poll_s: float = 1.0  # BLPOP timeout, so a stop signal is seen within it


class QueueWorker:
    def __init__(self, config: WorkerConfig, *, registry=None, http_client=None, redis_client=None):
        import httpx
        import redis
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.jobs = Counter(
            "queue_worker_jobs", "Jobs taken from the queue, by outcome", ["status"], registry=self.registry
        )
        self.duration = Histogram(
            "queue_worker_job_duration_seconds",
            "Time from taking a job to pushing its result",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.busy = Gauge("queue_worker_busy", "1 while a job is in flight", registry=self.registry)
        self.redis = redis_client or redis.Redis.from_url(config.redis_url, decode_responses=True)
        self.http = http_client or httpx.Client(base_url=config.base_url, timeout=config.request_timeout_s)
        self._stop = False
        self._model = config.model

    def stop(self, *_args) -> None:
        """Finish the job in flight, then return from :meth:`run` (SIGTERM does this)."""
        self._stop = True

    def run(self) -> int:
        """Take jobs until stopped, ``max_jobs`` are done or the queue idles too long."""
        done = 0
        idle_since = time.monotonic()
        while not self._stop:
            if self.config.max_jobs and done >= self.config.max_jobs:
                break
            item = self.redis.blpop([self.config.queue], timeout=self.config.poll_s)
            if item is None:
                if self.config.idle_timeout_s and time.monotonic() - idle_since >= self.config.idle_timeout_s:
                    log.info("queue idle for %.1f s, stopping", self.config.idle_timeout_s)
                    break
                continue
            self.handle(item[1])
            done += 1
            idle_since = time.monotonic()
        return done

    def handle(self, raw: str) -> dict:
        start = time.monotonic()
        self.busy.set(1)
        try:
            job = parse_job(raw)
            result = self._complete(job)
        except ValueError as exc:
            result = {"id": None, "status": "error", "text": None, "attempts": 0, "error": str(exc)}
        finally:
            self.busy.set(0)
        result["latency_s"] = round(time.monotonic() - start, 6)
        self.redis.rpush(self.config.results, json.dumps(result, sort_keys=True))
        self.jobs.labels(status=result["status"]).inc()
        self.duration.observe(result["latency_s"])
        return result

    def _complete(self, job: dict) -> dict:
        import httpx

        error = None
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                body = {
                    "model": self._model_name(),
                    "prompt": job["prompt"],
                    "max_tokens": job.get("max_tokens", self.config.max_tokens),
                }
                resp = self.http.post("/completions", json=body)
                if resp.status_code == 200:
                    text = resp.json()["choices"][0]["text"]
                    return {"id": job.get("id"), "status": "ok", "text": text, "attempts": attempt, "error": None}
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code < 500 and resp.status_code != 429:
                    break  # a bad request will not get better by retrying
            except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < self.config.max_attempts:
                time.sleep(self.config.retry_backoff_s * attempt)
        return {"id": job.get("id"), "status": "error", "text": None, "attempts": attempt, "error": error}

    def _model_name(self) -> str:
        if self._model is None:
            resp = self.http.get("/models")
            resp.raise_for_status()
            self._model = resp.json()["data"][0]["id"]
        return self._model


def parse_job(raw: str) -> dict:
    """A job from the queue: JSON with a ``prompt``, or a bare string that is the prompt."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            job = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"job is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(job.get("prompt"), str) or not job["prompt"]:
            raise ValueError("job JSON: expected a non-empty string field 'prompt'")
        if "max_tokens" in job and (not isinstance(job["max_tokens"], int) or job["max_tokens"] <= 0):
            raise ValueError(f"job JSON: max_tokens must be a positive integer, got {job['max_tokens']!r}")
        return job
    if not text:
        raise ValueError("job is empty: expected a prompt or JSON with a 'prompt'")
    return {"id": None, "prompt": raw}


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m lab.queue_worker", description=__doc__.splitlines()[0])
    p.add_argument("--redis-url", default=env("REDIS_URL", WorkerConfig.redis_url))
    p.add_argument("--queue", default=env("QUEUE_NAME", WorkerConfig.queue))
    p.add_argument("--results", default=env("RESULTS_NAME", WorkerConfig.results))
    p.add_argument("--base-url", default=env("OPENAI_BASE_URL", WorkerConfig.base_url))
    p.add_argument("--model", default=env("MODEL"))
    p.add_argument("--max-tokens", type=int, default=WorkerConfig.max_tokens)
    p.add_argument("--request-timeout-s", type=float, default=WorkerConfig.request_timeout_s)
    p.add_argument("--max-attempts", type=int, default=WorkerConfig.max_attempts)
    p.add_argument("--max-jobs", type=int, default=0, help="stop after this many jobs (0: never)")
    p.add_argument("--idle-timeout-s", type=float, default=0.0, help="stop after this long with no job (0: never)")
    p.add_argument("--metrics-port", type=int, default=int(env("METRICS_PORT", "9100")), help="0: no metrics server")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for flag, value in (("--max-tokens", args.max_tokens), ("--max-attempts", args.max_attempts)):
        if value <= 0:
            print(f"error: {flag}: expected a positive integer, got {value}", file=sys.stderr)
            return 2
    config = WorkerConfig(
        redis_url=args.redis_url, queue=args.queue, results=args.results, base_url=args.base_url,
        model=args.model, max_tokens=args.max_tokens, request_timeout_s=args.request_timeout_s,
        max_attempts=args.max_attempts, max_jobs=args.max_jobs, idle_timeout_s=args.idle_timeout_s,
    )
    worker = QueueWorker(config)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, registry=worker.registry)
    signal.signal(signal.SIGTERM, worker.stop)
    log.info("taking jobs from %s at %s, sending them to %s", config.queue, config.redis_url, config.base_url)
    done = worker.run()
    log.info("stopped after %d jobs", done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
