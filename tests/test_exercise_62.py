"""Exercise 6.2: the reference router passes; the starter and typical mistakes fail by name."""

import subprocess
import sys
import textwrap

import pytest

from lab.exercises import get_exercise

EX = get_exercise("6.2")


def write_router(tmp_path, body: str):
    (tmp_path / "router.py").write_text(textwrap.dedent(body))
    return tmp_path


def test_reference_solution_passes():
    result = EX.check(EX.solution)
    assert result.passed, result.report()
    rows = {row["policy"]: row for row in result.details["comparison"]}
    ours, large = rows["your route()"], rows["everything to large"]
    assert ours["cost_usd"] < 0.6 * large["cost_usd"]


MISTAKES = [
    pytest.param(None, "61 of 61 code_generation requests do not go to 'large'", id="starter-all-small"),
    pytest.param(
        'def route(request):\n    return "large"\n',
        "summarization requests do not go to 'small'",
        id="everything-large",
    ),
    pytest.param(
        'def route(request):\n    return "large" if request["task_type"] == "summarization" else "small"\n',
        "code_generation requests do not go to 'large'",
        id="swapped",
    ),
    pytest.param(
        'def route(request):\n    return "large" if request["prompt_tokens"] > 1000 else "small"\n',
        "summarization requests do not go to 'small'",
        id="routes-on-length",
    ),
    pytest.param(
        'R = {"code_generation": "large", "summarization": "small"}\n\ndef route(request):\n    return R[request["task_type"]]\n',
        "raised KeyError: 'chat'",
        id="no-default-for-unknown-type",
    ),
    pytest.param(
        'def route(request):\n    return "meta-llama/Llama-3.1-70B"\n',
        "returned 'meta-llama/Llama-3.1-70B'",
        id="returns-model-id",
    ),
    pytest.param(
        'R = {"code_generation": "large", "summarization": "small", "chat": "small"}\n\n'
        'def route(request):\n    return R[request["task_type"]]\n',
        "raised KeyError: 'translation' for a task type it has not seen",
        id="no-default-only-unseen-types-fail",
    ),
    pytest.param(
        'def route(request):\n    if request["task_type"] == "code_generation":\n        return "large"\n'
        '    if request["task_type"] == "summarization":\n        return "small"\n',
        "returned None for 62 chat request(s) (a NoneType, not a string)",
        id="missing-return",
    ),
    pytest.param(
        "import sys\n\ndef route(request):\n    sys.exit(3)\n",
        "route() raised SystemExit: 3 on",
        id="exits-in-route",
    ),
    pytest.param('def router(request):\n    return "small"\n', "defines no function route(request)", id="misnamed-function"),
    pytest.param("def route(request)\n    return 'small'\n", "could not be loaded: SyntaxError", id="syntax-error"),
    pytest.param("import sys\nsys.exit(3)\n", "could not be loaded: SystemExit", id="exits-on-import"),
]


@pytest.mark.parametrize("body, expected", MISTAKES)
def test_mistakes_fail_with_feedback(tmp_path, body, expected):
    folder = EX.starter if body is None else write_router(tmp_path, body)
    result = EX.check(folder)
    assert not result.passed
    messages = " | ".join(f.what for f in result.failures)
    assert expected in messages, result.report()
    assert all(f.fix for f in result.failures)


def test_the_fix_for_a_missing_return_names_it(tmp_path):
    write_router(tmp_path, 'def route(request):\n    if request["task_type"] == "code_generation":\n        return "large"\n')
    fixes = [f.fix for f in EX.check(tmp_path).failures if "returned None" in f.what]
    assert fixes and "must end in a return" in fixes[0]


def test_missing_file_is_a_failed_finding(tmp_path):
    result = EX.check(tmp_path)
    assert not result.passed and "router.py not found" in result.failures[0].what


def test_error_location_names_the_line(tmp_path):
    write_router(tmp_path, 'R = {"code_generation": "large"}\n\ndef route(request):\n    return R[request["task_type"]]\n')
    failure = EX.check(tmp_path).failures[0]
    assert failure.where == "router.py:line 4"


@pytest.mark.parametrize(
    "folder, code",
    [
        pytest.param("solution", 0, id="solution-exit-0"),
        pytest.param("starter", 1, id="starter-exit-1"),
        pytest.param("/no/such/folder", 2, id="missing-folder-exit-2"),
    ],
)
def test_cli_exit_codes(folder, code):
    path = {"solution": EX.solution, "starter": EX.starter}.get(folder, folder)
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "exercise", "check", "6.2", "--path", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
