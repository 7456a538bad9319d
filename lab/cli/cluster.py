"""``servelab cluster``: deploy the course's manifests to the simulated cluster or to kind.

    servelab cluster preflight|up|deploy|status|promote|abort|retry|undo|down [--backend sim|kind] [--dry-run]
    servelab cluster fault SPEC [--backend sim|kind]

The sim backend (default) runs the manifests in ServeLab's rollout simulator and keeps its
state in $SERVELAB_STATE_DIR (default ~/.servelab). The kind backend acts on a local kind
cluster, and only on the kube context kind-<cluster name>.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ACTIONS = ("preflight", "up", "deploy", "status", "promote", "abort", "retry", "undo", "down", "fault")
DEFAULT_MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


EPILOG = """\
actions:
  preflight  what the backend needs on this machine; exit status 1 if something is missing
  up         kind: create the cluster and install Argo Rollouts, Istio, Prometheus, KEDA
  deploy     apply the manifests folder (validated first, as kind validates it); starts a canary
  status     the Rollout now: phase, step, canary weight, last analysis, timeline
  promote    past the current pause or analysis step (--full: past every step)
  abort      all traffic back to stable; the Rollout turns Degraded
  retry      an aborted Rollout starts its steps again from 0 (not aborted: nothing changes)
  undo       back to the stable revision's pod template; Healthy again
  fault      make the canary misbehave: fault SPEC adds one, fault none clears them
  down       kind: delete the cluster; sim: forget the simulated cluster

sim backend: time and state
  Simulated time moves only when a command moves it. deploy, promote, abort, retry, undo and fault
  run the rollout on until it settles (Healthy, Degraded, or a pause without a duration), so
  one deploy can go through all seven hours of the course's canary; --until DURATION (since
  the deploy) or --advance DURATION stops the clock earlier, and status moves it only with
  those two. deploy --speed X follows the wall clock instead (X simulated seconds a second).
  Every deploy starts over as a new revision. The state is kept between commands in
  $SERVELAB_STATE_DIR/cluster-sim.json (default ~/.servelab/) until the next deploy or down.

examples:
  servelab cluster deploy --until 30m            # watch: 30 minutes into the canary
  servelab cluster status --advance 10m
  servelab cluster fault canary:error-rate=0.05  # the analysis should abort it
  servelab cluster deploy --manifests /tmp/m     # a folder of your own
  servelab cluster preflight --backend kind      # docs/kind.md: the kind cluster, step by step
"""


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("action", choices=ACTIONS, metavar="ACTION", help=" | ".join(ACTIONS))
    parser.add_argument("spec", nargs="?", help="fault only: [stable:|canary:]KIND=VALUE[@START[-END]] (adds one), or 'none' (clears)")
    parser.add_argument("--backend", choices=("sim", "kind"), default="sim", help="default: sim")
    parser.add_argument("--manifests", type=Path, default=DEFAULT_MANIFESTS, metavar="DIR",
                        help="the manifests folder (with kustomization.yaml); default: the course's")
    parser.add_argument("--dry-run", action="store_true", help="kind: print the plan, run nothing")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--full", action="store_true", help="promote: skip every remaining step")
    sim = parser.add_argument_group("sim backend")
    sim.add_argument("--seed", type=int, default=0, help="deploy: the simulation's seed")
    sim.add_argument("--speed", type=float, default=None,
                     help="deploy: simulated seconds per wall-clock second (default: accelerated)")
    sim.add_argument("--fault", action="append", default=[], metavar="SPEC", help="deploy: a fault from the start (repeatable)")
    sim.add_argument("--until", metavar="DURATION", help="run the simulated clock to this time since the deploy (30m, 2h)")
    sim.add_argument("--advance", metavar="DURATION", help="move the simulated clock on by this much")
    kind = parser.add_argument_group("kind backend")
    kind.add_argument("--cluster-name", default="servelab", help="the kind cluster (context kind-NAME)")
    kind.add_argument("--kube-context", help="must be kind-NAME; anything else is refused")
    kind.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    kind.add_argument("--laptop", action="store_true",
                      help="deploy: 4 replicas and small CPU requests (manifests/kind/laptop-patches.yaml)")


def _seconds(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    from lab.cluster.base import ClusterError

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip()
    try:
        if raw and raw[-1] in units:
            return float(raw[:-1]) * units[raw[-1]]
        return float(raw)
    except ValueError:
        raise ClusterError(f"{flag} {text!r}: expected a duration such as 90s, 30m or 2h") from None


def make_backend(args):
    from lab.cluster.base import ClusterError

    if args.backend == "kind":
        if args.until or args.advance or args.speed is not None or args.fault:
            raise ClusterError("--until, --advance, --speed and --fault belong to the sim backend; kind runs in real time")
        from lab.cluster.kind import KindBackend

        backend = KindBackend(cluster_name=args.cluster_name, kubeconfig=args.kubeconfig,
                              kube_context=args.kube_context, dry_run=args.dry_run)
        backend.manifests_dir = args.manifests  # where it finds the Rollout's name
        return backend
    if args.laptop:
        raise ClusterError("--laptop belongs to the kind backend (it sizes the pods for a laptop's kind cluster)")
    if args.dry_run:
        raise ClusterError("--dry-run belongs to the kind backend; the sim backend changes nothing outside ServeLab")
    from lab.cluster.simbackend import SimBackend

    return SimBackend(until_s=_seconds(args.until, "--until"), advance_s=_seconds(args.advance, "--advance"))


def run(args) -> int:
    from lab.cluster import preflight
    from lab.cluster.base import ClusterError

    if args.action == "fault" and not args.spec:
        raise ClusterError("servelab cluster fault: expected a fault SPEC, e.g. canary:error-rate=0.05")
    if args.action != "fault" and args.spec:
        raise ClusterError(f"servelab cluster {args.action}: unexpected argument {args.spec!r}")
    if args.action == "fault" and args.spec.strip() != "none":
        from lab.cluster.rollout_api import parse_fault

        parse_fault(args.spec, where="servelab cluster fault")  # a bad SPEC, named as typed
    backend = make_backend(args)
    if args.action == "preflight":
        checks = backend.preflight()
        print(preflight.render(checks))
        return 1 if any(c.required and not c.ok for c in checks) else 0
    if args.action in ("up", "down"):
        text = getattr(backend, args.action)()
        if text:
            print(text)
        return 0
    if args.action == "deploy":
        if args.backend == "sim":
            status = backend.deploy(args.manifests, seed=args.seed, speed=args.speed, faults=args.fault)
        else:
            target = backend.laptop_overlay(args.manifests) if args.laptop else args.manifests
            status = backend.deploy(target)
    elif args.action == "status":
        status = backend.status()
    elif args.action == "promote":
        status = backend.promote(full=args.full)
    elif args.action == "fault":
        status = backend.set_fault(args.spec)
    else:
        status = getattr(backend, args.action)()
    if status is None:  # a dry run printed its plan
        return 0
    if args.json:
        print(json.dumps(status.to_dict(), indent=2, sort_keys=True))
    else:
        print(status.render())
    return 0
