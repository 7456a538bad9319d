"""Drive vLLM's own V1 Scheduler and KVCacheManager through a scheduling trace, on the CPU.

Runs inside the reference venv (.venv-vllm, made by scripts/setup-vllm-reference) and never
imports servelab: it is the "ground truth" half of the decision-for-decision comparison in
tests/test_vllm_reference.py. The trace and the decisions format are documented in README.md
beside this file.

    .venv-vllm/bin/python tools/vllm_reference/driver.py trace.json > decisions.json
    .venv-vllm/bin/python tools/vllm_reference/driver.py < batch.json > results.json

What is real and what is faked:
- real: vllm.v1.core.sched.scheduler.Scheduler (the synchronous one, as EngineCore builds it
  when async scheduling is off), its KVCacheManager, BlockPool, request block hashing (sha256,
  vLLM's default), Request and SamplingParams;
- faked: the model runner. Every step it returns one sampled token for each scheduled request
  whose prefill is complete after the step (a chunk that ends inside the prompt samples
  nothing, as the GPU model runner discards it), with a token id that is a pure function of
  the request id and the token's output position (see sampled_token_id).
- the frontend: requests are added to the scheduler directly. n > 1 is fanned out into n
  child requests here, named "{k}_{parent_id}" in order k = 0..n-1, exactly as
  vllm/v1/engine/parallel_sampling.py ParentRequest.get_child_info does. A prompt of
  max_model_len tokens or more is rejected, as vllm/v1/engine/input_processor.py
  _validate_prompt_len does; the rejection is recorded in the result.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
# Keep the driver's stdout clean (JSON only) and its stderr short.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
# The model is a local config.json; nothing may be fetched from a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import vllm  # noqa: E402
from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.utils.hashing import get_hash_fn_by_name  # noqa: E402
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.kv_cache_interface import (  # noqa: E402
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    SlidingWindowSpec,
)
from vllm.v1.metrics.stats import PrefixCacheStats  # noqa: E402
from vllm.v1.outputs import ModelRunnerOutput  # noqa: E402
from vllm.v1.request import Request, RequestStatus  # noqa: E402
from vllm.v1.structured_output import StructuredOutputManager  # noqa: E402

TRACE_FORMAT = "servelab-sched-trace/1"
DECISIONS_FORMAT = "servelab-sched-decisions/1"
TINY_MODEL_DIR = Path(__file__).resolve().parent / "tiny_model"
VOCAB_SIZE = 32000  # tiny_model/config.json
HASH_ALGO = "sha256"  # vLLM's default --prefix-caching-hash-algo
DEFAULT_MAX_STEPS = 20_000
ENGINE_KEYS = (
    "block_size",
    "num_gpu_blocks",
    "enable_prefix_caching",
    "enable_chunked_prefill",
    "max_num_batched_tokens",
    "max_num_seqs",
    "max_model_len",
    "long_prefill_token_threshold",
)


class TraceError(ValueError):
    """The trace is not in the documented format."""


def sampled_token_id(request_id: str, output_index: int) -> int:
    """The fake model's sampled token: a pure function of request id and output position.

    The same formula as ServeLab's synthetic tokens (sim/request.py ``synthetic_token`` with
    the key ``crc32(request_id)``), so both sides produce the very same sequences. Requests
    ignore EOS (as ServeLab's do), so a sampled id that happens to equal EOS changes nothing.
    """
    key = zlib.crc32(request_id.encode())
    return (key * 2654435761 + output_index * 40503 + 12345) % VOCAB_SIZE


def expand_requests(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """The trace's requests as the engine core sees them: n > 1 fanned out, in add order."""
    out: list[dict[str, Any]] = []
    for i, req in enumerate(trace["requests"]):
        for key in ("request_id", "prompt_token_ids", "max_tokens", "arrival_step"):
            if key not in req:
                raise TraceError(f"requests[{i}]: missing field '{key}'")
        n = int(req.get("n", 1))
        if n < 1:
            raise TraceError(f"requests[{i}].n: expected >= 1, found {n}")
        ids = [req["request_id"]] if n == 1 else [f"{k}_{req['request_id']}" for k in range(n)]
        for rid in ids:
            out.append(
                {
                    "request_id": rid,
                    "prompt_token_ids": list(req["prompt_token_ids"]),
                    "max_tokens": int(req["max_tokens"]),
                    "arrival_step": int(req["arrival_step"]),
                    "arrival_time": float(req.get("arrival_time", req["arrival_step"])),
                    "priority": int(req.get("priority", 0)),
                    "abort_step": req.get("abort_step"),
                }
            )
    # Stable: requests arriving in the same step keep their trace order.
    out.sort(key=lambda r: r["arrival_step"])
    return out


_MODEL_CONFIGS: dict[int, ModelConfig] = {}


def _model_config(max_model_len: int) -> ModelConfig:
    # Building a ModelConfig inspects the architecture (slow); reuse it per max_model_len.
    if max_model_len not in _MODEL_CONFIGS:
        _MODEL_CONFIGS[max_model_len] = ModelConfig(
            model=str(TINY_MODEL_DIR),
            skip_tokenizer_init=True,
            max_model_len=max_model_len,
            dtype="float32",
        )
    return _MODEL_CONFIGS[max_model_len]


def build_scheduler(engine: dict[str, Any]) -> Scheduler:
    """vLLM's synchronous Scheduler with exactly engine['num_gpu_blocks'] KV blocks."""
    missing = [k for k in ENGINE_KEYS if k not in engine]
    if missing:
        raise TraceError(f"engine: missing field(s) {', '.join(missing)}")
    block_size = int(engine["block_size"])
    num_blocks = int(engine["num_gpu_blocks"])
    max_model_len = int(engine["max_model_len"])
    model_config = _model_config(max_model_len)
    scheduler_config = SchedulerConfig(
        max_model_len=max_model_len,
        is_encoder_decoder=False,
        max_num_batched_tokens=int(engine["max_num_batched_tokens"]),
        max_num_seqs=int(engine["max_num_seqs"]),
        long_prefill_token_threshold=int(engine["long_prefill_token_threshold"]),
        enable_chunked_prefill=bool(engine["enable_chunked_prefill"]),
        policy=engine.get("policy", "fcfs"),
        async_scheduling=False,
    )
    cache_config = CacheConfig(
        block_size=block_size,
        enable_prefix_caching=bool(engine["enable_prefix_caching"]),
        prefix_caching_hash_algo=HASH_ALGO,
    )
    vllm_config = VllmConfig(
        model_config=model_config,
        cache_config=cache_config,
        scheduler_config=scheduler_config,
    )
    # EngineCore sets this after profiling; here it is given.
    vllm_config.cache_config.num_gpu_blocks = num_blocks
    kv_cache_config = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=_kv_cache_groups(engine, block_size),
    )
    return Scheduler(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=block_size,
        hash_block_size=block_size,
        # log_stats turns on the prefix-cache counters (KVCacheManager.prefix_cache_stats).
        log_stats=True,
    )


