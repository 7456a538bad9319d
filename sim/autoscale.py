"""Queue-depth autoscaling, as KEDA and the Horizontal Pod Autoscaler do it (exercise 6.1).

A queue of prompts (a Redis list) feeds a Deployment of workers. KEDA's ``redis`` scaler reads
the list length; KEDA itself moves the Deployment between 0 and 1 replica, and the HPA that KEDA
creates moves it between 1 and ``maxReplicaCount``. This module replays that control loop over
a queue arrival process and returns the replica count and queue depth over time, so that the
exercise check can ask "did a burst scale the workers up within the time the settings imply,
and back down after?" without a cluster.

The rules followed (Kubernetes 1.31 ``pkg/controller/podautoscaler``, KEDA 2.16 docs):

- **KEDA's loop** runs every ``pollingInterval`` (30 s). The scaler is *active* when the list
  length is above ``activationListLength`` (0). Active at 0 replicas: scale to
  ``max(minReplicaCount, 1)``. Inactive for ``cooldownPeriod`` (300 s) since the last active
  poll, with ``minReplicaCount`` 0: scale to 0. Nothing else: from 1 replica up, the HPA decides.
- **The HPA's loop** runs every sync period (15 s, the controller manager's
  ``--horizontal-pod-autoscaler-sync-period``) and does nothing at 0 replicas. KEDA gives it an
  External metric with an ``AverageValue`` target of ``listLength`` (5):
  ``ratio = length / (listLength x replicas)``; within the tolerance (``|ratio - 1| <= 0.1``)
  it keeps the replica count, otherwise it proposes ``ceil(length / listLength)``.
- **Stabilization:** every proposal is remembered. The result is at least the smallest proposal
  of the scale-up window (0 s by default) and at most the largest of the scale-down window
  (300 s by default), which is why workers linger five minutes after a burst.
- **Rate limits** (``behavior.*.policies``), counted from the replica count at the start of each
  policy's period: scale-up by default allows ``max(+100 %, +4 pods)`` per 15 s, scale-down
  ``-100 %`` per 15 s; ``selectPolicy: Max`` takes the policy that allows the larger change.
- Replicas are clamped to ``[max(minReplicaCount, 1), maxReplicaCount]`` by the HPA.

Departures, on purpose: the HPA counts pods that exist (``status.replicas``), ready or not;
we count the replicas asked for, because pods are created at once here. A new pod takes
``pod_startup_s`` to start taking jobs. Each ready worker takes ``service_rate_per_s`` jobs a
second (one at a time, as the queue worker does). Time moves in steps of ``dt_s``; both loops
fire on the first step at or after their due time. Arrivals are a fluid (exact rates) unless a
seeded ``numpy.random.Generator`` is passed, then each step's arrivals are Poisson.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sim.errors import ConfigError, ManifestError

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]

HPA_SYNC_PERIOD_S = 15.0  # kube-controller-manager's default --horizontal-pod-autoscaler-sync-period
HPA_TOLERANCE = 0.1  # kube-controller-manager's default --horizontal-pod-autoscaler-tolerance


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """One entry of ``behavior.scaleUp|scaleDown.policies``."""

    type: PolicyType
    value: int
    period_s: float

    def __post_init__(self) -> None:
        if self.type not in ("Pods", "Percent"):
            raise ConfigError(f"policies[].type: expected Pods or Percent, got {self.type!r}")
        if not isinstance(self.value, int) or self.value <= 0:
            raise ConfigError(f"policies[].value: expected a positive integer, got {self.value!r}")
        if not 0 < self.period_s <= 1800:
            raise ConfigError(f"policies[].periodSeconds: expected 1 to 1800, got {self.period_s!r}")


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """``behavior.scaleUp`` or ``behavior.scaleDown`` of an autoscaling/v2 HPA."""

    stabilization_window_s: float
    policies: tuple[ScalingPolicy, ...]
    select_policy: SelectPolicy = "Max"

    def __post_init__(self) -> None:
        if not 0 <= self.stabilization_window_s <= 3600:
            raise ConfigError(
                f"stabilizationWindowSeconds: expected 0 to 3600, got {self.stabilization_window_s!r}"
            )
        if self.select_policy not in ("Max", "Min", "Disabled"):
            raise ConfigError(f"selectPolicy: expected Max, Min or Disabled, got {self.select_policy!r}")


# The HPA's defaults when ``behavior`` is left out (Kubernetes docs, "Default Behavior").
DEFAULT_SCALE_UP = ScalingRules(
    0.0, (ScalingPolicy("Percent", 100, 15.0), ScalingPolicy("Pods", 4, 15.0)), "Max"
)
DEFAULT_SCALE_DOWN = ScalingRules(300.0, (ScalingPolicy("Percent", 100, 15.0),), "Max")


@dataclass(frozen=True, slots=True)
class QueueScaling:
    """What a KEDA ScaledObject with a ``redis`` trigger (or a plain HPA) sets."""

    list_length: float = 5.0  # target list length per replica (AverageValue)
    activation_list_length: float = 0.0
    polling_interval_s: float = 30.0
    cooldown_period_s: float = 300.0
    min_replica_count: int = 0
    max_replica_count: int = 100
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN
    hpa_sync_period_s: float = HPA_SYNC_PERIOD_S
    tolerance: float = HPA_TOLERANCE
    keda: bool = True  # False: a plain HPA, which never scales to or from zero

    def __post_init__(self) -> None:
        if not self.list_length > 0:
            raise ConfigError(f"listLength: expected a number > 0, got {self.list_length!r}")
        if self.activation_list_length < 0:
            raise ConfigError(
                f"activationListLength: expected a number >= 0, got {self.activation_list_length!r}"
            )
        for name, value in (
            ("pollingInterval", self.polling_interval_s),
            ("hpa sync period", self.hpa_sync_period_s),
        ):
            if not value > 0:
                raise ConfigError(f"{name}: expected seconds > 0, got {value!r}")
        if self.cooldown_period_s < 0:
            raise ConfigError(f"cooldownPeriod: expected seconds >= 0, got {self.cooldown_period_s!r}")
        if self.min_replica_count < 0:
            raise ConfigError(f"minReplicaCount: expected >= 0, got {self.min_replica_count!r}")
        if not self.keda and self.min_replica_count < 1:
            raise ConfigError(f"minReplicas: expected >= 1 for a plain HPA, got {self.min_replica_count!r}")
        if self.max_replica_count < max(self.min_replica_count, 1):
            raise ConfigError(
                f"maxReplicaCount: expected >= max(minReplicaCount, 1) = "
                f"{max(self.min_replica_count, 1)}, got {self.max_replica_count!r}"
            )

    @property
    def hpa_min_replicas(self) -> int:
        # KEDA creates its HPA with minReplicas = max(minReplicaCount, 1); 0 <-> 1 is KEDA's job.
        return max(self.min_replica_count, 1)

    def scale_up_bound_s(self, pod_startup_s: float = 0.0) -> float:
        """Longest wait, by these settings, from a deep queue to the first added worker ready.

        From zero: up to one KEDA poll to activate, then the pod starts. From one or more: up
        to one HPA sync plus the scale-up stabilization window, then the pod starts.
        """
        hpa_s = self.hpa_sync_period_s + self.scale_up.stabilization_window_s
        first_s = self.polling_interval_s if (self.keda and self.min_replica_count == 0) else hpa_s
        return max(first_s, hpa_s) + pod_startup_s

    def scale_down_bound_s(self) -> float:
        """Longest wait, by these settings, from an empty queue to the lowest replica count."""
        down_s = self.scale_down.stabilization_window_s + 2 * self.hpa_sync_period_s
        if self.keda and self.min_replica_count == 0:
            down_s = max(down_s, self.cooldown_period_s + self.polling_interval_s)
        # Rate limits can spread the way down over several periods (halving each at -50 %).
        slowest = max((p.period_s for p in self.scale_down.policies), default=0.0)
        steps = math.ceil(math.log2(max(self.max_replica_count, 2))) + 1
        return down_s + steps * max(slowest, self.hpa_sync_period_s)


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """The queue's arrivals and the workers' speed."""

    arrivals: tuple[tuple[float, float, float], ...]  # (start_s, end_s, jobs per second)
    service_rate_per_s: float  # jobs a second one ready worker completes
    pod_startup_s: float = 10.0
    initial_queue: int = 0

    def __post_init__(self) -> None:
        for i, (start_s, end_s, rate) in enumerate(self.arrivals):
            if not (0 <= start_s < end_s) or rate < 0:
                raise ConfigError(
                    f"arrivals[{i}]: expected 0 <= start_s < end_s and rate >= 0, "
                    f"got ({start_s}, {end_s}, {rate})"
                )
        if not self.service_rate_per_s > 0:
            raise ConfigError(f"service_rate_per_s: expected > 0, got {self.service_rate_per_s!r}")
        if self.pod_startup_s < 0 or self.initial_queue < 0:
            raise ConfigError("pod_startup_s and initial_queue: expected >= 0")

    def rate_at(self, t_s: float) -> float:
        return sum(rate for start_s, end_s, rate in self.arrivals if start_s <= t_s < end_s)


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    t_s: float
    from_replicas: int
    to_replicas: int
    by: Literal["keda", "hpa"]
    reason: str


@dataclass(frozen=True)
class AutoscaleResult:
    t_s: np.ndarray  # start of each step
    queue_depth: np.ndarray  # list length at the end of each step
    replicas: np.ndarray  # replicas asked for (the Deployment's spec.replicas)
    ready_replicas: np.ndarray  # workers taking jobs
    completed: np.ndarray  # jobs finished during each step
    events: tuple[ScaleEvent, ...] = field(default=())

    def first_time(self, condition: np.ndarray, after_s: float = 0.0) -> float | None:
        """The first step time at or after ``after_s`` where ``condition`` holds, or None."""
        hits = np.nonzero(condition & (self.t_s >= after_s))[0]
        return float(self.t_s[hits[0]]) if hits.size else None


def simulate_autoscaling(
    load: QueueLoad,
    scaling: QueueScaling,
    *,
    duration_s: float,
    dt_s: float = 1.0,
    initial_replicas: int | None = None,
    rng: np.random.Generator | None = None,
) -> AutoscaleResult:
    """Replay KEDA's and the HPA's loops over ``duration_s``; see the module docstring."""
    if not duration_s > 0 or not dt_s > 0:
        raise ConfigError(f"duration_s and dt_s: expected > 0, got {duration_s!r} and {dt_s!r}")
    n = int(math.ceil(duration_s / dt_s))
    replicas = scaling.min_replica_count if initial_replicas is None else initial_replicas
    if not 0 <= replicas <= scaling.max_replica_count:
        raise ConfigError(f"initial_replicas: expected 0 to {scaling.max_replica_count}, got {replicas}")
    # Each pod's ready time; the newest pods are removed first on scale-down (as a
    # ReplicaSet prefers not-ready and younger pods).
    pods_ready_s: list[float] = [0.0] * replicas
    queue = float(load.initial_queue)
    last_active_s = 0.0 if replicas > 0 else -math.inf
    next_poll_s, next_sync_s = 0.0, 0.0
    recommendations: list[tuple[float, int]] = []  # (t_s, HPA proposal)
    changes: list[tuple[float, int]] = []  # (t_s, replicas added (+) or removed (-)) by the HPA
    events: list[ScaleEvent] = []
    out = {k: np.zeros(n) for k in ("t", "queue", "replicas", "ready", "done")}

    def set_replicas(t_s: float, new: int, by: str, reason: str) -> None:
        nonlocal replicas
        if new == replicas:
            return
        events.append(ScaleEvent(t_s, replicas, new, by, reason))  # type: ignore[arg-type]
        if new > replicas:
            pods_ready_s.extend([t_s + load.pod_startup_s] * (new - replicas))
        else:
            del pods_ready_s[new:]
        replicas = new

    for i in range(n):
        t_s = i * dt_s
        if scaling.keda and t_s >= next_poll_s:
            next_poll_s += scaling.polling_interval_s
            active = queue > scaling.activation_list_length
            if active:
                last_active_s = t_s
                if replicas == 0:
                    set_replicas(t_s, scaling.hpa_min_replicas, "keda", "activated")
            elif (
                replicas > 0
                and scaling.min_replica_count == 0
                and t_s - last_active_s >= scaling.cooldown_period_s
            ):
                set_replicas(t_s, 0, "keda", "cooldownPeriod passed with an empty list")
                recommendations.clear()
        if t_s >= next_sync_s:
            next_sync_s += scaling.hpa_sync_period_s
            if replicas > 0:
                new, reason = _hpa_step(t_s, replicas, queue, scaling, recommendations, changes)
                if new != replicas:
                    changes.append((t_s, new - replicas))
                    set_replicas(t_s, new, "hpa", reason)
        arrivals = load.rate_at(t_s) * dt_s
        if rng is not None:
            arrivals = float(rng.poisson(arrivals))
        queue += arrivals
        ready = sum(1 for ready_s in pods_ready_s if ready_s <= t_s)
        done = min(queue, ready * load.service_rate_per_s * dt_s)
        queue -= done
        out["t"][i], out["queue"][i], out["replicas"][i] = t_s, queue, replicas
        out["ready"][i], out["done"][i] = ready, done
    return AutoscaleResult(
        t_s=out["t"],
        queue_depth=out["queue"],
        replicas=out["replicas"].astype(np.int64),
        ready_replicas=out["ready"].astype(np.int64),
        completed=out["done"],
        events=tuple(events),
    )


def _hpa_step(
    t_s: float,
    current: int,
    metric: float,
    s: QueueScaling,
    recommendations: list[tuple[float, int]],
    changes: list[tuple[float, int]],
) -> tuple[int, str]:
    """One HPA reconcile: proposal, stabilization, rate limits, bounds."""
    ratio = metric / (s.list_length * current)
    if abs(ratio - 1.0) <= s.tolerance:
        proposal = current
    else:
        proposal = math.ceil(metric / s.list_length)
    # Stabilization, as Kubernetes' stabilizeRecommendationWithBehaviors does it.
    up, down = proposal, proposal
    for rec_t_s, rec in recommendations:
        if rec_t_s > t_s - s.scale_up.stabilization_window_s:
            up = min(up, rec)
        if rec_t_s > t_s - s.scale_down.stabilization_window_s:
            down = max(down, rec)
    recommendations.append((t_s, proposal))
    keep_s = max(s.scale_up.stabilization_window_s, s.scale_down.stabilization_window_s)
    recommendations[:] = [(rt, r) for rt, r in recommendations if rt > t_s - keep_s]
    wanted = min(max(current, up), down)
    reason = f"list length {metric:g} / listLength {s.list_length:g} -> {proposal}"
    if wanted > current:
        limit = _scale_up_limit(t_s, current, s.scale_up, changes)
        if limit < wanted:
            wanted, reason = limit, reason + f" (limited to {limit} by scaleUp policies)"
    elif wanted < current:
        limit = _scale_down_limit(t_s, current, s.scale_down, changes)
        if limit > wanted:
            wanted, reason = limit, reason + f" (limited to {limit} by scaleDown policies)"
    bounded = min(max(wanted, s.hpa_min_replicas), s.max_replica_count)
    return bounded, reason


def _scale_up_limit(t_s: float, current: int, rules: ScalingRules, changes) -> int:
    if rules.select_policy == "Disabled":
        return current
    limits = []
    for p in rules.policies:
        added = sum(d for ct, d in changes if d > 0 and ct > t_s - p.period_s)
        start = current - added
        limits.append(start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100)))
    if not limits:
        return 2**31 - 1
    return max(limits) if rules.select_policy == "Max" else min(limits)


def _scale_down_limit(t_s: float, current: int, rules: ScalingRules, changes) -> int:
    if rules.select_policy == "Disabled":
        return current
    limits = []
    for p in rules.policies:
        removed = sum(-d for ct, d in changes if d < 0 and ct > t_s - p.period_s)
        start = current + removed
        limits.append(start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100)))
    if not limits:
        return 0
    return min(limits) if rules.select_policy == "Max" else max(limits)


# ---------------------------------------------------------------------------------------------
# Reading the settings out of a manifest (already parsed from YAML by the caller).


def scaling_from_manifest(doc: dict[str, Any], *, source: str = "manifest") -> QueueScaling:
    """A :class:`QueueScaling` from a KEDA ``ScaledObject`` or an ``autoscaling/v2`` HPA."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    spec = doc.get("spec") if isinstance(doc, dict) else None
    if not isinstance(spec, dict):
        raise ManifestError(f"{source}: expected a ScaledObject or HorizontalPodAutoscaler with a spec")
    if kind == "ScaledObject":
        triggers = [t for t in spec.get("triggers") or [] if isinstance(t, dict)]
        redis = [t for t in triggers if t.get("type") in ("redis", "redis-cluster")]
        if not redis:
            found = [t.get("type") for t in triggers]
            raise ManifestError(
                f"{source}: spec.triggers: expected a trigger of type 'redis' (Redis list length), "
                f"found {found or 'none'}"
            )
        meta = redis[0].get("metadata") or {}
        behavior = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior")
        return QueueScaling(
            list_length=_num(meta.get("listLength", 5), f"{source}: spec.triggers[redis].metadata.listLength"),
            activation_list_length=_num(
                meta.get("activationListLength", 0),
                f"{source}: spec.triggers[redis].metadata.activationListLength",
            ),
            polling_interval_s=_num(spec.get("pollingInterval", 30), f"{source}: spec.pollingInterval"),
            cooldown_period_s=_num(spec.get("cooldownPeriod", 300), f"{source}: spec.cooldownPeriod"),
            min_replica_count=int(_num(spec.get("minReplicaCount", 0), f"{source}: spec.minReplicaCount")),
            max_replica_count=int(_num(spec.get("maxReplicaCount", 100), f"{source}: spec.maxReplicaCount")),
            scale_up=_rules(behavior, "scaleUp", DEFAULT_SCALE_UP, source),
            scale_down=_rules(behavior, "scaleDown", DEFAULT_SCALE_DOWN, source),
        )
    if kind == "HorizontalPodAutoscaler":
        metrics = [m for m in spec.get("metrics") or [] if isinstance(m, dict) and m.get("type") == "External"]
        if not metrics:
            raise ManifestError(
                f"{source}: spec.metrics: expected an External metric (the queue length), found none"
            )
        target = (metrics[0].get("external") or {}).get("target") or {}
        if "averageValue" not in target:
            raise ManifestError(
                f"{source}: spec.metrics[External].external.target: expected averageValue "
                f"(list length per replica), found {sorted(target) or 'nothing'}"
            )
        return QueueScaling(
            list_length=_num(target["averageValue"], f"{source}: ...target.averageValue"),
            min_replica_count=int(_num(spec.get("minReplicas", 1), f"{source}: spec.minReplicas")),
            max_replica_count=int(_num(spec.get("maxReplicas"), f"{source}: spec.maxReplicas")),
            scale_up=_rules(spec.get("behavior"), "scaleUp", DEFAULT_SCALE_UP, source),
            scale_down=_rules(spec.get("behavior"), "scaleDown", DEFAULT_SCALE_DOWN, source),
            keda=False,
        )
    raise ManifestError(f"{source}: expected kind ScaledObject or HorizontalPodAutoscaler, got {kind!r}")


def _num(value: Any, where: str) -> float:
    # KEDA trigger metadata values are strings ("5"); Kubernetes quantities may be too.
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ManifestError(f"{where}: expected a finite number, got {value!r}")
    return number


def _rules(behavior: Any, key: str, default: ScalingRules, source: str) -> ScalingRules:
    if not behavior or not isinstance(behavior, dict) or not behavior.get(key):
        return default
    raw = behavior[key]
    where = f"{source}: behavior.{key}"
    try:
        policies = tuple(
            ScalingPolicy(
                str(p.get("type")),
                int(_num(p.get("value"), f"{where}.policies[{i}].value")),
                _num(p.get("periodSeconds"), f"{where}.policies[{i}].periodSeconds"),
            )
            for i, p in enumerate(raw.get("policies") or [])
        ) or default.policies
        return ScalingRules(
            _num(raw.get("stabilizationWindowSeconds", default.stabilization_window_s),
                 f"{where}.stabilizationWindowSeconds"),
            policies,
            raw.get("selectPolicy", "Max"),
        )
    except ConfigError as exc:
        raise ManifestError(f"{where}: {exc}") from None
