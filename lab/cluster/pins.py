"""Every version the kind backend installs, pinned in one place.

Why these: the course's manifests are validated against Kubernetes 1.31 and the CRD schemas
of Argo Rollouts v1.9.1 and Istio 1.29.6 (manifests/schemas/README.md), so the cluster runs
those. kind v0.25.0 ships a Kubernetes 1.31.2 node image; the digest is the one its release
notes list (kind asks for the digest, since a tag can move). KEDA 2.16 supports Kubernetes
1.29 to 1.31. To move a version, change it here and run `servelab cluster up --backend kind
--dry-run` to see the new plan.
"""

KIND_VERSION = "v0.25.0"
KIND_NODE_IMAGE = (
    "kindest/node:v1.31.2@sha256:18fbefc20a7113353c7b75b5c869d7145a6abd6269154825872dc59c1329912e"
)
KUBERNETES_VERSION = "1.31.2"
ARGO_ROLLOUTS_VERSION = "v1.9.1"
ARGO_ROLLOUTS_INSTALL_URL = (
    f"https://github.com/argoproj/argo-rollouts/releases/download/{ARGO_ROLLOUTS_VERSION}/install.yaml"
)
# The optional kubectl plugin, from the same release (its assets: kubectl-argo-rollouts-OS-ARCH).
ARGO_ROLLOUTS_PLUGIN_URL = (
    f"https://github.com/argoproj/argo-rollouts/releases/download/{ARGO_ROLLOUTS_VERSION}/kubectl-argo-rollouts"
)
ISTIO_VERSION = "1.29.6"
KEDA_VERSION = "2.16.1"
KEDA_INSTALL_URL = (
    f"https://github.com/kedacore/keda/releases/download/v{KEDA_VERSION}/keda-{KEDA_VERSION}.yaml"
)
PROMETHEUS_IMAGE = "prom/prometheus:v2.55.1"  # also pinned in manifests/monitoring/prometheus.yaml
EMULATOR_IMAGE = "servelab/emulator:0.1.0"  # the image the course's manifests name

INSTALL_DOCS = {
    "docker": (
        "Install Docker: https://docs.docker.com/engine/install/ (Linux) or Docker Desktop:\n"
        "https://docs.docker.com/get-started/get-docker/ (macOS, Windows). Then start it\n"
        "(Linux: sudo systemctl start docker) and check with: docker info"
    ),
    "docker-daemon": (
        "The docker command is installed but its daemon does not answer. Start Docker\n"
        "(Docker Desktop, or on Linux: sudo systemctl start docker), make sure your user may\n"
        "use it (Linux: sudo usermod -aG docker $USER, then log in again), and check: docker info"
    ),
    "kind": (
        f"Install kind {KIND_VERSION}: https://kind.sigs.k8s.io/docs/user/quick-start/#installation\n"
        f"  Linux amd64: curl -Lo ./kind https://kind.sigs.k8s.io/dl/{KIND_VERSION}/kind-linux-amd64\n"
        "               chmod +x ./kind && sudo mv ./kind /usr/local/bin/kind\n"
        f"  macOS:       brew install kind   (or the darwin binary from the same page)\n"
        f"  with Go:     go install sigs.k8s.io/kind@{KIND_VERSION}"
    ),
    "kubectl": (
        "Install kubectl (within one minor version of Kubernetes "
        f"{KUBERNETES_VERSION.rsplit('.', 1)[0]}): https://kubernetes.io/docs/tasks/tools/\n"
        f"  Linux amd64: curl -LO https://dl.k8s.io/release/v{KUBERNETES_VERSION}/bin/linux/amd64/kubectl\n"
        "               sudo install -m 0755 kubectl /usr/local/bin/kubectl\n"
        "  macOS:       brew install kubectl"
    ),
    "kubectl-argo-rollouts": (
        "Optional. ServeLab's status, promote, abort and undo need no plugin; it is for watching the\n"
        "canary (kubectl argo rollouts get rollout ai-api -n ai-prod --watch) and for running the\n"
        "'kubectl argo rollouts' commands that --dry-run prints. Install the binary of Argo Rollouts\n"
        f"{ARGO_ROLLOUTS_VERSION} from https://github.com/argoproj/argo-rollouts/releases:\n"
        f"  Linux amd64: curl -LO {ARGO_ROLLOUTS_PLUGIN_URL}-linux-amd64\n"
        "               chmod +x ./kubectl-argo-rollouts-linux-amd64\n"
        "               sudo mv ./kubectl-argo-rollouts-linux-amd64 /usr/local/bin/kubectl-argo-rollouts\n"
        "  macOS:       the same with kubectl-argo-rollouts-darwin-arm64 (Intel: -darwin-amd64),\n"
        "               or brew install argoproj/tap/kubectl-argo-rollouts\n"
        "  check:       kubectl argo rollouts version"
    ),
    "istioctl": (
        f"Install istioctl {ISTIO_VERSION}: https://istio.io/latest/docs/setup/additional-setup/download-istio-release/\n"
        f"  curl -L https://istio.io/downloadIstio | ISTIO_VERSION={ISTIO_VERSION} sh -\n"
        f"  export PATH=\"$PWD/istio-{ISTIO_VERSION}/bin:$PATH\""
    ),
}
