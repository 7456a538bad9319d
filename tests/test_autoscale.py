"""The KEDA + HPA queue-depth autoscaling model (sim/autoscale.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.autoscale import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    QueueLoad,
    QueueScaling,
    ScalingPolicy,
    ScalingRules,
    scaling_from_manifest,
    simulate_autoscaling,
)
from sim.errors import ConfigError, ManifestError

BURST = QueueLoad(arrivals=((60.0, 180.0, 10.0),), service_rate_per_s=0.5, pod_startup_s=10.0)


def test_idle_queue_stays_at_zero():
    r = simulate_autoscaling(QueueLoad((), 1.0), QueueScaling(), duration_s=600)
    assert r.replicas.max() == 0
    assert r.events == ()


def test_burst_scales_up_within_the_bound_and_back_to_zero():
    scaling = QueueScaling()
    r = simulate_autoscaling(BURST, scaling, duration_s=1500)
    up_s = r.first_time(r.ready_replicas > 0, after_s=60)
    assert up_s is not None
    assert up_s - 60 <= scaling.scale_up_bound_s(BURST.pod_startup_s)
    # The burst (10 jobs/s against 0.5 a worker) needs ceil(depth / 5) workers, up to 100.
    assert r.replicas.max() > 10
    assert r.events[0].by == "keda" and r.events[0].to_replicas == 1
    # After the queue drains, the workers stay for the scale-down window, then go, then KEDA
    # takes the last one to zero once cooldownPeriod has passed.
    empty_s = r.first_time(r.queue_depth == 0, after_s=180)
    assert empty_s is not None
    assert r.replicas[int(empty_s) + 60] > 1, "scale-down stabilization (300 s) should hold replicas"
    zero_s = r.first_time(r.replicas == 0, after_s=empty_s)
    assert zero_s is not None
    assert zero_s - empty_s <= scaling.scale_down_bound_s()
    assert r.events[-1].by == "keda" and r.events[-1].to_replicas == 0


def test_queue_depth_balances_arrivals_and_service():
    r = simulate_autoscaling(BURST, QueueScaling(), duration_s=1500)
    arrived = 10.0 * 120
    assert math.isclose(r.completed.sum() + r.queue_depth[-1], arrived, rel_tol=1e-9)


@pytest.mark.parametrize(
    "current, metric, expected",
    [
        pytest.param(4, 20.0, 4, id="on-target"),
        pytest.param(4, 21.0, 4, id="within-tolerance"),
        pytest.param(4, 23.0, 5, id="beyond-tolerance"),
        pytest.param(4, 100.0, 8, id="limited-by-100-percent-per-15s"),
        pytest.param(1, 100.0, 5, id="limited-by-4-pods-per-15s"),
    ],
)
def test_first_hpa_decision(current, metric, expected):
    # One HPA sync at t=0 with a fixed queue and no workers ready yet.
    load = QueueLoad((), 1e-9, pod_startup_s=1000, initial_queue=int(metric))
    r = simulate_autoscaling(
        load, QueueScaling(min_replica_count=1), duration_s=1, initial_replicas=current
    )
    assert int(r.replicas[0]) == expected


def test_scale_down_waits_for_the_stabilization_window():
    scaling = QueueScaling(min_replica_count=1)
    # 50 queued jobs at t=0 justify 10 workers; they drain in a second, and from then on every
    # proposal is 1, but the t=0 proposal of 10 holds for the 300 s window.
    load = QueueLoad((), 100.0, pod_startup_s=0, initial_queue=50)
    r = simulate_autoscaling(load, scaling, duration_s=400, initial_replicas=10)
    window = int(DEFAULT_SCALE_DOWN.stabilization_window_s)
    assert r.replicas[window - 1] == 10
    assert r.replicas[window] < 10
    assert r.replicas[-1] == 1


def test_shorter_window_and_policies_from_behavior():
    fast_down = ScalingRules(30.0, (ScalingPolicy("Pods", 2, 15.0),))
    scaling = QueueScaling(min_replica_count=1, scale_down=fast_down)
    load = QueueLoad((), 100.0, 0, initial_queue=50)
    r = simulate_autoscaling(load, scaling, duration_s=200, initial_replicas=10)
    downs = [e for e in r.events if e.to_replicas < e.from_replicas]
    assert downs[0].t_s == 30.0
    assert all(e.from_replicas - e.to_replicas <= 2 for e in downs)
    assert r.replicas[-1] == 1


def test_plain_hpa_never_scales_to_zero():
    scaling = QueueScaling(min_replica_count=1, keda=False)
    r = simulate_autoscaling(BURST, scaling, duration_s=1500, initial_replicas=1)
    assert r.replicas.min() == 1


def test_seeded_poisson_arrivals_repeat():
    a = simulate_autoscaling(BURST, QueueScaling(), duration_s=600, rng=np.random.default_rng(7))
    b = simulate_autoscaling(BURST, QueueScaling(), duration_s=600, rng=np.random.default_rng(7))
    assert np.array_equal(a.queue_depth, b.queue_depth)
    assert a.events == b.events


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(0.1, 50),
    service=st.floats(0.05, 5),
    max_replicas=st.integers(1, 40),
    min_replicas=st.integers(0, 3),
)
def test_replicas_stay_in_bounds(rate, service, max_replicas, min_replicas):
    min_replicas = min(min_replicas, max_replicas)
    scaling = QueueScaling(min_replica_count=min_replicas, max_replica_count=max_replicas)
    load = QueueLoad(((10.0, 100.0, rate),), service, pod_startup_s=5)
    r = simulate_autoscaling(load, scaling, duration_s=400, dt_s=2.0)
    assert r.replicas.max() <= max_replicas
    assert r.replicas.min() >= min_replicas
    assert (r.ready_replicas <= r.replicas).all()
    assert (r.queue_depth >= 0).all()


SCALED_OBJECT = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: queue-worker}
spec:
  scaleTargetRef: {name: queue-worker}
  pollingInterval: 10
  cooldownPeriod: 120
  minReplicaCount: 0
  maxReplicaCount: 8
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 60
          policies: [{type: Pods, value: 1, periodSeconds: 30}]
  triggers:
    - type: redis
      metadata: {address: redis:6379, listName: prompts, listLength: "3", activationListLength: "1"}
"""


