"""The emulator's measure of a client's turnaround between an answer and its next request
(lab/server/turnaround.py), without a server: connections are keys, times are given."""

from __future__ import annotations

import pytest

from lab.server.turnaround import MAX_GAP_S, TurnaroundMonitor


def _buckets(monitor: TurnaroundMonitor) -> dict[str, float]:
    family = monitor.metric_family()
    return {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}


def test_a_gap_is_counted_on_its_own_connection_only():
    m = TurnaroundMonitor()
    m.request_started("a", 0.0)  # a first request: nothing before it
    m.response_ended("a", 1.0)
    m.response_ended("b", 1.5)
    m.request_started("c", 1.6)  # a fresh connection: no gap
    m.request_started("a", 1.03125)  # times a float holds exactly, so the buckets are sure
    m.request_started("b", 1.515625)
    assert m.count == 2
    assert m.sum_s == 0.046875
    assert m.mean_s == pytest.approx(0.0234375)
    b = _buckets(m)
    assert b["0.015"] == 0 and b["0.02"] == 1 and b["0.03"] == 1 and b["0.05"] == 2 and b["+Inf"] == 2


def test_each_response_is_counted_once():
    m = TurnaroundMonitor()
    m.response_ended("a", 0.0)
    m.request_started("a", 0.01)
    m.request_started("a", 0.02)  # no response ended in between: not a turnaround
    assert m.count == 1


def test_pauses_longer_than_the_limit_are_left_out_and_forgotten():
    m = TurnaroundMonitor()
    m.response_ended("idle", 0.0)
    m.response_ended("busy", 0.0)
    m.request_started("idle", MAX_GAP_S + 2.5)  # vLLM's client between its test prompt and its run
    assert m.count == 0
    m.response_ended("other", 3 * MAX_GAP_S)  # "busy" has been idle too long: forgotten
    assert "busy" not in m._ended and "other" in m._ended
    assert m.mean_s != m.mean_s  # nan: nothing counted


def test_unknown_connections_are_ignored():
    m = TurnaroundMonitor()
    m.response_ended(None, 0.0)
    m.request_started(None, 0.1)
    assert m.count == 0 and not m._ended
