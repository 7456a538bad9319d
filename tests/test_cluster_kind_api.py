"""The kind backend's Kubernetes API calls, against a stand-in API server on loopback.

kind itself cannot run here, so a small HTTP server plays the API server for one Rollout and
its ReplicaSets. It records every request, so the tests check what a real API server would
receive: the URL (the status subresource or not), the patch content type and the body, which
must be what ``kubectl argo rollouts`` sends.
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from lab.cluster.base import ClusterError
from lab.cluster.kind import KindBackend, Step

ROOT = Path(__file__).resolve().parent.parent
ROLLOUT_PATH = "/apis/argoproj.io/v1alpha1/namespaces/ai-prod/rollouts/ai-api"

ROLLOUT = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "ai-api", "namespace": "ai-prod", "uid": "u1"},
    "spec": {
        "replicas": 10,
        "selector": {"matchLabels": {"app": "ai-api"}},
        "template": {"metadata": {"labels": {"app": "ai-api"}},
                     "spec": {"containers": [{"name": "vllm", "image": "servelab/emulator:0.1.0", "args": ["m"]}]}},
        "strategy": {"canary": {"steps": [{"setWeight": 1}, {"pause": {"duration": "1h"}}, {"setWeight": 50}]}},
    },
    "status": {"phase": "Paused", "currentStepIndex": 1, "pauseConditions": [{"reason": "CanaryPauseStep"}],
               "currentPodHash": "new", "stableRS": "old", "canary": {"weights": {"canary": {"weight": 1}}}},
}


def _rs(revision: int, image: str) -> dict:
    return {
        "metadata": {"name": f"ai-api-{revision}", "namespace": "ai-prod",
                     "annotations": {"rollout.argoproj.io/revision": str(revision)},
                     "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "ai-api",
                                          "uid": "u1", "controller": True}]},
        "spec": {"selector": {"matchLabels": {"app": "ai-api"}},
                 "template": {"metadata": {"labels": {"app": "ai-api", "rollouts-pod-template-hash": f"h{revision}"}},
                              "spec": {"containers": [{"name": "vllm", "image": image}]}}},
    }


class _Api(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, str | None, object]] = []
    missing = False  # answer 404 for the Rollout
    rollout = ROLLOUT  # what a GET of the Rollout answers

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        type(self).requests.append(("GET", self.path, None, None))
        if self.path == ROLLOUT_PATH and not self.missing:
            self._send(200, self.rollout)
        elif self.path.startswith("/apis/apps/v1/namespaces/ai-prod/replicasets"):
            self._send(200, {"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {},
                             "items": [_rs(1, "v1"), _rs(2, "v2")]})
        else:
            self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "not found"})

    def do_PATCH(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(("PATCH", self.path, self.headers["Content-Type"], body))
        self._send(200, ROLLOUT)


@pytest.fixture
def api(tmp_path):
    _Api.requests, _Api.missing, _Api.rollout = [], False, ROLLOUT
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kind-servelab",
        "clusters": [{"name": "kind-servelab", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "contexts": [{"name": "kind-servelab", "context": {"cluster": "kind-servelab", "user": "kind-servelab"}}],
        "users": [{"name": "kind-servelab", "user": {"token": "test"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    try:
        yield KindBackend(kubeconfig=str(path))
    finally:
        server.shutdown()
        server.server_close()


def _patches():
    return [(path, ctype, body) for method, path, ctype, body in _Api.requests if method == "PATCH"]


def test_status_reads_the_rollout(api):
    s = api.status()
    assert (s.phase, s.current_step_index, s.canary_weight, s.rollout) == ("Paused", 1, 1, "ai-prod/ai-api")
    assert _Api.requests == [("GET", ROLLOUT_PATH, None, None)]


def test_promote_clears_the_pause_on_the_status_subresource(api):
    api.promote()
    assert _patches() == [(ROLLOUT_PATH + "/status", "application/merge-patch+json", {"status": {"pauseConditions": None}})]


def test_promote_full(api):
    api.promote(full=True)
    assert _patches() == [(ROLLOUT_PATH + "/status", "application/merge-patch+json", {"status": {"promoteFull": True}})]


def test_abort(api):
    api.abort()
    assert _patches() == [(ROLLOUT_PATH + "/status", "application/merge-patch+json", {"status": {"abort": True}})]


ABORTED = {**ROLLOUT, "metadata": {**ROLLOUT["metadata"], "annotations": {"rollout.argoproj.io/revision": "3"}},
           "status": {"phase": "Degraded", "abort": True, "currentStepIndex": 0,
                      "message": "RolloutAborted: Rollout aborted update to revision 3",
                      "currentPodHash": "new", "stableRS": "old", "canary": {"weights": {"canary": {"weight": 0}}}}}


@pytest.mark.parametrize("rollout, note", [
    pytest.param(ABORTED, False, id="aborted"),
    pytest.param(ROLLOUT, True, id="not-aborted-sent-all-the-same"),
])
def test_retry_clears_the_abort_on_the_status_subresource(api, capsys, rollout, note):
    _Api.rollout = rollout
    s = api.retry()
    assert _patches() == [(ROLLOUT_PATH + "/status", "application/merge-patch+json", {"status": {"abort": False}})]
    err = capsys.readouterr().err
    assert ('note: the Rollout is not aborted; retry sends its patch {"status":{"abort":false}} all the same, '
            "and it changes nothing" in err) is note
    assert s.details.get("Revision") == ("3" if rollout is ABORTED else None)


def test_undo_sends_the_previous_template_as_a_json_patch(api):
    api.undo()
    [(path, ctype, body)] = _patches()
    assert (path, ctype) == (ROLLOUT_PATH, "application/json-patch+json")
    assert body[0]["op"] == "replace" and body[0]["path"] == "/spec/template"
    assert body[0]["value"]["spec"]["containers"][0]["image"] == "v1"
    assert "rollouts-pod-template-hash" not in body[0]["value"]["metadata"]["labels"]


def test_fault_patches_the_template(api):
    api.set_fault("canary:error-rate=0.05")
    [(path, ctype, body)] = _patches()
    assert (path, ctype) == (ROLLOUT_PATH, "application/json-patch+json")
    assert body == [{"op": "replace", "path": "/spec/template/spec/containers/0/args",
                     "value": ["m", "--fault=error-rate=0.05"]}]


@pytest.mark.parametrize("verb", [
    pytest.param(lambda b: b.status(), id="status"),
    pytest.param(lambda b: b.promote(), id="promote"),
    pytest.param(lambda b: b.promote(full=True), id="promote-full"),
    pytest.param(lambda b: b.abort(), id="abort"),
    pytest.param(lambda b: b.retry(), id="retry"),
    pytest.param(lambda b: b.undo(), id="undo"),
    pytest.param(lambda b: b.set_fault("canary:error-rate=0.05"), id="fault"),
])
def test_dry_run_asks_the_api_server_nothing(api, capsys, verb):
    api.dry_run = True
    assert verb(api) is None
    out = capsys.readouterr().out
    assert "kubectl --context kind-servelab --kubeconfig" in out and "-n ai-prod " in out
    assert _Api.requests == []  # not even a read: a dry run contacts no cluster


def test_a_missing_rollout_says_deploy_first(api):
    _Api.missing = True
    with pytest.raises(ClusterError, match="deploy it first"):
        api.status()


# -- executing the plan (with a recording runner instead of subprocess) -----------------------------


def test_up_runs_the_plan_in_order_and_skips_an_existing_cluster(api, monkeypatch):
    ran: list[Step] = []
    api.runner = lambda step: ran.append(step) or 0
    monkeypatch.setattr(api, "_require_tools", lambda: None)
    monkeypatch.setattr(api, "_existing_clusters", lambda: ["servelab"])
    assert "is up" in api.up()
    assert [s.argv[:2] for s in ran][:2] == [("docker", "build"), ("kind", "load")]
    assert len(ran) == len(api.plan_up()) - 1


def test_a_failing_step_stops_the_plan(api, monkeypatch):
    ran: list[Step] = []
    api.runner = lambda step: ran.append(step) or (1 if step.argv[0] == "istioctl" else 0)
    monkeypatch.setattr(api, "_require_tools", lambda: None)
    monkeypatch.setattr(api, "_existing_clusters", lambda: ["servelab"])
    with pytest.raises(ClusterError, match="step failed \\(exit status 1\\): istioctl install"):
        api.up()
    assert ran[-1].argv[0] == "istioctl"


def test_up_refuses_to_go_on_when_the_new_context_is_not_local(tmp_path, monkeypatch):
    config = {"apiVersion": "v1", "kind": "Config",
              "clusters": [{"name": "kind-servelab", "cluster": {"server": "https://203.0.113.7:6443"}}],
              "contexts": [{"name": "kind-servelab", "context": {"cluster": "kind-servelab"}}]}
    (tmp_path / "kc").write_text(yaml.safe_dump(config))
    backend = KindBackend(kubeconfig=str(tmp_path / "kc"))
    ran: list[Step] = []
    backend.runner = lambda step: ran.append(step) or 0
    monkeypatch.setattr(backend, "_require_tools", lambda: None)
    monkeypatch.setattr(backend, "_existing_clusters", lambda: [])
    with pytest.raises(ClusterError, match="not a kind API server"):
        backend.up()
    assert [s.argv[:3] for s in ran] == [("kind", "create", "cluster")]  # nothing after it


def test_deploy_validates_before_applying(api, tmp_path, monkeypatch):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text("resources: [d.yaml]\n")
    doc = yaml.safe_load((ROOT / "manifests/kind/loadgen.yaml").read_text())
    broken = copy.deepcopy(doc)
    broken["spec"]["replicaz"] = 1
    (folder / "d.yaml").write_text(yaml.safe_dump(broken))
    api.runner = lambda step: pytest.fail(f"ran {step.shell()} with invalid manifests")
    with pytest.raises(ClusterError, match="do not validate; nothing was applied"):
        api.deploy(folder)
