"""Check for exercise 6.2: a routing policy, ``route(request) -> "large" | "small"``.

The student's ``router.py`` is Python, because a router is code in real gateways and a
function teaches more than a rules file. It is never imported into this process: a child
interpreter (``python -I``, no PYTHONPATH, no user site, a time limit) loads it, calls
``route()`` on each request of the mixed workload and hands back the answers as JSON. That
keeps a crash, an endless loop or a stray ``sys.exit`` in the student's file from taking the
lab down. It is not a sandbox: the file runs with the student's own rights, as their tests do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from lab.exercises import Finding
from lab.exercises.routing_data import MODELS, REQUIRED_ROUTE, TASK_TYPES, build_tasks, score

TIME_LIMIT_S = 20
# What a good policy must reach against sending everything to the large model.
MAX_COST_SHARE = 0.60
MAX_QUALITY_LOSS = 0.03

# Runs in the child interpreter. The student's prints go to stderr so stdout stays JSON.
_RUNNER = r"""
import importlib.util, json, sys, traceback
path = sys.argv[1]
tasks = json.load(sys.stdin)
real_stdout = sys.stdout
sys.stdout = sys.stderr
out = {"load_error": None, "answers": []}

def where(exc):
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"line {exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return f"line {frames[-1].lineno}" if frames else ""

try:
    spec = importlib.util.spec_from_file_location("student_router", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    route = getattr(module, "route", None)
    if not callable(route):
        out["load_error"] = ["router.py defines no function route(request)", ""]
except BaseException as exc:
    out["load_error"] = [f"{type(exc).__name__}: {exc}", where(exc)]
if out["load_error"] is None:
    for task in tasks:
        try:
            answer = route(dict(task))
            if isinstance(answer, str):
                out["answers"].append({"value": answer})
            else:
                out["answers"].append({"value": repr(answer), "not_str": type(answer).__name__})
        except (Exception, SystemExit) as exc:  # sys.exit() in route() is one more wrong answer
            out["answers"].append({"error": f"{type(exc).__name__}: {exc}", "where": where(exc)})
real_stdout.write(json.dumps(out))
"""


# Task types the mix never holds: the README asks route() to cope with types it has not seen.
# They are asked after the mix and priced nowhere; only the answer's validity counts.
UNSEEN = [
    {"request_id": "req-unseen-0", "task_type": "translation", "prompt": "Translate to French: good morning",
     "prompt_tokens": 40, "max_tokens": 60},
    {"request_id": "req-unseen-1", "task_type": "classification", "prompt": "Is this review positive? ...",
     "prompt_tokens": 120, "max_tokens": 5},
]


def _unseen_findings(answers: list[dict]) -> list[Finding]:
    bad = []
    for task, answer in zip(UNSEEN, answers, strict=True):
        if "error" in answer:
            bad.append((task, f"raised {answer['error']}", answer.get("where", "")))
        elif answer["value"] not in MODELS:
            bad.append((task, f"returned {answer['value'] if answer.get('not_str') else repr(answer['value'])}", ""))
    if not bad:
        return [Finding(True, f"task types it has not seen ({', '.join(t['task_type'] for t in UNSEEN)}) get a model", "router.py: route()")]
    task, what, line = bad[0]
    return [
        Finding(
            False,
            f"route() {what} for a task type it has not seen ({task['task_type']!r}; the mix holds only "
            f"{', '.join(TASK_TYPES)}, production traffic will not)",
            f"router.py{':' + line if line else ': route()'}",
            "give unknown task types a default model, e.g. ROUTES.get(request['task_type'], DEFAULT_MODEL)",
        )
    ]


def run_policy(router: Path, tasks: list[dict]) -> dict:
    """Ask the student's route() about every task, in a child interpreter."""
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _RUNNER, str(router.resolve())],
            input=json.dumps(tasks),
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_S,
            cwd=router.parent,
        )
    except subprocess.TimeoutExpired:
        return {
            "load_error": [f"route() did not finish {len(tasks)} requests in {TIME_LIMIT_S} s", ""],
            "fix": "route() must answer at once: look for a loop that never ends or a call that waits",
        }
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"load_error": [f"router.py stopped the checker (exit {proc.returncode}): {tail}", ""]}


