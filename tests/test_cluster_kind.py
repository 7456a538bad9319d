"""The kind backend, without kind: the dry-run plan, preflight, the context guard, manifests.

kind cannot run on the project's machines, so these tests check everything up to the point
where a command would run: what it would run, what it refuses, and that what it would apply
is valid.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.cluster import kubecontext, manifests, pins, preflight, rollout_api
from lab.cluster.base import ClusterError
from lab.cluster.kind import KindBackend
from tests.conftest import require_program

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", "cluster", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def _never_run(step):
    raise AssertionError(f"a dry run executed {step.shell()}")


# -- the dry-run plan -------------------------------------------------------------------------


def test_up_dry_run_prints_every_pinned_command_and_runs_nothing(capsys):
    backend = KindBackend(dry_run=True, runner=_never_run)
    backend.up()
    out = capsys.readouterr().out
    expected = [
        "kind create cluster --name servelab --config manifests/kind/cluster.yaml --wait 180s",
        "docker build -t servelab/emulator:0.1.0 .",
        "kind load docker-image servelab/emulator:0.1.0 --name servelab",
        f"kubectl --context kind-servelab apply -n argo-rollouts -f {pins.ARGO_ROLLOUTS_INSTALL_URL}",
        "istioctl install --context kind-servelab --set profile=default -y",
        "kubectl --context kind-servelab apply -k manifests/monitoring",
        f"kubectl --context kind-servelab apply --server-side -f {pins.KEDA_INSTALL_URL}",
    ]
    positions = [out.index(line) for line in expected]
    assert positions == sorted(positions), "the plan's steps are out of order"
    assert "/releases/download/v1.9.1/install.yaml" in out
    # Every kubectl line names the kind context.
    kubectl_lines = [line for line in out.splitlines() if line.startswith("kubectl ")]
    assert kubectl_lines and all(line.startswith("kubectl --context kind-servelab ") for line in kubectl_lines)
    # The rendered monitoring manifests follow the commands.
    rendered = out.split("---- rendered manifests: manifests/monitoring", 1)[1]
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered.split("\n", 1)[1]) if d}
    assert {"Deployment", "Service", "ConfigMap", "ClusterRole", "Namespace"} <= kinds


def test_deploy_dry_run_renders_the_manifests(tmp_path, capsys):
    course = _course_manifests(tmp_path)
    KindBackend(dry_run=True, runner=_never_run).deploy(course)
    out = capsys.readouterr().out
    assert "kubectl --context kind-servelab apply -k manifests/judge" in out
    assert f"kubectl --context kind-servelab apply -k {course}" in out or "apply -k manifests" in out
    assert "kind: Rollout" in out or "kind: Deployment" in out
    assert "name: llm-judge" in out


def test_cli_dry_run_needs_no_kind_on_path(tmp_path):
    env = dict(os.environ, PATH=_bin_dir(tmp_path, with_kind=False) + os.pathsep + "/usr/bin:/bin")
    proc = _cli("up", "--backend", "kind", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "kind create cluster --name servelab" in proc.stdout
    assert "nothing below is executed" in proc.stdout


# The rollout verbs' dry run: what they would send, printed without any cluster. The Rollout's
# name and namespace come from the course's manifests (ai-prod/ai-api).

KUBECTL = "kubectl --context kind-servelab -n ai-prod"
PLUGIN = "kubectl argo rollouts --context kind-servelab -n ai-prod"
GET = f"{KUBECTL} get rollout ai-api -o yaml"


@pytest.fixture
def no_cluster(monkeypatch):
    """A kubeconfig that does not exist, and a test failure on any try to reach a cluster."""
    def refuse(*args, **kwargs):
        pytest.fail("a dry run tried to reach the cluster")

    monkeypatch.setattr(kubecontext, "resolve_kind_context", refuse)
    monkeypatch.setattr(kubecontext, "api_client", refuse)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")


@pytest.mark.parametrize(
    "verb, lines",
    [
        pytest.param(("status",), [GET, f"{PLUGIN} get rollout ai-api"], id="status"),
        pytest.param(("promote",), [
            GET,
            f"""{KUBECTL} patch rollout ai-api --subresource=status --type=merge -p '{{"status":{{"pauseConditions":null}}}}'""",
            f"""{KUBECTL} patch rollout ai-api --subresource=status --type=merge -p '{{"status":{{"pauseConditions":null,"currentStepIndex":N}}}}'""",
            f"""{KUBECTL} patch rollout ai-api --type=merge -p '{{"spec":{{"paused":false}}}}'""",
            f"{PLUGIN} promote ai-api",
        ], id="promote"),
        pytest.param(("promote", "--full"), [
            GET,
            f"""{KUBECTL} patch rollout ai-api --subresource=status --type=merge -p '{{"status":{{"promoteFull":true}}}}'""",
            f"{PLUGIN} promote ai-api --full",
        ], id="promote-full"),
        pytest.param(("abort",), [
            f"""{KUBECTL} patch rollout ai-api --subresource=status --type=merge -p '{{"status":{{"abort":true}}}}'""",
            f"{PLUGIN} abort ai-api",
        ], id="abort"),
        pytest.param(("retry",), [
            f"""{KUBECTL} patch rollout ai-api --subresource=status --type=merge -p '{{"status":{{"abort":false}}}}'""",
            f"{PLUGIN} retry rollout ai-api",
        ], id="retry"),
        pytest.param(("undo",), [
            GET,
            f"{KUBECTL} get replicasets -l app=ai-api -o yaml",
            f"""{KUBECTL} patch rollout ai-api --type=json -p '[{{"op":"replace","path":"/spec/template","value":TEMPLATE}}]'""",
            f"{PLUGIN} undo ai-api",
        ], id="undo"),
        pytest.param(("fault", "canary:error-rate=0.05"), [GET], id="fault"),
        pytest.param(("fault", "none"), [GET], id="fault-none"),
    ],
)
def test_rollout_verbs_dry_run_print_what_they_send_and_reach_no_cluster(no_cluster, capsys, verb, lines):
    backend = KindBackend(dry_run=True, runner=_never_run)
    if verb[0] == "fault":
        result = backend.set_fault(verb[1])
    elif verb[0] == "promote":
        result = backend.promote(full="--full" in verb)
    else:
        result = getattr(backend, verb[0])()
    assert result is None  # the CLI prints no status after a dry run
    out = capsys.readouterr().out
    assert out.startswith(f"# servelab cluster {' '.join(verb)} --backend kind --dry-run: nothing below is executed.")
    assert "# No cluster is contacted. The Rollout is ai-prod/ai-api" in out
    for line in lines:
        assert line in out.splitlines()


@pytest.mark.parametrize("spec", ["canary:error-rate=0.05", "none"])
def test_fault_dry_run_prints_the_patch_for_the_deployed_args(no_cluster, capsys, spec):
    KindBackend(dry_run=True).set_fault(spec)
    [line] = [l for l in capsys.readouterr().out.splitlines() if " patch rollout " in l]
    argv = shlex.split(line)
    assert argv[:10] == ["kubectl", "--context", "kind-servelab", "-n", "ai-prod", "patch", "rollout", "ai-api",
                         "--type=json", "-p"]
    patch = json.loads(argv[10])
    [rollout] = [d for d in manifests.load_documents(manifests.render(ROOT / "manifests")[0]) if d["kind"] == "Rollout"]
    assert patch == rollout_api.fault_patch(rollout, None if spec == "none" else spec)
    args = patch[0]["value"]
    assert ("--fault=error-rate=0.05" in args) is (spec != "none")
    assert args[0] == "meta-llama/Llama-3.1-8B"  # the deployed args are kept


@pytest.mark.parametrize("args", [
    pytest.param(["status"], id="status"),
    pytest.param(["promote"], id="promote"),
    pytest.param(["undo"], id="undo"),
    pytest.param(["retry"], id="retry"),
    pytest.param(["fault", "canary:latency=3x"], id="fault"),
])
def test_cli_rollout_verbs_dry_run_without_a_cluster(tmp_path, args):
    # No kubeconfig at all: a dry run must not need one.
    env = dict(os.environ, KUBECONFIG=str(tmp_path / "no-such-kubeconfig"))
    proc = _cli(*args, "--backend", "kind", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "nothing below is executed" in proc.stdout and "No cluster is contacted" in proc.stdout
    assert "Status:" not in proc.stdout and "Traceback" not in proc.stderr


def test_sim_only_flags_are_refused_for_kind():
    proc = _cli("deploy", "--backend", "kind", "--speed", "60", "--dry-run")
    assert proc.returncode == 2
    assert "belong to the sim backend" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- preflight --------------------------------------------------------------------------------


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _bin_dir(tmp_path: Path, *, with_kind: bool = True, daemon: bool = True, istio: str = pins.ISTIO_VERSION,
             argo_plugin: str | None = None) -> str:
    """A folder of stand-in programs that answer like docker, kind, kubectl and istioctl, and with
    ``argo_plugin`` (what ``version --short`` prints) like the Argo Rollouts kubectl plugin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    info = 'echo 28.2.2; exit 0' if daemon else 'echo "Cannot connect to the Docker daemon" >&2; exit 1'
    _script(bin_dir / "docker", f'case "$1" in --version) echo "Docker version 28.2.2, build e6534b4";; info) {info};; esac\n')
    _script(bin_dir / "kubectl", 'echo \'{"clientVersion": {"gitVersion": "v1.31.2"}}\'\n')
    _script(bin_dir / "istioctl", f'echo "client version: {istio}"\n')
    if with_kind:
        _script(bin_dir / "kind", f'echo "kind {pins.KIND_VERSION} go1.22.9 linux/amd64"\n')
    if argo_plugin is not None:
        _script(bin_dir / "kubectl-argo-rollouts", f'echo "{argo_plugin}"\n')
    return str(bin_dir)


