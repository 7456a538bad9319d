"""Workloads: vLLM's random dataset and arrivals, ShareGPT/Alpaca-like lengths, prefixes, traces."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.errors import ConfigError
from sim.workload import (
    LENGTH_DISTRIBUTIONS,
    WorkloadSpec,
    arrival_times,
    build_workload,
    parse_trace_csv,
    read_trace,
)


def build(seed: int = 0, **kwargs):
    return build_workload(WorkloadSpec(**kwargs), np.random.default_rng(seed))


# -- random dataset -----------------------------------------------------------------------
@pytest.mark.parametrize("input_len, output_len, ratio, in_bounds, out_bounds", [
    (1024, 128, 0.0, (1024, 1024), (128, 128)),
    (100, 10, 0.5, (50, 150), (5, 15)),
    (33, 3, 0.9, (3, 63), (1, 6)),  # floor(0.3) = 0 is raised to 1 for outputs, as vLLM
], ids=["fixed", "half", "wide"])
def test_random_lengths_follow_vllm_bounds(input_len, output_len, ratio, in_bounds, out_bounds):
    w = build(random_input_len=input_len, random_output_len=output_len, random_range_ratio=ratio, num_prompts=4000)
    assert (w.prompt_len.min(), w.prompt_len.max()) == in_bounds
    assert (w.output_len.min(), w.output_len.max()) == out_bounds
    assert w.prompt_len.dtype == np.int64 and w.output_len.dtype == np.int64


def test_default_is_vllm_random_1000_prompts_all_at_once():
    w = build()
    assert len(w) == 1000 and w.n == 1
    assert (w.prompt_len == 1024).all() and (w.output_len == 128).all()
    assert (w.arrival_s == 0).all()


# -- ShareGPT-like lengths ----------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["sharegpt", "sharegpt-vllm", "alpaca"])
def test_means_match_published_within_3_percent(dataset):
    dist = LENGTH_DISTRIBUTIONS[dataset]
    w = build(seed=7, dataset_name=dataset, num_prompts=10_000)
    assert w.prompt_len.mean() == pytest.approx(dist.target_mean_in, rel=0.03)
    assert w.output_len.mean() == pytest.approx(dist.target_mean_out, rel=0.03)


def test_reference_file_means():
    # The published means, as the reference yaml gives them.
    assert (LENGTH_DISTRIBUTIONS["sharegpt"].target_mean_in, LENGTH_DISTRIBUTIONS["sharegpt"].target_mean_out) == (161.31, 337.99)
    assert (LENGTH_DISTRIBUTIONS["alpaca"].target_mean_in, LENGTH_DISTRIBUTIONS["alpaca"].target_mean_out) == (19.31, 58.45)
    assert (LENGTH_DISTRIBUTIONS["sharegpt-vllm"].target_mean_in, LENGTH_DISTRIBUTIONS["sharegpt-vllm"].target_mean_out) == (202, 179)


@pytest.mark.parametrize("max_model_len, max_total", [(None, 2048), (1024, 1024), (512, 512)])
def test_sharegpt_filter_like_vllm(max_model_len, max_total):
    w = build(dataset_name="sharegpt", num_prompts=5000, max_model_len=max_model_len)
    assert (w.prompt_len >= 4).all() and (w.output_len >= 4).all()
    assert (w.prompt_len <= 1024).all()
    assert (w.prompt_len + w.output_len <= max_total).all()
    assert w.num_filtered > 0


def test_sharegpt_output_len_fixes_outputs():
    w = build(dataset_name="sharegpt", num_prompts=500, sharegpt_output_len=256)
    assert (w.output_len == 256).all()


# -- arrivals -----------------------------------------------------------------------------
def test_poisson_arrivals_end_at_n_over_rate_and_are_exponential():
    rng = np.random.default_rng(3)
    t = arrival_times(20_000, 10.0, 1.0, rng)
    assert t[-1] == pytest.approx(2000.0)  # vLLM rescales to num_prompts / request_rate
    assert (np.diff(t) >= 0).all()
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(0.1, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential: CV 1


@pytest.mark.parametrize("burstiness, cv", [(0.25, 2.0), (4.0, 0.5)], ids=["bursty", "smooth"])
def test_gamma_burstiness(burstiness, cv):
    gaps = np.diff(arrival_times(20_000, 5.0, burstiness, np.random.default_rng(1)))
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.07)  # Gamma(k): CV = 1/sqrt(k)


def test_constant_arrivals_with_infinite_burstiness():
    t = arrival_times(100, 4.0, math.inf, np.random.default_rng(0))
    assert np.allclose(np.diff(t), 0.25) and t[0] == pytest.approx(0.25)


def test_workload_arrivals_non_decreasing():
    w = build(dataset_name="alpaca", request_rate=3.0, burstiness=0.5, num_prompts=300)
    assert (np.diff(w.arrival_s) >= 0).all() and w.arrival_s.dtype == np.float64


# -- determinism --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {"dataset_name": "sharegpt", "request_rate": 2.0},
    {"random_range_ratio": 0.3, "prefix_len": 64, "prefix_fraction": 0.5, "num_prefix_groups": 3},
    {"dataset_name": "trace", "dataset_path": "azure-code", "num_prompts": 200, "prefix_len": 16},
], ids=["sharegpt", "random-prefix", "trace"])
def test_same_seed_same_bytes(kwargs):
    a, b = build(11, **kwargs), build(11, **kwargs)
    for name in ("arrival_s", "prompt_len", "output_len", "prefix_len", "prefix_group"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
    assert [a.prompt_token_ids(i, 32000) for i in range(20)] == [b.prompt_token_ids(i, 32000) for i in range(20)]
    c = build(12, **kwargs)
    assert a.prompt_token_ids(0, 32000) != c.prompt_token_ids(0, 32000)


def test_arrays_are_read_only():
    w = build(num_prompts=5)
    with pytest.raises(ValueError):
        w.prompt_len[0] = 3


# -- shared prefixes and token ids --------------------------------------------------------
def test_prefix_groups_share_exactly_and_nothing_else():
    w = build(random_input_len=40, random_output_len=4, num_prompts=400, prefix_len=48,
              prefix_fraction=0.5, num_prefix_groups=2, prompt_ids="independent")
    ids = [w.prompt_token_ids(i, 32000) for i in range(len(w))]
    assert all(len(ids[i]) == w.prompt_len[i] for i in range(len(w)))
    assert 0.4 < (w.prefix_group >= 0).mean() < 0.6
    assert set(np.unique(w.prefix_group)) == {-1, 0, 1}
    prefixes = {}
    for i, toks in enumerate(ids):
        g = int(w.prefix_group[i])
        if g >= 0:
            assert w.prefix_len[i] == 48 and w.prompt_len[i] == 40 + 48
            prefixes.setdefault(g, toks[:48])
            assert toks[:48] == prefixes[g]
        else:
            assert w.prefix_len[i] == 0
    assert prefixes[0] != prefixes[1]
    # Beyond the prefix, no two requests share their first block of 16 tokens.
    first_own_blocks = {tuple(toks[int(w.prefix_len[i]): int(w.prefix_len[i]) + 16]) for i, toks in enumerate(ids)}
    assert len(first_own_blocks) == len(w)


def test_random_prompts_are_built_as_vllms_random_dataset_builds_them():
    """vLLM's RandomDataset: request i is (offset_i + i + 0, 1, 2, ...) mod V, offset_i uniform,
    so two requests starting at the same id repeat a prompt: E[distinct] = V (1 - (1 - 1/V)^N)."""
    vocab, n = 2000, 1000
    w = build(random_input_len=64, random_output_len=4, num_prompts=n)
    ids = [w.prompt_token_array(i, vocab) for i in range(n)]
    for toks in ids:
        assert ((np.diff(toks) % vocab) == 1).all() and toks.min() >= 0 and toks.max() < vocab
    distinct = len({tuple(t) for t in ids})
    expected = vocab * (1 - (1 - 1 / vocab) ** n)  # 787 of 1,000
    assert abs(distinct - expected) < 4 * np.sqrt(n * 0.25)
    # Prompts that start apart share no first block (block hashes chain from the start).
    assert len({tuple(t[:16]) for t in ids}) == distinct
    # A tokenizer's vocabulary (servelab bench serve --tokenizer) replaces the caller's.
    small = build(random_input_len=64, random_output_len=4, num_prompts=n, vocab_size=50)
    assert max(int(small.prompt_token_array(i, 128256).max()) for i in range(n)) < 50
    assert len({tuple(small.prompt_token_ids(i, 128256)) for i in range(n)}) == 50
    # Independent ids: no prompt repeats; other datasets draw them so by default.
    indep = build(random_input_len=64, random_output_len=4, num_prompts=n, prompt_ids="independent")
    assert len({tuple(indep.prompt_token_ids(i, vocab)) for i in range(n)}) == n
    assert not build(dataset_name="sharegpt", num_prompts=10).consecutive_ids
    with pytest.raises(ConfigError, match="prompt_ids"):
        WorkloadSpec(prompt_ids="shuffled")
    with pytest.raises(ConfigError, match="--tokenizer"):
        WorkloadSpec(vocab_size=0)


def test_prefix_fraction_zero_means_no_prefix():
    w = build(num_prompts=50, prefix_len=32, prefix_fraction=0.0)
    assert (w.prefix_group == -1).all() and (w.prefix_len == 0).all() and (w.prompt_len == 1024).all()


def test_n_parallel_samples_carried():
    assert build(n=4, num_prompts=3).n == 4


# -- traces -------------------------------------------------------------------------------
def test_shipped_azure_conversation_trace_matches_reference():
    w = build(dataset_name="trace", dataset_path="azure-conv")
    assert len(w) == 19_366  # reference yaml: rows 19366, mean prefill 1155, mean decode 211
    assert w.prompt_len.mean() == pytest.approx(1155, abs=1)
    assert w.output_len.mean() == pytest.approx(211, abs=1)
    assert w.arrival_s[0] == 0.0 and (np.diff(w.arrival_s) >= 0).all()


def test_trace_time_scale_num_prompts_and_filter(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n2.0,3000,5\n4.0,20,7\n6.0,5,5\n")
    w = build(dataset_name="trace", dataset_path=str(path), trace_time_scale=0.5, max_model_len=2048, num_prompts=2)
    assert w.arrival_s.tolist() == [0.0, 2.0]  # row 2 filtered (3005 > 2048), times halved
    assert w.prompt_len.tolist() == [10, 20] and w.output_len.tolist() == [5, 7]
    assert w.num_filtered == 1


def test_trace_prefix_is_part_of_the_prompt(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,100,5\n1,8,5\n")
    w = build(dataset_name="trace", dataset_path=str(path), prefix_len=32)
    assert w.prompt_len.tolist() == [100, 8]
    assert w.prefix_len.tolist() == [32, 7]
    assert w.prompt_token_ids(1, 1000)[:7] == w.prompt_token_ids(0, 1000)[:7]


BAD_CSVS = [
    pytest.param("", "empty file", id="empty"),
    pytest.param("time,in,out\n1,2,3\n", "line 1: missing column", id="header"),
    pytest.param("arrived_at,num_prefill_tokens,num_decode_tokens\n", "no requests", id="no-rows"),
    pytest.param("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\nx,10,5\n",
                 "line 3, column 'arrived_at'", id="bad-time"),
    pytest.param("arrived_at,num_prefill_tokens,num_decode_tokens\n0,-4,5\n",
                 "line 2, column 'num_prefill_tokens'", id="negative"),
    pytest.param("arrived_at,num_prefill_tokens,num_decode_tokens\n0,4,0\n",
                 "line 2, column 'num_decode_tokens'", id="zero-output"),
    pytest.param("arrived_at,num_prefill_tokens,num_decode_tokens\n0,4,2.5\n",
                 "line 2, column 'num_decode_tokens'", id="fraction"),
    pytest.param("arrived_at,num_prefill_tokens,num_decode_tokens\n5,4,2\n1,4,2\n",
                 "line 3, column 'arrived_at'.*sort", id="unsorted"),
    pytest.param("arrived_at,num_prefill_tokens,num_decode_tokens\n5,4\n", "line 2: expected 3 columns", id="short-row"),
]


@pytest.mark.parametrize("text, match", BAD_CSVS)
def test_bad_trace_csv_names_file_line_and_column(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        read_trace(str(path))
    assert str(path) in str(err.value)


def test_missing_trace_file():
    with pytest.raises(ConfigError, match="no such file"):
        read_trace("/nonexistent/trace.csv")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("0123456789.,-e \n\"xarived_tnumpflksco")), max_size=200))
def test_trace_parser_fuzz_never_crashes(text):
    body = "arrived_at,num_prefill_tokens,num_decode_tokens\n" + text
    for candidate in (text, body):
        try:
            arrival, prompt, output = parse_trace_csv(candidate, source="fuzz.csv")
        except ConfigError as exc:
            assert str(exc).startswith("fuzz.csv")
            continue
        assert len(arrival) == len(prompt) == len(output) > 0
        assert (np.diff(arrival) >= 0).all() and (prompt > 0).all() and (output > 0).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6, allow_nan=False), st.integers(1, 10**6), st.integers(1, 10**6)),
                min_size=1, max_size=30))
def test_trace_parser_roundtrip(rows):
    rows = sorted(rows)
    text = "num_decode_tokens,arrived_at,num_prefill_tokens\n" + "".join(f"{o},{t!r},{p}\n" for t, p, o in rows)
    arrival, prompt, output = parse_trace_csv(text)
    assert arrival.tolist() == [r[0] for r in rows]
    assert prompt.tolist() == [r[1] for r in rows] and output.tolist() == [r[2] for r in rows]


# -- spec validation ----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, flag", [
    ({"num_prompts": 0}, "--num-prompts"),
    ({"random_input_len": -1}, "--random-input-len"),
    ({"random_output_len": 0}, "--random-output-len"),
    ({"random_range_ratio": 1.0}, "--random-range-ratio"),
    ({"random_range_ratio": -0.1}, "--random-range-ratio"),
    ({"request_rate": 0}, "--request-rate"),
    ({"request_rate": -2.0}, "--request-rate"),
    ({"request_rate": float("nan")}, "--request-rate"),
    ({"burstiness": 0}, "--burstiness"),
    ({"n": 0}, "--n"),
    ({"prefix_len": -3}, "--prefix-len"),
    ({"prefix_fraction": 1.5}, "--prefix-fraction"),
    ({"dataset_name": "lmsys"}, "--dataset-name"),
    ({"dataset_name": "trace"}, "--dataset-path"),
    ({"dataset_name": "trace", "dataset_path": "azure-conv", "request_rate": 2.0}, "--request-rate"),
    ({"trace_time_scale": 0.0}, "--trace-time-scale"),
    ({"sharegpt_output_len": 0}, "--sharegpt-output-len"),
])
def test_bad_spec_names_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        WorkloadSpec(**kwargs)


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(allow_nan=True, allow_infinity=True), burst=st.floats(allow_nan=True, allow_infinity=True),
       ratio=st.floats(allow_nan=True), count=st.integers(-5, 50))
def test_spec_validation_fuzz(rate, burst, ratio, count):
    try:
        spec = WorkloadSpec(request_rate=rate, burstiness=burst, random_range_ratio=ratio, num_prompts=count,
                            random_input_len=8, random_output_len=4)
    except ConfigError:
        return
    assert rate > 0 and burst > 0 and 0 <= ratio < 1 and count > 0
    w = build_workload(spec, np.random.default_rng(0))
    assert len(w) == count and np.isfinite(w.arrival_s).all() and (np.diff(w.arrival_s) >= 0).all()


def test_token_ids_do_not_depend_on_call_order_or_chunks():
    w = build(random_input_len=20, random_output_len=2, random_range_ratio=0.5, num_prompts=2500,
              prefix_len=16, prefix_fraction=0.3)
    forward = [w.prompt_token_ids(i, 50_000) for i in range(len(w))]
    fresh = build(random_input_len=20, random_output_len=2, random_range_ratio=0.5, num_prompts=2500,
                  prefix_len=16, prefix_fraction=0.3)
    backward = [fresh.prompt_token_ids(i, 50_000) for i in reversed(range(len(w)))][::-1]
    assert forward == backward
    assert all(w.prompt_token_array(i, 50_000).tolist() == forward[i] for i in (0, 1023, 1024, 2047, 2048, 2499))
    assert all(0 <= t < 50_000 for toks in forward[1020:1030] for t in toks)
    # Another vocabulary gives other tokens, still deterministic.
    assert w.prompt_token_ids(3, 100) == fresh.prompt_token_ids(3, 100) != forward[3]
