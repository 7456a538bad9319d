"""servelab exercise list|show|check ID [--path DIR]

``check`` exits 0 when every check passes, 1 when one fails (the findings say what, where and
what to do), and 2 for a usage mistake (unknown exercise, missing folder).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="exercise_command", metavar="ACTION", parser_class=type(parser))
    sub.add_parser("list", help="the exercises and their titles").set_defaults(run=_list)
    show = sub.add_parser("show", help="print an exercise's README (goal, files, hints)")
    show.add_argument("id", metavar="ID", help="exercise id, e.g. 6.2")
    show.set_defaults(run=_show)
    check = sub.add_parser("check", help="check your files for an exercise")
    check.add_argument("id", metavar="ID", help="exercise id, e.g. 6.2")
    check.add_argument(
        "--path",
        metavar="DIR",
        default=None,
        help="the folder holding your files (default: the exercise's starter/ folder)",
    )
    check.add_argument("--json", metavar="FILE", default=None, help="also write the findings as JSON")
    check.set_defaults(run=_check)
    parser.set_defaults(run=_usage(parser))


def _usage(parser: argparse.ArgumentParser):
    def run(args) -> int:
        parser.print_help(sys.stderr)
        return 2

    return run


def _list(args) -> int:
    from lab.exercises import EXERCISES

    for e in EXERCISES.values():
        print(f"{e.id}  {e.title}")
        print(f"     files: {', '.join(e.files)}   starter: {e.starter}")
    return 0


def _show(args) -> int:
    from lab.exercises import get_exercise

    print(get_exercise(args.id).readme())
    return 0


def _check(args) -> int:
    from lab.exercises import get_exercise

    exercise = get_exercise(args.id)
    path = args.path or exercise.starter
    result = exercise.check(path, progress=lambda msg: print(f"... {msg}", file=sys.stderr))
    print(result.report())
    if args.json:
        payload = {
            "exercise": result.exercise_id,
            "path": result.path,
            "passed": result.passed,
            "findings": [f.__dict__ for f in result.findings],
            "details": result.details,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
    return 0 if result.passed else 1


def run(args) -> int:  # the dispatcher's entry; the ACTION sets its own run
    return args.run(args)