@pytest.mark.parametrize(
    "with_kind, daemon, istio, rc, must_say",
    [
        pytest.param(True, True, pins.ISTIO_VERSION, 0, ["Everything the kind backend needs is here"], id="all-present"),
        pytest.param(False, True, pins.ISTIO_VERSION, 1,
                     ["[MISSING] kind: not found on PATH", f"https://kind.sigs.k8s.io/dl/{pins.KIND_VERSION}/kind-linux-amd64",
                      "1 missing: kind"], id="no-kind"),
        pytest.param(True, False, pins.ISTIO_VERSION, 1,
                     ["[MISSING] docker daemon", "sudo systemctl start docker"], id="daemon-down"),
        pytest.param(True, True, "1.20.0", 1,
                     ["1.20.0, but the cluster is planned for Istio", f"ISTIO_VERSION={pins.ISTIO_VERSION}"], id="wrong-istio"),
    ],
)
def test_preflight_says_what_to_install(tmp_path, with_kind, daemon, istio, rc, must_say):
    # PATH holds only the stand-ins and the system's sh: the real machine's tools do not leak in.
    env = dict(os.environ, PATH=_bin_dir(tmp_path, with_kind=with_kind, daemon=daemon, istio=istio) + os.pathsep + "/bin")
    proc = _cli("preflight", "--backend", "kind", env=env)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    for text in must_say:
        assert text in proc.stdout


