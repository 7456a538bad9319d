"""`vllm bench serve` (vLLM's own client, from the reference venv) against `servelab serve`,
and `servelab bench serve` on the same workload, for tests/test_vllm_bench_client.py and
benchmarks/emulator_load.py.

Runs in ServeLab's own Python. The client runs in .venv-vllm (scripts/setup-vllm-reference
installs vLLM and the few modules its client imports); its tokenizer is trained on the spot by
make_tokenizer.py (no model hub here) and given to both the client and the emulator
(``--tokenizer DIR``), so prompt lengths agree on both sides.

Loaded by file path (importlib), like tools/vllm_reference/harness.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-vllm"
VENV_PYTHON = VENV / "bin" / "python"
VLLM_CLI = VENV / "bin" / "vllm"
MAKE_TOKENIZER = Path(__file__).resolve().parent / "make_tokenizer.py"
MODEL = "meta-llama/Llama-3.1-8B"
GPU = "h100-80gb"


def client_ready() -> bool:
    """The reference venv with vLLM's benchmark client importable (uvicorn, aiohttp, ...)."""
    if not VLLM_CLI.exists():
        return False
    probe = "import vllm.benchmarks.serve, uvicorn, aiohttp, transformers, tokenizers"
    done = subprocess.run([str(VENV_PYTHON), "-c", probe], capture_output=True, env=client_env(), timeout=300)
    return done.returncode == 0


def client_env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_TARGET_DEVICE="cpu",
                VLLM_LOGGING_LEVEL="WARNING", TOKENIZERS_PARALLELISM="false")


def make_tokenizer(out_dir: Path) -> Path:
    subprocess.run([str(VENV_PYTHON), str(MAKE_TOKENIZER), str(out_dir)], check=True, capture_output=True,
                   env=client_env(), timeout=300)
    return out_dir


