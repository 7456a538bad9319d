"""Run many `aiconfigurator cli ...` commands in one process; run by .venv-aiconfigurator's Python.

Reads a JSON list of argument lists (each what follows `aiconfigurator cli`) on stdin. For each,
calls `aiconfigurator.main.main(["cli", *argv])`, the function the `aiconfigurator` console script
calls, with stdout and stderr captured (aiconfigurator logs to stdout), and prints one line:
`@@aiconfigurator-result {"i": I, "rc": RC, "text": TEXT}`. RC is 0, argparse's exit code, or 1
with the traceback appended to TEXT. Imports only the standard library and aiconfigurator.
"""

import contextlib
import io
import json
import sys
import traceback
import warnings

MARKER = "@@aiconfigurator-result "


def main() -> int:
    argvs = json.load(sys.stdin)
    warnings.simplefilter("ignore", DeprecationWarning)  # the "use aisimulate" notice, once a command
    from aiconfigurator.main import main as aiconfigurator_main

    real_stdout = sys.stdout
    for i, argv in enumerate(argvs):
        buf = io.StringIO()
        rc = 0
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                aiconfigurator_main(["cli", *argv])
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # one bad point must not stop the others
                traceback.print_exc()
                rc = 1
        real_stdout.write(MARKER + json.dumps({"i": i, "rc": rc, "text": buf.getvalue()}) + "\n")
        real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
