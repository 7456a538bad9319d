"""``servelab bench throughput|serve|latency``: vLLM's benchmark commands, run on the simulator.

The flags are ``vllm bench``'s own (engine flags included, since there is no separate server
to start), plus ``--gpu`` and ``--engine``. Output: vLLM's summary lines and JSON fields, plus
ServeLab's own figures (batch size, KV usage, preemptions, prefix hits, memory waste).
"""

from __future__ import annotations

import argparse

from lab.cli.engine_args import add_engine_args, add_workload_args


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="{throughput,serve,latency}")
    tp = sub.add_parser("throughput", help="offline throughput, as `vllm bench throughput`",
                        description="Offline throughput (all prompts at once), as `vllm bench throughput`.")
    add_engine_args(tp, usage="offline")
    add_workload_args(tp, offline=True)
    tp.add_argument("--output-json", metavar="FILE", help="write vLLM's throughput JSON here")
    tp.set_defaults(run=_run_throughput)

    sv = sub.add_parser("serve", help="online serving benchmark, as `vllm bench serve`",
                        description="Online serving benchmark, as `vllm bench serve` against `vllm serve`.")
    add_engine_args(sv)
    add_workload_args(sv, offline=False)
    sv.add_argument("--max-concurrency", type=int, default=None, help="cap on requests in flight")
    sv.add_argument("--percentile-metrics", default="ttft,tpot,itl,e2el",
                    help="comma-separated: ttft,tpot,itl,e2el (vLLM's default omits e2el; ServeLab includes it)")
    sv.add_argument("--metric-percentiles", default="99", help='comma-separated percentiles, e.g. "50,90,99"')
    sv.add_argument("--save-result", action="store_true", help="write vLLM's result JSON")
    sv.add_argument("--save-detailed", action="store_true", help="include per-request arrays in the JSON")
    sv.add_argument("--result-filename", metavar="FILE", default=None)
    sv.add_argument("--result-dir", metavar="DIR", default=None)
    sv.add_argument("--json", metavar="FILE", default=None,
                    help="also write the result JSON here ('-': print it instead of the tables)")
    g = sv.add_argument_group("the simulated server (ServeLab)")
    g.add_argument("--api-server-count", type=int, default=1,
                   help="API-server processes in front of the engine, as `vllm serve --api-server-count`")
    g.add_argument("--frontend", action=argparse.BooleanOptionalAction, default=True,
                   help="simulate the API server (HTTP, tokenization, streaming) in front of the engine "
                        "(--no-frontend: the engine alone, as before)")
    g.add_argument("--closed-loop-start", choices=("spread", "together"), default="spread",
                   help="with --max-concurrency and all requests due at once: spread (default) starts the "
                        "clients out of phase over one request's lifetime, the steady state real closed loops "
                        "reach; together sends the first wave at once, as vLLM's client does (and a "
                        "deterministic engine then keeps the clients in lock step)")
    g.add_argument("--client-turnaround-ms", type=float, default=0.0, metavar="MS",
                   help="the load generator's own reaction time: a request that waited for --max-concurrency "
                        "reaches the server an exponentially distributed time of this mean after the earlier "
                        "answer came, and its TTFT counts it (default 0: an instant client). `servelab serve` "
                        "measures a real client's (servelab:emulator_client_turnaround_seconds)")
    sv.set_defaults(run=_run_serve)

    lt = sub.add_parser("latency", help="the latency of one batch, as `vllm bench latency`",
                        description="The latency of one batch of requests, sent again and again, as `vllm bench "
                                    "latency` (offline, prefix caching off by default, as vLLM's).")
    add_engine_args(lt, usage="offline")
    lt.add_argument("--input-len", type=int, default=32, help="prompt tokens of each request (default 32)")
    lt.add_argument("--output-len", type=int, default=128, help="output tokens of each request (default 128)")
    lt.add_argument("--batch-size", type=int, default=8, help="requests in the batch (default 8)")
    lt.add_argument("--n", type=int, default=1, help="sequences generated per prompt (default 1)")
    lt.add_argument("--use-beam-search", action="store_true", help="refused: ServeLab does not simulate beam search")
    lt.add_argument("--num-iters-warmup", type=int, default=10, help="batches run before timing (default 10)")
    lt.add_argument("--num-iters", type=int, default=30, help="batches timed (default 30)")
    lt.add_argument("--profile", action="store_true", help="refused: there is no GPU to profile")
    lt.add_argument("--output-json", metavar="FILE", help="write vLLM's latency JSON here")
    lt.add_argument("--seed", type=int, default=0, help="draws the dummy prompts' token ids")
    lt.add_argument("--disable-detokenize", action="store_true",
                    help="accepted; ServeLab's offline engine does not time detokenization either way")
    # vLLM's benchmark turns prefix caching off: the same prompts are sent every iteration.
    lt.set_defaults(run=_run_latency, enable_prefix_caching=False)
    parser.set_defaults(run=lambda args: (parser.print_help(), 2)[1])


def _run_throughput(args) -> int:
    from lab.bench.runs import run_throughput

    return run_throughput(args)


def _run_serve(args) -> int:
    from lab.bench.runs import run_serve

    return run_serve(args)


def _run_latency(args) -> int:
    from lab.bench.runs import run_latency

    return run_latency(args)


def run(args) -> int:  # the dispatcher calls the subcommand's own run
    return args.run(args)
