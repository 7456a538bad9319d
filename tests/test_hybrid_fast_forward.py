"""Fast-forward for models with sliding-window layers (sim.sched.lazy_hybrid) gives exactly the
step-by-step result: every request's times, the block counts after every engine iteration, and
the block pool at the end (free queue order, prefix cache, evictions), block id for block id.

The models are Gemma 3 27B's config.json with a short window (so that windows slide within a
1,024-token request): its 6 sliding and 1 full KV cache groups; the same file with gpt-oss's
layer pattern (alternating sliding and full layers, window 128 or 40: one group of each); and
gpt-oss-20b itself.
"""

from __future__ import annotations

import json
import tempfile
from functools import cache
from pathlib import Path
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import EngineConfig
from sim.engine import Engine, run_engine
import sim.runner  # noqa: E402  (after sim.engine, which imports it)
from sim.sched.lazy_hybrid import HybridLazyScheduler
from sim.workload import WorkloadSpec, build_workload
from tests.test_engine import assert_same, draw_scenario

GEMMA_JSON = Path(__file__).resolve().parents[1] / "sim/data/models/google--gemma-3-27b-it.json"
_DIR = Path(tempfile.mkdtemp(prefix="servelab-ff-"))


@cache
def model_path(kind: str, window: int) -> str:
    """A gemma3 config.json with ``window``; kind "gpt-oss" alternates sliding and full layers."""
    cfg = json.loads(GEMMA_JSON.read_text())
    text = cfg["text_config"]
    text["sliding_window"] = window
    if kind == "gpt-oss":
        text["num_hidden_layers"] = 24
        text["layer_types"] = ["sliding_attention", "full_attention"] * 12
    path = _DIR / f"{kind}-{window}" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return str(path)


class RecordingEngine(Engine):
    """The engine, keeping each instance and its block counts after every iteration."""

    made: list["RecordingEngine"] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.free_after_step: dict[int, tuple[int, int, int]] = {}  # global step -> free, running, waiting
        RecordingEngine.made.append(self)

    def _finish_step(self, out, start_s, durations) -> None:
        super()._finish_step(out, start_s, durations)
        self.free_after_step[self.stats.num_steps] = (
            self.kv.num_free_blocks, self.scheduler.num_running, self.scheduler.num_waiting)


def pool_state(engine: Engine):
    pool = engine.kv.pool
    return (
        list(pool.free_queue),
        {h: b.block_id for h, b in pool.cached_blocks.items()},
        {h: [b.block_id for b in bs] for h, bs in pool.duplicates.items()},
        [(b.ref_cnt, b.block_hash) for b in pool.blocks],
        pool.num_evictions,
        engine.kv.stats,
    )


def run_both(config: EngineConfig, workload, seed: int = 0):
    RecordingEngine.made.clear()
    with mock.patch.object(sim.runner, "Engine", RecordingEngine):
        fast = run_engine(config, workload, seed=seed, fast_forward=True)
        slow = run_engine(config, workload, seed=seed, fast_forward=False)
    return fast, slow, RecordingEngine.made


def assert_identical(config: EngineConfig, workload, seed: int = 0) -> None:
    fast, slow, (fast_engine, slow_engine) = run_both(config, workload, seed)
    assert isinstance(fast_engine.scheduler, HybridLazyScheduler)
    assert_same(fast, slow)
    # Block counts after every iteration of the fast run equal those after the same step run alone.
    for step, counts in fast_engine.free_after_step.items():
        assert counts == slow_engine.free_after_step[step], f"after step {step}"
    assert pool_state(fast_engine) == pool_state(slow_engine)


@st.composite
def scenarios(draw):
    kind = draw(st.sampled_from(["gemma3", "gpt-oss", "gpt-oss-20b"]))
    if kind == "gpt-oss-20b":  # the real one (window 128; MoE step time)
        model = "gpt-oss-20b"
    else:
        model = model_path(kind, draw(st.sampled_from([17, 48, 128] if kind == "gemma3" else [128, 40])))
    groups = 7 if kind == "gemma3" else 2
    # Blocks come in whole groups: from barely one long request to room for many.
    return draw_scenario(draw, model=model, gpu="h200", blocks=st.integers(70, 500).map(lambda b: groups * b),
                         max_prompts=40, max_output=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_hybrid_fast_forward_matches_step_by_step(scenario):
    config, spec, seed = scenario
    assert_identical(config, build_workload(spec, np.random.default_rng(seed)), seed)


def test_gemma3_fast_forward_skips_steps_and_preempts_like_the_reference():
    """A busy Gemma 3 run (the shipped config, window 1,024) in a small cache, with preemptions:
    identical, and the fast run takes far fewer engine iterations than it has steps."""
    config = EngineConfig(model="gemma-3-27b", gpu="h200", max_model_len=4096, num_gpu_blocks_override=7 * 600)
    spec = WorkloadSpec(dataset_name="sharegpt", num_prompts=150, request_rate=5.0, max_model_len=4096)
    workload = build_workload(spec, np.random.default_rng(0))
    fast, slow, (fast_engine, slow_engine) = run_both(config, workload)
    assert_same(fast, slow)
    assert pool_state(fast_engine) == pool_state(slow_engine)
    assert slow.stats.num_preemptions_total > 0
    assert len(fast_engine.free_after_step) < 0.6 * slow.stats.num_steps  # 1,223 iterations for 2,534 steps
