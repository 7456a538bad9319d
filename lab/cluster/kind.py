"""The kind backend: the course's manifests on a real Kubernetes in Docker, on a laptop.

``up`` creates the cluster from ``manifests/kind/cluster.yaml``, builds the emulator image and
loads it into the node, and installs pinned releases (lab/cluster/pins.py) of Argo Rollouts,
Istio (istioctl, ``default`` profile: istiod and the ingress gateway), Prometheus (our own
manifests in ``manifests/monitoring/``) and KEDA (for exercise 6.1). ``deploy`` runs ``kubectl
apply -k`` on the course's manifests and the judge. ``status``, ``promote``, ``abort``,
``retry`` and ``undo`` go through the Kubernetes API with the official ``kubernetes`` client and patch the
Rollout the way ``kubectl argo rollouts`` does (lab/cluster/rollout_api.py).

Safety: every command names ``--context kind-<cluster>`` and the API client is built for that
context only; lab/cluster/kubecontext.py refuses anything else. ``--dry-run`` prints the plan
(every command, and the manifests as kustomize renders them) and runs nothing. For ``status``,
``promote``, ``abort``, ``retry``, ``undo`` and ``fault`` it contacts no cluster either: it prints the
``kubectl`` reads and patches they send, each patch that depends on the Rollout's live state with
the condition it is sent under, and the same verb as a ``kubectl argo rollouts`` command.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from lab.cluster import kubecontext, manifests, pins, preflight, rollout_api
from lab.cluster.base import Check, ClusterBackend, ClusterError, ClusterStatus

REPO_ROOT = Path(__file__).resolve().parents[2]


def emulator_warnings(docs: list[dict]) -> list[str]:
    """Pods that run the emulator without ``--host 0.0.0.0``: unreachable by their probes.

    ``servelab serve`` listens on 127.0.0.1 unless told otherwise (ServeLab's rule for local
    servers; ``vllm serve`` listens on every interface). In a pod, the kubelet's probes and
    the Services come in on the pod's IP, so such a pod never turns ready.
    """
    out = []
    for doc in docs:
        if doc.get("kind") not in ("Deployment", "Rollout", "StatefulSet"):
            continue
        pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in pod.get("containers") or []:
            argv = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
            if not (str(c.get("image", "")).startswith("servelab/emulator") and "serve" in argv):
                continue
            hosts = [a.split("=", 1)[1] for a in argv if a.startswith("--host=")]
            hosts += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--host"]
            if not any(h in ("0.0.0.0", "::") for h in hosts):
                meta = doc.get("metadata") or {}
                out.append(
                    f"{doc['kind']} {meta.get('namespace', 'default')}/{meta.get('name')}: container "
                    f"{c.get('name')!r} runs 'servelab serve' without --host=0.0.0.0; it will listen on "
                    "127.0.0.1 only and its probes will fail. Add --host=0.0.0.0 to its args."
                )
    return out


def image_warnings(docs: list[dict]) -> list[str]:
    """Pods whose image looks like ServeLab's emulator but is not the one ``up`` loads.

    The kind node has no registry of ServeLab's own: ``up`` builds pins.EMULATOR_IMAGE and loads
    it into the node. A misspelt name or tag (``servelab/emulatr:0.1.0``, ``servelab/emulator:0.1``)
    is then pulled from Docker Hub, which has no such image, and the pods stay in
    ImagePullBackOff. Images that are plainly something else (``redis:7.4.1-alpine``) are left alone.
    """
    import difflib

    wanted = pins.EMULATOR_IMAGE
    out = []
    for doc in docs:
        pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            image = str(c.get("image", ""))
            name = image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image
            near = name.startswith("servelab/") or difflib.SequenceMatcher(None, name, wanted.split(":")[0]).ratio() > 0.8
            if image != wanted and near:
                meta = doc.get("metadata") or {}
                out.append(
                    f"{doc.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name')}: container "
                    f"{c.get('name')!r} has image {image!r}, but the kind node only has {wanted!r} (built "
                    f"and loaded by 'servelab cluster up --backend kind'); no registry has {image!r}, so "
                    f"its pods would stay in ImagePullBackOff. Did you mean image: {wanted}?"
                )
    return out


def deploy_warnings(docs: list[dict]) -> list[str]:
    """What would keep pods from running on kind although the manifests validate."""
    return image_warnings(docs) + emulator_warnings(docs)


def validation_problems(manifests_dir: Path, docs: list[dict]) -> list[str]:
    """Schema problems of the rendered manifests (Kubernetes', and the vendored CRD schemas).

    The schemas are the student's folder's own ``schemas/`` if it has one, else the course's."""
    schemas = Path(manifests_dir) / "schemas"
    if not schemas.is_dir():
        schemas = REPO_ROOT / "manifests" / "schemas"
    return manifests.validate(docs, schemas)


@dataclass(frozen=True)
class Step:
    title: str
    argv: tuple[str, ...]
    check_only: bool = False  # a wait or a look: failing stops the plan all the same

    def shell(self) -> str:
        return shlex.join(self.argv)


class KindBackend(ClusterBackend):
    name = "kind"

    def __init__(
        self,
        *,
        cluster_name: str = "servelab",
        repo_root: Path = REPO_ROOT,
        kubeconfig: str | None = None,
        kube_context: str | None = None,
        dry_run: bool = False,
        out: TextIO | None = None,
        runner: Callable[[Step], int] | None = None,
    ):
        self.cluster_name = cluster_name
        # Refuse a foreign --kube-context before anything else happens.
        self.context = kubecontext.check_requested_context(kube_context, cluster_name)
        self.repo_root = Path(repo_root)
        self.kubeconfig = kubeconfig
        self.dry_run = dry_run
        self._out = out
        self.runner = runner or self._run_step
        self.manifests_dir = self.repo_root / "manifests"

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout  # looked up late, so redirected output is honoured

    # -- the plan -------------------------------------------------------------------------------

    def _kubectl(self, *args: str) -> tuple[str, ...]:
        base = ["kubectl", "--context", self.context]
        if self.kubeconfig:
            base += ["--kubeconfig", str(self.kubeconfig)]
        return (*base, *args)

    def _rel(self, path: Path | str) -> str:
        """A path as the plan prints it: relative to the repository root, where it runs."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.repo_root.resolve())) or "."
        except ValueError:
            return str(path)

    def plan_up(self) -> list[Step]:
        kubeconfig = ("--kubeconfig", str(self.kubeconfig)) if self.kubeconfig else ()
        return [
            Step("Create the kind cluster (skipped when 'kind get clusters' lists it)",
                 ("kind", "create", "cluster", "--name", self.cluster_name,
                  "--config", "manifests/kind/cluster.yaml", *kubeconfig, "--wait", "180s")),
            Step("Build the emulator image", ("docker", "build", "-t", pins.EMULATOR_IMAGE, ".")),
            Step("Load it into the kind node (no registry needed)",
                 ("kind", "load", "docker-image", pins.EMULATOR_IMAGE, "--name", self.cluster_name)),
            Step("Namespaces for the add-ons", self._kubectl("apply", "-f", "manifests/kind/namespaces.yaml")),
            Step(f"Install Argo Rollouts {pins.ARGO_ROLLOUTS_VERSION}",
                 self._kubectl("apply", "-n", "argo-rollouts", "-f", pins.ARGO_ROLLOUTS_INSTALL_URL)),
            Step(f"Install Istio {pins.ISTIO_VERSION} (istiod and the ingress gateway)",
                 ("istioctl", "install", "--context", self.context, *kubeconfig, "--set", "profile=default", "-y")),
            Step("Install Prometheus (manifests/monitoring)",
                 self._kubectl("apply", "-k", "manifests/monitoring")),
            Step(f"Install KEDA {pins.KEDA_VERSION} (exercise 6.1's queue scaling)",
                 self._kubectl("apply", "--server-side", "-f", pins.KEDA_INSTALL_URL)),
            Step("Wait for the Argo Rollouts controller",
                 self._kubectl("-n", "argo-rollouts", "rollout", "status", "deployment/argo-rollouts", "--timeout=300s"), True),
            Step("Wait for Prometheus",
                 self._kubectl("-n", "monitoring", "rollout", "status", "deployment/prometheus", "--timeout=300s"), True),
        ]

    def laptop_overlay(self, manifests_dir: Path) -> Path:
        """Write the laptop-sized overlay of ``manifests_dir`` (manifests/kind/laptop-patches.yaml)."""
        import os

        import yaml

        from lab.cluster.state import state_dir

        folder = state_dir() / "kind-laptop"
        folder.mkdir(parents=True, exist_ok=True)
        patches = yaml.safe_load((self.repo_root / "manifests/kind/laptop-patches.yaml").read_text())
        overlay = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(Path(manifests_dir).resolve(), folder.resolve())],
            "patches": patches,
        }
        header = "# Generated by servelab cluster deploy --backend kind --laptop; edit manifests/kind/laptop-patches.yaml instead.\n"
        (folder / "kustomization.yaml").write_text(header + yaml.safe_dump(overlay, sort_keys=False))
        return folder

    def plan_deploy(self, manifests_dir: Path) -> list[Step]:
        rel = self._rel(manifests_dir)
        return [
            Step(f"Apply the course's manifests ({rel})", self._kubectl("apply", "-k", rel)),
            Step("Apply the LLM judge (manifests/judge)", self._kubectl("apply", "-k", "manifests/judge")),
            Step("Apply the load generator (manifests/kind/loadgen.yaml)",
                 self._kubectl("apply", "-f", "manifests/kind/loadgen.yaml")),
        ]

    def plan_down(self) -> list[Step]:
        return [Step("Delete the kind cluster", ("kind", "delete", "cluster", "--name", self.cluster_name))]

    # A dry run of the rollout verbs contacts no cluster. Where what is sent depends on the
    # Rollout's live state, the step's title says when it is sent, and a value only the cluster
    # knows is written in capitals (N, TEMPLATE). The patches are rollout_api's, as the plugin's.

    def plan_status(self) -> list[Step]:
        return [self._get_step("Read the Rollout (status shows its status.phase, step, canary weight)")]

    def plan_promote(self, full: bool = False) -> list[Step]:
        if full:
            return [
                self._get_step("Read the Rollout: the patch is sent while a canary is in progress "
                               "(status.currentPodHash differs from status.stableRS)"),
                self._patch_step("Skip every remaining step and analysis", {"status": {"promoteFull": True}}, status=True),
            ]
        return [
            self._get_step("Read the Rollout: which patches follow depends on its status and spec.paused"),
            self._patch_step("If it has status.pauseConditions (a pause step, or an Inconclusive analysis): clear them",
                             {"status": {"pauseConditions": None}}, status=True),
            self._patch_step("Otherwise, in an analysis step: go on to the next, N = status.currentStepIndex + 1",
                             '{"status":{"pauseConditions":null,"currentStepIndex":N}}', status=True),
            self._patch_step("Then, if spec.paused is true (paused by hand): resume it", {"spec": {"paused": False}}),
        ]

    def plan_abort(self) -> list[Step]:
        return [self._patch_step("Abort: all traffic back to stable; the Rollout turns Degraded",
                                 rollout_api.ABORT_PATCH, status=True)]

    def plan_retry(self) -> list[Step]:
        return [self._patch_step("Retry: clear status.abort, so the steps start again from 0 (the plugin sends it "
                                 "whatever the state; on a rollout that is not aborted it changes nothing)",
                                 rollout_api.RETRY_PATCH, status=True)]

    def plan_undo(self) -> list[Step]:
        rollout = self._rollout_doc()
        namespace = (rollout.get("metadata") or {}).get("namespace", "default")
        selector = rollout_api.label_selector(rollout)
        return [
            self._get_step("Read the Rollout: its uid and spec.selector"),
            Step(f"List its ReplicaSets (annotation {rollout_api.REVISION_ANNOTATION} numbers the revisions)",
                 self._kubectl("-n", namespace, "get", "replicasets", "-l", selector, "-o", "yaml"), True),
            self._patch_step("Put the previous revision's pod template back: TEMPLATE is spec.template of the "
                             f"ReplicaSet it owns with the second-highest revision, less its {rollout_api.HASH_LABEL} label",
                             '[{"op":"replace","path":"/spec/template","value":TEMPLATE}]', json_patch=True),
        ]

    def plan_fault(self, spec: str | None) -> list[Step]:
        patch = rollout_api.fault_patch(self._rollout_doc(), spec)
        change = f"with {rollout_api.emulator_fault_arg(spec)}" if spec else "without --fault"
        return [
            self._get_step("Read the Rollout: the patch keeps its first container's args, less any --fault"),
            self._patch_step(f"Set the args {change} (here as {self._rel(self.manifests_dir)} has them; the patch "
                             "keeps the cluster's own): a new pod template, so a new revision and a canary",
                             patch, json_patch=True),
        ]

    def _get_step(self, title: str) -> Step:
        namespace, name = self._rollout_ref()
        return Step(title, self._kubectl("-n", namespace, "get", "rollout", name, "-o", "yaml"), True)

    def _patch_step(self, title: str, patch, *, status: bool = False, json_patch: bool = False) -> Step:
        """``kubectl patch`` for a patch given as data, or as text where it holds a placeholder."""
        namespace, name = self._rollout_ref()
        body = patch if isinstance(patch, str) else rollout_api.to_kubectl_patch(patch)
        args = ["--subresource=status"] if status else []
        args += ["--type=json" if json_patch else "--type=merge", "-p", body]
        return Step(title, self._kubectl("-n", namespace, "patch", "rollout", name, *args))

    def plugin_command(self, verb: str, *flags: str) -> tuple[str, ...]:
        """The same verb with the Argo Rollouts kubectl plugin (``kubectl argo rollouts VERB NAME``).

        ``get`` and ``retry`` name the kind too (``get rollout NAME``): they also act on experiments."""
        namespace, name = self._rollout_ref()
        kubeconfig = ("--kubeconfig", str(self.kubeconfig)) if self.kubeconfig else ()
        verb_args = (verb, "rollout", name) if verb in ("get", "retry") else (verb, name)
        return ("kubectl", "argo", "rollouts", "--context", self.context, *kubeconfig, "-n", namespace,
                *verb_args, *flags)

    def _print_rollout_plan(self, verb: str, steps: list[Step], plugin: tuple[str, ...] | None) -> None:
        namespace, name = self._rollout_ref()
        self._print_plan(verb, steps, note=f"No cluster is contacted. The Rollout is {namespace}/{name}, "
                                           f"from --manifests {self._rel(self.manifests_dir)}.")
        if plugin:
            self.out.write("\n# The same with the Argo Rollouts kubectl plugin (optional; "
                           "'servelab cluster preflight --backend kind' checks for it):\n"
                           f"{shlex.join(plugin)}\n")

    def _print_plan(self, verb: str, steps: list[Step], rendered: list[tuple[Path, str, str]] = (),
                    note: str = "") -> None:
        w = self.out.write
        w(f"# servelab cluster {verb} --backend kind --dry-run: nothing below is executed.\n")
        w(f"# Run from the repository root ({self.repo_root}).\n")
        w(f"# Every kubectl command names --context {self.context}; no other context is ever used.\n")
        if note:
            w(f"# {note}\n")
        for i, step in enumerate(steps, 1):
            w(f"\n# {i}. {step.title}\n{step.shell()}\n")
        for path, how, text in rendered:
            w(f"\n# ---- rendered manifests: {self._rel(path)} ({how}) ----\n")
            w(text if text.endswith("\n") else text + "\n")

    def _run_step(self, step: Step) -> int:
        self.out.write(f"\n==> {step.title}\n$ {step.shell()}\n")
        self.out.flush()
        try:
            return subprocess.run(list(step.argv), cwd=self.repo_root).returncode
        except FileNotFoundError:
            return 127

    def _execute(self, steps: list[Step]) -> None:
        for step in steps:
            rc = self.runner(step)
            if rc != 0:
                raise ClusterError(
                    f"step failed (exit status {rc}): {step.shell()}\n"
                    "Fix what it printed above and run the same servelab command again; "
                    "the steps are safe to repeat."
                )

    # -- the verbs ------------------------------------------------------------------------------

    def preflight(self) -> list[Check]:
        return preflight.kind_checks()

    def up(self) -> str:
        steps = self.plan_up()
        if self.dry_run:
            text, how = manifests.render(self.repo_root / "manifests/monitoring")
            self._print_plan("up", steps, [(self.repo_root / "manifests/monitoring", how, text)])
            return ""
        self._require_tools()
        if self.cluster_name in self._existing_clusters():
            self.out.write(f"kind cluster {self.cluster_name!r} exists; not creating it again.\n")
            steps = steps[1:]
        else:
            self._execute(steps[:1])
            steps = steps[1:]
        kubecontext.resolve_kind_context(self.cluster_name, self.kubeconfig, self.context)
        self._execute(steps)
        return f"kind cluster {self.cluster_name!r} is up (context {self.context})."

    def deploy(self, manifests_dir: Path) -> ClusterStatus | None:
        manifests_dir = Path(manifests_dir)
        steps = self.plan_deploy(manifests_dir)
        text, how = manifests.render(manifests_dir)
        docs = manifests.load_documents(text)
        # A dry run checks what the real deploy checks, so reading the plan first tells the truth.
        problems = validation_problems(manifests_dir, docs)
        if problems:
            would = "would be" if self.dry_run else "was"
            raise ClusterError(f"the manifests do not validate; nothing {would} applied:\n  " + "\n  ".join(problems))
        warnings = deploy_warnings(docs)
        if self.dry_run:
            judge = self.repo_root / "manifests/judge"
            judge_text, judge_how = manifests.render(judge)
            rendered = [(manifests_dir, how, text), (judge, judge_how, judge_text)]
            self._print_plan("deploy", steps, rendered)
            for warning in warnings:
                self.out.write(f"# WARNING: {warning}\n")
            return None
        for warning in warnings:
            self.out.write(f"warning: {warning}\n")
        kubecontext.resolve_kind_context(self.cluster_name, self.kubeconfig, self.context)
        self._execute(steps)
        return self.status()

    def down(self) -> str:
        steps = self.plan_down()
        if self.dry_run:
            self._print_plan("down", steps)
            return ""
        self._execute(steps)
        return f"kind cluster {self.cluster_name!r} deleted."

    def status(self) -> ClusterStatus | None:
        if self.dry_run:
            self._print_rollout_plan("status", self.plan_status(), self.plugin_command("get"))
            return None
        rollout = self._get_rollout()
        return rollout_api.status_from_rollout(rollout)

    def promote(self, full: bool = False) -> ClusterStatus | None:
        if self.dry_run:
            flags = ("--full",) if full else ()
            self._print_rollout_plan(" ".join(("promote", *flags)), self.plan_promote(full),
                                     self.plugin_command("promote", *flags))
            return None
        rollout = self._get_rollout()
        spec_patch, status_patch = rollout_api.promote_patches(rollout, full)
        # Status first, then spec: the plugin's order (it must work on the status subresource).
        if status_patch:
            self._patch(status_patch, subresource="status")
        if spec_patch:
            self._patch(spec_patch)
        return self.status()

    def abort(self) -> ClusterStatus | None:
        if self.dry_run:
            self._print_rollout_plan("abort", self.plan_abort(), self.plugin_command("abort"))
            return None
        self._patch(rollout_api.ABORT_PATCH, subresource="status")
        return self.status()

    def retry(self) -> ClusterStatus | None:
        if self.dry_run:
            self._print_rollout_plan("retry", self.plan_retry(), self.plugin_command("retry"))
            return None
        if not (self._get_rollout().get("status") or {}).get("abort"):
            # As the plugin, send the patch all the same; unlike its silence, say what it did.
            print("note: the Rollout is not aborted; retry sends its patch "
                  f"{rollout_api.to_kubectl_patch(rollout_api.RETRY_PATCH)} all the same, and it changes nothing",
                  file=sys.stderr)
        self._patch(rollout_api.RETRY_PATCH, subresource="status")
        return self.status()

    def undo(self) -> ClusterStatus | None:
        if self.dry_run:
            self._print_rollout_plan("undo", self.plan_undo(), self.plugin_command("undo"))
            return None
        rollout = self._get_rollout()
        apps = self._apps_api()
        rs_list = apps.list_namespaced_replica_set(rollout["metadata"]["namespace"],
                                                   label_selector=rollout_api.label_selector(rollout))
        replicasets = [apps.api_client.sanitize_for_serialization(rs) for rs in rs_list.items]
        self._patch(rollout_api.undo_patch(rollout, replicasets), json_patch=True)
        return self.status()

    def set_fault(self, spec: str) -> ClusterStatus | None:
        spec = None if spec in ("none", "") else spec
        if spec is not None:
            rollout_api.emulator_fault_arg(spec)  # a bad SPEC is refused before the cluster is asked
        if self.dry_run:
            # The plugin has no verb for a pod's args (its 'set image' changes only the image).
            self._print_rollout_plan(f"fault {spec or 'none'}", self.plan_fault(spec), None)
            return None
        rollout = self._get_rollout()
        self._patch(rollout_api.fault_patch(rollout, spec), json_patch=True)
        return self.status()

    # -- the Kubernetes API -----------------------------------------------------------------------

    def _require_tools(self) -> None:
        missing = [c for c in preflight.kind_checks() if c.required and not c.ok]
        if missing:
            raise ClusterError("missing on this machine:\n" + preflight.render(missing))

    def _existing_clusters(self) -> list[str]:
        proc = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, timeout=60)
        return proc.stdout.split() if proc.returncode == 0 else []

    def _api(self):
        ctx = kubecontext.resolve_kind_context(self.cluster_name, self.kubeconfig, self.context)
        return kubecontext.api_client(ctx)

    def _apps_api(self):
        from kubernetes import client

        return client.AppsV1Api(self._api())

    def _rollout_doc(self) -> dict:
        """The Rollout as the manifests folder renders it (what deploy applied), read offline."""
        text, _ = manifests.render(self.manifests_dir)
        for doc in manifests.load_documents(text):
            if doc.get("kind") == "Rollout":
                return doc
        raise ClusterError(f"{self.manifests_dir}: no Rollout in the manifests")

    def _rollout_ref(self) -> tuple[str, str]:
        meta = self._rollout_doc().get("metadata") or {}
        return meta.get("namespace", "default"), meta["name"]

    def _get_rollout(self) -> dict:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api = client.CustomObjectsApi(self._api())  # the context guard runs first
        namespace, name = self._rollout_ref()
        try:
            return api.get_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "rollouts", name)
        except ApiException as exc:
            if exc.status == 404:
                raise ClusterError(
                    f"no Rollout {namespace}/{name} in kind cluster {self.cluster_name!r}; "
                    "deploy it first: servelab cluster deploy --backend kind"
                ) from None
            raise ClusterError(f"Kubernetes API error reading rollout {namespace}/{name}: {exc.reason}") from None
        except Exception as exc:  # connection refused: the cluster is down
            raise ClusterError(
                f"cannot reach the kind cluster {self.cluster_name!r} ({type(exc).__name__}); "
                "is Docker running and the cluster up? servelab cluster up --backend kind"
            ) from None

    def _patch(self, body, *, subresource: str | None = None, json_patch: bool = False) -> None:
        from kubernetes import client

        api = client.CustomObjectsApi(self._api())
        namespace, name = self._rollout_ref()
        content_type = "application/json-patch+json" if json_patch else "application/merge-patch+json"
        if subresource == "status":
            api.patch_namespaced_custom_object_status(
                "argoproj.io", "v1alpha1", namespace, "rollouts", name, body, _content_type=content_type)
        else:
            api.patch_namespaced_custom_object(
                "argoproj.io", "v1alpha1", namespace, "rollouts", name, body, _content_type=content_type)