PLUGIN_VERSION = f"kubectl-argo-rollouts: {pins.ARGO_ROLLOUTS_VERSION}+e9c0ab3"  # what 'version --short' prints


@pytest.mark.parametrize(
    "argo_plugin, must_say",
    [
        pytest.param(None, ["[warn] kubectl-argo-rollouts: not found on PATH (optional",
                            f"{pins.ARGO_ROLLOUTS_PLUGIN_URL}-linux-amd64", "/usr/local/bin/kubectl-argo-rollouts",
                            "need no plugin", "Everything the kind backend needs is here"], id="absent"),
        pytest.param(PLUGIN_VERSION, [f"[ok  ] kubectl-argo-rollouts: {pins.ARGO_ROLLOUTS_VERSION} ("],
                     id="present"),
        pytest.param("kubectl-argo-rollouts: v1.6.0+abc", ["[ok  ] kubectl-argo-rollouts: v1.6.0 (the cluster runs "
                                                           f"Argo Rollouts {pins.ARGO_ROLLOUTS_VERSION})"], id="older"),
    ],
)
def test_preflight_reports_the_argo_rollouts_plugin_as_optional(tmp_path, argo_plugin, must_say):
    # The real plugin cannot be downloaded here: a stand-in script named kubectl-argo-rollouts,
    # answering 'version --short' as the real one does, takes its place on PATH.
    env = dict(os.environ, PATH=_bin_dir(tmp_path, argo_plugin=argo_plugin) + os.pathsep + "/bin")
    proc = _cli("preflight", "--backend", "kind", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # optional: never fails the preflight
    for text in must_say:
        assert text in proc.stdout
    assert "missing:" not in proc.stdout


def test_preflight_with_nothing_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    checks = preflight.kind_checks()
    missing = {c.name for c in checks if c.required and not c.ok}
    assert missing == {"docker", "kind", "kubectl", "istioctl"}
    [plugin] = [c for c in checks if c.name == "kubectl-argo-rollouts"]
    assert not plugin.ok and not plugin.required
    text = preflight.render(checks)
    for url in ("https://docs.docker.com/engine/install/", "https://kubernetes.io/docs/tasks/tools/",
                "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"):
        assert url in text


def test_sim_preflight_passes(tmp_path):
    env = dict(os.environ, SERVELAB_STATE_DIR=str(tmp_path / "state"))
    proc = _cli("preflight", env=env)
    assert proc.returncode == 0
    assert "simulator" in proc.stdout


# -- the context guard --------------------------------------------------------------------------


def _kubeconfig(tmp_path: Path, contexts: dict[str, str], current: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "clusters": [{"name": name, "cluster": {"server": server}} for name, server in contexts.items()],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}} for name in contexts],
        "users": [{"name": name, "user": {"token": "not-a-real-token"}} for name in contexts],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def no_api_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(kubecontext, "api_client", lambda ctx: calls.append(ctx) or pytest.fail("API client built"))
    return calls


