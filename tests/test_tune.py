"""The capacity planner (sim/tune, `servelab tune`): SLA terms, bisection, early stopping,
pruning, ranking, Pareto, the local executor, the CLI and the manifests it exports.

Searches here are tiny (one or two GPUs, a few dozen requests a run) so the file stays fast;
benchmarks/tune_speed.py measures the full-size search. The Ray executor is in test_tune_ray.py.
"""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config import EngineConfig
from sim.errors import ConfigError
from sim.memory import plan_for_config
from sim.tune import SearchSpace, TuneRequest, parse_sla, tune
from sim.tune.bisect import bisect_max_load
from sim.tune.evaluate import Job, _run
from sim.tune.executors import LocalExecutor, SerialExecutor
from sim.tune.prices import prices_from_doc, shipped_prices
from sim.tune.rank import Deployment, pareto_front, rank
from sim.tune.sla import SLATerm, nearest_rank
from sim.workload import WorkloadSpec

SMALL = WorkloadSpec(num_prompts=60, random_input_len=256, random_output_len=64)
MODEL = "meta-llama/Llama-3.1-8B"


# -- SLA terms -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, keys, throughput", [
    pytest.param("p90_ttft_ms<=500", ["p90_ttft_ms"], None, id="one-term"),
    pytest.param("median_tpot_ms<=30, p99_e2el_ms<20000", ["median_tpot_ms", "p99_e2el_ms"], None, id="median-and-strict"),
    pytest.param("p99_ttft_ms<=1000,output_throughput>=2500", ["p99_ttft_ms"], 2500.0, id="with-throughput"),
    pytest.param("output_throughput>=100", [], 100.0, id="throughput-only"),
])
def test_parse_sla(text, keys, throughput):
    sla = parse_sla(text)
    assert [t.key for t in sla.terms] == keys
    assert sla.min_output_throughput == throughput


@pytest.mark.parametrize("text, fragment", [
    pytest.param("p90_ttft<=500", "cannot read", id="no-unit"),
    pytest.param("mean_ttft_ms<=500", "a mean is not an SLA term", id="mean"),
    pytest.param("p0_ttft_ms<=500", "out of range", id="p0"),
    pytest.param("p90_ttft_ms<=0", "positive", id="zero-limit"),
    pytest.param("", "at least one term", id="empty"),
    pytest.param("output_throughput>=nan", "cannot read", id="nan-throughput"),
    pytest.param("p90_tpot_ms<=1e999", "positive number", id="inf-limit"),
    pytest.param("p99_itl_ms<=50", r"ITL is not an SLA term.*p99_tpot_ms<=50", id="itl"),
])
def test_parse_sla_rejects(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_sla(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="pmedianttfpotl_0123456789.<>=, eE+-sx", max_size=60))
def test_parse_sla_never_fails_other_than_with_a_config_error(text):
    try:
        sla = parse_sla(text)
    except ConfigError as exc:
        assert str(exc).startswith("--sla") and "\n" not in str(exc)
    else:
        assert sla.terms or sla.min_output_throughput is not None
        assert all(math.isfinite(t.limit_ms) and t.limit_ms > 0 and 0 < t.percentile <= 100 for t in sla.terms)


def test_nearest_rank_allowance_agrees_with_the_percentile():
    # A term holds exactly when at most allowed_misses values exceed the limit.
    import numpy as np

    rng = np.random.default_rng(3)
    for n in (1, 7, 60, 200):
        values = rng.exponential(100, n)
        for p in (50, 90, 99):
            term = SLATerm("ttft", p, 100.0)
            over = int((values > term.limit_ms).sum())
            assert (nearest_rank(values, p) <= term.limit_ms) == (over <= term.allowed_misses(n))


# -- bisection -----------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.7, 3.3, 9.99, 17.0])
def test_bisection_finds_the_threshold_of_a_monotone_toy(threshold):
    found = bisect_max_load(lambda x: (x <= threshold, None), 0.5, 20.0, rel_tol=0.01, max_probes=64)
    assert found.best_load is not None and found.best_load <= threshold
    assert threshold - found.best_load <= 0.01 * found.lowest_miss
    assert found.lowest_miss > threshold