def _kv_cache_groups(engine: dict[str, Any], block_size: int) -> list[KVCacheGroupSpec]:
    """One full-attention group, or the trace's ``kv_cache_groups`` (a hybrid model): a list of
    ``{"sliding_window": W or null}``, one group of one layer each, all of the same page size,
    so that vLLM builds its HybridKVCacheCoordinator over one shared block pool."""
    groups = engine.get("kv_cache_groups") or [{"sliding_window": None}]
    out = []
    for i, group in enumerate(groups):
        window = group.get("sliding_window")
        if window:
            spec = SlidingWindowSpec(block_size=block_size, num_kv_heads=2, head_size=64,
                                     dtype=torch.float32, sliding_window=int(window))
        else:
            spec = FullAttentionSpec(block_size=block_size, num_kv_heads=2, head_size=64,
                                     dtype=torch.float32)
        out.append(KVCacheGroupSpec([f"model.layers.{i}.self_attn.attn"], spec))
    return out


def effective_config(sched: Scheduler) -> dict[str, Any]:
    """What the scheduler actually runs with, read back from it (recorded in the output)."""
    sc = sched.scheduler_config
    cc = sched.cache_config
    return {
        "scheduler_cls": f"{type(sched).__module__}.{type(sched).__qualname__}",
        "async_scheduling": bool(sc.async_scheduling),
        "policy": str(sc.policy),
        "max_num_batched_tokens": sc.max_num_batched_tokens,
        "max_num_scheduled_tokens": sched.max_num_scheduled_tokens,
        "max_num_seqs": sc.max_num_seqs,
        "long_prefill_token_threshold": sc.long_prefill_token_threshold,
        "enable_chunked_prefill": sc.enable_chunked_prefill,
        "scheduler_reserve_full_isl": sc.scheduler_reserve_full_isl,
        "watermark": sc.watermark,
        "prefill_schedule_interval": sc.prefill_schedule_interval,
        "max_model_len": sched.max_model_len,
        "use_v2_model_runner": bool(sched.use_v2_model_runner),
        "block_size": sched.block_size,
        "num_gpu_blocks": cc.num_gpu_blocks,
        "enable_prefix_caching": cc.enable_prefix_caching,
        "prefix_caching_hash_algo": cc.prefix_caching_hash_algo,
        "kv_cache_coordinator": type(sched.kv_cache_manager.coordinator).__name__,
    }


