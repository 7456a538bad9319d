"""A real Prometheus scrapes two live emulators (stable and canary) and answers every
AnalysisTemplate query of the manifests, plus the course's two queries.

Prometheus (Debian package ``prometheus``) runs on a loopback port with a 1 s scrape interval
and its own temporary storage; the test stops it in a ``finally``. The canary runs with
``--fault error-rate=0.3``, so the error-rate analysis must see about 30 % on the canary and 0
on stable: the queries do not merely answer, they answer what the fault predicts.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import require_program
from tests.test_server import MODEL, _free_port, serving

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARGS = {"canary-service": "ai-api-canary", "stable-service": "ai-api-stable"}

# The course's AnalysisTemplate (issue 4): error rate < 0.01 and p99 < 3000 ms, every 5 minutes.
COURSE_QUERIES = {
    "course/error-rate": 'sum(rate(http_requests_total{service="ai-api-canary",status=~"5.."}[5m])) '
                         '/ sum(rate(http_requests_total{service="ai-api-canary"}[5m]))',
    "course/latency-p99-ms": 'histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket'
                             '{service="ai-api-canary"}[5m])) by (le)) * 1000',
}


def manifest_queries() -> dict[str, str]:
    """Every Prometheus query in the AnalysisTemplates under manifests/, args filled in."""
    out: dict[str, str] = {}
    for path in sorted((ROOT / "manifests").glob("**/*.yaml")) if (ROOT / "manifests").is_dir() else []:
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") not in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
                continue
            for metric in doc["spec"].get("metrics", []):
                query = (metric.get("provider", {}).get("prometheus") or {}).get("query")
                if query:
                    filled = re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", lambda m: ARGS[m.group(1)], query)
                    out[f"{path.name}/{doc['metadata']['name']}/{metric['name']}"] = filled
    return out


def _start_prometheus(targets: dict[str, str], workdir: Path) -> tuple[subprocess.Popen, str]:
    """Prometheus scraping ``targets`` (service name -> host:port) every second.

    Each target gets a ``service`` label, as a Kubernetes scrape config gives every pod the
    name of its Service (relabeling ``__meta_kubernetes_service_name``): vLLM's own series
    carry only ``model_name`` and ``engine``, and the manifests' vLLM queries select by service.
    """
    prometheus = require_program("prometheus")
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "servelab-emulator",
            "static_configs": [{"targets": [address], "labels": {"service": service}}
                               for service, address in targets.items()],
        }],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [prometheus, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=(workdir / "prometheus.log").open("w"))
    return proc, f"http://127.0.0.1:{port}"


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _query(base: str, promql: str) -> list[dict]:
    r = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
    body = r.json()
    assert body["status"] == "success", (promql, body)
    return body["data"]["result"]


def _traffic(emu, rounds: int) -> None:
    from lab.server.questions import QUESTIONS

    for i in range(rounds):
        q = QUESTIONS[i % len(QUESTIONS)]
        for prompt, max_tokens in ((q.text, 8), (f"Tell me about topic {i}", 24)):
            httpx.post(f"{emu.base}/v1/completions", json={"model": MODEL, "prompt": prompt,
                                                           "max_tokens": max_tokens}, timeout=30)


def test_prometheus_answers_every_analysis_query(tmp_path):
    queries = {**COURSE_QUERIES, **manifest_queries()}
    # --judge-metrics: the quality queries read llm_judge_quality_score, which the judge job
    # exports in the cluster; here each emulator scores its own answers to the built-in questions.
    with serving("--service", "ai-api-stable", "--seed", "1", "--judge-metrics") as stable, \
            serving("--service", "ai-api-canary", "--seed", "2", "--judge-metrics",
                    "--fault", "error-rate=0.3") as canary:
        proc, prom = _start_prometheus({"ai-api-stable": f"127.0.0.1:{stable.port}",
                                        "ai-api-canary": f"127.0.0.1:{canary.port}"}, tmp_path)
        try:
            _wait(lambda: httpx.get(f"{prom}/-/ready").status_code == 200, 30, "prometheus to be ready")
            _wait(lambda: len(_query(prom, 'up{job="servelab-emulator"} == 1')) == 2, 30, "both targets up")
            deadline = time.monotonic() + 5
            rounds = 0
            while time.monotonic() < deadline:  # about five seconds of traffic: five scrapes or more
                _traffic(stable, 2)
                _traffic(canary, 2)
                rounds += 1
            time.sleep(2.5)  # two more scrapes after the last request
            results = {name: _query(prom, q) for name, q in queries.items()}
            vllm_series = _query(prom, "sum by (instance) (rate(vllm:generation_tokens_total[1m]))")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    for name, result in results.items():
        assert len(result) == 1, f"{name}: expected one series, got {result}\nquery: {queries[name]}"
        value = float(result[0]["value"][1])
        assert math.isfinite(value), f"{name}: {value}\nquery: {queries[name]}"
    error_rate = float(results["course/error-rate"][0]["value"][1])
    assert 0.1 < error_rate < 0.6, error_rate  # the canary's 30 % fault, as Prometheus sees it
    p99_ms = float(results["course/latency-p99-ms"][0]["value"][1])
    assert 0 < p99_ms < 3000, p99_ms  # short answers on an idle H100: well under the course's bound
    assert len(vllm_series) == 2  # vLLM's own series, one per server
    print(f"\n{len(results)} queries answered; canary error rate {error_rate:.3f}, p99 {p99_ms:.0f} ms")