def test_bisection_reports_when_even_the_lowest_load_misses_or_the_highest_meets():
    assert bisect_max_load(lambda x: (False, None), 1, 10).best_load is None
    top = bisect_max_load(lambda x: (True, None), 1, 10)
    assert top.best_load == 10 and len(top.probes) == 1


def test_integer_bisection_lands_on_the_integer():
    found = bisect_max_load(lambda c: (c <= 37, None), 1, 256, rel_tol=0.0, integer=True)
    assert found.best_load == 37 and found.lowest_miss == 38


# -- early stopping ------------------------------------------------------------------------------
@pytest.mark.parametrize("sla", ["p90_ttft_ms<=150,p90_tpot_ms<=20", "median_e2el_ms<=1500", "p99_tpot_ms<=12"])
def test_early_stopping_gives_the_verdict_of_the_full_run(sla):
    config = EngineConfig(model=MODEL, gpu="a100-80gb", max_model_len=2048, max_num_seqs=128)
    job = Job(config, SMALL, parse_sla(sla).terms)
    stopped = 0
    for load in (1.0, 4.0, 8.0, 16.0, 40.0):
        early, full = _run(job, load, stop=True), _run(job, load, stop=False)
        assert early.met == full.met, (sla, load)
        assert not full.stopped_early
        stopped += early.stopped_early
    assert stopped > 0


# -- pruning -------------------------------------------------------------------------------------
class RecordingExecutor(SerialExecutor):
    def __init__(self):
        self.jobs = []

    def map_unordered(self, fn, items):
        items = list(items)
        self.jobs.extend(items)
        return super().map_unordered(fn, items)


def _request(gpus, sla="p90_ttft_ms<=2000,p90_tpot_ms<=100", model=MODEL, **space):
    space = SearchSpace(model=model, gpus=gpus, max_model_len=2048, **space)
    return TuneRequest(space, SMALL, parse_sla(sla), shipped_prices(), rel_tol=0.2)


def test_pruning_never_simulates_a_configuration_that_does_not_fit():
    request = _request(("l4", "a100-80gb"), model="meta-llama/Llama-3.1-70B", tensor_parallel_sizes=(1, 2, 4),
                       max_num_seqs=(64,), max_num_batched_tokens=(2048,))
    executor = RecordingExecutor()
    result = tune(request, executor)
    simulated = {job.config for job in executor.jobs}
    for config in request.space.engine_configs():
        try:
            plan_for_config(config)
            fits = True
        except ConfigError:
            fits = False
        assert (config in simulated) == fits, config
    assert result.counts.pruned_configs == len(result.pruned) > 0
    assert all(p.reason for p in result.pruned)


def test_max_num_batched_tokens_below_max_num_seqs_is_pruned_as_vllm_refuses_it():
    result = tune(_request(("h100",), tensor_parallel_sizes=(1,), max_num_seqs=(512,), max_num_batched_tokens=(256, 2048)))
    assert [p.config.max_num_batched_tokens for p in result.pruned] == [256]
    # sim.config's one rule and one message, as bench and memory print it for the same flags
    assert result.pruned[0].reason == ("--max-num-batched-tokens (256) must be greater than or equal to --max-num-seqs "
                                       "(512), as vLLM requires; raise the first or lower the second")
    assert result.pruned[0].kind == "--max-num-batched-tokens below --max-num-seqs (vLLM refuses it)"