def run_trace(trace: dict[str, Any]) -> dict[str, Any]:
    """Run one trace; returns {"steps": [...], "rejected": [...], ...} (README.md)."""
    if not isinstance(trace, dict) or "engine" not in trace or "requests" not in trace:
        raise TraceError("a trace is an object with 'engine' and 'requests'")
    engine = trace["engine"]
    sched = build_scheduler(engine)
    # Observe the preemption order (SchedulerOutput.preempted_req_ids is a set): wrap the
    # scheduler's own _preempt_request on this instance; it still does all the work.
    preempt_log: list[str] = []
    original_preempt = sched._preempt_request

    def _logged_preempt(request, *args, **kwargs):
        preempt_log.append(request.request_id)
        return original_preempt(request, *args, **kwargs)

    sched._preempt_request = _logged_preempt
    max_model_len = int(engine["max_model_len"])
    block_hasher = None
    if engine["enable_prefix_caching"]:
        hash_fn = get_hash_fn_by_name(HASH_ALGO)
        init_none_hash(hash_fn)
        block_hasher = get_request_block_hasher(int(engine["block_size"]), hash_fn)

    pending = expand_requests(trace)
    requests: dict[str, Request] = {}
    rejected: list[str] = []
    steps: list[dict[str, Any]] = []
    max_steps = int(trace.get("max_steps", DEFAULT_MAX_STEPS))
    stalled = False
    step = 0
    next_arrival = 0
    while next_arrival < len(pending) or sched.has_unfinished_requests():
        if step >= max_steps:
            stalled = True
            break
        while next_arrival < len(pending) and pending[next_arrival]["arrival_step"] <= step:
            spec = pending[next_arrival]
            next_arrival += 1
            if len(spec["prompt_token_ids"]) >= max_model_len:
                rejected.append(spec["request_id"])
                continue
            req = Request(
                request_id=spec["request_id"],
                prompt_token_ids=spec["prompt_token_ids"],
                sampling_params=SamplingParams(max_tokens=spec["max_tokens"], ignore_eos=True),
                pooling_params=None,
                arrival_time=spec["arrival_time"],
                priority=spec["priority"],
                block_hasher=block_hasher,
            )
            requests[req.request_id] = req
            sched.add_request(req)
        # Aborts (a client went away), one id at a time in trace order: finish_requests
        # iterates a set when given several, which would make the free order arbitrary.
        aborted = []
        for spec in pending[:next_arrival]:
            if spec["abort_step"] == step and spec["request_id"] in requests:
                if sched.finish_requests(spec["request_id"], RequestStatus.FINISHED_ABORTED):
                    aborted.append(spec["request_id"])
        if not sched.has_unfinished_requests():
            # EngineCore.step does not schedule when it has no requests: an idle step.
            step += 1
            continue
        record = _one_step(sched, requests, step, preempt_log)
        record["aborted"] = aborted
        steps.append(record)
        step += 1
    return {
        "name": trace.get("name"),
        "effective_config": effective_config(sched),
        "steps": steps,
        "rejected": rejected,
        "stalled": stalled,
        "num_steps": step,
    }


