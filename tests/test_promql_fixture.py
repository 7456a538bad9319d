"""The reusable Prometheus fixture: backfilled samples come back through the HTTP API."""

import pytest
from prom_fixtures import query

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