# Each of sim.memory's out-of-memory refusals, and the kind tune counts it under: read from the
# error's kind, so that vLLM's wording of the message may change without moving a configuration.
@pytest.mark.parametrize("config, oom_kind, prune_kind", [
    pytest.param(EngineConfig(model="deepseek-ai/DeepSeek-V3", gpu="h100", tensor_parallel_size=8, max_num_seqs=256,
                              max_num_batched_tokens=8192, max_model_len=4096),
                 "weights", "the weights do not fit in GPU memory", id="weights"),
    pytest.param(EngineConfig(model=MODEL, gpu="l4", max_num_seqs=1024, max_num_batched_tokens=16384,
                              max_model_len=2048, gpu_memory_utilization=0.8),
                 "kv_cache", "no memory left for the KV cache", id="activations-leave-no-kv-cache"),
    pytest.param(EngineConfig(model=MODEL, gpu="l4", max_num_seqs=256, max_num_batched_tokens=8192,
                              max_model_len=131072),
                 "max_model_len", "the KV cache cannot hold one --max-model-len 131072 sequence", id="max-model-len"),
])
def test_out_of_memory_refusals_are_told_apart_by_their_kind(config, oom_kind, prune_kind):
    import pickle

    from sim.errors import OutOfMemoryError
    from sim.tune.prune import _kind, check

    with pytest.raises(OutOfMemoryError) as err:
        plan_for_config(config)
    assert err.value.kind == oom_kind
    assert ("weights alone do not fit" in str(err.value)) == (oom_kind == "weights")  # the advice agrees
    assert check(config, 1024).kind == prune_kind
    # the kind, not the words: the same refusal reworded is counted alike, and it survives a process pool
    reworded = pickle.loads(pickle.dumps(OutOfMemoryError("reworded by a later vLLM", oom_kind)))
    assert _kind(config, reworded) == prune_kind


# -- ranking and Pareto --------------------------------------------------------------------------
def _dep(name, cost_h, cost_m, per_gpu, per_user, meets=True, margin=0.1):
    config = EngineConfig(model=MODEL, gpu="h100", max_num_seqs=name)
    return Deployment(config, 1, 1, meets, 1.0, 1.0, per_gpu, per_gpu, per_user, cost_h, cost_m, {"k": margin})


def test_ranking_puts_the_cheapest_first_and_drops_misses():
    a, b, c = _dep(1, 10, 0.5, 100, 10), _dep(2, 5, 0.9, 100, 10), _dep(3, 1, 0.1, 100, 10, meets=False)
    assert [d.config.max_num_seqs for d in rank([a, b, c], by_cost_per_hour=True)] == [2, 1]
    assert [d.config.max_num_seqs for d in rank([a, b, c], by_cost_per_hour=False)] == [1, 2]
    tie = _dep(4, 5, 0.9, 100, 10, margin=0.5)
    assert rank([b, tie], by_cost_per_hour=True)[0] is tie  # more headroom wins a tie


def test_at_a_target_rate_equal_cost_is_a_tie_that_headroom_breaks():
    from sim.tune.evaluate import Evaluation, Probe
    from sim.tune.rank import deployment

    price, sla = shipped_prices()["h100-80gb"], parse_sla("p90_tpot_ms<=50")
    evs = [Evaluation(EngineConfig(model=MODEL, gpu="h100", max_num_seqs=seqs), "meets", "rate", best_load=g,
                      capacity=20.0, best=Probe(g, True, False, {"p90_tpot_ms": tpot}, tpot, math.nan),
                      mean_output_len=256.0)
           for seqs, g, tpot in ((64, 5.66, 40.0), (256, 7.3, 30.0))]  # 4 / 7.3 x 7.3 x 256 rounds below 1024
    deps = [deployment(ev, sla, 4.0, price, max_replicas=8) for ev in evs]
    assert {d.output_tokens_per_s for d in deps} == {4.0 * 256}  # the same tokens at the same load
    assert deps[0].cost_per_million_tokens == deps[1].cost_per_million_tokens
    assert [d.config.max_num_seqs for d in rank(deps, by_cost_per_hour=True)] == [256, 64]  # 40% headroom, then 20%


def test_pareto_front_keeps_exactly_the_undominated():
    points = [_dep(1, 1, 1, 100, 10), _dep(2, 1, 1, 80, 20), _dep(3, 1, 1, 70, 15), _dep(4, 1, 1, 50, 30),
              _dep(5, 1, 1, 100, 5)]
    front = {d.config.max_num_seqs for d in pareto_front(points)}
    assert front == {1, 2, 4}