def check(folder: Path, progress) -> tuple[list[Finding], dict]:
    router = folder / "router.py"
    if not router.is_file():
        return [
            Finding(False, "router.py not found", str(folder), "copy exercises/6.2/starter/router.py there and write route()")
        ], {}
    tasks = build_tasks()
    progress(f"sending {len(tasks)} requests through route(), then {len(UNSEEN)} of task types it has not seen")
    result = run_policy(router, tasks + UNSEEN)
    if result.get("load_error"):
        message, line = result["load_error"]
        return [
            Finding(
                False,
                f"router.py could not be loaded: {message}",
                f"router.py{':' + line if line else ''}",
                result.get("fix")
                or "define def route(request: dict) -> str at the top level of router.py, and run "
                "python3 router.py to see the error",
            )
        ], {}

    findings: list[Finding] = []
    answers = result["answers"][: len(tasks)]
    valid = set(MODELS)
    errors = Counter()
    error_where: dict[tuple[str, str], str] = {}
    bad_values = Counter()
    for task, answer in zip(tasks, answers, strict=True):
        if "error" in answer:
            key = (task["task_type"], answer["error"])
            errors[key] += 1
            error_where[key] = answer["where"]
        elif answer["value"] not in valid:
            bad_values[(task["task_type"], answer["value"], answer.get("not_str"))] += 1
    for (task_type, message), n in errors.items():
        findings.append(
            Finding(
                False,
                f"route() raised {message} on {n} {task_type} request(s)",
                f"router.py{':' + error_where[(task_type, message)] if error_where[(task_type, message)] else ''}",
                f"route() must answer every {task_type} request: fix the error on that line",
            )
        )
    for (task_type, value, not_str), n in bad_values.items():
        findings.append(
            Finding(
                False,
                f"route() returned {value if not_str else repr(value)} for {n} {task_type} request(s)"
                + (f" (a {not_str}, not a string)" if not_str else ""),
                "router.py: route()",
                "every path through route() must end in a return: add a default at the end"
                if value == "None" and not_str
                else f"return one of {sorted(valid)} (the names, not the model ids)",
            )
        )
    if not errors and not bad_values:
        findings.append(Finding(True, f"route() answered all {len(tasks)} requests with 'large' or 'small'", "router.py"))
        # Only once the mix is answered: otherwise the same mistake would be reported twice.
        findings += _unseen_findings(result["answers"][len(tasks) :])

    routes = [a.get("value") for a in answers]
    by_type = {t: Counter() for t in TASK_TYPES}
    for task, r in zip(tasks, routes, strict=True):
        by_type[task["task_type"]][r if r in valid else "(no answer)"] += 1
    for task_type, wanted in REQUIRED_ROUTE.items():
        counts = by_type[task_type]
        total = sum(counts.values())
        wrong = total - counts[wanted]
        if wrong == 0:
            findings.append(Finding(True, f"all {total} {task_type} requests go to {wanted!r}", "router.py: route()"))
        else:
            example, got = next(
                (t, r) for t, r in zip(tasks, routes, strict=True) if t["task_type"] == task_type and r != wanted
            )
            other = {"large": "loses quality", "small": "pays the large model's price for no gain"}[wanted]
            findings.append(
                Finding(
                    False,
                    f"{wrong} of {total} {task_type} requests do not go to {wanted!r} "
                    f"(e.g. {example['request_id']}, {example['prompt_tokens']} prompt tokens, "
                    f"got {'an error' if got is None else repr(got)})",
                    "router.py: route()",
                    f"route on request['task_type']: {task_type} must go to {wanted!r}, "
                    f"or it {other}",
                )
            )

    details: dict = {"by_type": {t: dict(c) for t, c in by_type.items()}}
    if all(r in valid for r in routes):
        ours = score(tasks, routes)
        everything_large = score(tasks, ["large"] * len(tasks))
        everything_small = score(tasks, ["small"] * len(tasks))
        details["comparison"] = [
            {"policy": "your route()", **_flat(ours)},
            {"policy": "everything to large", **_flat(everything_large)},
            {"policy": "everything to small", **_flat(everything_small)},
        ]
        findings.append(
            Finding(
                True,
                f"cost ${ours['cost_usd']:.4f} and quality {ours['mean_quality']:.3f}; everything to large: "
                f"${everything_large['cost_usd']:.4f}, {everything_large['mean_quality']:.3f}; everything to small: "
                f"${everything_small['cost_usd']:.4f}, {everything_small['mean_quality']:.3f}",
                info=True,
            )
        )
        share = ours["cost_usd"] / everything_large["cost_usd"]
        loss = everything_large["mean_quality"] - ours["mean_quality"]
        findings.append(
            Finding(
                share <= MAX_COST_SHARE and loss <= MAX_QUALITY_LOSS,
                f"costs {share:.0%} of sending everything to large (at most {MAX_COST_SHARE:.0%}) and loses "
                f"{loss:.3f} quality (at most {MAX_QUALITY_LOSS})",
                "router.py: route()",
                "send the cheap-to-serve, easy task types to 'small' and keep 'large' for the ones "
                "where quality drops (see the table in README.md)",
            )
        )
    return findings, details


def _flat(s: dict) -> dict:
    return {
        "cost_usd": s["cost_usd"],
        "mean_quality": s["mean_quality"],
        "to_large": s["requests"]["large"],
        "to_small": s["requests"]["small"],
    }
