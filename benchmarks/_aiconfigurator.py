"""aiconfigurator 0.12.0 in a venv of its own, for the benchmarks that set ServeLab beside it.

aiconfigurator (NVIDIA, Apache-2.0; PyPI `aiconfigurator`, which pulls `aiconfigurator-core`)
estimates TTFT and TPOT of a serving setup from per-operator timings measured on real GPUs. It is
about 670 MB installed with its dependencies, so neither the lab nor the CLI depends on it: the
benchmarks install it into `.venv-aiconfigurator/` at the repository root (ignored by git; the
environment variable SERVELAB_AICONFIGURATOR_VENV names another place) and talk to it through a
subprocess. Other benchmarks use it like this:

    from benchmarks._aiconfigurator import Unavailable, ensure_venv, estimate_argv, parse_estimate, run_many
    try:
        python = ensure_venv()                     # installs once (uv, else pip); later calls are free
    except Unavailable as why:
        print(f"aiconfigurator is skipped: {why}"); return 0
    [out] = run_many(python, [estimate_argv("meta-llama/Meta-Llama-3.1-70B", "h200_sxm",
                                            isl=1024, osl=128, batch_size=32, tp=4,
                                            gemm_quant_mode="fp8", kvcache_quant_mode="bfloat16")])
    est = parse_estimate(out.text)                 # {'ttft_ms': ..., 'tpot_ms': ..., ...}

`run_many` runs any `aiconfigurator cli SUBCOMMAND ...` argument lists, all in one process: it
calls the entry point the `aiconfigurator` console script calls (`aiconfigurator.main.main`) once
per argument list, with stdout and stderr captured, so each answer is the text the command prints.
A process costs about 4-7 s here before it estimates anything (imports, perf database); one
process for many estimates pays that once, and each estimate then takes about 2 s.
`run_many(..., one_process_each=True)` runs the real console script once per list instead.

The best configuration for a model, GPU system, ISL/OSL and SLA is what `aiconfigurator cli
default` answers (see `default_argv`): it sweeps aggregated and disaggregated deployments over
--total-gpus, keeps those within --ttft/--tpot and prints the top ones by tokens/s/gpu (about
10 s here for Llama-3.1-70B on 8 H200). With --save-dir DIR it also writes
DIR/<model>/<run>/{agg,disagg}/best_config_topn.csv, which `read_best_configs(DIR)` reads.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION = "0.12.0"
# SERVELAB_AICONFIGURATOR_VENV points elsewhere (e.g. one venv shared by several checkouts).
VENV = Path(os.environ.get("SERVELAB_AICONFIGURATOR_VENV") or ROOT / ".venv-aiconfigurator")
DRIVER = Path(__file__).resolve().parent / "_aiconfigurator_driver.py"
MARKER = "@@aiconfigurator-result "


class Unavailable(Exception):
    """aiconfigurator cannot be installed or run here; str() is one line saying why."""


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def installed_version(venv: Path = VENV) -> str | None:
    """The aiconfigurator version installed in `venv`, or None."""
    python = venv_python(venv)
    if not python.exists():
        return None
    done = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('aiconfigurator'))"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def ensure_venv(venv: Path = VENV, install: bool = True) -> Path:
    """Python of a venv holding aiconfigurator==VERSION; creates it with uv (else venv + pip) if needed.

    Raises Unavailable with one line when it cannot (no network, no index, wrong Python).
    """
    if installed_version(venv) == VERSION:
        return venv_python(venv)
    if not install:
        raise Unavailable(f"{venv} does not hold aiconfigurator=={VERSION} (run without --no-install to install it)")
    if not (3, 11) <= sys.version_info[:2] < (3, 14):
        raise Unavailable(f"aiconfigurator {VERSION} needs Python >=3.11,<3.14; this is {sys.version.split()[0]}")
    uv = shutil.which("uv")
    if uv:
        steps = [[uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(venv)],
                 [uv, "pip", "install", "--quiet", "--python", str(venv_python(venv)), f"aiconfigurator=={VERSION}"]]
    else:
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(venv_python(venv)), "-m", "pip", "install", "--quiet", f"aiconfigurator=={VERSION}"]]
    print(f"installing aiconfigurator=={VERSION} into {venv} ({'uv' if uv else 'pip'}) ...", file=sys.stderr)
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"{' '.join(cmd[:3])} failed: {exc}") from None
        if done.returncode != 0:
            raise Unavailable(f"{' '.join(cmd[:3])} failed: {_last_line(done.stderr + done.stdout)}")
    if installed_version(venv) != VERSION:
        raise Unavailable(f"installed into {venv}, but aiconfigurator=={VERSION} does not import there")
    return venv_python(venv)


def estimate_argv(model_path: str, system: str, *, isl: int, osl: int, batch_size: int, tp: int,
                  backend: str = "vllm", gemm_quant_mode: str | None = None,
                  kvcache_quant_mode: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """`aiconfigurator cli estimate` arguments (without the leading `cli`) for one aggregated point.

    --batch-size is the number of requests in flight (a closed loop at concurrency C keeps C);
    quant modes left None are inferred by aiconfigurator from the model's config.json.
    """
    argv = ["estimate", "--model-path", model_path, "--system", system, "--backend", backend,
            "--isl", str(isl), "--osl", str(osl), "--batch-size", str(batch_size), "--tp-size", str(tp)]
    if gemm_quant_mode:
        argv += ["--gemm-quant-mode", gemm_quant_mode]
    if kvcache_quant_mode:
        argv += ["--kvcache-quant-mode", kvcache_quant_mode]
    return argv + list(extra)


def default_argv(model_path: str, system: str, *, total_gpus: int, isl: int, osl: int, ttft_ms: float,
                 tpot_ms: float, backend: str = "vllm", save_dir: str | None = None) -> list[str]:
    """`aiconfigurator cli default` arguments: the best deployments of `total_gpus` GPUs within the SLA.

    Quant modes come from the model's config.json (this subcommand has no quant flags): for an FP8
    Llama-3.1-70B use the shipped nvidia/Llama-3.1-70B-Instruct-FP8.
    """
    argv = ["default", "--model-path", model_path, "--system", system, "--backend", backend,
            "--total-gpus", str(total_gpus), "--isl", str(isl), "--osl", str(osl),
            "--ttft", f"{ttft_ms:g}", "--tpot", f"{tpot_ms:g}"]
    return argv + (["--save-dir", save_dir] if save_dir else [])


@dataclass
class Output:
    """What one `aiconfigurator cli ...` printed (stdout and stderr together) and its exit code."""

    argv: list[str]
    rc: int
    text: str


def _env() -> dict[str, str]:
    # Offline: the models used here ship with aiconfigurator_core/model_configs/; plain text.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}


def run_many(python: Path, argvs: list[list[str]], *, one_process_each: bool = False,
             timeout_s: float = 600.0, progress=None) -> list[Output]:
    """Run `aiconfigurator cli ARGV` for each ARGV; answers in order. `progress(i, output)` if given."""
    outputs: list[Output] = []
    if one_process_each:
        exe = Path(python).parent / "aiconfigurator"
        for i, argv in enumerate(argvs):
            try:
                done = subprocess.run([str(exe), "cli", *argv], capture_output=True, text=True,
                                      env=_env(), timeout=timeout_s)
                out = Output(argv, done.returncode, done.stdout + done.stderr)
            except subprocess.TimeoutExpired:
                out = Output(argv, 124, f"timed out after {timeout_s:g} s")
            outputs.append(out)
            if progress:
                progress(i, out)
        return outputs
    proc = subprocess.Popen([str(python), str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    proc.stdin.write(json.dumps(argvs))
    proc.stdin.close()
    for line in proc.stdout:
        if not line.startswith(MARKER):
            continue
        rec = json.loads(line[len(MARKER):])
        out = Output(argvs[rec["i"]], rec["rc"], rec["text"])
        outputs.append(out)
        if progress:
            progress(rec["i"], out)
    err = proc.stderr.read()
    proc.wait()
    if len(outputs) != len(argvs):
        raise Unavailable(f"{DRIVER.name} stopped after {len(outputs)} of {len(argvs)} commands "
                          f"(exit {proc.returncode}): {_last_line(err)}")
    return outputs


_NUM = r"([0-9][0-9,]*(?:\.[0-9]+)?)"
_TTFT = re.compile(rf"^\s*TTFT:\s+{_NUM}\s*ms\s*$", re.M)
_TPOT = re.compile(rf"^\s*TPOT:\s+{_NUM}\s*ms\s*$", re.M)
_BACKEND = re.compile(r"^\s*Backend:\s+(\S+)\s+\(([^)]*)\)\s*$", re.M)
_QUANT = re.compile(r"Resolved quant modes for \S+: gemm=\w+\.(\w+) moe=\w+\.(\w+) kvcache=\w+\.(\w+) "
                    r"fmha=\w+\.(\w+)")
# argparse's "aiconfigurator estimate: error: ..." or an exception's last line "RuntimeError: OOM: ..."
_ERROR = re.compile(r"^(?:.*\berror: |[A-Za-z_.]*(?:Error|Exception): )(.*)$", re.M)


def _num(s: str) -> float:
    return float(s.replace(",", ""))


def parse_estimate(text: str) -> dict:
    """TTFT and TPOT (ms) from what `aiconfigurator cli estimate` printed, with what it resolved.

    Reads the "Performance Estimate" box (`TTFT:  334.160 ms`, `TPOT:  26.013 ms`,
    `Backend:  vllm (0.24.0)`) and the log line "Resolved quant modes for ...". Raises ValueError
    naming what is missing, with aiconfigurator's own error line when it printed one.
    """
    ttft, tpot = _TTFT.findall(text), _TPOT.findall(text)
    if not ttft or not tpot:
        errors = _ERROR.findall(text)
        why = errors[-1].strip() if errors else _last_line(text)
        raise ValueError(f"no {'TTFT' if not ttft else 'TPOT'} from aiconfigurator: {why}")
    out = {"ttft_ms": _num(ttft[-1]), "tpot_ms": _num(tpot[-1])}
    if m := _BACKEND.search(text):
        out["backend"], out["perf_db_version"] = m.group(1), m.group(2)
    if quants := _QUANT.findall(text):
        out["gemm"], out["moe"], out["kvcache"], out["fmha"] = quants[-1]
    out["kv_capacity_warning"] = "exceeds estimated KV cache capacity" in text
    return out


def read_best_configs(save_dir: Path | str) -> dict[str, list[dict]]:
    """The top configurations `aiconfigurator cli default --save-dir DIR` wrote, per mode ("agg", "disagg").

    Reads DIR/<model>/<run>/<mode>/best_config_topn.csv (one row a configuration, best first by
    tokens/s/gpu; agg columns include concurrency, bs, ttft, tpot, tokens/s/gpu, tp, pp, gemm,
    kvcache). Values stay strings, as written. Where DIR holds several runs, the newest wins.
    """
    found: dict[str, list[dict]] = {}
    paths = sorted(Path(save_dir).glob("**/best_config_topn.csv"), key=lambda q: q.stat().st_mtime)
    for path in paths:
        with open(path, newline="") as f:
            found[path.parent.name] = list(csv.DictReader(f))
    return found
