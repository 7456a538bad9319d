"""Check for exercise 6.1: scale the queue workers on Redis queue depth.

The student writes ``scaledobject.yaml``: a KEDA ScaledObject with a ``redis`` trigger (or an
``autoscaling/v2`` HorizontalPodAutoscaler on an External queue metric) for the worker
Deployment of ``manifests/queue-scaling/``. The check

1. validates it against that Deployment (target name, namespace, Redis address, list name);
2. replays a burst through ``sim.autoscale`` (KEDA's poll, the HPA's sync, stabilization
   windows and rate limits) and asks: did the workers scale up within the time the student's
   own settings imply, did they keep up with the burst, was the backlog gone soon after, and
   did they scale back down afterwards?
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from lab.exercises import Finding
from lab.exercises.yaml_docs import dig, find_kind, load_docs
from sim.errors import ServeLabError

REPO = Path(__file__).resolve().parents[2]
QUEUE_MANIFESTS = REPO / "manifests" / "queue-scaling"

# The test burst: quiet, then BURST_RATE prompts a second for BURST_LEN_S, then quiet again.
BURST_START_S = 300.0
BURST_LEN_S = 300.0
BURST_RATE_PER_S = 5.0
SERVICE_RATE_PER_S = 0.5  # one worker, one prompt at a time, about 2 s per completion
POD_STARTUP_S = 10.0
DURATION_S = 2700.0
# The course's service level for the burst: the backlog is gone this soon after it ends.
DRAIN_DEADLINE_S = 300.0
# ... and the first prompt of a burst waits at most this long for an added worker.
FIRST_WORKER_DEADLINE_S = 60.0


def worker_facts() -> dict:
    """What the ScaledObject must agree with, read from manifests/queue-scaling/ when present."""
    facts = {
        "deployment": "queue-worker",
        "namespace": "ai-queue",
        "list_name": "prompts",
        "redis_host": "redis",
        "source": "exercises/6.1/README.md",
    }
    if not QUEUE_MANIFESTS.is_dir():
        return facts
    for path in sorted(QUEUE_MANIFESTS.glob("*.yaml")):
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(d, dict)]
        except yaml.YAMLError:
            continue
        for doc in docs:
            if doc.get("kind") != "Deployment":
                continue
            for container in dig(doc, "spec.template.spec.containers", []) or []:
                env = {e.get("name"): e.get("value") for e in container.get("env") or [] if isinstance(e, dict)}
                list_name = env.get("QUEUE_NAME") or env.get("REDIS_LIST") or env.get("QUEUE")
                if list_name:
                    facts.update(
                        deployment=dig(doc, "metadata.name", facts["deployment"]),
                        namespace=dig(doc, "metadata.namespace", facts["namespace"]),
                        list_name=list_name,
                        source=f"manifests/queue-scaling/{path.name}",
                    )
                    host = env.get("REDIS_HOST") or env.get("REDIS_URL") or ""
                    if host:
                        facts["redis_host"] = host.split("//")[-1].split(":")[0].split(".")[0]
    return facts


def check(folder: Path, progress) -> tuple[list[Finding], dict]:
    from sim import autoscale

    file = "scaledobject.yaml"
    docs, problem = load_docs(folder / file)
    if problem:
        return [problem], {}
    doc = find_kind(docs, "ScaledObject", "HorizontalPodAutoscaler")
    if doc is None:
        kinds = [d.get("kind") for d in docs]
        return [
            Finding(
                False,
                f"no ScaledObject or HorizontalPodAutoscaler (found kinds {kinds})",
                f"{file}: kind",
                "write a KEDA ScaledObject (apiVersion keda.sh/v1alpha1) with a redis trigger",
            )
        ], {}
    kind = doc["kind"]
    facts = worker_facts()
    findings = _validate(doc, kind, file, facts)
    try:
        scaling = autoscale.scaling_from_manifest(doc, source=file)
    except ServeLabError as exc:
        # sim.autoscale says "<file>: <YAML path>: <what>"; split it into where and what.
        message = str(exc).removeprefix(f"{file}: ")
        path, _, what = message.partition(": ")
        findings.append(
            Finding(False, what or message, f"{file}: {path}" if what else file, _fix_for(message))
        )
        return findings, {}
    findings.append(
        Finding(
            True,
            f"listLength {scaling.list_length:g} prompts per worker, {scaling.min_replica_count} to "
            f"{scaling.max_replica_count} workers, pollingInterval {scaling.polling_interval_s:g} s, "
            f"cooldownPeriod {scaling.cooldown_period_s:g} s",
            file,
            info=True,
        )
    )

    progress("replaying a burst through KEDA's and the HPA's control loops")
    load = autoscale.QueueLoad(
        arrivals=((BURST_START_S, BURST_START_S + BURST_LEN_S, BURST_RATE_PER_S),),
        service_rate_per_s=SERVICE_RATE_PER_S,
        pod_startup_s=POD_STARTUP_S,
    )
    result = autoscale.simulate_autoscaling(load, scaling, duration_s=DURATION_S)
    findings.extend(_judge(result, scaling, file))
    details = {
        "series": {
            "t_s": result.t_s[::10].tolist(),
            "queue_depth": result.queue_depth[::10].round(2).tolist(),
            "replicas": result.replicas[::10].tolist(),
            "ready_replicas": result.ready_replicas[::10].tolist(),
        },
        "events": [
            {"t_s": e.t_s, "from": e.from_replicas, "to": e.to_replicas, "by": e.by, "reason": e.reason}
            for e in result.events
        ],
        "burst": {"start_s": BURST_START_S, "end_s": BURST_START_S + BURST_LEN_S, "rate_per_s": BURST_RATE_PER_S},
    }
    return findings, details


def _validate(doc: dict, kind: str, file: str, facts: dict) -> list[Finding]:
    out: list[Finding] = []
    src = facts["source"]
    ns = dig(doc, "metadata.namespace")
    if ns != facts["namespace"]:
        found = "metadata.namespace is missing (the object would land in the default namespace)" if ns is None else f"namespace is {ns!r}"
        out.append(
            Finding(
                False,
                f"{found}, the workers run in {facts['namespace']!r} ({src})",
                f"{file}: metadata.namespace",
                f"set metadata.namespace: {facts['namespace']}; an autoscaler only scales a Deployment in its own namespace",
            )
        )
    if kind == "ScaledObject":
        if not str(doc.get("apiVersion", "")).startswith("keda.sh/"):
            out.append(
                Finding(False, f"apiVersion is {doc.get('apiVersion')!r}", f"{file}: apiVersion", "use apiVersion: keda.sh/v1alpha1")
            )
        target = dig(doc, "spec.scaleTargetRef.name")
        target_path = "spec.scaleTargetRef.name"
    else:
        if doc.get("apiVersion") != "autoscaling/v2":
            out.append(
                Finding(False, f"apiVersion is {doc.get('apiVersion')!r}", f"{file}: apiVersion", "use apiVersion: autoscaling/v2 (v1 has no external metrics)")
            )
        target = dig(doc, "spec.scaleTargetRef.name")
        target_path = "spec.scaleTargetRef.name"
    if target == facts["deployment"]:
        out.append(Finding(True, f"scales the Deployment {target!r}", f"{file}: {target_path}"))
    else:
        out.append(
            Finding(
                False,
                f"scales {target!r}, but the workers are the Deployment {facts['deployment']!r} ({src})",
                f"{file}: {target_path}",
                f"set {target_path}: {facts['deployment']}",
            )
        )
    if kind == "ScaledObject":
        raw = dig(doc, "spec.triggers", [])
        if isinstance(raw, dict):
            out.append(
                Finding(
                    False,
                    "spec.triggers is a mapping, but KEDA expects a list of triggers",
                    f"{file}: spec.triggers",
                    "write a list: each trigger starts with a dash ('- type: redis', its metadata indented under it)",
                )
            )
        triggers = [t for t in raw or [] if isinstance(t, dict)] if isinstance(raw, list) else []
        for i, t in enumerate(triggers):
            if t.get("type") not in ("redis", "redis-cluster"):
                continue
            meta = t.get("metadata") or {}
            # KEDA's CRD types trigger metadata as map[string]string: the API server refuses
            # `listLength: 5`, although a number would mean the same thing to us.
            for key, value in meta.items():
                if not isinstance(value, str):
                    out.append(
                        Finding(
                            False,
                            f"{key} is the {type(value).__name__} {value!r}; KEDA's trigger metadata are strings, "
                            "so the API server refuses the object",
                            f"{file}: spec.triggers[{i}].metadata.{key}",
                            f'quote it: {key}: "{value}"',
                        )
                    )
            list_name = meta.get("listName")
            if list_name != facts["list_name"]:
                out.append(
                    Finding(
                        False,
                        f"listName is {list_name!r}, but the workers read the Redis list {facts['list_name']!r} ({src})",
                        f"{file}: spec.triggers[{i}].metadata.listName",
                        f"set listName: {facts['list_name']}; KEDA would watch a list nobody fills and never scale",
                    )
                )
            address = str(meta.get("address") or meta.get("host") or meta.get("addressFromEnv") or "")
            if not address:
                out.append(
                    Finding(
                        False,
                        "the trigger has no Redis address",
                        f"{file}: spec.triggers[{i}].metadata.address",
                        f"set address: {facts['redis_host']}.{facts['namespace']}.svc.cluster.local:6379",
                    )
                )
            elif not address.split(":")[0].split(".")[0] == facts["redis_host"] and "Env" not in str(meta):
                out.append(
                    Finding(
                        False,
                        f"address {address!r} does not point at the Service {facts['redis_host']!r}",
                        f"{file}: spec.triggers[{i}].metadata.address",
                        f"use {facts['redis_host']}.{facts['namespace']}.svc.cluster.local:6379",
                    )
                )
            break
    return out


def _fix_for(message: str) -> str:
    if "expected a number" in message:
        return "KEDA's trigger metadata are strings of numbers, e.g. listLength: \"5\""
    if "triggers" in message:
        return "add a trigger of type redis with metadata address, listName and listLength (see README.md)"
    return "fix that field as the message says (see README.md)"


def _judge(r, s, file: str) -> list[Finding]:
    out: list[Finding] = []
    burst_end_s = BURST_START_S + BURST_LEN_S
    start_replicas = int(r.replicas[int(BURST_START_S) - 1])
    # 1. Up, within the bound that the student's own settings imply.
    bound_s = s.scale_up_bound_s(POD_STARTUP_S)
    up_s = r.first_time(r.ready_replicas > start_replicas, after_s=BURST_START_S)
    if up_s is None:
        out.append(
            Finding(
                False,
                f"the burst ({BURST_RATE_PER_S:g} prompts/s from t={BURST_START_S:g} s) never added a worker",
                f"{file}: spec.triggers[redis].metadata",
                "check listLength and activationListLength: the queue must count as a reason to scale",
            )
        )
    else:
        delay_s = up_s - BURST_START_S
        ok = delay_s <= bound_s and delay_s <= FIRST_WORKER_DEADLINE_S
        out.append(
            Finding(
                ok,
                f"a first added worker was ready {delay_s:.0f} s into the burst (your settings imply at most "
                f"{bound_s:.0f} s: poll or sync, scale-up stabilization, {POD_STARTUP_S:g} s pod start; "
                f"the course asks for at most {FIRST_WORKER_DEADLINE_S:g} s)",
                f"{file}: spec.pollingInterval",
                "lower pollingInterval (KEDA checks the list that often) or "
                "behavior.scaleUp.stabilizationWindowSeconds",
            )
        )
    # 2. Enough workers for the burst.
    needed = math.ceil(BURST_RATE_PER_S / SERVICE_RATE_PER_S)
    peak = int(r.replicas.max())
    out.append(
        Finding(
            peak >= needed,
            f"peak of {peak} workers against the {needed} the burst needs "
            f"({BURST_RATE_PER_S:g} prompts/s at {SERVICE_RATE_PER_S:g} per worker)",
            f"{file}: spec.maxReplicaCount",
            f"raise maxReplicaCount to at least {needed}, and keep listLength small enough that "
            "depth / listLength asks for that many",
        )
    )
    # 3. No flapping: a pool that keeps up leaves the list empty, and a queue-length metric cannot
    # tell "no work" from "just enough workers", so a short scale-down window removes workers in
    # the middle of the burst and the queue grows back.
    downs = [e for e in r.events if e.to_replicas < e.from_replicas and BURST_START_S <= e.t_s < burst_end_s]
    if downs:
        e = downs[0]
        out.append(
            Finding(
                False,
                f"the workers flapped: scaled down {e.from_replicas} -> {e.to_replicas} at t={e.t_s:.0f} s, "
                f"in the middle of the burst, when the list was briefly empty",
                f"{file}: spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds",
                f"keep the scale-down window long (Kubernetes' default is 300 s; yours is "
                f"{s.scale_down.stabilization_window_s:g} s): an empty list can mean just enough workers",
            )
        )
    else:
        out.append(Finding(True, "no worker was removed while the burst lasted", f"{file}: spec"))
    # 4. Backlog gone soon after the burst.
    drained_s = r.first_time(r.queue_depth < 1, after_s=burst_end_s)
    late = drained_s is None or drained_s - burst_end_s > DRAIN_DEADLINE_S
    peak_depth = float(r.queue_depth.max())
    out.append(
        Finding(
            not late,
            (
                f"the backlog (peak {peak_depth:.0f} prompts) was gone {drained_s - burst_end_s:.0f} s after the burst"
                if drained_s is not None and drained_s > burst_end_s
                else f"the backlog (peak {peak_depth:.0f} prompts) was gone by the end of the burst"
                if drained_s is not None
                else f"the backlog (peak {peak_depth:.0f} prompts) was never worked off"
            )
            + f" (at most {DRAIN_DEADLINE_S:g} s)",
            f"{file}: spec.maxReplicaCount" if peak >= s.max_replica_count else f"{file}: spec.triggers[redis].metadata.listLength",
            f"maxReplicaCount {s.max_replica_count} caps the workers below what the burst needs; raise it"
            if peak >= s.max_replica_count
            else f"listLength is {s.list_length:g} prompts per worker: the HPA asks for ceil(depth / listLength) "
            "workers, so a large listLength leaves a deep queue with few workers; try 5 to 10",
        )
    )
    # 5. Down again, within the bound, to the floor.
    floor = s.min_replica_count
    empty_s = r.first_time(r.queue_depth < 1, after_s=burst_end_s)
    if empty_s is not None:
        down_s = r.first_time(r.replicas <= floor, after_s=empty_s)
        bound_down_s = s.scale_down_bound_s()
        ok = down_s is not None and down_s - empty_s <= bound_down_s
        out.append(
            Finding(
                ok,
                (
                    f"back to {floor} worker(s) {down_s - empty_s:.0f} s after "
                    + ("the burst ended (the queue was already empty)" if empty_s <= burst_end_s else "the queue emptied")
                    if down_s is not None
                    else f"still {int(r.replicas[-1])} workers {DURATION_S - empty_s:.0f} s after the queue emptied"
                )
                + f"; your settings imply at most {bound_down_s:.0f} s",
                f"{file}: spec",
                "shorten cooldownPeriod or behavior.scaleDown.stabilizationWindowSeconds",
            )
        )
    if floor > 0:
        out.append(
            Finding(
                True,
                f"minReplicaCount {floor} keeps {floor} worker(s) up while idle; 0 saves them, at the price of "
                "one polling interval of delay on the next burst",
                f"{file}: spec.minReplicaCount",
                info=True,
            )
        )
    return out