@dataclass(frozen=True)
class Workload:
    num_prompts: int
    input_len: int
    output_len: int
    max_concurrency: int
    request_rate: float = math.inf
    seed: int = 0
    gpu: str = GPU  # the simulated GPU, for both the emulator and servelab bench serve
    burstiness: float = 1.0  # vLLM's: 1 Poisson, inf constant gaps of 1/rate (the same arrivals on both sides)

    def common_flags(self) -> list[str]:
        """The flags `vllm bench serve` and `servelab bench serve` share (vLLM's names)."""
        return ["--model", MODEL, "--dataset-name", "random", "--random-input-len", str(self.input_len),
                "--random-output-len", str(self.output_len), "--num-prompts", str(self.num_prompts),
                "--max-concurrency", str(self.max_concurrency), "--request-rate", str(self.request_rate),
                "--burstiness", str(self.burstiness), "--seed", str(self.seed),
                "--percentile-metrics", "ttft,tpot,itl,e2el",
                "--metric-percentiles", "50,90,99"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def emulator(tokenizer: Path, log_path: Path, pid_out: list | None = None, extra: tuple[str, ...] = (),
             python: str = sys.executable, gpu: str = GPU):
    """`servelab serve` in a subprocess on a free 127.0.0.1 port; yields its base URL (and
    appends the process id to ``pid_out``)."""
    port = free_port()
    cmd = [python, "-m", "lab", "serve", MODEL, "--gpu", gpu, "--port", str(port), "--tokenizer", str(tokenizer),
           "--uvicorn-log-level", "warning", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if pid_out is not None:
        pid_out.append(proc.pid)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"servelab serve exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("servelab serve did not answer /health within 120 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def vllm_bench_serve(base_url: str, tokenizer: Path, work: Workload, result_dir: Path, timeout_s: float = 900) -> dict:
    """Run vLLM's `vllm bench serve` against ``base_url``; its result JSON, plus its stdout."""
    name = "vllm-bench.json"
    cmd = [str(VLLM_CLI), "bench", "serve", "--backend", "vllm", "--base-url", base_url, "--endpoint",
           "/v1/completions", "--tokenizer", str(tokenizer), "--ignore-eos", "--save-result",
           "--result-dir", str(result_dir), "--result-filename", name, "--disable-tqdm",
           *work.common_flags()]
    done = subprocess.run(cmd, capture_output=True, text=True, env=client_env(), timeout=timeout_s, cwd=result_dir)
    if done.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads((result_dir / name).read_text())
    result["stdout"] = done.stdout
    return result


def raw_client(base_url: str, work: Workload, timeout_s: float = 1800) -> dict:
    """raw_client.py (a light client that only counts finished streams) against ``base_url``."""
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "raw_client.py"), base_url, str(work.num_prompts),
           str(work.max_concurrency), str(work.input_len), str(work.output_len), MODEL]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"raw_client.py failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def servelab_bench_serve(work: Workload, result_dir: Path, tokenizer: Path | None = None,
                         python: str = sys.executable, client_turnaround_ms: float = 0.0) -> dict:
    """`servelab bench serve` on the same workload (the simulator's prediction), its JSON.

    The emulator is the simulated engine behind a simulated vLLM API server (a request reaches
    the engine after the API server's HTTP and tokenization time, and each token leaves when
    it would have streamed it), as `servelab bench serve` simulates them, so the prediction
    keeps its front end. vLLM's client sends a closed loop's first wave at once
    (``--closed-loop-start together``). With ``tokenizer`` (the client's), the random dataset's
    prompts are drawn from the same vocabulary as vLLM's client draws them, so as many prompts
    repeat (and hit the prefix cache) on both sides: with a 2,000-token vocabulary, about a
    fifth of 1,000 prompts. ``client_turnaround_ms``: the client's own time between an answer
    and its next request (``--client-turnaround-ms``; the emulator measures it, see
    :func:`client_turnaround`); 0, the default, simulates an instant client."""
    name = f"servelab-bench-{client_turnaround_ms:g}ms.json"
    cmd = [python, "-m", "lab", "bench", "serve", "--gpu", work.gpu, "--save-result", "--result-dir", str(result_dir),
           "--result-filename", name, "--closed-loop-start", "together", *work.common_flags()]
    if tokenizer is not None:
        cmd += ["--tokenizer", str(tokenizer)]
    if client_turnaround_ms:
        cmd += ["--client-turnaround-ms", f"{client_turnaround_ms:.3f}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"servelab bench serve failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads((result_dir / name).read_text())


def _histogram(base_url: str, name: str) -> tuple[list[tuple[float, float]], float]:
    """(upper bound, cumulative count) per bucket, and the sum, of a histogram on /metrics."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    pattern = re.compile(rf'^{re.escape(name)}_bucket\{{le="([^"]+)"\}} (\S+)$', re.M)
    buckets = [(math.inf if le == "+Inf" else float(le), float(v)) for le, v in pattern.findall(text)]
    total = re.search(rf"^{re.escape(name)}_sum (\S+)$", text, re.M)
    return buckets, float(total.group(1)) if total else math.nan


def lag_histogram(base_url: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of every token's lag, from the emulator's /metrics."""
    return _histogram(base_url, "servelab:emulator_lag_seconds")[0]


def client_turnaround(base_url: str) -> dict:
    """The client's turnaround as the emulator saw it (servelab:emulator_client_turnaround_seconds):
    how many, the mean and the median, in ms."""
    buckets, total = _histogram(base_url, "servelab:emulator_client_turnaround_seconds")
    count = buckets[-1][1] if buckets else 0.0
    return {"count": count, "mean_ms": 1000 * total / count if count else math.nan,
            "median_ms": 1000 * quantile(0.5, buckets)}


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear inside the bucket that holds the rank."""
    total = buckets[-1][1] if buckets else 0.0
    if total == 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for upper, cum in buckets:
        if cum >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / max(cum - below, 1e-12)
        lower, below = upper, cum
    return lower


def generation_tokens(base_url: str) -> float:
    """vllm:generation_tokens_total on the emulator's /metrics."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        m = re.search(r"^vllm:generation_tokens_total\{[^}]*\} (\S+)$", r.read().decode(), re.M)
    return float(m.group(1)) if m else 0.0


def engine_means(base_url: str) -> dict:
    """Mean TTFT and TPOT of the emulator's own engine, in ms (vLLM's histograms' _sum/_count
    on /metrics): what the simulation inside the server produced, before any delivery."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for key, name in (("ttft", "vllm:time_to_first_token_seconds"), ("tpot", "vllm:request_time_per_output_token_seconds"),
                      ("e2el", "vllm:e2e_request_latency_seconds")):
        total = re.search(rf"^{re.escape(name)}_sum\{{[^}}]*\}} (\S+)$", text, re.M)
        count = re.search(rf"^{re.escape(name)}_count\{{[^}}]*\}} (\S+)$", text, re.M)
        if total and count and float(count.group(1)) > 0:
            out[f"mean_{key}_ms"] = 1000 * float(total.group(1)) / float(count.group(1))
    return out


def lag_delta(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The tokens of one run: the histogram after it minus the one before."""
    old = dict(before)
    return [(le, cum - old.get(le, 0.0)) for le, cum in after]


def compare(client: dict, predicted: dict) -> dict:
    """Client-measured mean and median TTFT and TPOT against the simulator's, as ratios."""
    out = {}
    for m in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "p99"):
            key = f"{stat}_{m}_ms"
            if key in client and key in predicted and predicted[key]:
                out[key] = (client[key], predicted[key], client[key] / predicted[key] - 1)
    return out
