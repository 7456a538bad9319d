"""Data and expert parallelism (sim.parallel) in the memory plan, and INT4 (AWQ/GPTQ) weights.

Each figure is computed twice:

* from first principles here (the shapes of Qwen/Qwen3-30B-A3B's config.json: 48 layers, hidden
  2048, 32 query and 4 KV heads of 128, 128 experts of moe_intermediate_size 768);
* by vLLM 0.33's own code, run in .venv-vllm: ``FusedMoEParallelConfig.make`` and
  ``determine_expert_map`` (vllm/model_executor/layers/fused_moe/config.py and
  expert_map_manager.py) for where the experts live, ``get_kv_cache_config_from_groups`` and
  ``get_kv_cache_capacity`` (vllm/v1/core/kv_cache_planning.py, kv_cache_utils.py) for one DP
  rank's KV cache and maximum concurrency, ``AutoAWQLinearMethod.create_weights``
  (vllm/model_executor/layers/quantization/auto_awq.py) for an AWQ layer's bytes.
  (tools/vllm_reference/moe_parallel_probe.py and kv_groups_probe.py.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.cli.main import main
from sim.catalog import get_gpu, get_model
from sim.config import cdiv
from sim.errors import ConfigError
from sim.memory import plan_memory
from sim.parallel import ParallelLayout
from sim.precision import resolve_precision

ROOT = Path(__file__).resolve().parents[1]
BF16 = 2

# (tp, dp, ep) for Qwen3-30B-A3B on H100s
QWEN_LAYOUTS = [(1, 1, False), (2, 1, False), (2, 1, True), (1, 2, False), (1, 2, True), (2, 2, False),
                (2, 2, True), (4, 2, True), (1, 8, True)]


def _plan(name: str, gpu: str, tp: int, dp: int, ep: bool, **kw):
    model, g = get_model(name), get_gpu(gpu)
    flags = type("Flags", (), {"tensor_parallel_size": tp, "data_parallel_size": dp, "enable_expert_parallel": ep})()
    return model, plan_memory(model, g, tensor_parallel_size=tp, data_parallel_size=dp, enable_expert_parallel=ep,
                              precision=resolve_precision(model, g, flags), **kw)


@pytest.mark.parametrize("tp, dp, ep", QWEN_LAYOUTS)
def test_qwen3_moe_placement_from_first_principles(tp, dp, ep):
    model, plan = _plan("qwen3-30b-a3b", "h100", tp, dp, ep)
    layers, h, experts, inter, hd = 48, 2048, 128, 768, 128
    assert (model.num_hidden_layers, model.hidden_size, model.num_experts, model.moe_intermediate_size) == \
        (layers, h, experts, inter)
    gpus = tp * dp
    if ep and gpus > 1:  # whole experts, spread over every GPU
        local, inter_per_gpu = experts // gpus, inter
    else:  # every expert, sharded over every GPU (tp x dp)
        local, inter_per_gpu = experts, inter // gpus
    expert_bytes = layers * local * 3 * h * inter_per_gpu * BF16
    q, kv = 32 // tp, max(1, 4 // tp)
    attention_bytes = layers * ((q + 2 * kv) * hd * h + h * q * hd) * BF16
    assert plan.weight_bytes_by_part["routed_experts"] == expert_bytes
    assert plan.weight_bytes_by_part["attention"] == attention_bytes
    assert plan.weight_bytes_by_part["router"] == layers * experts * h * BF16  # replicated everywhere
    assert plan.experts_per_gpu == local and plan.num_gpus == gpus
    # KV: each DP rank its own, sharded by that rank's TP
    kv_per_token = 2 * layers * kv * hd * BF16
    assert plan.kv_bytes_per_token == kv_per_token
    blocks = plan.available_kv_bytes // (16 * kv_per_token)
    per_rank = blocks / cdiv(plan.max_model_len, 16)
    assert plan.num_gpu_blocks == blocks
    assert plan.max_concurrency == pytest.approx(per_rank, rel=1e-12)
    assert plan.total_max_concurrency == pytest.approx(dp * per_rank, rel=1e-12)


def test_ep_moves_no_bytes_for_an_even_split_but_dp_replicates_attention():
    """TP2 and TP2+EP hold the same expert bytes per GPU (a half of each expert, or half the
    experts); DP2 without TP holds the whole of attention and the embeddings on each GPU."""
    _, tp2 = _plan("qwen3-30b-a3b", "h100", 2, 1, False)
    _, tp2_ep = _plan("qwen3-30b-a3b", "h100", 2, 1, True)
    _, dp2_ep = _plan("qwen3-30b-a3b", "h100", 1, 2, True)
    assert tp2.weight_bytes_by_part == tp2_ep.weight_bytes_by_part
    assert dp2_ep.weight_bytes_by_part["routed_experts"] == tp2.weight_bytes_by_part["routed_experts"]
    assert dp2_ep.weight_bytes_by_part["attention"] == 2 * tp2.weight_bytes_by_part["attention"]
    assert dp2_ep.kv_bytes_per_token == 2 * tp2.kv_bytes_per_token


def test_uneven_expert_parallelism_counts_the_fullest_gpu():
    """Mixtral's 8 experts on EP 6: vLLM's linear placement gives ranks 0-1 two experts and the
    others one; the plan is the fullest GPU's and says so."""
    model = get_model("mixtral-8x7b")
    moe = ParallelLayout(2, 3, True).moe(model)
    assert [moe.experts_on_rank(r) for r in range(6)] == [2, 2, 1, 1, 1, 1] and moe.local_experts == 2
    _, plan = _plan("mixtral-8x7b", "h100", 2, 3, True)
    assert plan.experts_per_gpu == 2 and "ranks hold one more" in " ".join(plan.parallel_log_lines)