# -- the search end to end -----------------------------------------------------------------------
def test_tune_ranks_configurations_that_meet_and_counts_its_work():
    request = _request(("h100", "a100-80gb"), tensor_parallel_sizes=(1, 2), max_num_seqs=(64, 256),
                       max_num_batched_tokens=(8192,))
    request = TuneRequest(request.space, SMALL, request.sla, request.prices, target_load=10.0, rel_tol=0.2)
    result = tune(request)
    c = result.counts
    assert c.candidates == 8 * request.space.max_replicas and c.simulated_configs == 8 and c.pruned_configs == 0
    assert c.simulations >= 2 * 8 and c.stopped_early > 0
    assert result.ranked and all(d.meets for d in result.ranked)
    costs = [d.cost_per_hour for d in result.ranked]
    assert costs == sorted(costs)
    for d in result.ranked:  # replicas carry the target load
        assert d.replicas * d.load_per_replica >= 10.0 - 1e-9
    assert result.winner is result.ranked[0]


def test_an_sla_no_configuration_meets_returns_the_closest_with_what_it_misses():
    result = tune(_request(("a100-80gb",), sla="p90_tpot_ms<=1", tensor_parallel_sizes=(1, 2),
                           max_num_seqs=(64,), max_num_batched_tokens=(2048,)))
    assert not result.ranked and result.closest
    miss = result.closest[0].misses[0]
    assert miss["key"] == "p90_tpot_ms" and miss["measured"] > 1 and miss["over_pct"] > 100


def test_concurrency_mode_bisects_clients():
    space = SearchSpace(model=MODEL, gpus=("h100",), tensor_parallel_sizes=(1,), max_num_seqs=(64,),
                        max_num_batched_tokens=(8192,), max_model_len=2048)
    request = TuneRequest(space, SMALL, parse_sla("p90_tpot_ms<=14"), shipped_prices(), mode="concurrency",
                          target_load=100.0)
    result = tune(request)
    (ev,) = result.evaluations
    assert ev.status == "meets" and float(ev.best_load).is_integer() and 1 <= ev.best_load <= 64
    assert result.ranked[0].replicas == math.ceil(100 / ev.best_load)


def test_local_executor_gives_the_serial_answer():
    request = _request(("h100", "l40s"), tensor_parallel_sizes=(1,), max_num_seqs=(64, 128), max_num_batched_tokens=(4096,))
    serial = tune(request)
    executor = LocalExecutor(workers=2)
    try:
        local = tune(request, executor)
    finally:
        executor.close()
    assert [e.config for e in local.evaluations] == [e.config for e in serial.evaluations]
    assert [e.best_load for e in local.evaluations] == [e.best_load for e in serial.evaluations]
    assert [d.config for d in local.ranked] == [d.config for d in serial.ranked]


# -- prices --------------------------------------------------------------------------------------
def test_shipped_prices_have_a_source_and_a_date_each():
    prices = shipped_prices()
    assert {"h100-80gb", "a100-80gb", "l4"} <= set(prices)
    assert all(p.usd_per_gpu_hour > 0 and p.source and p.date[:4].isdigit() for p in prices.values())


@pytest.mark.parametrize("doc, fragment", [
    pytest.param({"gpus": {"h100": {"usd_per_gpu_hour": 2.0, "date": "2026-01-01"}}}, "source", id="no-source"),
    pytest.param({"gpus": {"h100": {"usd_per_gpu_hour": -1, "source": "x", "date": "d"}}}, "positive", id="negative"),
    pytest.param({"gpus": {"tpu-v9": {"usd_per_gpu_hour": 1, "source": "x", "date": "d"}}}, "unknown GPU", id="unknown"),
    pytest.param(["h100"], "expected a mapping", id="not-a-mapping"),
])
def test_price_table_errors_name_the_entry(doc, fragment):
    with pytest.raises(ConfigError, match=fragment):
        prices_from_doc(doc, origin="prices.yaml")


