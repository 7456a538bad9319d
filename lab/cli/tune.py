"""``servelab tune``: the cheapest deployment that meets an SLA, found by simulation.

Gathers the inputs (model, workload as `vllm bench serve` spells it, SLA, search space, prices,
executor), runs :func:`sim.tune.tune`, and prints the ranked table, the Pareto front and the
winner's `vllm serve` line (``--json`` writes everything, manifests included;
``--output-dir`` writes the winner's command, Deployment and Rollout as files).

Exit status: 0 with a winner; 1 when configurations were simulated and none meets the SLA (the
closest ones are printed with the term each misses and by how much); 2 for bad input, and for a
search space in which nothing could be simulated: every configuration was pruned, or the
simulator cannot model the rest on their GPU (no operator table prices the model there, say);
the reasons are printed, grouped and counted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from lab.bench.runs import tokenizer_vocab
from lab.cli.engine_args import add_workload_args, max_model_len_arg


def _ints(flag: str, human_readable: bool = False):
    """Comma-separated positive integers; with ``human_readable``, each as vLLM reads
    ``--max-num-batched-tokens`` (8k, 8K: sim.human_readable)."""
    from sim.human_readable import parse_int

    read = parse_int if human_readable else int

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(read(v) for v in text.split(",") if v.strip())
        except ValueError:
            kind = "integers such as 8192, 8k or 8K" if human_readable else "integers"
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind}, got {text!r}") from None
        if not values or any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
        return values
    return parse


def _positive(flag: str):
    """A positive integer, for the flags where 0 or less would mean nothing (or crash the pool)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
        return value
    return parse


def _engine_default(name: str):
    from dataclasses import fields

    from sim.config import EngineConfig

    return next(f.default for f in fields(EngineConfig) if f.name == name)


def _words(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="HF name, short alias, or path to a config.json")
    p.add_argument("--sla", required=True, metavar="TERMS",
                   help="comma-separated terms with vLLM's JSON keys: p90_ttft_ms<=500, median_tpot_ms<=30, "
                        "p99_e2el_ms<=10000, output_throughput>=2000 (the whole deployment)")
    p.add_argument("--headroom", type=float, default=0.0, metavar="FRACTION",
                   help="plan with this share of every SLA limit to spare (0.1: each latency limit x 0.9, "
                        "the throughput floor / 0.9), against the simulator's own error (default 0)")
    add_workload_args(p, offline=False)
    p.set_defaults(num_prompts=200)
    # The shared dataset flags say what they mean for one server; for tune, the load is the whole deployment's.
    p._option_string_actions["--request-rate"].help = ("requests/s for the whole deployment (default inf: no "
                                                       "target, one replica at its highest load meeting the SLA)")
    p._option_string_actions["--burstiness"].help = "gamma shape of the arrivals at --request-rate; 1 = Poisson"
    p.add_argument("--max-concurrency", type=int, default=None,
                   help="closed loop: this many clients in all (instead of --request-rate)")
    s = p.add_argument_group("search space (comma-separated values)")
    s.add_argument("--gpu", action="append", default=None,
                   help="GPUs to consider (repeat or comma-separate); default: every GPU in the catalog with a "
                        "price")
    s.add_argument("--tensor-parallel-size", "-tp", type=_ints("--tensor-parallel-size"), default=(1, 2, 4, 8))
    s.add_argument("--max-num-seqs", type=_ints("--max-num-seqs"), default=(64, 128, 256, 512))
    s.add_argument("--max-num-batched-tokens", type=_ints("--max-num-batched-tokens", human_readable=True),
                   default=(2048, 8192, 16384))
    s.add_argument("--quantization", type=_words, default=None,
                   help="weight dtypes: none,fp8 (default where the simulator models precision; else none)")
    s.add_argument("--kv-cache-dtype", type=_words, default=None, help="KV-cache dtypes: auto,fp8 (likewise)")
    s.add_argument("--enable-prefix-caching", type=_words, default=None,
                   help="on, off or on,off (default: on,off when the workload shares a prefix, else on)")
    s.add_argument("--enable-expert-parallel", "-ep", type=_words, default=None,
                   help="MoE models: on, off or on,off (default off); experts whole on each TP GPU instead of sharded")
    s.add_argument("--max-replicas", type=int, default=8)
    s.add_argument("--max-model-len", type=max_model_len_arg, default=None,
                   help="default: the smallest power of two >= 2048 that holds the longest request")
    s.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help="default: vLLM 0.33's (and servelab memory's and bench's), "
                        f"{_engine_default('gpu_memory_utilization')}")
    r = p.add_argument_group("search")
    r.add_argument("--executor", choices=("local", "ray", "serial"), default="local",
                   help="local: processes on this machine (default); ray: Ray tasks")
    r.add_argument("--ray-address", default=None, metavar="ADDR", help="a Ray cluster (ray://HOST:10001); default: local")
    r.add_argument("--workers", type=_positive("--workers"), default=None,
                   help="local processes (default: every core)")
    r.add_argument("--rate-tolerance", type=float, default=0.05, help="bisection stops within this fraction")
    r.add_argument("--no-early-stop", dest="early_stop", action="store_false",
                   help="run every simulation to its end")
    r.add_argument("--gpu-prices", metavar="FILE", default=None, help="a price table (YAML) instead of the shipped one")
    o = p.add_argument_group("output")
    o.add_argument("--top", type=_positive("--top"), default=10, help="rows of the ranked table")
    o.add_argument("--json", metavar="FILE", default=None, help="write the whole result as JSON ('-': stdout)")
    o.add_argument("--output-dir", metavar="DIR", default=None,
                   help="write the winner's vllm-serve.sh, deployment.yaml and rollout.yaml here")
    o.add_argument("--png", metavar="FILE", default=None, help="save the Pareto plot")


