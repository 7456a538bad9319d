"""The exercise 6.1 queue worker against a real redis-server and a small OpenAI-style stand-in."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lab.queue_worker import QueueWorker, WorkerConfig, parse_job
from tests.conftest import require_program

pytestmark = pytest.mark.redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    binary = require_program("redis-server")
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not answer PING within 5 s")
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


class _Handler(BaseHTTPRequestHandler):
    """/v1/models and /v1/completions; a prompt with FAIL gets a 500, with BAD a 400."""

    calls: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "stand-in-model", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body)
        prompt = body["prompt"]
        if "FAIL" in prompt:
            self._send(500, {"error": {"message": "boom", "type": "InternalServerError"}})
        elif "BAD" in prompt:
            self._send(400, {"error": {"message": "bad prompt", "type": "BadRequestError"}})
        else:
            text = f"{body['model']} says {prompt[::-1]} ({body['max_tokens']})"
            self._send(200, {"choices": [{"index": 0, "text": text, "finish_reason": "length"}]})


@pytest.fixture
def serving_url():
    _Handler.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _results(redis_url: str) -> list[dict]:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [json.loads(r) for r in client.lrange("results", 0, -1)]
    finally:
        client.close()


def _push(redis_url: str, *jobs: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.rpush("prompts", *jobs)
    finally:
        client.close()


def test_worker_drains_the_queue_in_order_and_counts(redis_url, serving_url):
    _push(
        redis_url,
        json.dumps({"id": "a", "prompt": "abc", "max_tokens": 5}),
        "plain prompt",
        json.dumps({"id": "c", "prompt": "please FAIL"}),
        json.dumps({"id": "d", "prompt": "BAD one"}),
        "{not json",
    )
    worker = QueueWorker(
        WorkerConfig(redis_url=redis_url, base_url=serving_url, max_jobs=5, retry_backoff_s=0.01, poll_s=0.2)
    )
    assert worker.run() == 5
    results = _results(redis_url)
    assert [r["status"] for r in results] == ["ok", "ok", "error", "error", "error"]
    assert results[0]["text"] == "stand-in-model says cba (5)"
    assert results[1]["text"] == "stand-in-model says tpmorp nialp (64)"
    assert results[2]["attempts"] == 3 and "HTTP 500" in results[2]["error"]
    assert results[3]["attempts"] == 1 and "HTTP 400" in results[3]["error"]  # no retry on 4xx
    assert "not valid JSON" in results[4]["error"]
    assert len(_Handler.calls) == 2 + 3 + 1
    from prometheus_client import generate_latest

    text = generate_latest(worker.registry).decode()
    assert 'queue_worker_jobs_total{status="ok"} 2.0' in text
    assert 'queue_worker_jobs_total{status="error"} 3.0' in text
    assert "queue_worker_job_duration_seconds_count 5.0" in text


def test_worker_stops_when_idle(redis_url, serving_url):
    worker = QueueWorker(
        WorkerConfig(redis_url=redis_url, base_url=serving_url, idle_timeout_s=0.5, poll_s=0.1)
    )
    start = time.monotonic()
    assert worker.run() == 0
    assert time.monotonic() - start < 10


def test_two_workers_share_the_queue_without_duplicates(redis_url, serving_url):
    jobs = [json.dumps({"id": str(i), "prompt": f"p{i}"}) for i in range(40)]
    _push(redis_url, *jobs)
    workers = [
        QueueWorker(WorkerConfig(redis_url=redis_url, base_url=serving_url, model="m",
                                 idle_timeout_s=0.5, poll_s=0.1))
        for _ in range(2)
    ]
    counts: list[int] = []
    threads = [threading.Thread(target=lambda w=w: counts.append(w.run())) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(counts) == 40
    ids = sorted(int(r["id"]) for r in _results(redis_url))
    assert ids == list(range(40))


def test_worker_command_line(redis_url, serving_url):
    _push(redis_url, "hello")
    proc = subprocess.run(
        [sys.executable, "-m", "lab.queue_worker", "--redis-url", redis_url, "--base-url", serving_url,
         "--max-jobs", "1", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert _results(redis_url)[0]["text"] == "stand-in-model says olleh (64)"
    assert "stopped after 1 jobs" in proc.stderr


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param("hi", {"id": None, "prompt": "hi"}, id="bare"),
        pytest.param('{"id": 1, "prompt": "x"}', {"id": 1, "prompt": "x"}, id="json"),
    ],
)
def test_parse_job(raw, expected):
    assert parse_job(raw) == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        pytest.param("   ", "job is empty", id="empty"),
        pytest.param('{"prompt": ""}', "non-empty string field 'prompt'", id="empty-prompt"),
        pytest.param('{"prompt": "x", "max_tokens": 0}', "max_tokens must be a positive integer", id="max-tokens"),
    ],
)
def test_parse_job_errors(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_job(raw)


# -- against ServeLab's own emulator, when this build has it --------------------------------------


@pytest.fixture
def emulator_url():
    """``servelab serve`` on a loopback port, stopped by the test."""
    import importlib.util

    import httpx

    if importlib.util.find_spec("lab.cli.serve") is None:
        pytest.skip("the emulator (lab/cli/serve.py) is not in this build")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "serve", "meta-llama/Llama-3.1-8B", "--gpu", "h100-80gb",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"servelab serve exited with status {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("servelab serve did not answer /health within 120 s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_worker_against_the_emulator(redis_url, emulator_url):
    _push(redis_url, json.dumps({"id": "q", "prompt": "What is the capital of France?", "max_tokens": 8}),
          json.dumps({"id": "free", "prompt": "Tell me about queues.", "max_tokens": 16}))
    worker = QueueWorker(WorkerConfig(redis_url=redis_url, base_url=emulator_url, max_jobs=2, poll_s=0.2))
    assert worker.run() == 2
    results = {r["id"]: r for r in _results(redis_url)}
    assert results["q"]["status"] == "ok" and "Paris" in results["q"]["text"]
    assert results["free"]["status"] == "ok" and results["free"]["text"]
