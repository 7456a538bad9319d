"""Reading and steering an Argo Rollout object, as ``kubectl argo rollouts`` does.

Pure functions over the Rollout as a dict (what the Kubernetes API returns), so that they can
be checked without a cluster. The patches are the plugin's own (argo-rollouts v1.9,
``pkg/kubectl-argo-rollouts/cmd/{promote,abort,retry,undo}``):

- promote: ``{"spec":{"paused":false}}`` if ``spec.paused``; then on the status subresource
  ``{"status":{"pauseConditions":null}}`` if there are pause conditions, otherwise (a canary
  inside an analysis step) ``{"status":{"pauseConditions":null,"currentStepIndex":i+1}}``.
- promote --full: ``{"status":{"promoteFull":true}}`` unless the canary already is stable.
- abort: ``{"status":{"abort":true}}`` on the status subresource.
- retry (``retry rollout NAME``): ``{"status":{"abort":false}}`` on the status subresource, sent
  whatever the state; on a rollout that is not aborted it changes nothing.
- undo: a JSON patch replacing ``/spec/template`` with the pod template of the previous
  revision's ReplicaSet (annotation ``rollout.argoproj.io/revision``), hash label removed.
"""

from __future__ import annotations

from typing import Any

from lab.cluster.base import ClusterError, ClusterStatus

REVISION_ANNOTATION = "rollout.argoproj.io/revision"
HASH_LABEL = "rollouts-pod-template-hash"


