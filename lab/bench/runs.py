"""Build the config and workload from flags, run, print vLLM's summary, write vLLM's JSON."""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from sim.catalog import get_model
from sim.config import EngineConfig, config_scheduler_limits
from sim.engine import run_engine
from sim.errors import ConfigError
from sim.report import serve_summary, throughput_summary
from sim.workload import WorkloadSpec, build_workload


def engine_config(args, usage: str = "serve") -> EngineConfig:
    """The engine the flags describe, refused in one line where vLLM would refuse it (``usage``,
    "serve" or "offline", picks vLLM's defaults for the checks that depend on them)."""
    config = EngineConfig(
        model=args.model, gpu=args.gpu, engine=args.engine,
        tensor_parallel_size=args.tensor_parallel_size, block_size=args.block_size,
        data_parallel_size=getattr(args, "data_parallel_size", 1),
        enable_expert_parallel=getattr(args, "enable_expert_parallel", False),
        all2all_backend=getattr(args, "all2all_backend", "allgather_reducescatter"),
        gpu_memory_utilization=args.gpu_memory_utilization, max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens, max_num_seqs=args.max_num_seqs,
        enable_prefix_caching=args.enable_prefix_caching, enable_chunked_prefill=args.enable_chunked_prefill,
        long_prefill_token_threshold=args.long_prefill_token_threshold,
        kv_cache_memory_bytes=args.kv_cache_memory_bytes, num_gpu_blocks_override=args.num_gpu_blocks_override,
        scheduling_policy=args.scheduling_policy, calibration=args.calibration,
        parallel_sampling=getattr(args, "parallel_sampling", "prefix-cache"),
        disable_hybrid_kv_cache_manager=getattr(args, "disable_hybrid_kv_cache_manager", False),
        dtype=getattr(args, "dtype", "auto"), quantization=getattr(args, "quantization", None),
        kv_cache_dtype=getattr(args, "kv_cache_dtype", "auto"),
        performance_mode=getattr(args, "performance_mode", "balanced"),
    )
    config_scheduler_limits(config, usage)
    return config


def workload_spec(args, *, offline: bool, max_model_len: int) -> WorkloadSpec:
    input_len = getattr(args, "input_len", None)
    output_len = getattr(args, "output_len", None)
    if args.dataset_name != "random" and (input_len is not None or output_len is not None):
        raise ConfigError("--input-len/--output-len apply to --dataset-name random only")
    return WorkloadSpec(
        dataset_name=args.dataset_name,
        num_prompts=args.num_prompts,
        random_input_len=input_len if input_len is not None else args.random_input_len,
        random_output_len=output_len if output_len is not None else args.random_output_len,
        random_range_ratio=0.0 if input_len is not None else args.random_range_ratio,
        dataset_path=args.dataset_path,
        trace_time_scale=getattr(args, "trace_time_scale", 1.0),
        prefix_len=args.prefix_len,
        prefix_fraction=args.prefix_fraction,
        request_rate=math.inf if offline else args.request_rate,
        burstiness=1.0 if offline else args.burstiness,
        n=args.n,
        max_model_len=max_model_len,
        vocab_size=tokenizer_vocab(getattr(args, "tokenizer", None)),
    )


def tokenizer_vocab(folder) -> int | None:
    """How many ids vLLM's random dataset draws from with the tokenizer in ``folder``."""
    if folder is None:
        return None
    from lab.server.hf_tokenizer import HFTokenizer

    return HFTokenizer(folder).random_dataset_vocab_size


