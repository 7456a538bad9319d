"""The ``servelab`` command line.

One module per subcommand, each with ``add_cli_args(parser)`` and ``run(args) -> int``.
Subcommand modules are imported lazily, so ``servelab --help`` stays fast.
A :class:`sim.errors.ServeLabError` becomes ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command, module, help). A module with a ``SUBCOMMANDS`` table has subcommands of its own.
COMMANDS: list[tuple[str, str, str]] = [
    ("memory", "lab.cli.memory", "vLLM's KV-cache sizing for a model on a GPU"),
    ("bench", "lab.cli.bench", "vllm bench throughput|serve, simulated"),
    ("serve", "lab.cli.serve", "a vLLM-compatible emulator server driven by the simulator"),
    ("rollout", "lab.cli.rollout", "simulate the course's Argo Rollouts canary"),
    ("cluster", "lab.cli.cluster", "deploy the manifests to the simulated cluster or to kind"),
    ("exercise", "lab.cli.exercise", "the course exercises 6.1 to 6.4 and their checks"),
    ("validate", "lab.cli.validate", "compare the simulator with published vLLM measurements"),
    ("calibrate", "lab.cli.calibrate", "collect real vLLM measurements and fit the step-time model"),
    ("tune", "lab.cli.tune", "find the cheapest deployment that meets an SLA, by simulation"),
]


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits with status 2 and one clear line, and suggests --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message}\n(run '{self.prog} --help' for the flags)\n")

    def parse_known_args(self, args=None, namespace=None):
        # argparse hands a subcommand's unknown flags back up to the top-level parser, whose error
        # then names `servelab`; here the innermost (sub)command refuses them itself, so the message
        # and the --help hint name it (`servelab bench throughput --help`). No servelab parser wants
        # unknown flags passed on.
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser(argv: list[str] | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog="servelab", description="ServeLab: simulate and learn LLM serving (vLLM, PagedAttention, canary rollouts).")
    parser.add_argument("--version", action="version", version="servelab 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    wanted = None
    if argv:
        first = next((a for a in argv if not a.startswith("-")), None)
        wanted = first
    for name, module_name, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Import only the module the user asked for (or all of them for the top-level help).
        if wanted is None or wanted == name:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                p.set_defaults(run=_not_available(name))
                continue
            module.add_cli_args(p)
            if not hasattr(p, "_defaults") or "run" not in p._defaults:
                p.set_defaults(run=module.run)
    return parser


def _not_available(name: str):
    def run(args) -> int:
        print(f"error: 'servelab {name}' is not available in this version", file=sys.stderr)
        return 2

    return run


def main(argv: list[str] | None = None) -> int:
    from sim.errors import ServeLabError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except ServeLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `servelab memory | head`): stop quietly, as Unix tools do.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