def test_foreign_current_context_is_never_used(tmp_path, no_api_calls):
    path = _kubeconfig(tmp_path, {"prod-eks": "https://prod.example.com:443"}, current="prod-eks")
    with pytest.raises(ClusterError, match=r"no kube context 'kind-servelab' \(found: prod-eks\)"):
        KindBackend(kubeconfig=str(path)).status()
    assert no_api_calls == []


def test_kind_named_context_on_a_remote_server_is_refused(tmp_path, no_api_calls):
    path = _kubeconfig(tmp_path, {"kind-servelab": "https://10.0.0.5:6443", "prod": "https://prod:443"}, current="prod")
    with pytest.raises(ClusterError, match="not a kind API server on this machine"):
        KindBackend(kubeconfig=str(path)).status()
    assert no_api_calls == []


@pytest.mark.parametrize("requested", ["prod", "kind-other", "kind-servelab-x"])
def test_other_requested_contexts_are_refused(requested):
    with pytest.raises(ClusterError, match="refused. The kind backend only ever acts on the kube context 'kind-servelab'"):
        KindBackend(kube_context=requested)


def test_loopback_kind_context_is_accepted_and_only_it_is_loaded(tmp_path):
    path = _kubeconfig(tmp_path, {"kind-servelab": "https://127.0.0.1:40123", "prod": "https://prod:443"}, current="prod")
    ctx = kubecontext.resolve_kind_context("servelab", path)
    assert ctx.name == "kind-servelab" and ctx.server == "https://127.0.0.1:40123"
    client = kubecontext.api_client(ctx)  # builds a client; contacts nothing
    assert client.configuration.host == "https://127.0.0.1:40123"


