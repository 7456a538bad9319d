"""The reusable start_prometheus fixture: backfilled samples and scraped targets come back
through the HTTP API."""

import time

import pytest
from prom_fixtures import free_port, query
from prometheus_client import CollectorRegistry, Counter, start_http_server

from sim.promql import SeriesStore

pytestmark = pytest.mark.prometheus


def test_start_prometheus_serves_backfilled_samples(start_prometheus):
    store = SeriesStore()
    store.declare("vllm:num_requests_waiting", "gauge")
    store.append("vllm:num_requests_waiting", {"model_name": "m"}, [1_700_000_000.0, 1_700_000_015.5], [3.0, 4.0])
    base = start_prometheus(openmetrics=store.to_openmetrics())
    kind, vector = query(base, "vllm:num_requests_waiting", 1_700_000_016)
    assert kind == "vector"
    assert vector == [((("__name__", "vllm:num_requests_waiting"), ("model_name", "m")), 4.0)]


def test_start_prometheus_scrapes_a_target(start_prometheus):
    """The scrape mode the emulator's test uses: Prometheus scrapes a /metrics on loopback."""
    registry = CollectorRegistry()
    requests = Counter("http_requests", "Requests.", ["service", "status"], registry=registry)
    requests.labels(service="ai-api-canary", status="200").inc(5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        base = start_prometheus(
            config_yaml=(
                "global: {scrape_interval: 1s}\n"
                "scrape_configs:\n"
                f"  - job_name: emulator\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
            )
        )
        deadline = time.monotonic() + 30
        vector = []
        while time.monotonic() < deadline and not vector:
            time.sleep(0.5)
            _, vector = query(base, 'http_requests_total{service="ai-api-canary"}', time.time())
        assert [v for _, v in vector] == [5.0]
        assert dict(vector[0][0])["job"] == "emulator"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