# -- vLLM's own code ------------------------------------------------------------------------------
VLLM_LAYOUTS = [("qwen3-30b-a3b", *layout) for layout in QWEN_LAYOUTS] + [
    ("mixtral-8x7b", 2, 3, True), ("mixtral-8x7b", 8, 1, True), ("mixtral-8x7b", 2, 2, False),
    ("deepseek-v3", 8, 2, True), ("gpt-oss-120b", 4, 2, True), ("qwen3-235b-a22b", 4, 1, False),
]


@pytest.fixture(scope="module")
def vllm_answers() -> dict:
    from tests.test_precision import _vllm_python

    request = {
        "layouts": [{"tp": tp, "dp": dp, "ep": ep, "num_experts": get_model(name).num_experts}
                    for name, tp, dp, ep in VLLM_LAYOUTS],
        "awq": [{"out": o, "in": i, "bits": 4, "group_size": g, "zero_point": True} for o, i, g in AWQ_SHAPES],
    }
    result = subprocess.run([str(_vllm_python()), str(ROOT / "tools/vllm_reference/moe_parallel_probe.py")],
                            input=json.dumps(request), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("i", range(len(VLLM_LAYOUTS)), ids=[f"{n}-tp{t}-dp{d}{'-ep' if e else ''}"
                                                             for n, t, d, e in VLLM_LAYOUTS])
def test_layout_matches_vllms_fused_moe_parallel_config(vllm_answers, i):
    name, tp, dp, ep = VLLM_LAYOUTS[i]
    model = get_model(name)
    moe = ParallelLayout(tp, dp, ep).moe(model)
    answer = vllm_answers["layouts"][i]
    assert moe.tensor_parallel_size == answer["tp_size"]
    assert moe.expert_parallel_size == answer["ep_size"] and moe.use_ep == answer["use_ep"]
    assert [moe.experts_on_rank(r) for r in range(moe.expert_parallel_size)] == answer["experts_per_rank"]
    assert moe.local_experts == max(answer["experts_per_rank"])


@pytest.mark.parametrize("tp, dp, ep", [(1, 2, True), (2, 2, False), (1, 8, True)])
def test_dp_rank_kv_cache_matches_vllms_planning(tp, dp, ep):
    from tests.test_precision import _vllm_python

    model, plan = _plan("qwen3-30b-a3b", "h100", tp, dp, ep)
    case = {"name": "rank", "block_size": 16, "dtype": "bfloat16", "max_model_len": plan.max_model_len,
            "max_num_batched_tokens": plan.max_num_batched_tokens, "available_memory": plan.available_kv_bytes,
            "layers": [{"kind": "full", "num_kv_heads": model.kv_heads_per_rank(tp), "head_size": 128,
                        "sliding_window": None}] * model.num_hidden_layers}
    result = subprocess.run([str(_vllm_python()), str(ROOT / "tools/vllm_reference/kv_groups_probe.py")],
                            input=json.dumps([case]), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])[0]
    assert plan.num_gpu_blocks == answer["num_blocks"]
    assert plan.max_concurrency == pytest.approx(answer["max_concurrency"], rel=1e-12)
    assert plan.kv_cache_tokens == answer["kv_cache_tokens"]