def _one_step(
    sched: Scheduler, requests: dict[str, Request], step: int, preempt_log: list[str]
) -> dict[str, Any]:
    kv = sched.kv_cache_manager
    preempt_log.clear()
    # Fresh counters, so that what schedule() records is this step's admissions only.
    kv.prefix_cache_stats = PrefixCacheStats()
    running_before = {r.request_id for r in sched.running}
    out = sched.schedule()
    num_free_after_schedule = kv.block_pool.get_num_free_blocks()
    stats = kv.prefix_cache_stats

    scheduled = [[rid, n] for rid, n in out.num_scheduled_tokens.items()]
    # Admitted this step: scheduled but not running before. First admission or resumption
    # after preemption (read from the request, as the V2 model runner's output merges both).
    admitted = [rid for rid in out.num_scheduled_tokens if rid not in running_before]
    new_ids = [rid for rid in admitted if requests[rid].num_preemptions == 0]
    resumed_ids = [rid for rid in admitted if requests[rid].num_preemptions > 0]
    preempted = list(preempt_log)
    if set(preempted) != set(out.preempted_req_ids):
        raise RuntimeError(f"preemption log {preempted} != {sorted(out.preempted_req_ids)}")
    cached = {
        rid: requests[rid].num_computed_tokens - out.num_scheduled_tokens[rid]
        for rid in new_ids + resumed_ids
    }

    # The fake model runner.
    req_ids = list(out.num_scheduled_tokens)
    sampled: list[list[int]] = []
    for rid in req_ids:
        req = requests[rid]
        if req.num_computed_tokens >= req.num_tokens:
            sampled.append([sampled_token_id(rid, req.num_output_tokens)])
        else:
            sampled.append([])  # a prefill chunk that ends inside the sequence
    runner_out = ModelRunnerOutput(
        req_ids=req_ids,
        req_id_to_index={rid: i for i, rid in enumerate(req_ids)},
        sampled_token_ids=sampled,
    )
    sched.update_from_output(out, runner_out)
    finished = [rid for rid in req_ids if requests[rid].is_finished()]
    finish_reasons = {rid: _finish_reason(requests[rid].status) for rid in finished}
    return {
        "step": step,
        "scheduled": scheduled,
        "new": new_ids,
        "resumed": resumed_ids,
        "preempted": preempted,
        "cached_tokens": cached,
        "finished": finished,
        "finish_reasons": finish_reasons,
        "num_running": len(sched.running),
        "num_waiting": len(sched.waiting),
        "kv_free_blocks_after_schedule": num_free_after_schedule,
        "kv_free_blocks": kv.block_pool.get_num_free_blocks(),
        "kv_usage": round(kv.usage, 9),
        "prefix_queries": stats.queries,
        "prefix_hits": stats.hits,
        "preempted_prefix_queries": stats.preempted_queries,
        "preempted_prefix_hits": stats.preempted_hits,
    }


def _finish_reason(status: RequestStatus) -> str:
    if status == RequestStatus.FINISHED_LENGTH_CAPPED:
        return "length"
    if status == RequestStatus.FINISHED_STOPPED:
        return "stop"
    if status == RequestStatus.FINISHED_ABORTED:
        return "abort"
    return str(status)


def run(document: dict[str, Any]) -> dict[str, Any]:
    """One trace, or a batch {"traces": [...]}; each result carries its error, if any."""
    t0 = time.monotonic()
    batch = "traces" in document
    traces = document["traces"] if batch else [document]
    results = []
    for i, trace in enumerate(traces):
        try:
            results.append(run_trace(trace))
        except Exception as exc:  # noqa: BLE001 - one bad trace must not sink the batch
            results.append(
                {
                    "name": trace.get("name") if isinstance(trace, dict) else None,
                    "error": f"traces[{i}]: {type(exc).__name__}: {exc}",
                }
            )
    return {
        "format": DECISIONS_FORMAT,
        "vllm_version": vllm.__version__,
        "torch_version": torch.__version__,
        "elapsed_s": round(time.monotonic() - t0, 3),
        "results": results,
    }


def main(argv: list[str]) -> int:
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__, file=sys.stderr)
        return 2
    text = Path(argv[1]).read_text() if len(argv) == 2 and argv[1] != "-" else sys.stdin.read()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        print(f"error: the input is not JSON: {exc}", file=sys.stderr)
        return 2
    json.dump(run(document), sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
