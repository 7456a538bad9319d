"""Fuzz the user-facing parsers that the other test files fuzz only in part (or not at all).

Each parser gets arbitrary input and must either return a valid value or raise the project's
ConfigError/CatalogError whose message names the file, field or flag: never another exception
type, never a silent wrong value. Already fuzzed elsewhere: human-readable integers
(tests/test_cli.py), vllm bench result JSON (tests/test_calibrate.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.calibrate.fitcmd import parse_operator_csv, read_operator_csv
from lab.calibrate.results import EngineFlags, points_from_file
from sim.catalog import model_from_config
from sim.errors import CatalogError, ConfigError
from sim.tune.prices import prices_from_doc
from sim.tune.sla import parse_sla
from sim.workload import TRACE_COLUMNS, parse_trace_csv, read_trace

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
MODELS = Path(__file__).resolve().parent.parent / "sim" / "data" / "models"

# -- trace CSV ---------------------------------------------------------------------------------
HEADER = ",".join(TRACE_COLUMNS)
cell = st.one_of(st.text(max_size=10), st.from_regex(r"\A\s*[-+]?[0-9_.eE]{0,8}\s*\Z"),
                 st.sampled_from(["inf", "nan", "-0", "1e400", "1.5", "0", "1000000001", "\u0661\u0662", '"3"']))
line_end = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def trace_texts(draw) -> str:
    """A header (maybe with a byte-order mark, extra or repeated columns), then rows of any cells."""
    columns = draw(st.permutations(list(TRACE_COLUMNS) + draw(st.lists(st.sampled_from(
        ["extra", "arrived_at", "num_decode_tokens", ""]), max_size=2))))
    end = draw(line_end)
    rows = draw(st.lists(st.lists(cell, min_size=len(columns) - 1, max_size=len(columns) + 1), max_size=6))
    text = ",".join(columns) + end + end.join(",".join(r) for r in rows)
    return draw(st.sampled_from(["", "\ufeff"])) + text


def _check_trace(parse):
    try:
        arrival, prompt, output = parse()
    except ConfigError as exc:
        assert str(exc).startswith("t.csv"), exc
        return None
    assert len(arrival) == len(prompt) == len(output) > 0
    assert np.all(np.isfinite(arrival)) and np.all(arrival >= 0) and np.all(np.diff(arrival) >= 0)
    assert prompt.min() > 0 and output.min() > 0
    return arrival, prompt, output


@FUZZ
@given(text=st.one_of(st.text(max_size=200), trace_texts()))
def test_trace_csv_text_parses_or_names_the_file(text):
    _check_trace(lambda: parse_trace_csv(text, "t.csv"))


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), trace_texts().map(lambda t: t.encode("utf-8"))))
def test_trace_file_bytes_parse_or_name_the_flag(tmp_path, data):
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    try:
        read_trace(str(path))
    except ConfigError as exc:  # read errors name the flag, parse errors the file
        assert str(exc).startswith((f"--dataset-path: {path}", str(path))), exc


@pytest.mark.parametrize("text", [
    pytest.param("\ufeff" + HEADER + "\n0.5,10,20\n", id="byte-order-mark"),
    pytest.param(HEADER + "\r0.5,10,20\r", id="lone-cr"),
    pytest.param(HEADER + "\r\n0.5,10,20\r\n", id="crlf"),
])
def test_trace_line_endings_and_bom_read_the_same(text):
    arrival, prompt, output = parse_trace_csv(text, "t.csv")
    assert (list(arrival), list(prompt), list(output)) == ([0.5], [10], [20])


@pytest.mark.parametrize("text,match", [
    pytest.param(HEADER + ",arrived_at\n0,1,1,5\n", "arrived_at appear more than once", id="repeated-column"),
    pytest.param(HEADER + "\n" + "1" * 200_000 + ",1,1\n", "line 2: not a readable CSV line", id="huge-cell"),
])
def test_ambiguous_or_unreadable_trace_names_file_and_line(text, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_trace_csv(text, "t.csv")
    assert str(err.value).startswith("t.csv")


# -- GPU price YAML (`servelab tune --gpu-prices FILE`) ------------------------------------------
yaml_value = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**30) | st.floats() | st.text(max_size=6) | st.dates(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)
price_entry = st.fixed_dictionaries({}, optional={
    "usd_per_gpu_hour": st.one_of(yaml_value, st.integers(-5, 10**400), st.floats(0, 100)),
    "source": yaml_value, "date": yaml_value})
gpu_name = st.sampled_from(["h100", "h100-80gb", "a100", "a100-80gb", "H200", "t4", "tpu", "", "1"]) | st.text(max_size=5)


@FUZZ
@given(gpus=st.dictionaries(gpu_name, price_entry | yaml_value, max_size=3) | yaml_value, strict=st.booleans())
def test_price_yaml_parses_or_names_the_entry(gpus, strict):
    text = yaml.safe_dump({"gpus": gpus})  # through YAML text, as the CLI reads a user's file
    try:
        prices = prices_from_doc(yaml.safe_load(text), origin="--gpu-prices p.yaml", strict=strict)
    except ConfigError as exc:
        assert str(exc).startswith("--gpu-prices p.yaml"), exc
        return
    for gpu, price in prices.items():
        assert price.gpu == gpu and math.isfinite(price.usd_per_gpu_hour) and price.usd_per_gpu_hour > 0
        assert price.source.strip() and price.date.strip()


def test_price_too_large_for_a_float_is_refused_not_overflowed():
    doc = yaml.safe_load("gpus:\n  h100:\n    usd_per_gpu_hour: " + "9" * 400 + "\n    source: x\n    date: y\n")
    with pytest.raises(ConfigError, match=r"gpus\.h100\.usd_per_gpu_hour: expected a positive number"):
        prices_from_doc(doc, origin="p.yaml")


# -- SLA strings (`--sla`) ----------------------------------------------------------------------
term = st.one_of(
    st.from_regex(r"\A\s*(p[0-9.]{1,6}|median|mean)_(ttft|tpot|e2el|itl)(_ms)?\s*(<=|<|>=|=)\s*[0-9eE.+\-]{0,10}(ms)?\s*\Z"),
    st.from_regex(r"\A\s*output_throughput\s*(>=|>|<=)\s*[0-9eE.+\-]{0,12}\s*\Z"),
    st.text(max_size=12))


@FUZZ
@given(text=st.one_of(st.text(max_size=60), st.lists(term, max_size=4).map(",".join)))
def test_sla_parses_or_names_the_flag(text):
    try:
        sla = parse_sla(text)
    except ConfigError as exc:
        assert str(exc).startswith("--sla"), exc
        return
    assert sla.terms or sla.min_output_throughput is not None
    for t in sla.terms:
        assert math.isfinite(t.limit_ms) and t.limit_ms > 0 and 0 < t.percentile <= 100 and t.key.endswith("_ms")
    if sla.min_output_throughput is not None:
        assert math.isfinite(sla.min_output_throughput) and sla.min_output_throughput > 0
    assert sla.describe()


def test_sla_throughput_given_twice_is_refused_not_replaced():
    with pytest.raises(ConfigError, match="output_throughput is given twice"):
        parse_sla("output_throughput>=2000,p90_ttft_ms<=500,output_throughput>=100")


# -- model config.json (any shipped model's, any field changed, nested fields too) ------------------
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=10)
BASES = {p.stem: json.loads(p.read_text()) for p in sorted(MODELS.glob("*.json"))}


def _paths(doc: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in doc.items():
        out.append(prefix + (key,))
        if isinstance(value, dict):
            out += _paths(value, prefix + (key,))
    return out


FIELDS = sorted({p for cfg in BASES.values() for p in _paths(cfg)})


@FUZZ
@given(stem=st.sampled_from(sorted(BASES)),
       changes=st.lists(st.tuples(st.sampled_from(FIELDS), json_value, st.booleans()), max_size=3))
def test_model_config_loads_or_names_the_file(stem, changes):
    cfg = json.loads(json.dumps(BASES[stem]))
    for path, value, drop in changes:
        node = cfg
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                break
            node = node[key]
        else:
            if drop:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    try:
        model = model_from_config(cfg, source="fuzz/config.json")
    except CatalogError as exc:
        assert str(exc).startswith("fuzz/config.json"), exc
        return
    assert model.num_attention_heads % model.num_key_value_heads == 0
    assert model.num_params > 0 and model.kv_bytes_per_token() > 0


# -- `servelab calibrate fit` inputs: operator CSVs and result JSON, as files --------------------
PROFILER = "op,m,n,k,dtype_bytes,time_ms"
ALL_REDUCE = "num_workers,size,time_stats.all_reduce.median"
op_cell = st.one_of(cell, st.sampled_from(["qkv", "gate_up", "down", "o", "attn_decode", "4096", "2", "0.05"]))


@st.composite
def operator_texts(draw) -> str:
    header = draw(st.sampled_from([PROFILER, ALL_REDUCE, PROFILER + ",extra", "a,b", ""]))
    width = header.count(",") + 1
    rows = draw(st.lists(st.lists(op_cell, min_size=width - 1, max_size=width + 1), max_size=5))
    end = draw(line_end)
    return draw(st.sampled_from(["", "\ufeff"])) + header + end + end.join(",".join(r) for r in rows)


@FUZZ
@given(text=st.one_of(operator_texts(), st.text(max_size=150)))
def test_operator_csv_text_gives_records_or_names_the_file(text):
    try:
        kind, records = parse_operator_csv(text, "ops.csv")
    except ConfigError as exc:
        assert str(exc).startswith("ops.csv"), exc
        return
    assert kind in ("gemm", "all_reduce") and records
    assert all(r.time_s > 0 and math.isfinite(r.time_s) for r in records)


@FUZZ
@given(data=st.one_of(st.binary(max_size=150), operator_texts().map(lambda t: t.encode("utf-8"))))
def test_operator_csv_file_gives_records_or_names_the_file(tmp_path, data):
    path = tmp_path / "ops.csv"
    path.write_bytes(data)
    try:
        read_operator_csv(str(path))
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), exc


def test_operator_csv_with_an_infinite_count_is_a_config_error():
    with pytest.raises(ConfigError, match=r"ops.csv: line 2, column m: expected a finite number"):
        parse_operator_csv(PROFILER + "\nqkv,inf,8,8,2,0.1\n", "ops.csv")


def test_operator_csv_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "ops.csv"
    path.write_bytes(("\ufeff" + PROFILER + "\r\nqkv,4,8,8,2,0.1\r\n").encode("utf-8"))
    kind, records = read_operator_csv(str(path))
    assert kind == "gemm" and len(records) == 1 and records[0].m == 4


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=100), json_value.map(lambda v: json.dumps(v).encode()),
                      json_value.map(lambda v: ("\ufeff" + json.dumps(v)).encode("utf-8"))))
def test_result_json_file_gives_points_or_names_the_file(tmp_path, data):
    path = tmp_path / "r.json"
    path.write_bytes(data)
    flags = EngineFlags(gpu="a100-80gb", model="meta-llama/Llama-3.1-8B", input_len=512, output_len=128)
    try:
        points = points_from_file(str(path), flags)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), exc
        return
    assert points and all(p.measured > 0 and math.isfinite(p.measured) for p in points)
