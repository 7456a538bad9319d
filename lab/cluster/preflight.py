"""What the kind backend needs on this machine, and what to do about what is missing.

Each check runs the program itself (``kind version``, ``kubectl version --client``), so a
program on PATH that does not start counts as missing too. Nothing here changes the machine.
The Argo Rollouts kubectl plugin is checked too, as optional (``required=False``): ServeLab's
own verbs go through the Kubernetes API, so its absence is reported but fails nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from lab.cluster import pins
from lab.cluster.base import Check

TIMEOUT_S = 20


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def check_docker() -> list[Check]:
    path = shutil.which("docker")
    if path is None:
        return [Check("docker", False, "not found on PATH", pins.INSTALL_DOCS["docker"])]
    # `docker --version` answers without the daemon; `docker version` fails when it is down.
    rc, out = _run([path, "--version"])
    match = re.search(r"\d+\.\d+\.\d+", out)
    if rc != 0 or not match:
        return [Check("docker", False, f"'docker --version' failed: {out[:200]}", pins.INSTALL_DOCS["docker"])]
    client = match.group(0)
    checks = [Check("docker", True, f"client {client} ({path})")]
    rc, out = _run([path, "info", "--format", "{{.ServerVersion}}"])
    if rc == 0 and out and "error" not in out.lower():
        checks.append(Check("docker daemon", True, f"server {out.splitlines()[0]} answers"))
    else:
        reason = out.splitlines()[-1] if out else f"exit status {rc}"
        checks.append(Check("docker daemon", False, f"does not answer: {reason}", pins.INSTALL_DOCS["docker-daemon"]))
    return checks


def check_kind() -> Check:
    path = shutil.which("kind")
    if path is None:
        return Check("kind", False, "not found on PATH", pins.INSTALL_DOCS["kind"])
    rc, out = _run([path, "version"])
    if rc != 0:
        return Check("kind", False, f"'kind version' failed: {out[:200]}", pins.INSTALL_DOCS["kind"])
    match = re.search(r"v\d+\.\d+\.\d+", out)
    found = match.group(0) if match else out
    note = "" if found == pins.KIND_VERSION else f" (the plan was written for {pins.KIND_VERSION})"
    return Check("kind", True, f"{found}{note} ({path})")


def check_kubectl() -> Check:
    path = shutil.which("kubectl")
    if path is None:
        return Check("kubectl", False, "not found on PATH", pins.INSTALL_DOCS["kubectl"])
    rc, out = _run([path, "version", "--client", "-o", "json"])
    try:
        version = json.loads(out)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError, TypeError):
        return Check("kubectl", False, f"'kubectl version --client' failed: {out[:200]}", pins.INSTALL_DOCS["kubectl"])
    return Check("kubectl", True, f"{version} ({path})")


def check_istioctl() -> Check:
    path = shutil.which("istioctl")
    if path is None:
        return Check("istioctl", False, "not found on PATH", pins.INSTALL_DOCS["istioctl"])
    rc, out = _run([path, "version", "--remote=false"])
    match = re.search(r"\d+\.\d+\.\d+", out)
    if rc != 0 or not match:
        return Check("istioctl", False, f"'istioctl version' failed: {out[:200]}", pins.INSTALL_DOCS["istioctl"])
    found = match.group(0)
    if found != pins.ISTIO_VERSION:
        return Check(
            "istioctl", False, f"{found}, but the cluster is planned for Istio {pins.ISTIO_VERSION}",
            pins.INSTALL_DOCS["istioctl"],
        )
    return Check("istioctl", True, f"{found} ({path})")


def check_argo_rollouts_plugin() -> Check:
    """The Argo Rollouts kubectl plugin: optional, since ServeLab talks to the API itself."""
    name, fix = "kubectl-argo-rollouts", pins.INSTALL_DOCS["kubectl-argo-rollouts"]
    path = shutil.which(name)
    if path is None:
        return Check(name, False, "not found on PATH (optional: to watch the canary)", fix, required=False)
    rc, out = _run([path, "version", "--short"])  # prints "kubectl-argo-rollouts: v1.9.1+<commit>"
    match = re.search(r"v\d+\.\d+\.\d+", out)
    if rc != 0 or not match:
        return Check(name, False, f"'kubectl-argo-rollouts version' failed: {out[:200]}", fix, required=False)
    found = match.group(0)
    wanted = pins.ARGO_ROLLOUTS_VERSION
    note = "" if found == wanted else f" (the cluster runs Argo Rollouts {wanted})"
    return Check(name, True, f"{found}{note} ({path}; optional)")


def kind_checks() -> list[Check]:
    return [*check_docker(), check_kind(), check_kubectl(), check_istioctl(), check_argo_rollouts_plugin()]


def render(checks: list[Check]) -> str:
    lines = [c.render() for c in checks]
    missing = [c.name for c in checks if c.required and not c.ok]
    if missing:
        lines.append(f"\n{len(missing)} missing: {', '.join(missing)}. Install them as shown, then run this again.")
    else:
        lines.append("\nEverything the kind backend needs is here.")
    return "\n".join(lines)