def build_request(args):
    import yaml

    from sim.errors import ConfigError
    from sim.tune import SearchSpace, TuneRequest, parse_sla
    from sim.tune.prices import prices_from_doc, shipped_prices
    from sim.tune.search import longest_request_tokens
    from sim.tune.space import default_max_model_len, default_precisions, resolve_gpus
    from sim.workload import WorkloadSpec

    sla = parse_sla(args.sla).with_headroom(args.headroom)
    gpus = resolve_gpus(args.gpu)
    if args.gpu_prices:
        try:
            with open(args.gpu_prices, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        except OSError as exc:
            raise ConfigError(f"--gpu-prices {args.gpu_prices}: cannot read it ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--gpu-prices {args.gpu_prices}: not valid YAML ({str(exc).splitlines()[0]})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--gpu-prices {args.gpu_prices}: not a text file; expected a YAML price table") from None
        prices = prices_from_doc(doc, origin=f"--gpu-prices {args.gpu_prices}")
    else:
        prices = shipped_prices()
    if not args.gpu:  # every catalog GPU that has a price (one named with --gpu must have one)
        unpriced = [g for g in gpus if g not in prices]
        gpus = tuple(g for g in gpus if g in prices)
        if unpriced:
            print(f"(no price for {', '.join(unpriced)}: left out; --gpu-prices FILE can add them)", file=sys.stderr)
    if args.trace_time_scale != 1.0:
        raise ConfigError("--trace-time-scale: tune sets the load itself (a trace is replayed at every rate it "
                          "tries); give the rate to carry with --request-rate")
    if args.dataset_path and args.dataset_name != "trace":
        raise ConfigError(f"--dataset-path {args.dataset_path}: only --dataset-name trace reads a file; "
                          f"--dataset-name {args.dataset_name} draws its lengths from ServeLab's own distribution. "
                          f"Give --dataset-name trace with a CSV, or leave --dataset-path out")
    if args.max_concurrency is not None:
        if args.request_rate != math.inf:
            raise ConfigError("--max-concurrency and --request-rate: give one (clients in a closed loop, or requests/s)")
        if args.max_concurrency <= 0:
            raise ConfigError(f"--max-concurrency: expected a positive integer, got {args.max_concurrency}")
        if args.burstiness != 1.0:
            raise ConfigError("--burstiness with --max-concurrency: a closed loop sends a request when one finishes, "
                              "so there are no arrival gaps to shape; use --request-rate, or leave --burstiness out")
        mode, target = "concurrency", float(args.max_concurrency)
    else:
        if not args.request_rate > 0:  # NaN included
            raise ConfigError(f"--request-rate: expected requests/s for the whole deployment, above 0 (or inf: "
                              f"no target), got {args.request_rate:g}")
        mode, target = "rate", (None if args.request_rate == math.inf else args.request_rate)
    spec = WorkloadSpec(
        dataset_name=args.dataset_name, num_prompts=args.num_prompts, random_input_len=args.random_input_len,
        random_output_len=args.random_output_len, random_range_ratio=args.random_range_ratio,
        dataset_path=args.dataset_path, prefix_len=args.prefix_len, prefix_fraction=args.prefix_fraction,
        n=args.n, burstiness=args.burstiness, vocab_size=tokenizer_vocab(args.tokenizer),
    )
    longest = longest_request_tokens(spec, args.seed)
    quant_default, kv_default = default_precisions(args.model)
    quantization = tuple(None if q.lower() == "none" else q for q in args.quantization) if args.quantization else quant_default
    prefix = args.enable_prefix_caching or (("on", "off") if args.prefix_len > 0 else ("on",))
    bad = [v for v in prefix if v not in ("on", "off")]
    if bad:
        raise ConfigError(f"--enable-prefix-caching: expected on, off or on,off, got {','.join(prefix)}")
    ep = args.enable_expert_parallel or ("off",)
    if [v for v in ep if v not in ("on", "off")]:
        raise ConfigError(f"--enable-expert-parallel: expected on, off or on,off, got {','.join(ep)}")
    from sim.catalog import get_model

    # A config.json given by path is simulated from that file (its fields may differ from the
    # shipped model its _name_or_path names); a catalog name or alias by its canonical name.
    model = args.model if Path(args.model).expanduser().exists() else get_model(args.model).name
    space = SearchSpace(
        model=model, gpus=gpus, tensor_parallel_sizes=args.tensor_parallel_size,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        quantization=quantization, kv_cache_dtype=args.kv_cache_dtype or kv_default,
        enable_prefix_caching=tuple(v == "on" for v in prefix), max_replicas=args.max_replicas,
        enable_expert_parallel=tuple(dict.fromkeys(v == "on" for v in ep)),
        max_model_len=args.max_model_len or default_max_model_len(longest, args.model, lengths=_lengths(args)),
        # unset: SearchSpace's default, EngineConfig's (vLLM 0.33's 0.92)
        **({} if args.gpu_memory_utilization is None else {"gpu_memory_utilization": args.gpu_memory_utilization}),
    )
    return TuneRequest(space, spec, sla, prices, mode=mode, target_load=target, seed=args.seed,
                       rel_tol=args.rate_tolerance, early_stop=args.early_stop)


def _lengths(args) -> str:
    """Where the longest request's length comes from, for an error that says it is too long."""
    if args.dataset_name != "random":
        return f"the longest in --dataset-name {args.dataset_name}"
    out = f"--random-input-len {args.random_input_len} + --random-output-len {args.random_output_len}"
    extra = [f"--random-prefix-len {args.prefix_len}"] if args.prefix_len else []
    extra += [f"--random-range-ratio {args.random_range_ratio:g}"] if args.random_range_ratio else []
    return out + (f", with {' and '.join(extra)}" if extra else "")


class _Bar:
    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="config", delay=2.0, file=sys.stderr, leave=False,
                        disable=not sys.stderr.isatty())

    def __call__(self, done: int, total: int, ev) -> None:
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def run(args) -> int:
    from sim.catalog import get_model
    from sim.tune import tune
    from sim.tune.executors import make_executor
    from sim.tune.space import layout_of

    from lab.tune_report import (drop_empty_columns, format_table, nothing_simulated_text, plural, pruned_lines,
                                 result_dict, shows_layout, table_legend, table_rows)

    get_model(args.model)  # an unknown model fails here, before any process starts
    request = build_request(args)
    executor = make_executor(args.executor, workers=args.workers, ray_address=args.ray_address)
    bar = _Bar()
    t0 = time.perf_counter()
    try:
        result = tune(request, executor, progress=bar)
    finally:
        bar.close()
        executor.close()
    wall_s = time.perf_counter() - t0
    c, space = result.counts, request.space
    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout
    say = lambda *a: print(*a, file=out)
    unit = "req/s" if request.mode == "rate" else "clients"
    target = f"{request.target_load:g} {unit}" if request.target_load else "as much as one replica carries"
    say(f"Model: {space.model}; SLA: {request.sla.describe()}; load: {target}")
    say(f"Candidates: {c.candidates:,} ({plural(c.engine_configs, 'engine configuration')} x "
        f"{plural(c.replica_counts, 'replica count')}; GPUs: {', '.join(space.gpus)})")
    nothing_simulated = not result.evaluations
    say(f"Pruned: {plural(c.pruned_configs, 'configuration')} ({plural(c.pruned, 'candidate')}) that vLLM could not "
        f"start or that could not hold the longest request" + (", by kind:" if result.pruned else ""))
    for line in pruned_lines(result.pruned, examples=nothing_simulated):
        say(line)
    if result.unsimulatable:  # not SLA misses: the simulator cannot price their steps on that GPU
        say(f"Not simulatable: {plural(c.unsimulatable_configs, 'configuration')} whose step time the simulator "
            f"cannot model on that GPU, by kind:")
        for line in pruned_lines(result.unsimulatable, examples=nothing_simulated):
            say(line)
    say(f"Simulated: {plural(c.simulated_configs, 'configuration')}, {plural(c.simulations, 'run')}, "
        f"{c.stopped_early:,} stopped early; {wall_s:.1f} s on {plural(executor.workers, f'{executor.name} worker')}")
    say("")
    layout = shows_layout(space.engine_configs())  # a "layout" column (tp2 ep2) when EP is searched
    rows = lambda ds: format_table(table_rows(ds, request.mode, show_layout=layout))
    if nothing_simulated:
        print(f"error: {nothing_simulated_text(c)} (the reasons are above; --json lists each configuration's); "
              f"change the search space as they suggest", file=sys.stderr)
    elif result.ranked:
        say(f"Meeting the SLA ({plural(len(result.ranked), 'configuration')}, best first):")
        say(rows(result.ranked[: args.top]))
        say(table_legend(result.ranked, request.mode))
        say("")
        front = result.pareto
        shown = front if len(front) <= args.top else [front[round(i * (len(front) - 1) / (args.top - 1))]
                                                       for i in range(args.top)] if args.top > 1 else front[:1]
        more = "" if len(shown) == len(front) else f"; {len(shown)} of its {len(front)} points, evenly spread (--json has all)"
        say(f"Pareto front (output tok/s per GPU against tok/s per user, one replica each{more}):")
        say(rows(shown))
        say(table_legend(shown, request.mode))
        w = result.winner
        from lab.tune_export import deployment_manifest, rollout_manifest, serve_command

        say("")
        say(f"Winner: {w.replicas} x {w.config.tensor_parallel_size} {w.config.gpu}"
            + (f" ({layout_of(w.config)})" if layout else "") + f", ${w.cost_per_hour:.2f}/hour, "
            f"${w.cost_per_million_tokens:.3f} per million output tokens")
        say(serve_command(w.config))
        if args.output_dir:
            d = Path(args.output_dir)
            d.mkdir(parents=True, exist_ok=True)
            (d / "vllm-serve.sh").write_text("#!/bin/sh\n" + serve_command(w.config) + "\n")
            (d / "vllm-serve.sh").chmod(0o755)  # a script to run, as its #! line says
            (d / "deployment.yaml").write_text(deployment_manifest(w.config, w.replicas))
            (d / "rollout.yaml").write_text(rollout_manifest(w.config, w.replicas))
            say(f"Wrote {d / 'vllm-serve.sh'}, {d / 'deployment.yaml'} and {d / 'rollout.yaml'}")
    else:
        say("No configuration meets the SLA. The closest ones, with what each misses:")
        say(format_table(drop_empty_columns(table_rows(result.closest, request.mode, show_layout=layout))))
        if legend := table_legend(result.closest, request.mode):
            say(legend)
    if args.png and result.points:
        _pareto_png(result, args.png)
        say(f"Wrote {args.png}")
    if args.json:
        payload = json.dumps(result_dict(result, wall_s=wall_s, executor=executor.name, workers=executor.workers),
                             indent=2, allow_nan=False)
        if to_stdout:
            print(payload)
        else:
            Path(args.json).write_text(payload + "\n")
            say(f"Wrote {args.json}")
    return 0 if result.ranked else 2 if nothing_simulated else 1


def _pareto_png(result, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = result.points
    ax.scatter([d.tokens_per_s_per_user for d in pts], [d.tokens_per_s_per_gpu for d in pts], s=12, alpha=0.4,
               label="configurations that meet the SLA")
    front = sorted(result.pareto, key=lambda d: d.tokens_per_s_per_user)
    ax.plot([d.tokens_per_s_per_user for d in front], [d.tokens_per_s_per_gpu for d in front], "o-", color="C3",
            label="Pareto front")
    ax.set_xlabel("output tokens/s per user")
    ax.set_ylabel("output tokens/s per GPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
