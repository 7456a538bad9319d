"""The LLM judge: asks a service the built-in questions, scores its answers, exports the score.

The canary's quality analysis (manifests/analysis-quality.yaml) reads
``sum(rate(llm_judge_quality_score_sum{service=...}[30m])) / sum(rate(..._count[30m]))``: the
mean score of the answers judged in the last 30 minutes. This module produces that series.
Each round sends every question of the question set to every target (an OpenAI-compatible
base URL named by its Service, e.g. ``ai-api-canary=http://ai-api-canary:8000/v1``) and
observes one score per answer, 1 when it matches the expected answer after normalisation and
0 when not (or on an error), in the Summary ``llm_judge_quality_score{service}``.

A real judge is another LLM grading free text; ServeLab's emulator answers a small built-in
question set correctly (and wrongly under the ``quality`` fault), so exact matching after
normalisation is a faithful judge here, and a deterministic one.

Modes:
- ``--interval-s N`` (the Deployment in manifests/judge/): a round every N seconds, metrics
  served on ``--metrics-port`` for Prometheus to scrape. A long-lived process is what makes
  ``rate()`` over the Summary meaningful.
- ``--once``: one round; prints the scores and the exposition text; with ``--pushgateway URL``
  also pushes them (job ``llm-judge``); exits 1 when a mean is below ``--min-score``.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


@dataclass(frozen=True)
class Question:
    question: str
    answer: str


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's normalisation)."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def score_answer(response: str, expected: str) -> float:
    """1.0 when the expected answer's words appear, in order and together, in the response."""
    got, want = normalize(response).split(), normalize(expected).split()
    if not want:
        return 0.0
    n = len(want)
    return 1.0 if any(got[i:i + n] == want for i in range(len(got) - n + 1)) else 0.0


def load_questions(path: str | None = None) -> list[Question]:
    """The question set: from a JSON/YAML file of {question, answer}, else the emulator's own."""
    if path:
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SystemExit(f"error: --questions {path}: cannot read it ({exc})")
        items = raw.get("questions") if isinstance(raw, dict) else raw
        if not isinstance(items, list) or not items:
            raise SystemExit(f"error: --questions {path}: expected a list of {{question, answer}}")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not item.get("question") or not item.get("answer"):
                raise SystemExit(f"error: --questions {path}: item {i}: expected question and answer, got {item!r}")
            out.append(Question(str(item["question"]), str(item["answer"])))
        return out
    return _emulator_questions()


def _emulator_questions() -> list[Question]:
    try:
        from lab.server import questions as module  # the emulator's built-in set
    except ImportError:
        raise SystemExit(
            "error: no question set: this build has no lab/server/questions.py; pass --questions FILE"
        ) from None
    items = getattr(module, "QUESTIONS", None)
    if items is None and hasattr(module, "question_set"):
        items = module.question_set()
    out = []
    for item in items or []:
        if isinstance(item, dict):
            out.append(Question(str(item["question"]), str(item["answer"])))
        elif isinstance(item, (tuple, list)):
            out.append(Question(str(item[0]), str(item[1])))
        else:  # the emulator's Question(text, answer, kind)
            out.append(Question(str(getattr(item, "text", None) or item.question), str(item.answer)))
    if not out:
        raise SystemExit("error: lab/server/questions.py has no questions")
    return out


def parse_target(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"expected SERVICE=BASE_URL, e.g. ai-api-canary=http://ai-api-canary:8000/v1; got {text!r}"
        )
    return name, url.rstrip("/")


class Judge:
    def __init__(self, questions: list[Question], targets: list[tuple[str, str]], *, model: str | None = None,
                 timeout_s: float = 30.0, registry=None):
        import httpx
        from prometheus_client import CollectorRegistry, Counter, Gauge, Summary

        self.questions = questions
        self.targets = targets
        self.model = model
        self.http = httpx.Client(timeout=timeout_s)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.score = Summary("llm_judge_quality_score", "Judged quality of one answer (0 to 1)",
                             ["service"], registry=self.registry)
        self.last = Gauge("llm_judge_last_round_score", "Mean score of the last round", ["service"],
                          registry=self.registry)
        self.errors = Counter("llm_judge_errors", "Questions that got no answer (HTTP or parse error)",
                              ["service"], registry=self.registry)
        self._models: dict[str, str] = {}

    def _model_for(self, base_url: str) -> str:
        if self.model:
            return self.model
        if base_url not in self._models:
            resp = self.http.get(f"{base_url}/models")
            resp.raise_for_status()
            self._models[base_url] = resp.json()["data"][0]["id"]
        return self._models[base_url]

    def ask(self, base_url: str, question: str) -> str:
        body = {
            "model": self._model_for(base_url),
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 64,
            "temperature": 0,
        }
        resp = self.http.post(f"{base_url}/chat/completions", json=body)
        resp.raise_for_status()
        return resp.json()["choices"][0]["message"]["content"] or ""

    def round(self) -> dict[str, float]:
        """One pass over every target; returns each service's mean score."""
        import httpx

        means = {}
        for service, base_url in self.targets:
            scores = []
            for q in self.questions:
                try:
                    value = score_answer(self.ask(base_url, q.question), q.answer)
                except (httpx.HTTPError, KeyError, IndexError, ValueError):
                    self.errors.labels(service=service).inc()
                    value = 0.0
                self.score.labels(service=service).observe(value)
                scores.append(value)
            means[service] = sum(scores) / len(scores)
            self.last.labels(service=service).set(means[service])
        return means


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.judge", description=__doc__.splitlines()[0])
    p.add_argument("--target", action="append", type=parse_target, required=True, metavar="SERVICE=BASE_URL",
                   help="a service to judge and its OpenAI-compatible base URL (repeatable)")
    p.add_argument("--questions", help="JSON/YAML list of {question, answer}; default: the emulator's set")
    p.add_argument("--model", help="model name to ask for; default: the first one /v1/models lists")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one round, print, exit")
    mode.add_argument("--interval-s", type=float, help="a round every this many seconds, forever")
    p.add_argument("--rounds", type=int, default=0, help="with --interval-s: stop after this many (0: never)")
    p.add_argument("--metrics-port", type=int, default=9091, help="with --interval-s: where /metrics is served")
    p.add_argument("--pushgateway", help="with --once: also push to this Pushgateway (host:port)")
    p.add_argument("--min-score", type=float, default=0.0, help="with --once: exit 1 if a mean is below this")
    p.add_argument("--timeout-s", type=float, default=30.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.interval_s is not None and args.interval_s <= 0:
        print(f"error: --interval-s: expected seconds > 0, got {args.interval_s}", file=sys.stderr)
        return 2
    judge = Judge(load_questions(args.questions), args.target, model=args.model, timeout_s=args.timeout_s)
    if args.once:
        from prometheus_client import generate_latest, push_to_gateway

        means = judge.round()
        print(json.dumps({"scores": means, "questions": len(judge.questions)}, sort_keys=True))
        sys.stdout.write(generate_latest(judge.registry).decode())
        if args.pushgateway:
            push_to_gateway(args.pushgateway, job="llm-judge", registry=judge.registry)
        return 1 if any(m < args.min_score for m in means.values()) else 0
    from prometheus_client import start_http_server

    start_http_server(args.metrics_port, registry=judge.registry)
    done = 0
    while not args.rounds or done < args.rounds:
        start = time.monotonic()
        means = judge.round()
        done += 1
        print(json.dumps({"round": done, "scores": means}, sort_keys=True), flush=True)
        time.sleep(max(0.0, args.interval_s - (time.monotonic() - start)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