def test_a_trace_is_replayed_at_the_rate_asked():
    from sim.tune.evaluate import at_load

    spec = WorkloadSpec(dataset_name="trace", dataset_path="azure-conv", num_prompts=300)
    for rate in (2.0, 25.0):
        w = at_load(spec, 0, rate)
        assert (len(w) - 1) / (w.arrival_s[-1] - w.arrival_s[0]) == pytest.approx(rate)
    base = at_load(spec, 0, 1.0)
    assert at_load(spec, 0, 4.0).arrival_s == pytest.approx(base.arrival_s / 4)  # same requests, times scaled


def test_replicas_rise_to_the_throughput_term_and_a_fixed_load_can_miss_it():
    from sim.tune.evaluate import Evaluation, Probe
    from sim.tune.rank import deployment

    config = EngineConfig(model=MODEL, gpu="h100", tensor_parallel_size=2)
    best = Probe(4.0, True, False, {"p90_ttft_ms": 200.0}, 20.0, math.nan)
    ev = Evaluation(config, "meets", "rate", best_load=4.0, capacity=10.0, best=best, mean_output_len=250.0)
    price = shipped_prices()["h100-80gb"]
    sla = parse_sla("p90_ttft_ms<=400,output_throughput>=2500")  # one replica makes 4 x 250 = 1000 tok/s
    d = deployment(ev, sla, None, price, max_replicas=8)
    assert d.meets and d.replicas == 3 and d.num_gpus == 6
    assert d.cost_per_hour == pytest.approx(6 * price.usd_per_gpu_hour)
    assert d.margins == {"p90_ttft_ms": pytest.approx(0.5)}
    fixed = deployment(ev, sla, 2.0, price, max_replicas=8)  # 2 req/s make only 500 tok/s
    assert not fixed.meets and fixed.misses[0]["key"] == "output_throughput"
    too_many = deployment(ev, parse_sla("p90_ttft_ms<=400"), 100.0, price, max_replicas=8)
    assert not too_many.meets and too_many.misses[0]["key"] == "replicas" and too_many.replicas == 25
    # The Pareto front's point is one replica: the floor is the whole deployment's, not a replica's.
    point = deployment(ev, sla, None, price, max_replicas=8, one_replica=True)
    assert point.meets and (point.replicas, point.num_gpus) == (1, 2)
    assert point.tokens_per_s_per_gpu == pytest.approx(d.tokens_per_s_per_gpu) == 500.0


def test_pareto_points_are_one_replica_each_under_a_throughput_floor():
    result = tune(_request(("h100",), tensor_parallel_sizes=(1,), max_num_seqs=(64,), max_num_batched_tokens=(8192,),
                           sla="p90_ttft_ms<=2000,output_throughput>=100000"))
    assert result.points and all(p.replicas == 1 and p.meets for p in result.pareto)


def test_headroom_tightens_every_limit_and_says_so():
    sla = parse_sla("p90_ttft_ms<=500,median_tpot_ms<=40,output_throughput>=900")
    assert sla.with_headroom(0) is sla
    planned = sla.with_headroom(0.1)
    assert [t.limit_ms for t in planned.terms] == pytest.approx([450.0, 36.0])
    assert planned.min_output_throughput == pytest.approx(1000.0)
    assert planned.headroom == 0.1 and "less 10% headroom" in planned.describe()
    assert [t.key for t in planned.terms] == [t.key for t in sla.terms]


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, float("nan"), "x"])
def test_headroom_out_of_range_is_refused(bad):
    with pytest.raises(ConfigError, match="--headroom"):
        parse_sla("p90_ttft_ms<=500").with_headroom(bad)


