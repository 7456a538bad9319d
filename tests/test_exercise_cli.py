"""servelab exercise list|show and usage errors."""

import pytest

from lab.cli.main import main
from lab.exercises import EXERCISES


def test_list_names_every_exercise(capsys):
    assert main(["exercise", "list"]) == 0
    out = capsys.readouterr().out
    for exercise_id in ("6.1", "6.2", "6.3", "6.4"):
        assert exercise_id in out


@pytest.mark.parametrize("exercise_id", list(EXERCISES))
def test_every_exercise_has_readme_starter_and_solution(exercise_id):
    e = EXERCISES[exercise_id]
    assert e.readme().startswith(f"# Exercise {exercise_id}")
    for name in e.files:
        assert (e.solution / name).is_file(), f"{e.solution / name} missing"
        assert (e.starter / name).is_file(), f"{e.starter / name} missing"


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(["exercise", "check", "9.9"], "exercise '9.9' does not exist", id="unknown-id"),
        pytest.param(["exercise", "show", "7"], "the exercises are 6.1, 6.2, 6.3, 6.4", id="show-unknown"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_no_action_prints_usage(capsys):
    assert main(["exercise"]) == 2
    assert "check" in capsys.readouterr().err
