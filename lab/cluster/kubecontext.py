"""The kind backend's guard: it acts on the kube context ``kind-<cluster>`` and nothing else.

A student's kubeconfig may hold a work cluster, and its current context may point there. The
kind backend never uses the current context: every ``kubectl`` call names ``--context
kind-<cluster>`` and the Python client is built for that context alone. Before it acts, it
checks that the context exists, is named as kind names it, and that its API server is on this
machine's loopback address (kind publishes the API server on 127.0.0.1). Anything else is
refused with a message that says why and what to do.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

from lab.cluster.base import ClusterError

CLUSTER_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def kind_context_name(cluster: str) -> str:
    if not CLUSTER_NAME_RE.match(cluster) or len(cluster) > 50:
        raise ClusterError(
            f"--cluster-name: expected lowercase letters, digits and '-', got {cluster!r}"
        )
    return f"kind-{cluster}"


def kubeconfig_path(explicit: str | os.PathLike | None = None) -> Path:
    """The kubeconfig file: the one given, else $KUBECONFIG's first entry, else ~/.kube/config."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env.split(os.pathsep)[0])
    return Path.home() / ".kube" / "config"


@dataclass(frozen=True)
class KindContext:
    name: str  # kind-<cluster>
    server: str  # the API server URL
    kubeconfig: Path


def check_requested_context(requested: str | None, cluster: str) -> str:
    """The context to use; refuses any name other than ``kind-<cluster>``."""
    expected = kind_context_name(cluster)
    if requested and requested != expected:
        raise ClusterError(
            f"--kube-context {requested!r}: refused. The kind backend only ever acts on the kube "
            f"context {expected!r} (the one 'kind create cluster --name {cluster}' writes), so that "
            f"it can never touch a real cluster. Leave --kube-context out, or pass --cluster-name "
            f"to name another kind cluster."
        )
    return expected


def resolve_kind_context(cluster: str, kubeconfig: str | os.PathLike | None = None,
                         requested: str | None = None) -> KindContext:
    """Find and vet ``kind-<cluster>`` in the kubeconfig; raise :class:`ClusterError` if unsafe."""
    name = check_requested_context(requested, cluster)
    path = kubeconfig_path(kubeconfig)
    if not path.is_file():
        raise ClusterError(
            f"{path}: no kubeconfig file. Create the cluster first: servelab cluster up --backend kind"
        )
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ClusterError(f"{path}: not valid YAML ({exc})") from None
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or [] if isinstance(c, dict)}
    if name not in contexts:
        others = ", ".join(sorted(str(n) for n in contexts)) or "none"
        raise ClusterError(
            f"{path}: no kube context {name!r} (found: {others}). The kind backend acts only on "
            f"{name!r}; create it with: servelab cluster up --backend kind"
        )
    cluster_ref = contexts[name].get("cluster")
    clusters = {c.get("name"): c.get("cluster") or {} for c in config.get("clusters") or [] if isinstance(c, dict)}
    server = str((clusters.get(cluster_ref) or {}).get("server", ""))
    if not _is_loopback(server):
        raise ClusterError(
            f"{path}: kube context {name!r} points at {server or 'no server'!r}, which is not a kind "
            f"API server on this machine (kind serves it on 127.0.0.1). Refusing to act on it. "
            f"If this context is not yours to change, delete it from your kubeconfig "
            f"(kubectl config delete-context {name}) and run: servelab cluster up --backend kind"
        )
    return KindContext(name=name, server=server, kubeconfig=path)


def _is_loopback(server: str) -> bool:
    host = urlparse(server).hostname
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_client(ctx: KindContext):
    """A ``kubernetes`` ApiClient for this context only (never the current context)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(ctx.kubeconfig), context=ctx.name)