def test_headroom_only_rules_out_deployments_it_should():
    """What meets the SLA with 30% headroom also meets it without; the cheapest answer costs at
    least as much, and every ranked deployment has at least that share of each limit to spare."""
    base = _request(("h100",), sla="p90_ttft_ms<=400,p90_tpot_ms<=25", tensor_parallel_sizes=(1, 2),
                    max_num_seqs=(64, 256), max_num_batched_tokens=(8192,))
    plain = tune(TuneRequest(base.space, SMALL, base.sla, base.prices, target_load=10.0, rel_tol=0.2))
    spare = tune(TuneRequest(base.space, SMALL, base.sla.with_headroom(0.3), base.prices, target_load=10.0,
                             rel_tol=0.2))
    assert plain.ranked and spare.ranked
    assert spare.winner.cost_per_hour >= plain.winner.cost_per_hour
    plain_by_config = {d.config: d for d in plain.ranked}
    for d in spare.ranked:  # margins are against the tightened limits: within them is 30% inside the SLA
        assert d.min_margin >= 0 and set(d.margins) == {"p90_ttft_ms", "p90_tpot_ms"}
        # The same configuration, without headroom, carries at least as much (within the bisection's tolerance).
        assert d.config in plain_by_config
        assert d.load_per_replica <= plain_by_config[d.config].load_per_replica * 1.2


# -- what the planner says about its search space ------------------------------------------------
@pytest.mark.parametrize("model, gpu, tp, kind, where", [
    pytest.param("Qwen/Qwen3-32B", "h200", 3, "TP 3 does not divide the 64 attention heads", "h200 tp3",
                 id="tp-does-not-divide-heads"),
    pytest.param("deepseek-ai/DeepSeek-V3", "h100", 8, "the weights do not fit in GPU memory", "h100-80gb tp8",
                 id="weights-do-not-fit"),
])
def test_a_search_space_pruned_whole_says_why_grouped_and_counted(model, gpu, tp, kind, where):
    from sim.tune.prune import group_pruned

    request = _request((gpu,), model=model, tensor_parallel_sizes=(tp,), max_num_seqs=(64, 256),
                       max_num_batched_tokens=(2048, 8192))
    executor = RecordingExecutor()
    result = tune(request, executor)
    assert executor.jobs == [] and result.evaluations == [] and not result.ranked and not result.closest
    (group,) = group_pruned(result.pruned)
    assert (group.kind, group.count, group.where) == (kind, 4, (where,))
    assert group.example == result.pruned[0].reason  # vLLM's full message, numbers and advice included


def test_pruned_kinds_are_counted_apart_most_common_first():
    from sim.tune.prune import group_pruned

    result = tune(_request(("l4",), model="meta-llama/Llama-3.1-70B", tensor_parallel_sizes=(1, 2, 3),
                           max_num_seqs=(512,), max_num_batched_tokens=(256, 2048, 8192)))
    groups = [(g.kind, g.count, g.where) for g in group_pruned(result.pruned)]
    assert groups == [("the weights do not fit in GPU memory", 4, ("l4 tp1", "l4 tp2")),
                      ("--max-num-batched-tokens below --max-num-seqs (vLLM refuses it)", 3, ("l4 tp1", "l4 tp2", "l4 tp3")),
                      ("TP 3 does not divide the 64 attention heads", 2, ("l4 tp3",))]
    assert sum(g[1] for g in groups) == result.counts.pruned_configs == 9


def test_expert_parallel_on_alone_with_tp_1_is_an_empty_space_and_refused():
    with pytest.raises(ConfigError, match="--enable-expert-parallel on with --tensor-parallel-size 1"):
        SearchSpace(model="Qwen/Qwen3-30B-A3B", gpus=("h100",), tensor_parallel_sizes=(1,),
                    enable_expert_parallel=(True,))


@pytest.mark.parametrize("model, asked, searched", [
    pytest.param(MODEL, (None, "fp8"), [None, "fp8_per_tensor"], id="16-bit-checkpoint-fp8-is-fp8_per_tensor"),
    pytest.param(MODEL, ("fp8", "fp8_per_tensor"), ["fp8_per_tensor"], id="both-spellings-searched-once"),
    pytest.param("deepseek-ai/DeepSeek-V3", (None, "fp8"), [None], id="fp8-checkpoint-fp8-is-its-own"),
])
def test_the_quantization_axis_uses_vllms_non_deprecated_spelling(model, asked, searched):
    space = SearchSpace(model=model, gpus=("h200",), tensor_parallel_sizes=(8,), max_num_seqs=(64,),
                        max_num_batched_tokens=(8192,), quantization=asked)
    assert [c.quantization for c in space.engine_configs()] == searched


