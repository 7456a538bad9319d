"""The LLM judge (lab/judge.py) against a small OpenAI-style stand-in, and its manifests."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from lab.judge import Judge, Question, normalize, parse_target, score_answer

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "How many bits are in a byte?", "answer": "8"},
    {"question": "Which attention algorithm does vLLM use?", "answer": "PagedAttention"},
]
RIGHT = {q["question"]: f"The answer is {q['answer']}." for q in QUESTIONS}


class _Handler(BaseHTTPRequestHandler):
    wrong: set[str] = set()  # questions this server answers wrongly

    def log_message(self, *args):
        pass

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"data": [{"id": "emu"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = body["messages"][0]["content"]
        if question == "crash":
            self._send(500, {"error": {"message": "boom"}})
            return
        text = "I am not sure." if question in self.wrong else RIGHT.get(question, "?")
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})


@pytest.fixture
def servers():
    """Two stand-ins: 'stable' answers everything right, 'canary' gets one wrong."""
    handlers, running = {}, []
    for name, wrong in (("stable", set()), ("canary", {QUESTIONS[1]["question"]})):
        handler = type(f"H{name}", (_Handler,), {"wrong": wrong})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append(server)
        handlers[name] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield handlers
    finally:
        for server in running:
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize(
    "response, expected, score",
    [
        pytest.param("Paris", "Paris", 1.0, id="exact"),
        pytest.param("The answer is: PARIS!", "paris", 1.0, id="normalised-inside"),
        pytest.param("Paris, Texas", "Paris", 1.0, id="prefix-words"),
        pytest.param("Parisian", "Paris", 0.0, id="not-a-word-match"),
        pytest.param("8 bits", "eight", 0.0, id="different-spelling"),
        pytest.param("the New York Times", "New York", 1.0, id="multi-word"),
        pytest.param("", "Paris", 0.0, id="empty"),
    ],
)
def test_score_answer(response, expected, score):
    assert score_answer(response, expected) == score


def test_normalize():
    assert normalize("  The  Quick, brown FOX! ") == "quick brown fox"


def test_a_round_scores_each_service(servers):
    from prometheus_client import generate_latest

    judge = Judge([Question(**q) for q in QUESTIONS],
                  [("ai-api-canary", servers["canary"]), ("ai-api-stable", servers["stable"])])
    means = judge.round()
    assert means == {"ai-api-canary": pytest.approx(2 / 3), "ai-api-stable": 1.0}
    judge.round()
    text = generate_latest(judge.registry).decode()
    # The series the quality AnalysisTemplate divides: _sum / _count over the window.
    assert 'llm_judge_quality_score_count{service="ai-api-canary"} 6.0' in text
    assert 'llm_judge_quality_score_sum{service="ai-api-canary"} 4.0' in text
    assert 'llm_judge_quality_score_sum{service="ai-api-stable"} 6.0' in text


def test_errors_score_zero_and_are_counted(servers):
    from prometheus_client import generate_latest

    judge = Judge([Question("crash", "x"), Question(**QUESTIONS[0])], [("ai-api-canary", servers["stable"])])
    assert judge.round() == {"ai-api-canary": 0.5}
    assert 'llm_judge_errors_total{service="ai-api-canary"} 1.0' in generate_latest(judge.registry).decode()


def test_once_from_the_command_line(servers, tmp_path):
    qfile = tmp_path / "questions.yaml"
    qfile.write_text(yaml.safe_dump(QUESTIONS))
    proc = subprocess.run(
        [sys.executable, "-m", "lab.judge", "--once", "--questions", str(qfile),
         "--target", f"ai-api-canary={servers['canary']}", "--min-score", "0.85"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 1  # 2/3 < 0.85
    first = json.loads(proc.stdout.splitlines()[0])
    assert first == {"questions": 3, "scores": {"ai-api-canary": pytest.approx(2 / 3)}}
    assert 'llm_judge_quality_score_count{service="ai-api-canary"} 3.0' in proc.stdout


@pytest.mark.parametrize("text", ["nourl", "x=ftp://a", "=http://a"])
def test_bad_targets(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="SERVICE=BASE_URL"):
        parse_target(text)


def test_judge_manifest_matches_the_quality_analysis():
    docs = list(yaml.safe_load_all((ROOT / "manifests/judge/judge.yaml").read_text()))
    pod = docs[0]["spec"]["template"]
    args = pod["spec"]["containers"][0]["args"]
    assert "--target=ai-api-canary=http://ai-api-canary:8000/v1" in args
    port = next(a.split("=", 1)[1] for a in args if a.startswith("--metrics-port="))
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == port
    analysis = ROOT / "manifests/analysis-quality.yaml"
    if analysis.is_file():  # the course's template, once merged: it reads our series
        assert "llm_judge_quality_score_sum" in analysis.read_text()


from tests.test_queue_worker import emulator_url  # noqa: E402,F401  (the fixture)


@pytest.mark.slow
def test_judge_against_the_emulator_and_its_quality_fault(emulator_url):  # noqa: F811
    import httpx

    from lab.judge import load_questions

    questions = load_questions()  # the emulator's own set
    judge = Judge(questions, [("ai-api-canary", emulator_url)])
    assert judge.round() == {"ai-api-canary": 1.0}
    admin = emulator_url.removesuffix("/v1") + "/admin/faults"
    assert httpx.post(admin, json={"spec": "quality=-0.5"}, timeout=10).status_code == 200
    score = judge.round()["ai-api-canary"]
    assert 0.1 < score < 0.9, score  # about half the answers go wrong
