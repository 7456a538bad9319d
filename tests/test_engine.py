"""The engine: fast-forward gives exactly the step-by-step result; runs repeat exactly."""

import math

import numpy as np
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import EngineConfig
from sim.engine import Engine, run_engine
from sim.steptime import StepCoefficients
from sim.workload import WorkloadSpec, build_workload

FIELDS = ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s", "prompt_len", "output_len",
          "num_preemptions", "num_cached_tokens")


def assert_same(a, b):
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(np.sort(a.itl_s), np.sort(b.itl_s), rtol=1e-9, atol=1e-9)
    # The per-step series, a fast-forwarded run's steps included (its KV usage grows step by step).
    for series in ("t_s", "kv_usage", "num_running", "num_waiting"):
        np.testing.assert_allclose(a.steps[series], b.steps[series], rtol=1e-9, atol=1e-12, err_msg=series)
    assert a.stats.num_steps == b.stats.num_steps
    assert a.stats.generation_tokens_total == b.stats.generation_tokens_total
    assert a.stats.num_preemptions_total == b.stats.num_preemptions_total
    assert a.stats.prefix_cache_hits_total == b.stats.prefix_cache_hits_total


def draw_scenario(draw, *, model: str, gpu: str, blocks, max_prompts: int, max_output: int):
    """(config, workload spec, seed) for the fast-forward exactness checks: scheduler limits,
    a cache from barely one long request to room for many (``blocks``, a strategy: small pools
    force preemptions), and random or ShareGPT-like requests arriving at once or over time."""
    config = EngineConfig(
        model=model, gpu=gpu,
        max_num_seqs=draw(st.integers(2, 48)),
        max_num_batched_tokens=draw(st.sampled_from([256, 512, 2048])),
        max_model_len=1024,
        num_gpu_blocks_override=draw(blocks),
        enable_prefix_caching=draw(st.booleans()),
        num_scheduler_steps=draw(st.sampled_from([1, 1, 1, 4])),
        scheduling_policy=draw(st.sampled_from(["fcfs", "fcfs", "priority"])),
        long_prefill_token_threshold=draw(st.sampled_from([0, 0, 64])),
    )
    spec = WorkloadSpec(
        dataset_name=draw(st.sampled_from(["random", "sharegpt"])),
        num_prompts=draw(st.integers(1, max_prompts)),
        random_input_len=draw(st.integers(8, 300)),
        random_output_len=draw(st.integers(1, max_output)),
        random_range_ratio=draw(st.sampled_from([0.0, 0.5])),
        request_rate=draw(st.sampled_from([math.inf, 2.0, 20.0])),
        prefix_len=draw(st.sampled_from([0, 40])),
        n=draw(st.sampled_from([1, 1, 2])),
        max_model_len=1024,
    )
    return config, spec, draw(st.integers(0, 3))


@st.composite
def scenarios(draw):
    return draw_scenario(draw, model="meta-llama/Llama-2-7b-hf", gpu="a100-80gb", blocks=st.integers(70, 600),
                         max_prompts=60, max_output=200)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.booleans())
def test_fast_forward_matches_step_by_step(scenario, async_scheduling):
    config, spec, seed = scenario
    workload = build_workload(spec, np.random.default_rng(seed))
    # The roofline with and without vLLM's asynchronous scheduling (which delays new requests).
    coefficients = StepCoefficients(step_model="roofline", async_scheduling=async_scheduling)
    fast = run_engine(config, workload, seed=seed, fast_forward=True, coefficients=coefficients)
    slow = run_engine(config, workload, seed=seed, fast_forward=False, coefficients=coefficients)
    assert_same(fast, slow)


def test_same_seed_same_result_and_every_request_completes():
    config = EngineConfig(model="llama-2-7b", gpu="a100-80gb", num_gpu_blocks_override=400, max_model_len=2048)
    spec = WorkloadSpec(dataset_name="sharegpt", num_prompts=200, request_rate=8.0, max_model_len=2048)
    a = run_engine(config, build_workload(spec, np.random.default_rng(7)))
    b = run_engine(config, build_workload(spec, np.random.default_rng(7)))
    assert_same(a, b)
    assert (a.output_len == build_workload(spec, np.random.default_rng(7)).output_len).all()
    assert np.isfinite(a.finish_s).all()
    assert (a.first_token_s >= a.first_scheduled_s).all() and (a.finish_s >= a.first_token_s).all()
    assert a.stats.num_preemptions_total > 0, "a small cache should force preemptions"


def test_engine_idles_and_wakes_for_new_requests():
    env = simpy.Environment()
    engine = Engine(env, EngineConfig(model="llama-2-7b", gpu="a100-80gb"))
    env.run(until=5.0)
    assert engine.stats.num_steps == 0
    (r,) = engine.add_request(list(range(100)), 10)
    env.run(until=10.0)
    assert r.is_finished and r.arrival_s == 5.0 and r.first_token_s > 5.0
    assert len(engine.token_times(r)) == 10