def test_reads_a_scaled_object():
    s = scaling_from_manifest(yaml.safe_load(SCALED_OBJECT))
    assert (s.list_length, s.activation_list_length) == (3.0, 1.0)
    assert (s.polling_interval_s, s.cooldown_period_s) == (10.0, 120.0)
    assert (s.min_replica_count, s.max_replica_count) == (0, 8)
    assert s.scale_down == ScalingRules(60.0, (ScalingPolicy("Pods", 1, 30.0),), "Max")
    assert s.scale_up == DEFAULT_SCALE_UP


def test_reads_an_hpa_with_an_external_metric():
    doc = {
        "kind": "HorizontalPodAutoscaler",
        "spec": {
            "minReplicas": 1,
            "maxReplicas": 6,
            "metrics": [{"type": "External", "external": {"target": {"type": "AverageValue", "averageValue": "4"}}}],
        },
    }
    s = scaling_from_manifest(doc)
    assert (s.list_length, s.max_replica_count, s.keda) == (4.0, 6, False)


@pytest.mark.parametrize(
    "patch, message",
    [
        pytest.param({"spec": {"triggers": [{"type": "cpu"}]}}, "expected a trigger of type 'redis'", id="no-redis"),
        pytest.param({"kind": "Deployment"}, "expected kind ScaledObject", id="wrong-kind"),
        pytest.param(
            {"spec": {"triggers": [{"type": "redis", "metadata": {"listLength": "five"}}]}},
            "listLength: expected a number, got 'five'",
            id="bad-number",
        ),
    ],
)
def test_bad_manifests_name_the_field(patch, message):
    doc = yaml.safe_load(SCALED_OBJECT)
    for key, value in patch.items():
        if isinstance(value, dict):
            doc[key].update(value)
        else:
            doc[key] = value
    with pytest.raises(ManifestError, match=message):
        scaling_from_manifest(doc, source="so.yaml")


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="maxReplicaCount"):
        QueueScaling(min_replica_count=5, max_replica_count=2)
    with pytest.raises(ConfigError, match="listLength"):
        QueueScaling(list_length=0)


def test_the_shipped_scaled_object_handles_a_burst():
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "manifests/queue-scaling/scaledobject.yaml"
    scaling = scaling_from_manifest(yaml.safe_load(path.read_text()), source=str(path))
    assert (scaling.list_length, scaling.max_replica_count, scaling.polling_interval_s) == (5.0, 8, 15.0)
    # The burst-job pushes 200 prompts at once; a worker takes about one every 2 s.
    load = QueueLoad((), service_rate_per_s=0.5, pod_startup_s=10.0, initial_queue=200)
    r = simulate_autoscaling(load, scaling, duration_s=1200)
    up_s = r.first_time(r.ready_replicas > 0)
    assert up_s is not None and up_s <= scaling.scale_up_bound_s(load.pod_startup_s)
    assert r.replicas.max() == 8
    empty_s = r.first_time(r.queue_depth == 0)
    zero_s = r.first_time(r.replicas == 0, after_s=empty_s)
    assert zero_s is not None and zero_s - empty_s <= scaling.scale_down_bound_s()