def test_fp8_per_tensor_is_the_engine_fp8_was_without_the_deprecation_warning():
    from sim.catalog import get_gpu, get_model
    from sim.precision import resolve_precision

    old, new = (EngineConfig(model=MODEL, gpu="h100", quantization=q, max_model_len=2048) for q in ("fp8", "fp8_per_tensor"))
    p_old, p_new = (resolve_precision(get_model(MODEL), get_gpu("h100"), c) for c in (old, new))
    assert any("deprecated" in line for line in p_old.log_lines)
    assert not any("deprecated" in line for line in p_new.log_lines)
    same = lambda p: (p.gemm_dtype, p.weight_scheme, p.linear_kernel, p.kv_cache_dtype, p.weight_bytes_per_param)
    assert same(p_old) == same(p_new)
    assert plan_for_config(old).num_gpu_blocks == plan_for_config(new).num_gpu_blocks


def test_the_search_plans_with_vllms_and_servelabs_gpu_memory_utilization():
    from dataclasses import fields

    default = next(f.default for f in fields(EngineConfig) if f.name == "gpu_memory_utilization")
    space = SearchSpace(model=MODEL, gpus=("h100",))
    assert space.gpu_memory_utilization == default == 0.92  # vLLM 0.33's config/cache.py, as memory and bench
    assert {c.gpu_memory_utilization for c in space.engine_configs()} == {default}


def test_throughput_and_cost_at_the_target_and_at_the_highest_load_are_told_apart():
    request = _request(("h100",), tensor_parallel_sizes=(1, 2), max_num_seqs=(64,), max_num_batched_tokens=(8192,))
    result = tune(TuneRequest(request.space, SMALL, request.sla, request.prices, target_load=5.0, rel_tol=0.2))
    points = {d.config: d for d in result.points}
    assert result.ranked and all(d.at_target for d in result.ranked) and not any(d.at_target for d in points.values())
    for d in result.ranked:
        # at the target: the same 5 req/s x mean output tokens on every row, over its GPUs
        assert d.output_tokens_per_s == pytest.approx(result.ranked[0].output_tokens_per_s)
        one = points[d.config]  # one replica at its highest load meeting the SLA
        assert d.tokens_per_s_per_gpu_at_max_load == pytest.approx(one.tokens_per_s_per_gpu)
        assert d.cost_per_million_tokens_at_max_load == pytest.approx(one.cost_per_million_tokens)
        assert one.tokens_per_s_per_gpu_at_max_load == pytest.approx(one.tokens_per_s_per_gpu)


# -- max_model_len within the model's limit; configurations the simulator cannot run -----------------

@pytest.mark.parametrize("longest, model, expected", [
    pytest.param(600, None, 2048, id="at-least-2048"),
    pytest.param(5000, "meta-llama/Llama-3.1-8B", 8192, id="power-of-two-under-the-limit"),
    pytest.param(34000, "Qwen/Qwen3-32B", 40960, id="capped-at-max-position-embeddings"),
    pytest.param(40960, "Qwen/Qwen3-32B", 40960, id="exactly-the-limit"),
])
def test_default_max_model_len_never_exceeds_the_models_limit(longest, model, expected):
    from sim.tune.space import default_max_model_len

    assert default_max_model_len(longest, model) == expected


def test_a_request_longer_than_the_model_takes_is_an_input_error_naming_the_lengths():
    from sim.tune.space import default_max_model_len

    with pytest.raises(ConfigError) as err:
        default_max_model_len(44000, "Qwen/Qwen3-32B", lengths="--random-input-len 40000 + --random-output-len 4000")
    assert str(err.value) == ("the longest request is 44,000 tokens (--random-input-len 40000 + --random-output-len "
                              "4000), more than Qwen/Qwen3-32B can take: 40,960 tokens (max_position_embeddings in "
                              "its config.json); shorten the input or the output")