class _Progress:
    """A tqdm bar on stderr that appears only if the run lasts more than two seconds."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="req", delay=2.0, file=sys.stderr, leave=False,
                        disable=not sys.stderr.isatty() and None)
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        self.bar.close()


def _prepare(args, *, offline: bool):
    config = engine_config(args, usage="offline" if offline else "serve")
    model = get_model(config.model)
    max_model_len = config.max_model_len or model.max_position_embeddings
    spec = workload_spec(args, offline=offline, max_model_len=max_model_len)
    workload = build_workload(spec, np.random.default_rng(args.seed))
    too_long = workload.prompt_len >= max_model_len
    if too_long.any():
        i = int(np.argmax(too_long))
        raise ConfigError(
            f"request {i} has a prompt of {int(workload.prompt_len[i])} tokens, but --max-model-len is "
            f"{max_model_len}: raise --max-model-len or shorten the prompts"
        )
    return config, model, workload


def _run(config, workload, args, *, usage, max_concurrency=None, frontend=None):
    progress = _Progress(len(workload) * workload.n)
    t0 = time.perf_counter()
    try:
        result = run_engine(config, workload, seed=args.seed, usage=usage, progress=progress,
                            max_concurrency=max_concurrency, frontend=frontend,
                            api_server_count=getattr(args, "api_server_count", 1),
                            closed_loop_start=getattr(args, "closed_loop_start", "together"),
                            client_turnaround_s=getattr(args, "client_turnaround_ms", 0.0) / 1000)
    finally:
        progress.close()
    return result, time.perf_counter() - t0


def run_throughput(args) -> int:
    config, model, workload = _prepare(args, offline=True)
    result, wall_s = _run(config, workload, args, usage="offline")
    summary = throughput_summary(result, model.name, n=workload.n)
    print(
        f"Throughput: {summary['requests_per_second']:.2f} requests/s, "
        f"{summary['tokens_per_second']:.2f} total tokens/s, "
        f"{summary['output_tokens_per_second']:.2f} output tokens/s"
    )
    print(f"Total num prompt tokens:  {summary['total_num_prompt_tokens']}")
    print(f"Total num output tokens:  {summary['total_num_output_tokens']}")
    _print_simulator_block(summary["servelab"], result, wall_s)
    if args.output_json:
        summary["servelab"]["wall_time_s"] = wall_s
        _write_json(args.output_json, summary)
    return 0


def run_serve(args) -> int:
    config, model, workload = _prepare(args, offline=False)
    if args.max_concurrency is not None and args.max_concurrency <= 0:
        raise ConfigError(f"--max-concurrency: expected a positive integer, got {args.max_concurrency}")
    turnaround = float(getattr(args, "client_turnaround_ms", 0.0))
    if not 0 <= turnaround < math.inf:  # NaN fails too
        raise ConfigError(f"--client-turnaround-ms: expected milliseconds >= 0, got {turnaround}")
    if turnaround and not args.frontend:
        raise ConfigError("--client-turnaround-ms needs the simulated front end: drop --no-frontend, "
                          "or set --client-turnaround-ms 0")
    metrics = tuple(m.strip() for m in args.percentile_metrics.split(",") if m.strip())
    bad = [m for m in metrics if m not in ("ttft", "tpot", "itl", "e2el")]
    if bad:
        raise ConfigError(f"--percentile-metrics: unknown metric(s) {bad}; expected ttft, tpot, itl, e2el")
    try:
        percentiles = tuple(float(p) for p in args.metric_percentiles.split(","))
    except ValueError:
        percentiles = ()
    if not percentiles or not all(0 <= p <= 100 for p in percentiles):  # NaN fails too
        raise ConfigError(f"--metric-percentiles: expected comma-separated percentiles from 0 to 100, like 50,90,99; "
                          f"got {args.metric_percentiles!r}")
    # The server starts before the client prints anything: a flag vLLM refuses at start-up (an
    # FP8 KV cache the attention backend cannot store, weights that do not fit) ends the run here.
    from sim.memory import plan_for_config

    plan_for_config(config, usage="serve")
    quiet = getattr(args, "json", None) == "-"
    if not quiet:
        print(f"Traffic request rate: {args.request_rate}")
        print(f"Burstiness factor: {args.burstiness} ({'Poisson process' if args.burstiness == 1 else 'Gamma distribution'})")
        print(f"Maximum request concurrency: {args.max_concurrency}")
    if args.api_server_count <= 0:
        raise ConfigError(f"--api-server-count: expected a positive integer, got {args.api_server_count}")
    frontend = None
    if args.frontend:
        from sim.calibration import frontend_for
        from sim.catalog import get_gpu

        frontend = frontend_for(config, model, get_gpu(config.gpu))
    result, wall_s = _run(config, workload, args, usage="serve", max_concurrency=args.max_concurrency,
                          frontend=frontend)
    s = serve_summary(result, model.name, request_rate=args.request_rate, burstiness=args.burstiness,
                      max_concurrency=args.max_concurrency, percentile_metrics=metrics,
                      metric_percentiles=percentiles, save_detailed=args.save_detailed)
    s["servelab"]["wall_time_s"] = wall_s
    if quiet:
        print(json.dumps(s, indent=2))
        return 0
    w = 50
    print("{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=w, c="="))
    row = lambda k, v: print(f"{k:<40}{v:<10}")
    row("Successful requests:", s["completed"])
    row("Failed requests:", s["failed"])
    if args.max_concurrency is not None:
        row("Maximum request concurrency:", args.max_concurrency)
    row("Benchmark duration (s):", f"{s['duration']:.2f}")
    row("Total input tokens:", s["total_input_tokens"])
    row("Total generated tokens:", s["total_output_tokens"])
    row("Request throughput (req/s):", f"{s['request_throughput']:.2f}")
    row("Output token throughput (tok/s):", f"{s['output_throughput']:.2f}")
    row("Total token throughput (tok/s):", f"{s['total_token_throughput']:.2f}")
    titles = {"ttft": ("Time to First Token", "TTFT"), "tpot": ("Time per Output Token (excl. 1st token)", "TPOT"),
              "itl": ("Inter-token Latency", "ITL"), "e2el": ("End-to-end Latency", "E2EL")}
    for m in metrics:
        title, short = titles[m]
        print("{s:{c}^{n}}".format(s=title, n=w, c="-"))
        row(f"Mean {short} (ms):", f"{s[f'mean_{m}_ms']:.2f}")
        row(f"Median {short} (ms):", f"{s[f'median_{m}_ms']:.2f}")
        for p in percentiles:
            p_word = str(int(p)) if float(p).is_integer() else str(p)
            row(f"P{p_word} {short} (ms):", f"{s[f'p{p_word}_{m}_ms']:.2f}")
    print("=" * w)
    _print_simulator_block(s["servelab"], result, wall_s)
    if args.save_result or args.result_filename:
        name = args.result_filename or (
            f"servelab-{args.request_rate}qps-{model.name.split('/')[-1]}-{datetime.now():%Y%m%d-%H%M%S}.json"
        )
        path = Path(args.result_dir or ".") / name
        s["date"] = datetime.now().strftime("%Y%m%d-%H%M%S")
        _write_json(str(path), s)
    if getattr(args, "json", None):
        _write_json(args.json, s)
    return 0


def _print_simulator_block(f: dict, result, wall_s: float) -> None:
    w = 50
    print("{s:{c}^{n}}".format(s=" ServeLab (what vLLM cannot show) ", n=w, c="-"))
    row = lambda k, v: print(f"{k:<40}{v:<10}")
    row("Engine / GPU:", f"{f['engine']} / {f['gpu']}")
    print(f"Step time: {f['step_time_model']}")
    if "frontend" in f:
        fe = f["frontend"]
        row(f"Front end ({fe['api_server_count']} API server(s)), mean TTFT:",
            f"{fe['mean_frontend_ttft_ms']:.2f} ms ({100 * fe['frontend_share_of_ttft']:.0f}% of {fe['mean_ttft_ms']:.2f} ms)")
        if fe.get("mean_client_turnaround_ms"):
            row("Client turnaround, mean over requests:", f"{fe['mean_client_turnaround_ms']:.2f} ms (in the TTFT)")
    row("KV cache (blocks / tokens):", f"{f['num_gpu_blocks']} / {f['kv_cache_tokens']}")
    row("Mean batch size (requests):", f"{f['mean_batch_size']:.1f}")
    row("Mean batched tokens per step:", f"{f['mean_num_batched_tokens']:.1f}")
    row("Mean / max KV cache usage:", f"{100 * f['mean_kv_cache_usage']:.1f}% / {100 * f['max_kv_cache_usage']:.1f}%")
    row("Preemptions:", f["num_preemptions"])
    if f["prefix_cache_queries"]:
        row("Prefix cache hit rate:", f"{100 * f['prefix_cache_hit_rate']:.1f}%")
    if "memory_waste" in f:
        mw = f["memory_waste"]
        row("KV memory: tokens / reserved / waste:",
            f"{100 * mw['token_states']:.0f}% / {100 * mw['reservation']:.0f}% / "
            f"{100 * (mw['internal_fragmentation'] + mw['external_fragmentation']):.0f}%")
    spark = _sparkline([v for _, v in f["kv_usage_over_time"]])
    if spark:
        row("KV usage over time:", spark)
    row("Engine steps simulated:", f["num_steps"])
    sim_s = result.elapsed_s
    row("Simulated / wall time:", f"{sim_s:.1f} s / {wall_s:.2f} s ({sim_s / wall_s if wall_s else 0:.0f}x)")
    print("=" * w)


def _sparkline(values: list[float], width: int = 40) -> str:
    if not values:
        return ""
    bars = " ▁▂▃▄▅▆▇█"
    idx = np.linspace(0, len(values) - 1, min(width, len(values))).astype(int)
    return "".join(bars[min(8, int(round(values[i] * 8)))] for i in idx)


def run_latency(args) -> int:
    """``vllm bench latency``: one batch of ``--batch-size`` random prompts, run
    ``--num-iters-warmup`` times and then ``--num-iters`` times timed (vLLM 0.33
    ``benchmarks/latency.py``)."""
    from sim.runner import batch_latencies

    if args.use_beam_search:
        raise ConfigError("--use-beam-search: ServeLab does not simulate beam search; drop the flag")
    if args.profile:
        raise ConfigError("--profile: there is no GPU to profile; the simulated steps are in `servelab bench "
                          "throughput --output-json`")
    for flag, value, least in (("--input-len", args.input_len, 1), ("--output-len", args.output_len, 1),
                               ("--batch-size", args.batch_size, 1), ("--n", args.n, 1),
                               ("--num-iters-warmup", args.num_iters_warmup, 0), ("--num-iters", args.num_iters, 1)):
        if value < least:
            raise ConfigError(f"{flag}: expected an integer of at least {least}, got {value}")
    config = engine_config(args, usage="offline")
    model = get_model(config.model)
    max_model_len = config.max_model_len or model.max_position_embeddings
    if max_model_len < args.input_len + args.output_len:
        raise ConfigError(f"--input-len {args.input_len} + --output-len {args.output_len} exceeds --max-model-len "
                          f"{max_model_len}: vLLM's benchmark asks that max_model_len be at least their sum")
    # vLLM draws the token ids of its dummy prompts uniformly below 10,000, once.
    prompts = np.random.default_rng(args.seed).integers(0, 10000, size=(args.batch_size, args.input_len)).tolist()
    print("Warming up...")
    t0 = time.perf_counter()
    every, engine = batch_latencies(config, prompts, args.output_len, args.num_iters_warmup + args.num_iters,
                                    n=args.n, seed=args.seed)
    wall_s = time.perf_counter() - t0
    latencies = np.array(every[args.num_iters_warmup:])
    percentages = [10, 25, 50, 75, 90, 99]
    percentiles = np.percentile(latencies, percentages)
    print(f"Avg latency: {np.mean(latencies)} seconds")
    for percentage, percentile in zip(percentages, percentiles):
        print(f"{percentage}% percentile latency: {percentile} seconds")
    w = 50
    print("{s:{c}^{n}}".format(s=" ServeLab (what vLLM cannot show) ", n=w, c="-"))
    print(f"Step time: {engine.step_model.source if hasattr(engine, 'step_model') else config.gpu}")
    print(f"First batch (cold): {every[0]:.6f} s; timed batches: every one the same unless the prefix cache "
          f"carries over ({'on' if config.enable_prefix_caching else 'off'})")
    print(f"Simulated / wall time: {sum(every):.1f} s / {wall_s:.2f} s")
    print("=" * w)
    if args.output_json:
        _write_json(args.output_json, {
            "model_id": args.model, "avg_latency": float(np.mean(latencies)), "latencies": latencies.tolist(),
            "percentiles": {str(p): float(v) for p, v in zip(percentages, percentiles)},
        })
    return 0


def _write_json(path: str, data: dict) -> None:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    print(f"Wrote {path}")