def test_cli_refusal_is_an_error_line_not_a_traceback(tmp_path):
    path = _kubeconfig(tmp_path, {"prod": "https://prod.example.com"}, current="prod")
    proc = _cli("abort", "--backend", "kind", "--kubeconfig", str(path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert "kind-servelab" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["Servelab", "a_b", "-x", ""])
def test_bad_cluster_names(name):
    with pytest.raises(ClusterError, match="--cluster-name"):
        kubecontext.kind_context_name(name)


# -- the manifests this backend applies ---------------------------------------------------------


@pytest.mark.parametrize("folder", ["manifests/monitoring", "manifests/judge", "manifests/queue-scaling"])
def test_our_manifests_render_and_validate(folder):
    text, _ = manifests.render(ROOT / folder)
    docs = manifests.load_documents(text)
    assert docs
    assert manifests.validate(docs) == []


@pytest.mark.parametrize("path", ["manifests/kind/loadgen.yaml", "manifests/kind/namespaces.yaml",
                                  "manifests/judge/judge-job.yaml"])
def test_plain_manifest_files_validate(path):
    docs = manifests.load_documents((ROOT / path).read_text(), source=path)
    assert manifests.validate(docs) == []


def test_course_manifests_validate_when_present():
    course = ROOT / "manifests"
    if not (course / "kustomization.yaml").is_file():
        pytest.skip("the course's manifests are not merged into this branch yet")
    text, _ = manifests.render(course)
    assert manifests.validate(manifests.load_documents(text), course / "schemas") == []


def test_a_misspelt_field_is_caught():
    doc = yaml.safe_load((ROOT / "manifests/kind/loadgen.yaml").read_text())
    doc["spec"]["replicaz"] = 2
    problems = manifests.validate([doc])
    assert len(problems) == 1 and "Deployment ai-prod/loadgen" in problems[0] and "replicaz" in problems[0]


def test_kind_config_pins_the_node_image_by_digest():
    config = yaml.safe_load((ROOT / "manifests/kind/cluster.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["nodes"][0]["image"] == pins.KIND_NODE_IMAGE
    assert "@sha256:" in pins.KIND_NODE_IMAGE
    assert config["networking"]["apiServerAddress"] == "127.0.0.1"


def test_prometheus_config_is_accepted_by_promtool(tmp_path):
    # Debian's prometheus package is built without Kubernetes service discovery, so its
    # promtool rejects kubernetes_sd_configs outright. Swap each for a static target: what is
    # left checked is everything else, the relabelling rules (regexes, actions, labels) above all.
    promtool = require_program("promtool")
    config = yaml.safe_load((ROOT / "manifests/monitoring/prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([promtool, "check", "config", "--syntax-only", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [job["job_name"] for job in config["scrape_configs"]] == ["ai-api", "annotated-pods"]


def test_the_analysis_address_is_our_prometheus_service():
    # The AnalysisTemplates query http://prometheus.monitoring.svc:9090.
    docs = manifests.load_documents(manifests.render(ROOT / "manifests/monitoring")[0])
    service = next(d for d in docs if d["kind"] == "Service")
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == ("prometheus", "monitoring")
    assert service["spec"]["ports"][0]["port"] == 9090


def _course_manifests(tmp_path: Path) -> Path:
    if (ROOT / "manifests/kustomization.yaml").is_file():
        return ROOT / "manifests"
    folder = tmp_path / "course"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text("resources: [deploy.yaml]\nnamespace: ai-prod\n")
    (folder / "deploy.yaml").write_text((ROOT / "manifests/kind/loadgen.yaml").read_text())
    return folder


# -- the Rollout patches, as kubectl argo rollouts sends them --------------------------------------

STEPS = [{"setWeight": 1}, {"pause": {"duration": "1h"}}, {"analysis": {}}, {"setWeight": 10}, {"pause": {}}]


def _rollout(**status) -> dict:
    return {
        "metadata": {"name": "ai-api", "namespace": "ai-prod", "uid": "u1"},
        "spec": {"strategy": {"canary": {"steps": STEPS}}, "selector": {"matchLabels": {"app": "ai-api"}},
                 "template": {"metadata": {"labels": {"app": "ai-api"}},
                              "spec": {"containers": [{"name": "vllm", "args": ["m", "--port=8000"]}]}}},
        "status": status,
    }


@pytest.mark.parametrize(
    "rollout, full, expected",
    [
        pytest.param(_rollout(currentStepIndex=1, pauseConditions=[{"reason": "CanaryPauseStep"}]), False,
                     (None, {"status": {"pauseConditions": None}}), id="paused-step"),
        pytest.param(_rollout(currentStepIndex=2), False,
                     (None, {"status": {"pauseConditions": None, "currentStepIndex": 3}}), id="analysis-step"),
        pytest.param({**_rollout(currentStepIndex=4, pauseConditions=[{"reason": "x"}]),
                      "spec": {**_rollout()["spec"], "paused": True}}, False,
                     ({"spec": {"paused": False}}, {"status": {"pauseConditions": None}}), id="spec-paused"),
        pytest.param(_rollout(currentStepIndex=5), False,
                     (None, {"status": {"pauseConditions": None, "currentStepIndex": 5}}), id="past-last-step"),
        pytest.param(_rollout(currentPodHash="b", stableRS="a"), True, (None, {"status": {"promoteFull": True}}), id="full"),
        pytest.param(_rollout(currentPodHash="a", stableRS="a"), True, (None, None), id="full-already-stable"),
    ],
)
def test_promote_patches(rollout, full, expected):
    assert rollout_api.promote_patches(rollout, full) == expected


@pytest.mark.parametrize(
    "status, phase, weight, index",
    [
        pytest.param({}, "Progressing", 1, 0, id="fresh"),
        pytest.param({"phase": "Paused", "currentStepIndex": 4}, "Paused", 10, 4, id="paused"),
        pytest.param({"phase": "Degraded", "abort": True, "currentStepIndex": 0, "message": "RolloutAborted"}, "Degraded", 0, 0, id="aborted"),
        pytest.param({"phase": "Healthy", "currentStepIndex": 5}, "Healthy", 100, 5, id="done"),
        pytest.param({"phase": "Paused", "currentStepIndex": 1, "canary": {"weights": {"canary": {"weight": 1}}}}, "Paused", 1, 1, id="router-weights"),
    ],
)
def test_status_from_rollout(status, phase, weight, index):
    s = rollout_api.status_from_rollout(_rollout(**status))
    assert (s.phase, s.canary_weight, s.current_step_index, s.total_steps) == (phase, weight, index, 5)
    assert s.rollout == "ai-prod/ai-api"


def _rs(revision: int, image: str, owner: str = "u1") -> dict:
    return {
        "metadata": {"annotations": {rollout_api.REVISION_ANNOTATION: str(revision)},
                     "ownerReferences": [{"uid": owner, "controller": True}]},
        "spec": {"template": {"metadata": {"labels": {"app": "ai-api", rollout_api.HASH_LABEL: f"h{revision}"}},
                              "spec": {"containers": [{"name": "vllm", "image": image}]}}},
    }


def test_undo_restores_the_previous_revision_without_its_hash():
    patch = rollout_api.undo_patch(_rollout(), [_rs(3, "v3"), _rs(1, "v1"), _rs(2, "v2"), _rs(9, "x", owner="other")])
    assert patch[0]["op"] == "replace" and patch[0]["path"] == "/spec/template"
    assert patch[0]["value"]["spec"]["containers"][0]["image"] == "v2"
    assert patch[0]["value"]["metadata"]["labels"] == {"app": "ai-api"}


def test_undo_without_history_is_an_error():
    with pytest.raises(ClusterError, match="no previous revision"):
        rollout_api.undo_patch(_rollout(), [_rs(1, "v1")])


def test_fault_patch_sets_and_clears_the_flag():
    rollout = _rollout()
    rollout["spec"]["template"]["spec"]["containers"][0]["args"] += ["--fault", "latency=2x", "--fault=cost=2"]
    patch = rollout_api.fault_patch(rollout, "canary:error-rate=0.05@10m")
    assert patch == [{"op": "replace", "path": "/spec/template/spec/containers/0/args",
                      "value": ["m", "--port=8000", "--fault=error-rate=0.05@10m"]}]
    assert rollout_api.fault_patch(rollout, None)[0]["value"] == ["m", "--port=8000"]


@pytest.mark.parametrize("spec, message", [
    pytest.param("stable:latency=3x", "a stable fault would need", id="stable"),
    pytest.param("canary:explode=1", "unknown kind 'explode'; expected one of error-rate, ", id="unknown-kind"),
    pytest.param("canary:latency=abc", "expected a number for latency, got 'abc'", id="bad-value"),
])
def test_fault_patch_refusals(spec, message):
    with pytest.raises(ClusterError, match=message):
        rollout_api.fault_patch(_rollout(), spec)


def test_fault_patch_knows_every_emulator_fault_kind():
    # The emulator takes price (its parser is the rollout simulator's); kind must pass it on.
    patch = rollout_api.fault_patch(_rollout(), "canary:price=3x")
    assert patch[0]["value"][-1] == "--fault=price=3x"


@pytest.mark.parametrize(
    "image, warned",
    [
        pytest.param("servelab/emulator:0.1.0", False, id="the-loaded-image"),
        pytest.param("servelab/emulatr:0.1.0", True, id="misspelt-name"),
        pytest.param("servelab/emulator:0.1", True, id="wrong-tag"),
        pytest.param("servlab/emulator:0.1.0", True, id="misspelt-owner"),
        pytest.param("redis:7.4.1-alpine", False, id="another-image"),
        pytest.param("curlimages/curl:8.11.1", False, id="another-image-with-owner"),
    ],
)
def test_an_emulator_image_the_node_lacks_is_warned(image, warned):
    from lab.cluster.kind import image_warnings

    doc = {"kind": "Rollout", "metadata": {"name": "ai-api", "namespace": "ai-prod"},
           "spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": image}]}}}}
    warnings = image_warnings([doc])
    assert bool(warnings) == warned
    if warned:
        assert "Rollout ai-prod/ai-api" in warnings[0] and "ImagePullBackOff" in warnings[0]
        assert warnings[0].endswith(f"Did you mean image: {pins.EMULATOR_IMAGE}?")