def _steps(rollout: dict) -> list[dict]:
    return ((rollout.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or []


def current_step_index(rollout: dict) -> int | None:
    steps = _steps(rollout)
    if not steps:
        return None
    index = (rollout.get("status") or {}).get("currentStepIndex")
    return 0 if index is None else int(index)


def weight_from_steps(steps: list[dict], index: int | None) -> int:
    """The last setWeight at or before ``index``: 0 before the first, 100 past the end."""
    if index is None or index >= len(steps):
        return 100
    weight = 0
    for step in steps[:index + 1]:
        if "setWeight" in step:
            weight = int(step["setWeight"])
    return weight


def status_from_rollout(rollout: dict, backend: str = "kind") -> ClusterStatus:
    meta = rollout.get("metadata") or {}
    status = rollout.get("status") or {}
    steps = _steps(rollout)
    index = current_step_index(rollout)
    weights = (status.get("canary") or {}).get("weights") or {}
    if "canary" in weights:
        weight = int((weights.get("canary") or {}).get("weight", 0))
    elif status.get("abort"):
        weight = 0
    else:
        weight = weight_from_steps(steps, index)
    details = {}
    if status.get("stableRS"):
        details["Stable RS"] = status["stableRS"]
    if status.get("currentPodHash"):
        details["Current RS"] = status["currentPodHash"]
    if status.get("pauseConditions"):
        details["Paused by"] = ", ".join(str(p.get("reason")) for p in status["pauseConditions"])
    revision = (meta.get("annotations") or {}).get(REVISION_ANNOTATION)
    if revision:
        details["Revision"] = revision  # the one an abort message names
    return ClusterStatus(
        backend=backend,
        rollout=f"{meta.get('namespace', '?')}/{meta.get('name', '?')}",
        phase=status.get("phase") or "Progressing",
        message=status.get("message") or "",
        current_step_index=index,
        total_steps=len(steps),
        canary_weight=weight,
        aborted=bool(status.get("abort")),
        abort_reason={"message": status.get("message")} if status.get("abort") else None,
        details=details,
    )


def promote_patches(rollout: dict, full: bool = False) -> tuple[dict | None, dict | None]:
    """(spec patch, status patch) that the plugin's ``promote`` sends, as merge patches."""
    spec = rollout.get("spec") or {}
    status = rollout.get("status") or {}
    if full:
        if status.get("currentPodHash") != status.get("stableRS"):
            return None, {"status": {"promoteFull": True}}
        return None, None
    spec_patch = {"spec": {"paused": False}} if spec.get("paused") else None
    status_patch = None
    if status.get("pauseConditions"):
        status_patch = {"status": {"pauseConditions": None}}
    elif _steps(rollout):
        index = current_step_index(rollout) or 0
        if index < len(_steps(rollout)):
            index += 1
        status_patch = {"status": {"pauseConditions": None, "currentStepIndex": index}}
    return spec_patch, status_patch


ABORT_PATCH = {"status": {"abort": True}}
RETRY_PATCH = {"status": {"abort": False}}


def label_selector(rollout: dict) -> str:
    """The Rollout's ``spec.selector.matchLabels`` as a label selector (``k=v,k=v``): what
    finds its ReplicaSets."""
    labels = ((rollout.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in labels.items())


def undo_patch(rollout: dict, replicasets: list[dict]) -> list[dict]:
    """The JSON patch that restores the previous revision's template, as the plugin's undo."""
    uid = (rollout.get("metadata") or {}).get("uid")
    owned = []
    for rs in replicasets:
        meta = rs.get("metadata") or {}
        owners = meta.get("ownerReferences") or []
        if uid and not any(o.get("uid") == uid and o.get("controller") for o in owners):
            continue
        try:
            revision = int((meta.get("annotations") or {}).get(REVISION_ANNOTATION, "0"))
        except ValueError:
            continue
        owned.append((revision, rs))
    owned.sort(key=lambda pair: pair[0])
    if len(owned) < 2:
        name = (rollout.get("metadata") or {}).get("name")
        raise ClusterError(f"rollout {name!r}: no previous revision to undo to (found {len(owned)} revision(s))")
    template = dict((owned[-2][1].get("spec") or {}).get("template") or {})
    meta = dict(template.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != HASH_LABEL}
    meta["labels"] = labels
    template["metadata"] = meta
    return [{"op": "replace", "path": "/spec/template", "value": template}]


def parse_fault(spec: str, where: str = "fault") -> tuple[str, str]:
    """(target, the fault for the emulator's --fault) from ``[stable:|canary:]KIND=VALUE[@START[-END]]``.

    The rollout simulator's parser reads it, the one the emulator uses too, so every kind the
    emulator knows (``price`` included) is accepted here and a bad value is named."""
    from sim.rollout.faults import FaultSpecError
    from sim.rollout.faults import parse_fault as parse_rollout_fault

    try:
        fault = parse_rollout_fault(spec)
    except FaultSpecError as exc:
        raise ClusterError(str(exc).replace("--fault", where, 1)) from None
    body = fault.spec.split(":", 1)[1] if fault.spec.startswith(("stable:", "canary:")) else fault.spec
    return fault.target, body


def emulator_fault_arg(spec: str) -> str:
    """``--fault=BODY`` for the canary's emulator; refuses a bad SPEC or a stable fault."""
    target, body = parse_fault(spec)
    if target != "canary":
        raise ClusterError(
            f"fault {spec!r}: on kind a fault rides on a new revision, which becomes the canary; "
            "a stable fault would need the running stable pods changed. Use canary:... here, or "
            "the sim backend for stable faults."
        )
    return f"--fault={body}"


def fault_patch(rollout: dict, spec: str | None) -> list[dict]:
    """A JSON patch that sets (or, with None, clears) ``--fault`` on the Rollout's first container.

    Changing the template makes a new revision, so the canary that follows carries the fault
    and the stable pods do not: what a bad release looks like to the analysis.
    """
    containers = (((rollout.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    if not containers:
        raise ClusterError("the Rollout has no containers in spec.template.spec.containers")
    args: list[str] = []
    skip_next = False
    for arg in containers[0].get("args") or []:
        # Drop earlier faults, both as "--fault=SPEC" and as the split "--fault", "SPEC".
        if skip_next:
            skip_next = False
        elif str(arg) == "--fault":
            skip_next = True
        elif not str(arg).startswith("--fault="):
            args.append(arg)
    if spec is not None:
        args.append(emulator_fault_arg(spec))
    op = "replace" if "args" in containers[0] else "add"
    return [{"op": op, "path": "/spec/template/spec/containers/0/args", "value": args}]


def to_kubectl_patch(patch: Any) -> str:
    import json

    return json.dumps(patch, separators=(",", ":"))