def test_parallel_samples_share_the_prompt():
    env = simpy.Environment()
    engine = Engine(env, EngineConfig(model="llama-2-7b", gpu="a100-80gb"))
    reqs = engine.add_request(list(range(200)), 20, n=4)
    env.run()
    assert [r.request_id for r in reqs] == ["0_req-0", "1_req-0", "2_req-0", "3_req-0"]
    assert [r.num_cached_tokens for r in reqs] == [0, 192, 192, 192]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param(dict(prompt_token_ids=list(range(5000)), max_tokens=1), "longer than the maximum model length", id="prompt too long"),
        pytest.param(dict(prompt_token_ids=[], max_tokens=1), "prompt is empty", id="empty prompt"),
        pytest.param(dict(prompt_token_ids=[1, 2], max_tokens=0), "max_tokens", id="zero max_tokens"),
    ],
)
def test_bad_requests_are_refused_clearly(kwargs, message):
    from sim.errors import ConfigError

    engine = Engine(simpy.Environment(), EngineConfig(model="llama-2-7b", gpu="a100-80gb"))
    with pytest.raises(ConfigError, match=message):
        engine.add_request(**kwargs)


def test_throughput_orders_engines_as_the_paper():
    """vLLM beats the Orca variants, which beat static batching, on ShareGPT-like lengths."""
    spec = WorkloadSpec(dataset_name="sharegpt", num_prompts=300, max_model_len=2048)
    workload = build_workload(spec, np.random.default_rng(0))
    rps = {}
    for engine in ("vllm", "orca-oracle", "orca-pow2", "orca-max", "hf-static"):
        config = EngineConfig(model="opt-13b", gpu="a100-40gb", engine=engine, max_model_len=2048)
        r = run_engine(config, workload)
        assert (r.output_len == workload.output_len).all()
        rps[engine] = len(workload) / r.elapsed_s
    assert rps["vllm"] > rps["orca-oracle"] > rps["orca-pow2"] > rps["orca-max"] > rps["hf-static"]
    assert rps["vllm"] / rps["hf-static"] >= 5


def test_copy_on_write_shares_every_block_until_a_sample_writes():
    """The vLLM paper's parallel sampling: one prefill, n sequences on the same blocks; the
    partial last block is copied by each sample that writes into it while it is shared."""
    env = simpy.Environment()
    engine = Engine(env, EngineConfig(model="llama-2-7b", gpu="a100-80gb", parallel_sampling="copy-on-write"))
    parent, *children = engine.add_request(list(range(200)), 30, n=4)  # 12 full blocks + 8 tokens
    seen = {}

    class Watch:
        def on_step(self, record):
            if parent.request_id in engine.kv.req_to_blocks and "shared" not in seen and children[0].request_id in engine.kv.req_to_blocks:
                blocks = engine.kv.req_to_blocks[parent.request_id]
                seen["shared"] = [b.ref_cnt for b in blocks]
                seen["same"] = all(engine.kv.req_to_blocks[c.request_id] == blocks for c in children)

    engine.listeners.append(Watch())
    env.run()
    assert seen["same"] and seen["shared"] == [4] * 13  # right after the fork: all 13 shared
    assert engine.kv.num_cow_copies == 3  # the last writer keeps the original
    assert all(r.num_output_tokens == 30 and r.is_finished for r in [parent, *children])
    assert engine.kv.num_free_blocks == engine.num_gpu_blocks - 1
    assert engine.stats.generation_tokens_total == 4 * 30


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.integers(2, 4), st.integers(66, 200))
def test_copy_on_write_runs_complete_and_free_everything(seed, n, blocks):
    config = EngineConfig(model="llama-2-7b", gpu="a100-80gb", parallel_sampling="copy-on-write",
                          num_gpu_blocks_override=blocks, max_model_len=1024, max_num_seqs=16)
    spec = WorkloadSpec(dataset_name="sharegpt", num_prompts=12, request_rate=5.0, n=n, max_model_len=1024)
    workload = build_workload(spec, np.random.default_rng(seed))
    result = run_engine(config, workload)
    assert (result.output_len == np.repeat(workload.output_len, n)).all()
    assert np.isfinite(result.finish_s).all()