def test_dry_run_deploy_refuses_what_the_real_deploy_refuses(tmp_path, course_copy):
    folder = course_copy("services.yaml", "  selector: {app: ai-api}", "  selectr: {app: ai-api}")
    proc = _cli("deploy", "--backend", "kind", "--dry-run", "--manifests", str(folder))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: the manifests do not validate; nothing would be applied:")
    assert "Service ai-prod/ai-api-stable: spec: Additional properties are not allowed ('selectr'" in proc.stderr
    assert proc.stdout == ""


def test_a_folder_without_schemas_is_checked_against_the_course_schemas(tmp_path):
    # The --laptop overlay lives in the state folder, with no schemas/ beside it: the Rollout
    # must still be checked against Argo's schema.
    from lab.cluster.kind import validation_problems

    doc = yaml.safe_load((ROOT / "manifests/rollout.yaml").read_text())
    assert validation_problems(tmp_path, [doc]) == []
    doc["spec"]["strategy"]["canary"]["stepz"] = []
    problems = validation_problems(tmp_path, [doc])
    assert len(problems) == 1 and "'stepz' was unexpected" in problems[0], problems


@pytest.mark.parametrize(
    "args, warned",
    [
        pytest.param(["m", "--gpu=h100-80gb"], True, id="no-host"),
        pytest.param(["m", "--host=127.0.0.1"], True, id="loopback"),
        pytest.param(["m", "--host=0.0.0.0"], False, id="all-interfaces"),
        pytest.param(["m", "--host", "0.0.0.0"], False, id="split-flag"),
    ],
)
def test_emulator_pods_must_listen_on_the_pod_ip(args, warned):
    from lab.cluster.kind import emulator_warnings

    doc = {"kind": "Rollout", "metadata": {"name": "ai-api", "namespace": "ai-prod"},
           "spec": {"template": {"spec": {"containers": [
               {"name": "vllm", "image": "servelab/emulator:0.1.0", "command": ["servelab", "serve"], "args": args}]}}}}
    warnings = emulator_warnings([doc])
    assert bool(warnings) == warned
    if warned:
        assert "Rollout ai-prod/ai-api" in warnings[0] and "--host=0.0.0.0" in warnings[0]