# -- INT4 weights ---------------------------------------------------------------------------------
AWQ_SHAPES = [(3 * 5120 // 1, 5120, 128), (5120, 5120, 128), (2 * 27648 // 8, 5120, 128), (5120, 27648 // 8, 128),
              (1024, 4096, 64)]


@pytest.mark.parametrize("i", range(len(AWQ_SHAPES)))
def test_awq_layer_bytes_match_vllms_create_weights(vllm_answers, i):
    out, inp, group = AWQ_SHAPES[i]
    p = resolve_precision(get_model("qwq-32b-awq"), get_gpu("h100"))
    p = type(p)(**{**{f: getattr(p, f) for f in p.__slots__}, "group_size": group})
    assert p.linear_weight_bytes(out, inp) == sum(vllm_answers["awq"][i].values())


def test_awq_checkpoint_weights_from_first_principles():
    """QwQ-32B-Preview-AWQ (qwen2: biases on q, k, v): 4-bit weights, a float16 scale and a 4-bit
    zero per 128 input channels and output; embeddings, lm_head, norms and biases float16."""
    model = get_model("qwq-32b-awq")
    p = resolve_precision(model, get_gpu("h100"))
    assert (p.quantization, p.weight_bits, p.group_size, p.zero_points) == ("awq", 4, 128, True)
    h, inter, L, vocab = 5120, 27648, 64, 152064

    def awq(o, i):
        return o * i // 2 + (i // 128) * o // 2 + (i // 128) * o * 2

    qkv = (40 + 2 * 8) * 128
    linear = L * (awq(qkv, h) + awq(h, 40 * 128) + awq(2 * inter, h) + awq(h, inter))
    other = 2 * vocab * h + h + L * (2 * h + qkv)  # embed_tokens, lm_head, final norm; norms and qkv bias
    assert model.weight_bytes_per_gpu(1, p) == linear + other * 2


def test_awq_group_must_tile_each_rank(capsys):
    # QwQ-32B: 40 heads x 128 = 5120; at TP 40 each rank's o_proj has 128 inputs (one group): fine;
    # intermediate 27648 / 8 = 3456 = 27 groups. Mixtral-like shapes that do not tile are refused:
    from sim.catalog import model_from_config

    cfg = json.loads((ROOT / "sim/data/models/Orion-zhen--QwQ-32B-Preview-AWQ.json").read_text())
    cfg["intermediate_size"] = 27648 + 64 * 8
    model = model_from_config(cfg, source="test")
    with pytest.raises(ConfigError, match=r"^--tensor-parallel-size 8: down_proj's 3520 input channels per GPU do "
                                          r"not hold whole awq groups of 128"):
        resolve_precision(model, get_gpu("h100"), type("F", (), {"tensor_parallel_size": 8})())


# -- bad input: one line, exit code 2 --------------------------------------------------------------
BAD = [
    (["-m", "qwen3-8b", "-tp", "2", "-ep"],
     "error: --enable-expert-parallel: Qwen/Qwen3-8B has no experts (a dense model), and vLLM refuses it"),
    (["-m", "qwen3-30b-a3b", "-tp", "8", "-dp", "32", "-ep"],
     "error: --enable-expert-parallel with tp 8 x dp 32: expert-parallel size 256 is more than the 128 experts"),
    (["-m", "gpt-oss-120b", "-dp", "3", "-ep"],
     "error: --enable-expert-parallel with tp 1 x dp 3: expert-parallel size 3 does not divide the 128 experts"),
    (["-m", "qwen3-32b", "-tp", "3"],
     "error: --tensor-parallel-size 3: Qwen/Qwen3-32B has 64 attention heads, which tensor parallelism 3 does "
     "not divide"),
    (["-m", "qwen3-30b-a3b", "-dp", "0"], "error: --data-parallel-size: expected a positive integer, got 0"),
    (["-m", "gpt-oss-20b", "--gpu", "t4"],
     "error: config.json quantization_config: The quantization method mxfp4 is not supported for the current "
     "GPU (t4). Minimum capability: 80. Current capability: 75. Use a GPU of compute capability 8.0 or newer"),
    (["-m", "qwen3-8b", "-q", "awq"],
     "error: --quantization awq: Qwen/Qwen3-8B has no awq quantization_config in its config.json"),
    (["-m", "qwq-32b-awq", "-q", "gptq"],
     "error: --quantization gptq: Quantization method specified in the model config (awq) does not match"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=["ep-dense", "ep-over-experts", "ep-gpt-oss-uneven",
                                                    "tp-heads", "dp-zero", "mxfp4-t4", "awq-flag-dense",
                                                    "gptq-flag-on-awq"])
def test_bad_layout_or_format_is_one_line_exit_2(capsys, argv, message):
    argv = ["memory", *(a if a != "-m" else "--model" for a in argv)]
    if "--gpu" not in argv:
        argv += ["--gpu", "h100"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_memory_json_and_text_show_the_placement(capsys):
    assert main(["memory", "--model", "qwen3-30b-a3b", "--gpu", "h100", "-tp", "2", "-dp", "2", "-ep",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["data_parallel_size"], data["expert_parallel_size"], data["experts_per_gpu"], data["num_gpus"]) \
        == (2, 4, 32, 4)
    assert data["total_max_concurrency"] == pytest.approx(2 * data["max_concurrency"])
    assert set(data["weight_bytes_by_part"]) == {"attention", "dense_mlp", "routed_experts", "router", "other"}
    assert main(["memory", "--model", "qwen3-30b-a3b", "--gpu", "h100", "-tp", "2", "-dp", "2", "-ep"]) == 0
    out = capsys.readouterr().out
    assert "Expert parallelism: 128 experts over EP size 4 (tp 2 x dp 2), 32 whole experts per GPU" in out
    assert "32 whole experts of 128 per layer (EP 4 = tp x dp)" in out
    assert "Data parallelism: 2 engine cores (DP ranks)" in out


# -- fuzz: the layout parser and validator ------------------------------------------------------------
MODELS = ["qwen3-8b", "qwen3-30b-a3b", "mixtral-8x7b", "gpt-oss-20b", "deepseek-v3", "llama-3.1-8b"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MODELS), st.one_of(st.integers(-2, 300), st.booleans(), st.none(), st.floats(0, 4)),
       st.one_of(st.integers(-2, 300), st.booleans(), st.text(max_size=3)), st.one_of(st.booleans(), st.integers(0, 2)),
       st.one_of(st.none(), st.integers(0, 512)))
def test_fuzzed_layout_is_placed_or_refused_in_one_line(name, tp, dp, ep, num_gpus):
    model = get_model(name)
    try:
        layout = ParallelLayout(tp, dp, ep)
        layout.check(model, num_gpus)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("--")
        return
    assert isinstance(tp, int) and isinstance(dp, int) and tp >= 1 and dp >= 1 and isinstance(ep, bool)
    assert model.num_attention_heads % tp == 0 and (num_gpus is None or tp * dp <= num_gpus)
    moe = layout.moe(model)
    if moe is None:
        assert not model.is_moe and not ep
        return
    assert moe.tensor_parallel_size * moe.expert_parallel_size == tp * dp
    assert sum(moe.experts_on_rank(r) for r in range(moe.expert_parallel_size)) == \
        (model.num_experts if moe.use_ep else model.num_experts)
    assert moe.local_experts == max(moe.experts_on_rank(r) for r in range(moe.expert_parallel_size)) >= 1
    assert moe.use_ep == (ep and tp * dp > 1)


# -- the engine with DP ranks (sim.dp) --------------------------------------------------------------
def _dp_run(dp: int, rate: float, num_prompts: int = 40, output_len: int = 32, frontend=None):
    import numpy as np

    from sim.config import EngineConfig
    from sim.engine import run_engine
    from sim.workload import WorkloadSpec, build_workload

    config = EngineConfig(model="llama-3.1-8b", gpu="h100", data_parallel_size=dp, max_model_len=4096)
    spec = WorkloadSpec(num_prompts=num_prompts, random_input_len=256, random_output_len=output_len,
                        request_rate=rate, max_model_len=4096)
    return run_engine(config, build_workload(spec, np.random.default_rng(3)), seed=3, usage="serve",
                      frontend=frontend)


def test_dp_ranks_alone_give_one_engines_times():
    """Requests so far apart that each runs alone: every one goes to rank 0 (ties go to the first
    rank, as vLLM's balancer) and sees exactly what one engine gives it."""
    one, two = _dp_run(1, 0.05, num_prompts=6), _dp_run(2, 0.05, num_prompts=6)
    assert two.request_ids == one.request_ids
    for name in ("arrival_s", "first_token_s", "finish_s", "output_len"):
        assert (getattr(two, name) == getattr(one, name)).all(), name
    assert set(two.steps["dp_rank"]) == {0} and two.extra["data_parallel"]["requests_per_rank"] == [6, 0]


def test_a_burst_spreads_round_robin_and_every_request_finishes():
    from sim.dp import DataParallelEngines
    import simpy

    from sim.config import EngineConfig

    engines = DataParallelEngines(simpy.Environment(), EngineConfig(model="llama-3.1-8b", gpu="h100",
                                                                     data_parallel_size=3, max_model_len=4096))
    for i in range(7):
        engines.add_request(list(range(1, 65)), 8, request_id=str(i))
    assert [engines.rank_of[str(i)] for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    engines.env.run()
    assert len(engines.finished) == 7 and engines.stats.request_success_total["length"] == 7


def test_two_ranks_share_a_heavy_load():
    """Under a burst each rank holds half the batch: the output is the same, the run shorter,
    and the step series carries both ranks."""
    one, two = _dp_run(1, float("inf"), num_prompts=200, output_len=64), \
        _dp_run(2, float("inf"), num_prompts=200, output_len=64)
    assert two.output_len.sum() == one.output_len.sum() and two.request_ids == one.request_ids
    assert two.elapsed_s < one.elapsed_s
    assert set(two.steps["dp_rank"]) == {0, 1} and (abs(np.diff(two.extra["data_parallel"]["requests_per_rank"]))
                                                     <= 1).all()
    assert two.stats.request_success_total["length"] == 200


def test_dp_with_the_front_end_runs():
    from sim.frontend import FrontendCoefficients

    result = _dp_run(2, 50.0, num_prompts=30, frontend=FrontendCoefficients())
    assert np.isfinite(result.ttft_s).all() and result.extra["data_parallel"]["requests_per_rank"][1] > 0


def _lockstep_run(lockstep: bool, sizes: list[int]):
    import simpy

    from sim.config import EngineConfig
    from sim.dp import DataParallelEngines

    engines = DataParallelEngines(simpy.Environment(), EngineConfig(model="llama-3.1-8b", gpu="h100",
                                                                     data_parallel_size=2, max_model_len=4096),
                                  lockstep=lockstep)
    for i, prompt in enumerate(sizes):  # round-robin: even ones to rank 0, odd ones to rank 1
        engines.add_request(list(range(1, prompt + 1)), 16, request_id=str(i))
    engines.env.run()
    return engines


def test_lockstep_ranks_step_together_and_wait_for_the_slowest():
    """MoE ranks (vLLM steps them together; forced here on a dense model, whose step time is
    modelled everywhere): rank 0 gets long prompts, rank 1 short ones. In lockstep both ranks'
    steps end at the same times and rank 1 waits for rank 0's prefills; free, rank 1 is done sooner."""
    sizes = [2048, 64] * 4
    free, locked = _lockstep_run(False, sizes), _lockstep_run(True, sizes)
    assert locked.lockstep and not free.lockstep
    r0, r1 = locked.ranks
    assert set(r1.step_end_s) <= set(r0.step_end_s)
    assert max(r.finish_s for r in r1.finished) > max(r.finish_s for r in free.ranks[1].finished)
    assert len(locked.finished) == len(free.finished) == 8


def test_lockstep_ranks_take_new_requests_as_async_scheduling_does():
    """Each rank is an engine core with vLLM's asynchronous scheduling: a request reaching a busy
    rank while a step runs is first scheduled two steps later; one reaching a rank with nothing
    scheduled is scheduled at the next step (sim.engine: Engine._take_in)."""
    import simpy

    from sim.config import EngineConfig
    from sim.dp import DataParallelEngines
    from sim.steptime import StepCoefficients

    engines = DataParallelEngines(simpy.Environment(), EngineConfig(model="llama-3.1-8b", gpu="h100",
                                                                     data_parallel_size=2, max_model_len=4096),
                                  lockstep=True,
                                  coefficients=StepCoefficients(step_model="roofline", async_scheduling=True))
    engines.add_request(list(range(1, 65)), 200, request_id="busy")
    engines.env.run(until=0.1003)
    r0, r1 = engines.ranks
    assert r0._stepping and r0.step_end_s[-1] < 0.1003
    k = len(r0.step_end_s)  # the step in flight ends at r0.step_end_s[k]
    engines.add_request(list(range(1, 65)), 4, request_id="to-idle")  # rank 1: nothing scheduled there
    engines.add_request(list(range(1, 65)), 4, request_id="to-busy")  # a tie, so rank 0
    assert engines.rank_of == {"busy": 0, "to-idle": 1, "to-busy": 0}
    engines.env.run()
    (idle,), busy = r1.finished, {r.request_id: r for r in r0.finished}
    assert idle.first_scheduled_s == r0.step_end_s[k]
    assert busy["to-busy"].first_scheduled_s == r0.step_end_s[k + 1]
    assert len(engines.finished) == 3


@pytest.mark.parametrize("argv, message", [
    (["serve", "llama-3.1-8b", "--gpu", "h100", "-dp", "2"],
     "error: --data-parallel-size 2: `servelab serve` runs one engine core"),
    (["bench", "throughput", "--model", "llama-3.1-8b", "--gpu", "h100", "-dp", "2", "--engine", "orca-max",
      "--num-prompts", "4"], "error: --data-parallel-size 2: needs --engine vllm"),
], ids=["serve", "baseline-engine"])
def test_engine_dp_limits_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


# -- the capacity planner's search space ---------------------------------------------------------------
def test_tune_space_takes_expert_parallelism_for_moe_models_only():
    from sim.tune.space import SearchSpace

    moe = SearchSpace(model="Qwen/Qwen3-30B-A3B", gpus=("h100",), tensor_parallel_sizes=(1, 2),
                      max_num_seqs=(64,), max_num_batched_tokens=(8192,), enable_expert_parallel=(False, True))
    assert [(c.tensor_parallel_size, c.enable_expert_parallel) for c in moe.engine_configs()] == \
        [(1, False), (2, False), (2, True)]  # EP on one GPU changes nothing, so it is not a candidate
    dense = SearchSpace(model="Qwen/Qwen3-8B", gpus=("h100",), enable_expert_parallel=(False, True))
    assert {c.enable_expert_parallel for c in dense.engine_configs()} == {False}
    with pytest.raises(ConfigError, match=r"^--enable-expert-parallel on: Qwen/Qwen3-8B has no experts"):
        SearchSpace(model="Qwen/Qwen3-8B", gpus=("h100",), enable_expert_parallel=(True,))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["-tp", "--tensor-parallel-size", "-dp", "--data-parallel-size", "-ep",
                                 "--enable-expert-parallel", "0", "1", "2", "3", "8", "64", "-1", "x", "2.5"]),
                max_size=6),
       st.sampled_from(["qwen3-30b-a3b", "qwen3-8b", "mixtral-8x7b", "gpt-oss-20b"]))
def test_fuzzed_parallel_flags_plan_or_exit_2_in_one_line(argv, model):
    """The command line's parser and the layout's validator together: any mix of the three flags
    either plans (exit 0) or is refused in one line with exit code 2, never a traceback."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["memory", "--model", model, "--gpu", "h200", "--max-model-len", "4096", "--json", *argv])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
    assert code in (0, 2), err.getvalue()
    if code == 0:
        data = json.loads(out.getvalue())
        assert data["num_gpus"] == data["tensor_parallel_size"] * data["data_parallel_size"]
    else:
        assert "Traceback" not in err.getvalue() and err.getvalue().startswith("error:")