def test_a_request_that_can_never_fit_is_refused():
    from sim.errors import ConfigError

    engine = Engine(simpy.Environment(), EngineConfig(model="llama-2-7b", gpu="a100-80gb", max_model_len=1024,
                                                      num_gpu_blocks_override=60))
    engine.add_request(list(range(100)), 100)  # 13 blocks: fine
    with pytest.raises(ConfigError, match="could never finish"):
        engine.add_request(list(range(500)), 500)  # 63 blocks > 59


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_async_scheduling_puts_a_new_request_two_steps_later(async_scheduling):
    """vLLM's engine core, under asynchronous scheduling, has scheduled step N + 1 when step N
    starts (vllm/v1/engine/core.py, step_with_batch_queue): a request arriving during step N runs
    first in step N + 2. Without it, in step N + 1."""
    env = simpy.Environment()
    coefficients = StepCoefficients(step_model="roofline", async_scheduling=async_scheduling)
    engine = Engine(env, EngineConfig(model="llama-2-7b", gpu="a100-80gb"), coefficients=coefficients)
    (busy,) = engine.add_request(list(range(100)), 200)
    env.run(until=0.1007)
    assert engine._stepping and engine.step_end_s[-1] < 0.1007
    k = len(engine.step_end_s)  # the step in flight (step k ends at step_end_s[k])
    (late,) = engine.add_request(list(range(100)), 5)
    env.run()
    ends = engine.step_end_s
    assert busy.first_scheduled_s == 0.0  # an idle engine takes a request at once
    assert late.is_finished and busy.is_finished
    assert late.first_scheduled_s == ends[k + 1 if async_scheduling else k]


def test_async_scheduling_takes_a_request_at_once_when_nothing_was_scheduled_ahead():
    """A request that arrives during the last step of the only running request: step N + 1 had
    nothing to run, so the engine core schedules the new request as soon as step N ends."""
    env = simpy.Environment()
    engine = Engine(env, EngineConfig(model="llama-2-7b", gpu="a100-80gb"),
                    coefficients=StepCoefficients(step_model="roofline", async_scheduling=True))
    (only,) = engine.add_request(list(range(100)), 3)
    env.run()
    last_start, last_end = engine.step_end_s[-2], engine.step_end_s[-1]
    env2 = simpy.Environment()
    engine2 = Engine(env2, EngineConfig(model="llama-2-7b", gpu="a100-80gb"),
                     coefficients=StepCoefficients(step_model="roofline", async_scheduling=True))
    engine2.add_request(list(range(100)), 3)
    env2.run(until=(last_start + last_end) / 2)
    (new,) = engine2.add_request(list(range(50)), 2)
    env2.run()
    assert new.first_scheduled_s == pytest.approx(last_end)


def test_a_staged_request_can_be_aborted():
    env = simpy.Environment()
    engine = Engine(env, EngineConfig(model="llama-2-7b", gpu="a100-80gb"),
                    coefficients=StepCoefficients(step_model="roofline", async_scheduling=True))
    engine.add_request(list(range(100)), 50)
    env.run(until=0.05)
    (gone,) = engine.add_request(list(range(100)), 50, request_id="gone")
    assert engine._staged == [gone]
    engine.abort("gone")
    env.run()
    assert gone.status.value == "abort" and gone.first_scheduled_s is None
    assert engine.stats.request_success_total["abort"] == 1


@pytest.mark.parametrize("fast_forward", [False, True])
@pytest.mark.parametrize("n", [1, 2])
def test_forgetting_old_steps_keeps_every_live_requests_token_times(fast_forward, n):
    """A server that runs for hours forgets the end times of steps no unfinished request needs
    (Engine.forget_steps): every request's token times at its finish are those of a run that
    forgot nothing, and the engine holds only the steps its live requests span."""

    def run(forget: bool):
        env = simpy.Environment()
        config = EngineConfig(model="llama-2-7b", gpu="a100-80gb", num_gpu_blocks_override=300, max_model_len=2048)
        engine = Engine(env, config, fast_forward=fast_forward)
        times, held = {}, []

        class Listener:
            def on_finish(self, request, now_s):
                times[request.request_id] = engine.token_times(request)

        engine.listeners.append(Listener())
        rng = np.random.default_rng(3)

        def clients():
            for i in range(60):
                yield env.timeout(float(rng.exponential(0.15)))
                engine.add_request(list(range(i, i + int(rng.integers(20, 400)))), int(rng.integers(1, 120)), n=n)

        def forgetter():
            while True:
                yield env.timeout(0.25)
                engine.forget_steps()
                held.append(len(engine.step_end_s))

        env.process(clients())
        if forget:
            env.process(forgetter())
        env.run(until=60.0)
        return engine, times, held

    full, expected, _ = run(False)
    engine, times, held = run(True)
    assert times.keys() == expected.keys() and len(times) == 60 * n
    for rid, t in expected.items():
        np.testing.assert_array_equal(times[rid], t, err_msg=rid)
    assert engine.step_base + len(engine.step_end_s) == len(full.step_end_s)
    assert engine.step_base > 0 and max(held) < len(full.step_end_s) / 2
    assert engine.step_end_s == [] and engine.forget_steps() == 0  # all done: nothing left to keep
    with pytest.raises(ValueError, match="forgot its first"):
        from sim.results import collect_result
        collect_result(engine, engine.finished)