def test_laptop_overlay_resizes_and_still_validates(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVELAB_STATE_DIR", str(tmp_path))
    course = ROOT / "manifests"
    if not (course / "kustomization.yaml").is_file():
        pytest.skip("the course's manifests are not merged into this branch yet")
    folder = KindBackend().laptop_overlay(course)
    assert folder.parent == tmp_path
    docs = manifests.load_documents(manifests.render(folder)[0])
    assert manifests.validate(docs, course / "schemas") == []
    rollout = next(d for d in docs if d["kind"] == "Rollout")
    assert rollout["spec"]["replicas"] == 4
    assert rollout["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"] == "10m"
    # Everything else is the course's: same steps, same analysis.
    base = next(d for d in manifests.load_documents(manifests.render(course)[0]) if d["kind"] == "Rollout")
    assert rollout["spec"]["strategy"] == base["spec"]["strategy"]


def test_laptop_overlay_keeps_a_students_own_pod_annotations(tmp_path, monkeypatch):
    """The sidecar sizes join the pod template's annotations; they do not replace them."""
    import shutil

    import yaml

    monkeypatch.setenv("SERVELAB_STATE_DIR", str(tmp_path / "state"))
    course = ROOT / "manifests"
    if not (course / "kustomization.yaml").is_file():
        pytest.skip("the course's manifests are not merged into this branch yet")
    student = tmp_path / "mine"
    shutil.copytree(course, student)
    docs = list(yaml.safe_load_all((student / "rollout.yaml").read_text()))
    rollout = next(d for d in docs if d and d.get("kind") == "Rollout")
    rollout["spec"]["template"]["metadata"].setdefault("annotations", {})["prometheus.io/scrape"] = "true"
    (student / "rollout.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    folder = KindBackend().laptop_overlay(student)
    rendered = manifests.load_documents(manifests.render(folder)[0])
    annotations = next(d for d in rendered if d["kind"] == "Rollout")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["sidecar.istio.io/proxyCPU"] == "10m"
    vllm = next(d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "vllm-llama-8b")
    assert vllm["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/proxyMemory"] == "64Mi"
    assert vllm["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "100m"


def test_laptop_dry_run_from_the_cli(tmp_path):
    env = dict(os.environ, SERVELAB_STATE_DIR=str(tmp_path))
    proc = _cli("deploy", "--backend", "kind", "--dry-run", "--laptop", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"apply -k {tmp_path}/kind-laptop" in proc.stdout