def test_qwen3_32b_with_34000_token_requests_is_not_pruned_for_max_model_len():
    from sim.tune.prune import check
    from sim.tune.space import default_max_model_len

    config = EngineConfig(model="Qwen/Qwen3-32B", gpu="h200", tensor_parallel_size=2, max_num_seqs=64,
                          max_num_batched_tokens=8192, max_model_len=default_max_model_len(34000, "Qwen/Qwen3-32B"))
    result = check(config, 34000)
    assert result.kept, result.reason


def test_a_configuration_the_simulator_cannot_run_is_not_simulatable_not_a_miss():
    space = SearchSpace(model="openai/gpt-oss-120b", gpus=("a100-80gb",), tensor_parallel_sizes=(1, 2),
                        max_num_seqs=(64,), max_num_batched_tokens=(8192,), max_replicas=2)
    request = TuneRequest(space, WorkloadSpec(num_prompts=20, random_input_len=256, random_output_len=64),
                          parse_sla("p90_ttft_ms<=500"), shipped_prices())
    result = tune(request, SerialExecutor())
    assert not result.evaluations and not result.closest and not result.ranked
    assert result.counts.unsimulatable_configs == 2 and result.counts.simulated_configs == 0
    assert all("cannot price it" in u.reason and u.kind == u.reason for u in result.unsimulatable)


def test_one_pool_reuses_its_pool_and_shuts_the_old_one_when_the_count_changes():
    from sim.tune.executors import OnePool

    made = []

    class Fake:
        def __init__(self, workers, fresh):
            self.workers, self.fresh, self.closed = workers, fresh, None
            made.append(self)

        def close(self, wait=True):
            self.closed = wait

    pools = OnePool(make=Fake)
    first = pools.get(1)
    assert pools.get(1) is first and len(made) == 1  # the same count: the same pool
    second = pools.get(2)
    assert second is not first and first.closed is False  # shut down without waiting, not kept
    pools.drop()
    assert second.closed is False and pools.get(2) is not second and len(made) == 3
    assert not any(p.fresh for p in made)


def test_one_pool_replaces_its_workers_when_the_code_they_imported_changes(tmp_path):
    """A worker keeps the modules it imported: after an edit under ``watch`` the pool is
    replaced by one whose workers start afresh (not forked from the forkserver, which keeps the
    old modules)."""
    import os

    from sim.tune.executors import OnePool

    source = tmp_path / "scheduler.py"
    source.write_text("BUDGET = 1\n")
    made = []

    class Fake:
        def __init__(self, workers, fresh):
            self.fresh, self.closed = fresh, None
            made.append(self)

        def close(self, wait=True):
            self.closed = wait

    pools = OnePool(make=Fake, watch=[tmp_path])
    first = pools.get(2)
    assert pools.get(2) is first and not first.fresh
    source.write_text("BUDGET = 2\n")
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))  # a later edit
    second = pools.get(2)
    assert second is not first and second.fresh and first.closed is False
    assert pools.get(2) is second  # no change since
    (tmp_path / "new_module.py").write_text("")
    third = pools.get(2)
    assert third is not second and third.fresh


def test_a_fresh_local_executor_runs_the_code_on_disk(tmp_path, monkeypatch):
    """spawn=True starts interpreters that import the module as it is now."""
    (tmp_path / "probe_mod.py").write_text("def value(_):\n    return 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import probe_mod

    pool = LocalExecutor(1, spawn=True)
    try:
        assert list(pool.map_unordered(probe_mod.value, [0])) == [2]
    finally:
        pool.close()


def test_local_executor_close_without_waiting_lets_given_work_finish():
    pool = LocalExecutor(1)
    results = pool.map_unordered(abs, [-3])
    assert list(results) == [3]
    pool.close(wait=False)
    with pytest.raises(RuntimeError):  # shut down: takes no new work
        pool._pool.submit(abs, -1)
