"""Real end-to-end vLLM runs on H200 GPUs (``sim/data/reference/vllm-silicon.csv``), simulated,
and the fit of the parameters that no operator table measures.

Each row is one closed-loop benchmark (see the NOTICE beside the file): ``concurrency`` clients,
each sending a request of ``isl`` prompt tokens for ``osl`` output tokens and the next one as
soon as it has the answer, on a ``vllm serve`` with ``--tensor-parallel-size tp``. The rows
report the mean TTFT and TPOT over the benchmark's requests.

How such a benchmark runs. The client sends its first ``concurrency`` requests at once: they are
prefilled in the same few steps and finish together (the first round, in lock step). On a real
server the clients then drift apart within a few rounds, and the rest of the benchmark runs out
of phase. A deterministic engine never drifts (:func:`sim.runner.spread_first_wave`), so the two
parts are simulated apart, with the serving front end (:mod:`sim.frontend`) in front of the
engine: the first round as it is sent (``closed_loop_start="together"``), and the steady state
with the clients out of phase (``"spread"``, measured after each client's first request). The
means of a benchmark of ``ROUNDS`` rounds weight them 1 to ``ROUNDS - 1``. The rows do not
record their request count. ``ROUNDS`` = 10 is what aiconfigurator's deployment guide says its
benchmarks use, so that the first batch of requests weighs less (``docs/dynamo_deployment_guide.md``,
since August 2025: ``num_requests`` = concurrency x 10); the 70B rows were measured in October 2025.
The benchmark script that aiconfigurator generates came later and sends more: C x 50 from
February 2026, C x 20 from April 2026 (``generator/config/backend_templates/benchmark/bench_run.sh.j2``:
aiperf ``--concurrency C --num-requests C x 20``, ``ignore_eos``). The dense rows side with the
guide: solved for the first round's share, each 70B row's real TTFT between its simulated first
round and steady state gives a median of 0.109 (docs/calibration.md). The script's warmup
(``--warmup-request-count C x 2``) runs before and apart: aiperf lets every warmup request
return before the measured requests start, again C at once.

Models: the ``Llama-3.1-70B`` rows name their precision (FP8 GEMMs) but not their checkpoint;
they run as nvidia/Llama-3.1-70B-Instruct-FP8, the Llama-3.1-70B FP8 checkpoint whose config the
same package ships (ModelOpt FP8 weights, FP8 KV cache). ``nvidia/Llama-3.1-8B-Instruct-FP8`` is
NVIDIA's FP8 checkpoint of the 8B.

The MoE rows (:data:`MOE_MODELS`) are simulated with the same tables and the same fitted values,
and never fitted to: they test a prediction. ``Qwen/Qwen3-235B-A22B-FP8`` (vLLM 0.12.0) runs as
its own checkpoint (FP8 block-scaled weights). ``GPT-OSS-120B`` (vLLM 0.18.0) runs as
openai/gpt-oss-120b: its experts are MXFP4 (the source's ``moe_quant_mode`` says nvfp4, a format
Hopper GPUs do not run; vLLM runs the checkpoint's MXFP4 experts there), everything else bfloat16.

The parallel layout of a row. The source (aiconfigurator's ``silicon_sample.csv``) records
``tp_size``, ``moe_tp_size`` and ``moe_ep_size``, with ``tp x dp = moe_tp x moe_ep``; the
``moe_tp`` column was carried over for that reason (:attr:`SiliconRow.data_parallel`). Of
the 51 Qwen3-235B rows, 19 are data-parallel: ``tp 1`` with ``moe_tp`` 2 or 4 (``dp`` 2 or 4;
235 GB of FP8 weights on one 141 GB H200 could not fit, but sharded over 2 or 4 GPUs they do) and
``tp 2`` with ``moe_tp 4`` (``dp 2``); 6 run with ``--enable-expert-parallel`` (``ep`` 2 or 4).
A DP row runs the engine's DP ranks (:mod:`sim.dp`: vLLM's load balancer, the ranks of a MoE
model in lockstep), each rank's step time pricing the experts over every rank's tokens
(:mod:`sim.ops.moe`).

The fit (:func:`fit`) moves only what no table measures, the same values for every row: the
engine core's host time (``overhead_s``, ``per_seq_s``) and the API server's
(``http_s``, ``tokenize_s_per_token``, ``detokenize_s_per_token``). Nothing is fitted per row,
per model, per GPU or per TP size.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from sim.config import EngineConfig
from sim.frontend import FrontendCoefficients
from sim.steptime import StepCoefficients

SILICON_CSV = Path(__file__).parent / "data" / "reference" / "vllm-silicon.csv"
GPU_NAMES = {"h200_sxm": "h200", "h100_sxm": "h100-80gb", "a100_sxm": "a100-80gb", "b200_sxm": "b200", "l40s": "l40s"}
# Silicon model name -> ServeLab model. Rows of other models are not simulated.
DENSE_MODELS = {
    "Llama-3.1-70B": "nvidia/Llama-3.1-70B-Instruct-FP8",
    "nvidia/Llama-3.1-8B-Instruct-FP8": "nvidia/Llama-3.1-8B-Instruct-FP8",
}
# The MoE rows: simulated and reported, never fitted to (issue 12).
MOE_MODELS = {
    "Qwen/Qwen3-235B-A22B-FP8": "Qwen/Qwen3-235B-A22B-FP8",
    "GPT-OSS-120B": "openai/gpt-oss-120b",
}
# Dense models that only the held-out check simulates (benchmarks/silicon_held_out.py: rows of
# silicon_sample.csv outside the reference file): never fitted to, not part of `validate`.
HELD_OUT_DENSE = {"Qwen/Qwen3-32B": "Qwen/Qwen3-32B"}
MODELS = {**DENSE_MODELS, **MOE_MODELS, **HELD_OUT_DENSE}
# vLLM turned asynchronous scheduling on by default in 0.14.0 (SchedulerConfig.async_scheduling:
# False in the 0.12.0 and 0.13.0 wheels, None, meaning on where supported, in 0.14.0); see
# :func:`async_scheduling`.
ASYNC_SCHEDULING_SINCE = (0, 14)
PROMPTS_PER_CLIENT = 4  # steady-state requests each client sends after its first (not counted)
ROUNDS = 10  # requests per client in the benchmark (see the module docstring)
TARGETS = {"ttft": 0.20, "tpot": 0.08}  # MAPE over the dense rows (issue 11)
MOE_TARGETS = {"ttft": 0.25, "tpot": 0.12}  # MAPE over the MoE rows (issue 12)

# What the fit may move, and within which bounds (seconds).
FIT_BOUNDS: dict[str, tuple[float, float]] = {
    "overhead_s": (0.0, 0.01),
    "per_seq_s": (0.0, 2e-4),
    "http_s": (0.0, 0.05),
    "tokenize_s_per_token": (0.0, 2e-5),
    "detokenize_s_per_token": (0.0, 3e-4),
}
HOST_FIELDS = ("overhead_s", "per_seq_s")


@dataclass(frozen=True, slots=True)
class SiliconRow:
    model: str
    gpu: str  # aiconfigurator's system name, e.g. h200_sxm
    vllm_version: str
    isl: int
    osl: int
    concurrency: int
    tp: int
    ep: int
    ttft_ms: float
    tpot_ms: float
    moe_tp: int = 1  # the MoE layers' tensor-parallel size (the source's moe_tp_size)

    @property
    def data_parallel(self) -> int:
        """The row's data-parallel size, which the source does not name but implies: vLLM shards a
        MoE layer over all ``dp x tp`` ranks, as ``moe_tp`` (tensor) times ``ep`` (expert) ranks, so
        ``dp = moe_tp x ep / tp`` (e.g. Qwen3-235B at tp 1 with moe_tp 2 ran on two GPUs, attention
        data-parallel). A dense model has no MoE layer: its rows record ``moe_tp`` 1, and ``dp`` is 1."""
        if self.dense:
            return 1
        return implied_data_parallel(self.tp, self.moe_tp, self.ep)

    @property
    def layout(self) -> str:
        return layout_label(self.tp, self.data_parallel, self.ep)

    @property
    def label(self) -> str:
        return f"{self.model.split('/')[-1]} {self.layout} {self.isl}/{self.osl} c{self.concurrency}"

    @property
    def dense(self) -> bool:
        return self.model in DENSE_MODELS or self.model in HELD_OUT_DENSE


def implied_data_parallel(tp: int, moe_tp: int, ep: int) -> int:
    """A MoE row's data-parallel size: vLLM shards the MoE layer over ``dp x tp`` GPUs as ``moe_tp x ep``."""
    return max(1, moe_tp * ep // tp)


def layout_label(tp: int, dp: int = 1, ep: int = 1) -> str:
    """``tp2 dp2 ep2``: the parts above 1 beside TP."""
    return f"tp{tp}" + (f" dp{dp}" if dp > 1 else "") + (f" ep{ep}" if ep > 1 else "")


def load_rows(path: str | Path = SILICON_CSV, dense_only: bool = True, moe_only: bool = False) -> list[SiliconRow]:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = SiliconRow(r["model"], r["gpu"], r["vllm_version"], int(r["isl"]), int(r["osl"]),
                             int(r["concurrency"]), int(r["tp"]), int(r["ep"]), float(r["ttft_ms"]),
                             float(r["tpot_ms"]), int(r.get("moe_tp") or 1))
            if moe_only:
                if row.model in MOE_MODELS:
                    rows.append(row)
            elif row.model in DENSE_MODELS or (row.model in MOE_MODELS and not dense_only):
                rows.append(row)
    return rows


def async_scheduling(row: SiliconRow) -> bool:
    """Whether the row's server scheduled asynchronously: its vLLM's default (aiconfigurator's
    generated ``vllm serve`` lines never set ``--async-scheduling``, and the rows record no
    flags). On from vLLM 0.14.0. A row that records no
    version ran before it: in aiconfigurator-core 0.12.0's ``silicon_sample.csv`` every such vLLM
    row says it was measured on 2025-10-29 (Llama-3.1-70B) or 2025-11-02 (gpt-oss-120b), and vLLM
    0.14.0 came out in January 2026."""
    try:
        version = tuple(int(part) for part in row.vllm_version.split(".")[:2])
    except (AttributeError, ValueError):
        return False
    return version >= ASYNC_SCHEDULING_SINCE


def row_config(row: SiliconRow, calibration: str | None = None) -> EngineConfig:
    config = EngineConfig(model=MODELS[row.model], gpu=GPU_NAMES[row.gpu], tensor_parallel_size=row.tp,
                          calibration=calibration, data_parallel_size=row.data_parallel,
                          enable_expert_parallel=row.ep > 1)
    if row.model in MOE_MODELS:
        # Only as many KV blocks as the row's clients can fill, twice over (a pool of a million
        # blocks, gpt-oss at TP 8, takes seconds to build and changes nothing: no row fills it).
        from sim.memory import plan_for_config

        need = 2 * row.concurrency * (-(-(row.isl + row.osl) // config.block_size) + 1)
        # gpt-oss's sliding-window layers would get vLLM's hybrid KV cache groups; with a cache the
        # row never fills they change no time, and the engine fast-forwards decode runs only
        # with one block table a request: --disable-hybrid-kv-cache-manager.
        config = replace(config, num_gpu_blocks_override=min(need, plan_for_config(config).full_attention_blocks),
                         disable_hybrid_kv_cache_manager=True)
    return config


def row_workload(row: SiliconRow, prompts_per_client: int = PROMPTS_PER_CLIENT, seed: int = 0):
    from sim.workload import WorkloadSpec, build_workload

    spec = WorkloadSpec(dataset_name="random", num_prompts=row.concurrency * (1 + prompts_per_client),
                        random_input_len=row.isl, random_output_len=row.osl, random_range_ratio=0.0,
                        request_rate=math.inf,
                        # The rows were taken with aiperf, not vLLM's client: its prompts are not
                        # recorded, and none is assumed to repeat another.
                        prompt_ids="independent")
    return build_workload(spec, np.random.default_rng(seed))


@dataclass(frozen=True)
class Setting:
    """What a simulation of the rows runs with: None takes the calibration profile's."""

    coefficients: StepCoefficients | None = None
    frontend: FrontendCoefficients | None = None
    calibration: str | None = None
    prompts_per_client: int = PROMPTS_PER_CLIENT
    seed: int = 0


def simulate_row(row: SiliconRow, setting: Setting = Setting()) -> dict:
    """The row's benchmark, simulated: the real and simulated means (ms), the errors, and the
    front end's share of the simulated TTFT."""
    from sim.calibration import coefficients_for, frontend_for
    from sim.catalog import get_gpu, get_model
    from sim.engine import run_engine
    from sim.runner import frontend_ttft_s

    config = row_config(row, setting.calibration)
    model, gpu = get_model(config.model), get_gpu(config.gpu)
    coefficients = setting.coefficients or coefficients_for(config, model, gpu)
    # The engine core's loop as the row's vLLM ran it (the fitted times stay the same).
    coefficients = replace(coefficients, async_scheduling=async_scheduling(row))
    frontend = setting.frontend if setting.frontend is not None else frontend_for(config, model, gpu)
    def means(result, skip: int) -> tuple[float, float, float]:
        order = np.argsort(result.arrival_s, kind="stable")[skip:]
        out = result.output_len[order]
        many = out > 1
        tpot = (result.finish_s[order] - result.first_token_s[order])[many] / (out[many] - 1)
        return (float(result.ttft_s[order].mean()), float(tpot.mean()),
                float(frontend_ttft_s(result)[order].mean()))

    runs = {}
    for start, extra_rounds in (("together", 0), ("spread", setting.prompts_per_client)):
        result = run_engine(config, row_workload(row, extra_rounds, setting.seed), seed=setting.seed, usage="serve",
                            max_concurrency=row.concurrency, coefficients=coefficients, frontend=frontend,
                            closed_loop_start=start)
        runs[start] = means(result, 0 if start == "together" else row.concurrency)
    w = 1 / ROUNDS
    ttft, tpot, front = (w * a + (1 - w) * b for a, b in zip(runs["together"], runs["spread"]))
    return {
        "model": row.model, "gpu": row.gpu, "isl": row.isl, "osl": row.osl, "concurrency": row.concurrency,
        "tp": row.tp, "ep": row.ep, "dp": row.data_parallel, "label": row.label, "moe": not row.dense,
        "real_ttft_ms": row.ttft_ms, "real_tpot_ms": row.tpot_ms, "sim_ttft_ms": ttft * 1e3, "sim_tpot_ms": tpot * 1e3,
        "ttft_error": ttft * 1e3 / row.ttft_ms - 1, "tpot_error": tpot * 1e3 / row.tpot_ms - 1,
        "sim_frontend_ttft_ms": front * 1e3,
        "first_round_ttft_ms": runs["together"][0] * 1e3, "steady_ttft_ms": runs["spread"][0] * 1e3,
    }


def _simulate(args) -> dict:  # top level: picklable for a process pool
    row, setting, keep_going = args
    if not keep_going:
        return simulate_row(row, setting)
    try:
        return simulate_row(row, setting)
    except Exception as exc:  # a refused configuration: say why, go on with the others
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}


def simulate_rows(rows: Iterable[SiliconRow], setting: Setting = Setting(), map_fn: Callable = map,
                  keep_going: bool = False) -> list[dict]:
    """Every row, in order. ``map_fn`` may be a process pool's ``map``. Rows that repeat a
    benchmark (the same model, lengths, clients and layout; the file has some, measured twice)
    are simulated once. With ``keep_going``, a row that cannot be simulated gives
    ``{"error": why}`` instead of stopping the others."""
    rows = list(rows)
    first = {}
    for r in rows:
        first.setdefault(bench_key(r), r)
    # The longest runs first, so that a process pool does not end waiting on one of them.
    unique = sorted(first, key=lambda k: -first[k].osl * first[k].data_parallel)
    done = dict(zip(unique, map_fn(_simulate, [(first[k], setting, keep_going) for k in unique])))
    out = []
    for r in rows:
        sim = done[bench_key(r)]
        if "error" in sim:
            out.append(dict(sim))
            continue
        res = dict(sim, real_ttft_ms=r.ttft_ms, real_tpot_ms=r.tpot_ms,
                   ttft_error=sim["sim_ttft_ms"] / r.ttft_ms - 1, tpot_error=sim["sim_tpot_ms"] / r.tpot_ms - 1)
        out.append(res)
    return out


def bench_key(r: SiliconRow) -> tuple:
    """What makes a row's benchmark: rows with the same key repeat one benchmark."""
    return (r.model, r.gpu, r.isl, r.osl, r.concurrency, r.tp, r.ep, r.moe_tp, async_scheduling(r))


def mape(results: list[dict], key: Callable[[dict], str] | None = None) -> dict[str, dict[str, float]]:
    """MAPE of TTFT and TPOT, per group (``key(row)``) and ``overall``."""
    groups: dict[str, list[dict]] = {"overall": list(results)}
    if key is not None:
        for r in results:
            groups.setdefault(key(r), []).append(r)
    return {name: {"ttft": float(np.mean([abs(r["ttft_error"]) for r in rs])),
                   "tpot": float(np.mean([abs(r["tpot_error"]) for r in rs])), "rows": len(rs)}
            for name, rs in groups.items() if rs}


# -- the fit ---------------------------------------------------------------------------------
@dataclass
class FitResult:
    coefficients: StepCoefficients
    frontend: FrontendCoefficients
    results: list[dict]  # per row, at the fitted values
    num_evaluations: int


def loss(results: list[dict]) -> float:
    """Mean absolute log error of TTFT and TPOT over the rows (the log treats 2x too high and
    2x too low alike; absolute, so that one row that no setting can match does not dominate)."""
    return float(np.mean([abs(math.log1p(r["ttft_error"])) + abs(math.log1p(r["tpot_error"])) for r in results]) / 2)


def fit(rows: list[SiliconRow], start: Setting, max_evaluations: int = 60, map_fn: Callable = map,
        progress: Callable[[int, float], None] | None = None) -> FitResult:
    """Fit the host and front-end values to ``rows`` (Nelder-Mead on each value's position in
    its bounds; the simulator runs at every evaluation)."""
    from scipy.optimize import minimize

    c0 = start.coefficients or StepCoefficients()
    f0 = start.frontend or FrontendCoefficients()
    names = list(FIT_BOUNDS)
    lo = np.array([FIT_BOUNDS[n][0] for n in names])
    hi = np.array([FIT_BOUNDS[n][1] for n in names])
    x0 = np.array([getattr(c0 if n in HOST_FIELDS else f0, n) for n in names], dtype=float)
    u0 = np.clip((x0 - lo) / (hi - lo), 0.02, 0.98)
    seen: dict[tuple, tuple[float, list[dict]]] = {}

    def setting(u) -> Setting:
        x = lo + np.clip(u, 0, 1) * (hi - lo)
        values = dict(zip(names, (float(v) for v in x)))
        c = replace(c0, **{n: values[n] for n in HOST_FIELDS})
        f = FrontendCoefficients(**{n: values[n] for n in names if n not in HOST_FIELDS})
        return replace(start, coefficients=c, frontend=f)

    def objective(u) -> float:
        key = tuple(np.round(np.clip(u, 0, 1), 6))
        if key not in seen:
            results = simulate_rows(rows, setting(u), map_fn)
            seen[key] = (loss(results), results)
            if progress:
                progress(len(seen), seen[key][0])
        return seen[key][0]

    opt = minimize(objective, u0, method="Nelder-Mead",
                   options={"maxfev": max_evaluations, "xatol": 0.01, "fatol": 1e-3, "initial_simplex": None})
    best = min(seen, key=lambda k: seen[k][0])
    final = setting(np.array(best))
    return FitResult(final.coefficients, final.frontend, seen[best][1], len(seen))


def profile_entry(result: FitResult, rows: list[SiliconRow], command: str, date: str) -> dict:
    """The calibration-profile entry a fit writes (sim/data/calibration.yaml's operator entry)."""
    c = result.coefficients
    m = mape(result.results, key=lambda r: r["model"])
    return {
        "name": "operators default (engine core and API server, fitted to real vLLM runs on H200)",
        "coefficients": {"step_model": "operators", "async_scheduling": True,
                         "overhead_s": float(f"{c.overhead_s:.4g}"), "per_seq_s": float(f"{c.per_seq_s:.4g}")},
        "frontend": {k: float(f"{v:.4g}") for k, v in asdict(result.frontend).items()},
        "provenance": {
            "fitted_to": f"the {len(rows)} dense rows of sim/data/reference/vllm-silicon.csv "
                         "(aiconfigurator-core 0.12.0, real vLLM runs on H200)",
            "method": "sim.silicon.fit: Nelder-Mead on the mean absolute log error of mean TTFT and TPOT, "
                      "the simulator run at every evaluation; the same values for every row",
            "command": command, "date": date, "evaluations": result.num_evaluations,
            "mape": {k: {"ttft": round(v["ttft"], 4), "tpot": round(v["tpot"], 4)} for k, v in m.items()},
        },
    }
