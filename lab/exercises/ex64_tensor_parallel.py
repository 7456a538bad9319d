"""Check for exercise 6.4: vLLM with tensor parallelism across 2 GPUs, and the gain reported.

The student hands in ``deployment.yaml`` (a Deployment running ``vllm serve`` with the flags they
chose) and ``report.yaml`` (the GPU, the benchmark and the throughput they measured with TP 1 and
TP 2). The check reads the flags as vLLM would, checks what a Kubernetes pod needs for tensor
parallelism (as many GPUs as ranks, a large ``/dev/shm``), runs the same benchmark in the
simulator at TP 1 and TP 2 (``sim.engine.run_engine``, offline, as ``vllm bench throughput``),
and compares the gain they report with the simulated one.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from lab.exercises import Finding
from lab.exercises.yaml_docs import dig, find_kind, load_docs
from sim.errors import ServeLabError
from sim.human_readable import parse_int, parse_max_model_len

# A reported gain within this fraction of the simulated one passes. Runs of the same benchmark
# in ServeLab repeat exactly, so this only has to absorb a different seed or number of prompts
# and recalibration of the step-time model between ServeLab versions.
GAIN_TOLERANCE = 0.15
MAX_PROMPTS = 2000  # keeps the check under a few seconds

FLAG_TO_FIELD = {
    "--tensor-parallel-size": ("tensor_parallel_size", int),
    "-tp": ("tensor_parallel_size", int),
    "--max-model-len": ("max_model_len", parse_max_model_len),  # vLLM's 32k, 32K, ... (sim.human_readable)
    "--gpu-memory-utilization": ("gpu_memory_utilization", float),
    "--max-num-seqs": ("max_num_seqs", int),
    "--max-num-batched-tokens": ("max_num_batched_tokens", parse_int),
    "--block-size": ("block_size", int),
}


def parse_vllm_serve(argv: list[str]) -> tuple[str | None, dict, list[str]]:
    """(model, EngineConfig fields, ignored flags) from a ``vllm serve`` command line."""
    model = None
    fields: dict = {}
    ignored: list[str] = []
    if "serve" in argv:
        rest = argv[argv.index("serve") + 1 :]
    else:  # python3 -m vllm.entrypoints.openai.api_server --model X ...: flags from the first one
        rest = argv[next((i for i, a in enumerate(argv) if a.startswith("--")), len(argv)) :]
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("-"):
            if model is None:
                model = token
            i += 1
            continue
        name, eq, value = token.partition("=")
        if name == "--enable-prefix-caching":
            fields["enable_prefix_caching"] = True
        elif name == "--no-enable-prefix-caching":
            fields["enable_prefix_caching"] = False
        elif name in ("--model",) or name in FLAG_TO_FIELD:
            if not eq:
                i += 1
                value = rest[i] if i < len(rest) else ""
            if name == "--model":
                model = value
            else:
                field, kind = FLAG_TO_FIELD[name]
                try:
                    fields[field] = kind(value)
                except ValueError as exc:
                    human = kind in (parse_int, parse_max_model_len)
                    reason = str(exc) if human else f"expected a number, got {value!r}"
                    raise ServeLabError(f"{name}: {reason}") from None
        else:
            ignored.append(name)
            # A flag's value, if it has one, is the next token that is not a flag.
            if not eq and i + 1 < len(rest) and not rest[i + 1].startswith("-"):
                i += 1
        i += 1
    return model, fields, ignored


def check(folder: Path, progress) -> tuple[list[Finding], dict]:
    findings: list[Finding] = []
    docs, problem = load_docs(folder / "deployment.yaml")
    if problem:
        return [problem], {}
    report_docs, problem = load_docs(folder / "report.yaml")
    if problem:
        return [problem], {}
    report = report_docs[0] if report_docs else {}

    deployment = find_kind(docs, "Deployment")
    if deployment is None:
        return [Finding(False, "no Deployment", "deployment.yaml: kind", "write an apps/v1 Deployment running vllm serve")], {}
    containers = dig(deployment, "spec.template.spec.containers", []) or []
    vllm = next(
        (c for c in containers if "vllm" in " ".join(map(str, (c.get("command") or []) + (c.get("args") or []) + [c.get("image", "")]))),
        None,
    )
    if vllm is None:
        return [
            Finding(False, "no container runs vllm", "deployment.yaml: spec.template.spec.containers", "run the vllm/vllm-openai image with command [vllm, serve]")
        ], {}
    index = containers.index(vllm)
    cpath = f"spec.template.spec.containers[{index}]"
    argv = [str(a) for a in (vllm.get("command") or [])] + [str(a) for a in (vllm.get("args") or [])]
    if len(argv) == 1 and " " in argv[0]:
        argv = shlex.split(argv[0])
    try:
        model, fields, ignored = parse_vllm_serve(argv)
    except ServeLabError as exc:
        return [Finding(False, str(exc), f"deployment.yaml: {cpath}.args", "give the flag a number")], {}
    if model is None:
        return [Finding(False, "vllm serve is given no model", f"deployment.yaml: {cpath}.args", "put the model name right after serve")], {}
    tp = fields.get("tensor_parallel_size", 1)
    findings.append(
        Finding(
            tp == 2,
            f"--tensor-parallel-size is {tp}" + (" (not set: vLLM's default is 1)" if "tensor_parallel_size" not in fields else ""),
            f"deployment.yaml: {cpath}.args",
            "add --tensor-parallel-size=2 to split every layer across 2 GPUs",
        )
    )
    gpus = dig(vllm, "resources.limits", {}) or {}
    limit = gpus.get("nvidia.com/gpu")
    try:
        limit_n = int(limit) if limit is not None else 0
    except (TypeError, ValueError):
        limit_n = -1
    findings.append(
        Finding(
            limit_n == tp,
            f"the pod asks for {limit if limit is not None else 'no'} GPU(s) (resources.limits nvidia.com/gpu) for "
            f"{tp} tensor-parallel rank(s)",
            f"deployment.yaml: {cpath}.resources.limits",
            f"set nvidia.com/gpu: {tp}; each rank needs its own GPU in the same pod, or vLLM fails at start-up",
        )
    )
    if tp > 1:
        findings.append(_shm_finding(deployment, vllm, cpath))

    # The report.
    gpu_name = report.get("gpu")
    bench = report.get("benchmark") or {}
    reported = {k: _number(dig(report, f"{k}.requests_per_second")) for k in ("tp1", "tp2")}
    gain = _number(report.get("throughput_gain"))
    missing = [
        path
        for path, value in (
            ("gpu", gpu_name),
            ("benchmark.input_len", bench.get("input_len")),
            ("benchmark.output_len", bench.get("output_len")),
            ("benchmark.num_prompts", bench.get("num_prompts")),
            ("tp1.requests_per_second", reported["tp1"]),
            ("tp2.requests_per_second", reported["tp2"]),
            ("throughput_gain", gain),
        )
        if value is None
    ]
    if missing:
        findings.append(
            Finding(
                False,
                f"report.yaml misses {', '.join(missing)}",
                f"report.yaml: {missing[0]}",
                "run servelab bench throughput at TP 1 and TP 2 (see README.md) and fill in the numbers",
            )
        )
        return findings, {}
    if abs(gain - reported["tp2"] / reported["tp1"]) > 0.01 * gain:
        findings.append(
            Finding(
                False,
                f"throughput_gain {gain:g} is not tp2 / tp1 = {reported['tp2'] / reported['tp1']:.2f}",
                "report.yaml: throughput_gain",
                "report the ratio of your two measurements",
            )
        )

    from sim.catalog import get_gpu, get_model
    from sim.config import EngineConfig

    try:
        get_model(model)
        get_gpu(str(gpu_name))
        base = EngineConfig(model=model, gpu=str(gpu_name), **{k: v for k, v in fields.items() if k != "tensor_parallel_size"})
        get_model(model).check_tensor_parallel(tp)
    except ServeLabError as exc:
        findings.append(Finding(False, str(exc), f"deployment.yaml: {cpath}.args", "use a model, GPU and tensor-parallel size from the catalog"))
        return findings, {}
    try:
        lengths = tuple(int(bench[k]) for k in ("input_len", "output_len", "num_prompts"))
    except (TypeError, ValueError):
        findings.append(Finding(False, "benchmark lengths must be whole numbers", "report.yaml: benchmark", "write input_len, output_len, num_prompts as integers"))
        return findings, {}
    num_prompts = min(lengths[2], MAX_PROMPTS)
    sims = {}
    for rank in (1, 2):
        progress(f"simulating vllm bench throughput at --tensor-parallel-size {rank}")
        try:
            sims[rank] = _throughput(base.with_(tensor_parallel_size=rank), lengths[0], lengths[1], num_prompts)
        except ServeLabError as exc:
            findings.append(
                Finding(
                    False,
                    f"at --tensor-parallel-size {rank}: {exc}",
                    f"deployment.yaml: {cpath}.args",
                    "pick a model that fits on one GPU (this exercise compares 1 GPU with 2) or lower --max-model-len",
                )
            )
            return findings, {}
    simulated_gain = sims[2]["requests_per_second"] / sims[1]["requests_per_second"]
    findings.append(
        Finding(
            True,
            f"simulated on {gpu_name}: TP 1 {sims[1]['requests_per_second']:.2f} req/s with {sims[1]['num_gpu_blocks']:,} KV "
            f"blocks, TP 2 {sims[2]['requests_per_second']:.2f} req/s with {sims[2]['num_gpu_blocks']:,} KV blocks per GPU: "
            f"{simulated_gain:.2f}x ({simulated_gain / 2:.0%} of linear per GPU)",
            info=True,
        )
    )
    off = gain / simulated_gain - 1
    hint = (
        "tensor parallelism splits the weights, so each GPU has more memory left for KV cache and the batch can grow: "
        "the gain can exceed 2x"
        if simulated_gain > 2
        else "the all-reduce after every layer costs time, so the gain stays under 2x"
    )
    findings.append(
        Finding(
            abs(off) <= GAIN_TOLERANCE,
            f"you report {gain:.2f}x, the simulator gives {simulated_gain:.2f}x ({off:+.0%}; tolerance ±{GAIN_TOLERANCE:.0%})",
            "report.yaml: throughput_gain",
            f"measure both runs with the same benchmark and flags rather than assuming linear scaling; {hint}",
        )
    )
    details = {
        "comparison": [
            {"tensor_parallel_size": rank, **sims[rank], "reported_requests_per_second": reported[f"tp{rank}"]}
            for rank in (1, 2)
        ]
    }
    return findings, details


def _shm_finding(deployment: dict, container: dict, cpath: str) -> Finding:
    volumes = {v.get("name"): v for v in dig(deployment, "spec.template.spec.volumes", []) or [] if isinstance(v, dict)}
    mount = next((m for m in container.get("volumeMounts") or [] if m.get("mountPath") == "/dev/shm"), None)
    ok = mount is not None and dig(volumes.get(mount.get("name"), {}), "emptyDir.medium") == "Memory"
    return Finding(
        ok,
        "/dev/shm is a memory-backed emptyDir" if ok else "no memory-backed volume at /dev/shm",
        f"deployment.yaml: {cpath}.volumeMounts",
        "mount an emptyDir {medium: Memory} at /dev/shm: tensor-parallel ranks exchange data through shared "
        "memory (NCCL), and a container's default 64 MiB is too small",
    )


def _number(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _throughput(config, input_len: int, output_len: int, num_prompts: int) -> dict:
    import numpy as np

    from sim.engine import run_engine
    from sim.workload import WorkloadSpec, build_workload

    workload = build_workload(
        WorkloadSpec(
            dataset_name="random",
            num_prompts=num_prompts,
            random_input_len=input_len,
            random_output_len=output_len,
        ),
        np.random.default_rng(0),
    )
    result = run_engine(config, workload, seed=0, usage="offline")
    return {
        "requests_per_second": round(len(result.finish_s) / result.elapsed_s, 4),
        "num_gpu_blocks": int(result.memory.num_gpu_blocks),
        "elapsed_time": round(float(result.elapsed_s), 4),
    }
