"""Which step sizes vLLM captures as CUDA graphs (sim.cudagraphs) and the default scheduler limits
(sim.config.resolve_scheduler_limits), with --performance-mode, checked against vLLM 0.33's own
``VllmConfig._set_cudagraph_sizes`` and ``EngineArgs._set_default_max_num_seqs_and_batched_tokens_args``
(run in .venv-vllm by tools/vllm_reference/cudagraph_sizes_probe.py), and where ServeLab uses them:
the memory plan and the step time."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.catalog import get_gpu, get_model
from sim.config import PERFORMANCE_MODES, resolve_scheduler_limits
from sim.cudagraphs import capture_sizes, largest_capture_size
from sim.memory import plan_memory

ROOT = Path(__file__).resolve().parents[1]
H200, B200 = get_gpu("h200"), get_gpu("b200")
LLAMA, GPT_OSS = get_model("llama-3.1-8b"), get_model("gpt-oss-120b")

# (blackwell, gpt_oss, max_num_seqs, max_num_batched_tokens, enforce_eager, performance_mode)
CASES = [
    (False, False, 1024, 8192, False, "balanced"),  # H100/H200 serving defaults
    (True, False, 1024, 8192, False, "balanced"),  # B200 defaults: the 1,024 ceiling
    (False, True, 1024, 8192, False, "balanced"),  # gpt-oss raises the ceiling on any GPU
    (True, True, 4, 8192, False, "balanced"),  # ... and its own size ignores the 2 x max_num_seqs cap
    (False, False, 256, 2048, False, "balanced"),  # A100 defaults
    (False, False, 100, 8192, False, "balanced"),  # an off-stride max_num_seqs is captured too
    (False, False, 1024, 300, False, "balanced"),  # a small token budget caps the sizes and is captured
    (False, True, 1024, 700, False, "balanced"),
    (False, False, 3, 8192, False, "balanced"),
    (False, False, 1, 1, False, "balanced"),
    (False, False, 1024, 8192, True, "balanced"),  # --enforce-eager
    (False, False, 1024, 8192, False, "interactivity"),  # every size up to 32
    (False, False, 10, 8192, False, "interactivity"),
    (True, True, 2048, 16384, False, "throughput"),
]
rng = np.random.default_rng(7)
for _ in range(25):
    CASES.append((bool(rng.integers(2)), bool(rng.integers(2)), int(rng.integers(1, 1100)),
                  int(rng.integers(1, 20000)), False, str(rng.choice(PERFORMANCE_MODES))))
# Default limits: every catalog GPU, both usages, every performance mode.
LIMITS = [(name, usage, mode) for name in sorted({get_gpu(g).name for g in ("a10g", "l4", "l40s", "a100-40gb",
                                                                            "a100-80gb", "h100", "h200", "b200", "t4")})
          for usage in ("serve", "offline") for mode in PERFORMANCE_MODES]


@pytest.fixture(scope="module")
def vllm_answers() -> dict:
    from tests.test_precision import _vllm_python

    request = {
        "graphs": [{"blackwell": b, "gpt_oss": g, "max_num_seqs": s, "max_num_batched_tokens": t, "enforce_eager": e,
                    "performance_mode": m} for b, g, s, t, e, m in CASES],
        "limits": [{"memory_gib": get_gpu(name).memory_bytes / 1024**3, "device_name": f"nvidia {name}",
                    "usage": usage, "performance_mode": mode} for name, usage, mode in LIMITS],
    }
    result = subprocess.run([str(_vllm_python()), str(ROOT / "tools/vllm_reference/cudagraph_sizes_probe.py")],
                            input=json.dumps(request), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("i", range(len(CASES)))
def test_capture_sizes_match_vllms_own_rule(vllm_answers, i):
    blackwell, gpt_oss, seqs, tokens, eager, mode = CASES[i]
    model = GPT_OSS if gpt_oss else LLAMA
    gpu = B200 if blackwell else H200
    assert list(capture_sizes(model, gpu, seqs, tokens, eager, mode)) == vllm_answers["graphs"][i]


@pytest.mark.parametrize("i", range(len(LIMITS)), ids=["-".join(c) for c in LIMITS])
def test_default_limits_match_vllms_own_rule(vllm_answers, i):
    name, usage, mode = LIMITS[i]
    gpu = get_gpu(name)
    assert list(resolve_scheduler_limits(gpu.memory_bytes, gpu.name, usage, mode)) == vllm_answers["limits"][i]


def test_the_ceilings():
    assert largest_capture_size(LLAMA, H200, 1024, 8192) == 512
    assert largest_capture_size(LLAMA, B200, 1024, 8192) == 1024
    assert largest_capture_size(GPT_OSS, H200, 1024, 8192) == 1024
    assert largest_capture_size(LLAMA, H200, 64, 8192) == 128
    assert largest_capture_size(LLAMA, H200, 1024, 8192, enforce_eager=True) == 0


@settings(max_examples=300, deadline=None)
@given(seqs=st.integers(1, 5000), tokens=st.integers(1, 100_000), blackwell=st.booleans(), gpt_oss=st.booleans(),
       mode=st.sampled_from(PERFORMANCE_MODES))
def test_sizes_are_sorted_unique_and_within_the_budget(seqs, tokens, blackwell, gpt_oss, mode):
    sizes = capture_sizes(GPT_OSS if gpt_oss else LLAMA, B200 if blackwell else H200, seqs, tokens,
                          performance_mode=mode)
    assert sizes and list(sizes) == sorted(set(sizes))
    assert sizes[0] == 1 and sizes[-1] <= min(tokens, 1024)
    if mode == "interactivity":  # every batch size up to 32 (or the largest, if smaller)
        assert set(range(1, min(sizes[-1], 32) + 1)) <= set(sizes)


def test_memory_plan_and_step_model_use_the_sizes():
    from sim.config import EngineConfig
    from sim.engine import Engine
    import simpy

    h200 = plan_memory(GPT_OSS, H200, tensor_parallel_size=2, max_model_len=8192)
    assert h200.cudagraph_capture_sizes[-1] == 1024
    llama = plan_memory(LLAMA, H200, max_model_len=8192)
    assert llama.cudagraph_capture_sizes[-1] == 512
    # 32 more graphs, and the largest one's activations twice over
    assert plan_memory(LLAMA, B200, max_model_len=8192).cudagraph_bytes > llama.cudagraph_bytes
    eager = plan_memory(LLAMA, H200, max_model_len=8192, enforce_eager=True)
    assert eager.cudagraph_capture_sizes == () and eager.cudagraph_bytes == 0

    engine = Engine(simpy.Environment(), EngineConfig(model="gpt-oss-120b", gpu="h200", tensor_parallel_size=2,
                                                      max_num_seqs=16, max_model_len=8192))
    sm = engine.step_model
    assert sm.cudagraph_max_tokens == 1024 and "CUDA graphs up to 1024 tokens" in sm.source
    # A 1,000-token step all-reduces inside a graph for gpt-oss; eagerly where 512 is the largest size.
    from sim.ops.model import OperatorStepModel
    from sim.ops.tables import load_tables
    from sim.steptime import StepCoefficients

    at_512 = OperatorStepModel(load_tables("h200"), GPT_OSS, H200, 2, StepCoefficients(), cudagraph_max_tokens=512)
    m = np.asarray(sm._m)
    i = int(np.searchsorted(m, 1000))
    assert 512 < m[i] <= 1024
    assert sm.terms_ms["allreduce_ms"][i] < at_512.terms_ms["allreduce_ms"][i]
    j = int(np.searchsorted(m, 256))
    assert sm.terms_ms["allreduce_ms"][j] == at_512.terms_ms["allreduce_ms"][j]


def test_performance_mode_reaches_the_memory_plan_and_the_engine():
    from sim.config import EngineConfig
    from sim.engine import Engine
    import simpy

    from sim.errors import ConfigError

    throughput = plan_memory(LLAMA, H200, max_model_len=8192, performance_mode="throughput")
    assert (throughput.max_num_batched_tokens, throughput.max_num_seqs) == (16384, 2048)
    assert "Performance mode set to 'throughput'." in throughput.loading_log_lines()
    fixed = plan_memory(LLAMA, H200, max_model_len=8192, max_num_seqs=64, performance_mode="throughput")
    assert (fixed.max_num_batched_tokens, fixed.max_num_seqs) == (16384, 64)  # a value set is kept
    interactive = plan_memory(LLAMA, H200, max_model_len=8192, performance_mode="interactivity")
    assert len(interactive.cudagraph_capture_sizes) == 76 and interactive.cudagraph_bytes > \
        plan_memory(LLAMA, H200, max_model_len=8192).cudagraph_bytes
    engine = Engine(simpy.Environment(), EngineConfig(model="llama-3.1-8b", gpu="h200", max_model_len=8192,
                                                      performance_mode="throughput"))
    assert (engine.limits.max_num_batched_tokens, engine.limits.max_num_seqs) == (16384, 2048)
    with pytest.raises(ConfigError, match="--performance-mode: expected one of balanced, interactivity, throughput"):
        EngineConfig(model="llama-3.1-8b", gpu="h200", performance_mode="fast")
