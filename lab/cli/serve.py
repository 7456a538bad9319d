"""``servelab serve MODEL --gpu G <vllm serve flags> [--fault SPEC ...]``: the emulator server.

Flags, defaults and start-up log lines are ``vllm serve``'s (vLLM 0.33); the engine behind the
API is the simulator, running against the wall clock. ServeLab's own flags: ``--gpu`` (which
GPU to simulate), ``--fault`` (repeatable), ``--service`` (the ``service`` label of the HTTP
series; env ``SERVELAB_SERVICE``) and ``--engine`` (a baseline engine instead of vLLM).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

DEFAULT_SERVICE = "ai-api"


class _RemovedFlag(argparse.Action):
    """A flag vLLM has removed: accepted, with a warning that says what replaced it."""

    def __init__(self, option_strings, dest, replacement: str = "", **kwargs) -> None:
        self.replacement = replacement
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.removed_flags = [*getattr(namespace, "removed_flags", []), (option_string, self.replacement)]


def add_cli_args(p: argparse.ArgumentParser) -> None:
    from lab.cli.engine_args import add_engine_args

    p.add_argument("model", nargs="?", metavar="MODEL", help="the model to serve, e.g. meta-llama/Llama-3.1-8B")
    p.add_argument("--model", dest="model_flag", default=None, help="the model, if not given as MODEL")
    # vLLM's engine flags, shared with `servelab bench` (--gpu, --engine, --calibration: ServeLab's).
    add_engine_args(p, model_positional=True)
    e = p.add_argument_group("more engine flags (vllm serve)")
    e.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    e.add_argument("--seed", type=int, default=0, help="seeds the synthetic tokens and the fault draws")
    e.add_argument("--enforce-eager", action="store_true", help="accepted; not simulated")
    e.add_argument("--trust-remote-code", action="store_true", help="accepted; no code is loaded")
    e.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="a Hugging Face tokenizer folder (tokenizer.json) for prompts, /tokenize and /detokenize "
                        "(default: a built-in tokenizer, one token per word)")
    g = p.add_argument_group("server (vllm serve)")
    g.add_argument("--host", default=os.environ.get("SERVELAB_HOST", "127.0.0.1"),
                   help="address to bind (env SERVELAB_HOST; default 127.0.0.1: vLLM binds every interface, "
                        "ServeLab only loopback; in a container use --host 0.0.0.0)")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--api-key", default=None, help="require this key as 'Authorization: Bearer KEY' (env VLLM_API_KEY)")
    g.add_argument("--served-model-name", nargs="+", default=None,
                   help="the name(s) the API answers to (default: MODEL)")
    g.add_argument("--uvicorn-log-level", default="info",
                   choices=["debug", "info", "warning", "error", "critical", "trace"])
    g.add_argument("--enable-log-requests", action="store_true", help="log each request (off by default)")
    g.add_argument("--disable-log-requests", action=_RemovedFlag,
                   replacement="request logging is off by default; --enable-log-requests turns it on")
    g.add_argument("--disable-log-stats", action="store_true")
    s = p.add_argument_group("ServeLab")
    s.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="[stable:|canary:]KIND=VALUE[@START[-END]]; repeatable; also POST /admin/faults")
    s.add_argument("--service", default=None,
                   help=f"the 'service' label of the HTTP series (env SERVELAB_SERVICE, default {DEFAULT_SERVICE})")
    s.add_argument("--lag-threshold-ms", type=float, default=10.0, metavar="MS",
                   help="warn in the log when a token leaves more than MS after its simulated time "
                        "(the machine cannot keep up); every token's lag is on /metrics (default 10)")
    s.add_argument("--frontend", action=argparse.BooleanOptionalAction, default=True,
                   help="simulate vLLM's API server, as `servelab bench serve` does: a request reaches the "
                        "engine after its HTTP and tokenization time, and tokens leave as it streams them, one "
                        "after another (the calibration's times); --no-frontend: requests reach the engine at "
                        "once and tokens leave at the end of their engine step")
    s.add_argument("--judge-metrics", action=argparse.BooleanOptionalAction, default=False,
                   help="also export llm_judge_quality_score for the built-in questions this server answers "
                        "(off by default: the judge job, lab/judge.py, exports it)")
    p.set_defaults(run=run, removed_flags=[])


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not to the one there was
    when the handler was made: a server stopped after its caller swapped stderr (a test run's
    capture, closed by then) still logs its last lines."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; sys.stderr is always used
        pass


def _setup_logging(level: str) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [%(module)s.py] %(message)s",
                                           datefmt="%m-%d %H:%M:%S"))
    root = logging.getLogger("servelab")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if level in ("info", "debug", "trace") else logging.WARNING)
    root.propagate = False


def build_server(args: argparse.Namespace):
    """The emulator server for parsed flags (split out so tests build one without uvicorn)."""
    from lab.bench.runs import engine_config
    from lab.server.app import EmulatorServer, ServeSettings
    from lab.server.faults import FaultSet, parse_fault
    from sim.errors import ConfigError

    log = logging.getLogger("servelab.serve")
    model = args.model = args.model or args.model_flag
    if not model:
        raise ConfigError("servelab serve: expected the model, e.g. 'servelab serve meta-llama/Llama-3.1-8B --gpu h100-80gb'")
    if args.pipeline_parallel_size != 1:
        raise ConfigError(f"--pipeline-parallel-size: only 1 is simulated (got {args.pipeline_parallel_size}); "
                          f"use --tensor-parallel-size to split a model")
    if args.data_parallel_size != 1:
        raise ConfigError(f"--data-parallel-size {args.data_parallel_size}: `servelab serve` runs one engine core; "
                          f"`servelab bench serve --data-parallel-size {args.data_parallel_size}` simulates the DP "
                          f"ranks behind vLLM's load balancer")
    for flag, replacement in args.removed_flags:
        log.warning("%s has been removed from vLLM and is ignored: %s.", flag, replacement)
    service = args.service or os.environ.get("SERVELAB_SERVICE") or DEFAULT_SERVICE
    faults = FaultSet(service)
    for spec in args.fault:
        fault = parse_fault(spec, where="--fault")
        if faults.add(fault):
            log.warning("Fault injected: %s", fault.spec)
        else:
            log.warning("Fault %s is aimed at the %s version; this server is %s: ignored.", fault.spec,
                        fault.target, service)
    if not (args.lag_threshold_ms > 0 and math.isfinite(args.lag_threshold_ms)):
        raise ConfigError(f"--lag-threshold-ms: expected a positive number of milliseconds, got {args.lag_threshold_ms}")
    config = engine_config(args)
    settings = ServeSettings(
        model=model, served_model_names=tuple(args.served_model_name or [model]), service=service,
        seed=args.seed, api_key=args.api_key or os.environ.get("VLLM_API_KEY"),
        enable_log_requests=args.enable_log_requests, judge_metrics=args.judge_metrics,
        tokenizer=args.tokenizer, lag_threshold_s=args.lag_threshold_ms / 1000.0, frontend=args.frontend,
    )
    return EmulatorServer.from_config(settings, config, faults=faults)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from lab.server.app import build_app, log_startup

    _setup_logging(args.uvicorn_log_level)
    server = build_server(args)
    log_startup(server, args.host, args.port)
    uvicorn.run(build_app(server), host=args.host, port=args.port, log_level=args.uvicorn_log_level,
                timeout_keep_alive=5, loop=_pick("uvloop"), http=_pick("httptools", "h11"),
                backlog=4096)
    return 0


def _pick(module: str, fallback: str = "asyncio") -> str:
    """uvloop and httptools when installed (they are dependencies; docs/emulator.md says how
    much they save per token), else the pure-Python loop and parser."""
    import importlib.util

    return module if importlib.util.find_spec(module) is not None else fallback
