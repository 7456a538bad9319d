"""``servelab calibrate collect``: the measurement sweep a user with a GPU runs.

1. ``vllm bench throughput`` at each fixed (input, output) length pair, one JSON per pair,
   named ``throughput_in{I}_out{O}.json`` (the file does not record the split; ``fit`` reads
   it from the name);
2. ``vllm serve`` started once, then ``vllm bench serve --save-result --save-detailed`` at each
   request rate, one JSON per rate; the server is stopped afterwards, whatever happens;
3. the operator profiler (:mod:`lab.calibrate.profiler`), ``operators.csv``.

``--dry-run`` prints the commands and runs nothing. Then::

    servelab calibrate fit DIR/*.json DIR/operators.csv --gpu GPU -o my-gpu.yaml
"""

from __future__ import annotations

import math
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sim.errors import ConfigError


def _pairs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        try:
            a, b = item.split(":")
            pair = int(a), int(b)
        except ValueError:
            raise ConfigError(f"--lengths: expected input:output pairs like 512:128, got {item!r}") from None
        if min(pair) <= 0:
            raise ConfigError(f"--lengths: lengths must be positive, got {item!r}")
        out.append(pair)
    return out


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",")]
    except ValueError:
        raise ConfigError(f"--request-rates: expected numbers like 1,2,4, got {text!r}") from None
    bad = [r for r in rates if not (math.isfinite(r) and r > 0)]
    if bad:
        raise ConfigError(f"--request-rates: expected finite rates > 0 in requests per second, got {bad[0]:g} in "
                          f"{text!r} (an infinite rate is the throughput sweep's job: --lengths)")
    return rates


def plan(args) -> dict:
    """The commands, as argument lists."""
    out = Path(args.output_dir)
    tp = ["--tensor-parallel-size", str(args.tensor_parallel_size)]
    throughput = [
        ["vllm", "bench", "throughput", "--model", args.model, *tp, "--input-len", str(i), "--output-len", str(o),
         "--num-prompts", str(args.num_prompts), "--output-json", str(out / f"throughput_in{i}_out{o}.json")]
        for i, o in _pairs(args.lengths)
    ]
    server = ["vllm", "serve", args.model, *tp, "--port", str(args.port)]
    serve = [
        ["vllm", "bench", "serve", "--model", args.model, "--port", str(args.port), "--dataset-name", args.dataset_name,
         "--num-prompts", str(args.num_prompts), "--request-rate", f"{r:g}", "--save-result", "--save-detailed",
         "--result-dir", str(out), "--result-filename", f"serve_rate{r:g}.json"]
        for r in _rates(args.request_rates)
    ]
    profiler = [sys.executable, "-m", "lab.calibrate.profiler", "--model", args.model, *tp,
                "--output", str(out / "operators.csv")]
    return {"throughput": throughput, "server": server, "serve": serve,
            "profiler": None if args.skip_profiler else profiler}


def check_args(args) -> None:
    """Every flag checked before the sweep starts: a mistake found after hours of GPU time, or
    only when ``fit`` reads the results, would cost the whole run."""
    from sim.catalog import get_gpu
    from sim.errors import CatalogError

    for flag, value in (("--tensor-parallel-size", args.tensor_parallel_size), ("--num-prompts", args.num_prompts)):
        if value <= 0:
            raise ConfigError(f"{flag}: expected a positive integer, got {value}")
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port: expected a TCP port from 1 to 65535 for vllm serve, got {args.port}")
    try:  # the fit command printed at the end needs it
        get_gpu(args.gpu)
    except CatalogError as exc:
        raise ConfigError(f"--gpu: {exc}") from None


def collect(args) -> int:
    check_args(args)
    p = plan(args)
    fit_cmd = (f"servelab calibrate fit {args.output_dir}/*.json"
               + ("" if args.skip_profiler else f" {args.output_dir}/operators.csv")
               + f" --gpu {args.gpu} --tensor-parallel-size {args.tensor_parallel_size} -o calibration-{args.gpu}.yaml")
    if args.dry_run:
        print(f"mkdir -p {shlex.quote(args.output_dir)}")
        for cmd in p["throughput"]:
            print(shlex.join(cmd))
        print(shlex.join(p["server"]) + " &   # then wait for /health")
        for cmd in p["serve"]:
            print(shlex.join(cmd))
        print("kill %1   # stop vllm serve")
        if p["profiler"]:
            print(shlex.join(p["profiler"]))
        print(f"# then: {fit_cmd}")
        return 0
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    for cmd in p["throughput"]:
        _run(cmd)
    try:
        server = subprocess.Popen(p["server"])
    except FileNotFoundError:
        raise ConfigError("vllm: not found (install vLLM on this GPU machine first)") from None
    try:
        _wait_healthy(args.port, server)
        for cmd in p["serve"]:
            _run(cmd)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    if p["profiler"]:
        _run(p["profiler"])
    print(f"Results in {args.output_dir}/. Next: {fit_cmd}")
    return 0


def _run(cmd: list[str]) -> None:
    print("+ " + shlex.join(cmd), flush=True)
    try:
        subprocess.run(cmd, check=True)
    except FileNotFoundError:
        raise ConfigError(f"{cmd[0]}: not found (install vLLM on this GPU machine first)") from None
    except subprocess.CalledProcessError as exc:
        raise ConfigError(f"{shlex.join(cmd)} failed with exit status {exc.returncode}") from None


def _wait_healthy(port: int, server: subprocess.Popen, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ConfigError(f"vllm serve exited with status {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise ConfigError(f"vllm serve did not answer /health on port {port} within {timeout_s:.0f} s")
