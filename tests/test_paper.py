"""validate --paper on a tiny configuration: files, columns, and the memory bookkeeping."""

from __future__ import annotations

import csv

import pytest

from lab.cli.main import main
from sim.paper import KVSampler, paper_config, run_point, sustainable_rate


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_paper_command_tiny(tmp_path, capsys):
    out = tmp_path / "paper"
    assert main(["validate", "--paper", str(out), "--paper-prompts", "16", "--paper-rates", "2"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"latency_sharegpt.csv", "latency_alpaca.csv", "knees.csv", "batched.csv", "memory.csv",
            "throughput.csv", "latency.png", "batched.png", "memory.png", "summary.json"} <= names
    lat = _rows(out / "latency_sharegpt.csv")
    assert {r["engine"] for r in lat} == {"vllm", "orca-oracle", "orca-pow2", "orca-max"}
    assert all(float(r["normalized_latency_s_per_token"]) > 0 for r in lat)
    batched = _rows(out / "batched.csv")
    assert {(r["dataset"], float(r["request_rate"])) for r in batched} == {("sharegpt", 2.0), ("alpaca", 30.0)}
    assert {r["paper"] for r in batched if r["engine"] == "vllm"} == {"30.42", "132.44"}
    tp = {(r["dataset"], r["engine"]): float(r["over_hf_static"]) for r in _rows(out / "throughput.csv")}
    assert tp[("sharegpt", "hf-static")] == 1.0
    for r in _rows(out / "memory.csv"):
        total = sum(float(r[f"{p}_servelab_pct"]) for p in
                    ("token_states", "reservation", "internal_fragmentation", "external_fragmentation"))
        assert total == pytest.approx(100.0, abs=0.01)
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert "Wrote" in capsys.readouterr().out


def test_vllm_memory_is_mostly_token_states_and_orca_max_is_not():
    v = run_point("vllm", "sharegpt", 2.0, 40)
    o = run_point("orca-max", "sharegpt", 2.0, 40)
    assert v.memory_shares["token_states"] > 0.9 and v.memory_shares["reservation"] == 0
    assert o.memory_shares["token_states"] < 0.5 < o.memory_shares["token_states"] + o.memory_shares["internal_fragmentation"] + o.memory_shares["reservation"]
    assert v.mean_batched_requests > 0 and v.num_prompts == 40


def test_paper_setup_and_knee():
    c = paper_config("orca-pow2")
    assert (c.model, c.gpu, c.gpu_memory_utilization, c.max_num_batched_tokens) == ("facebook/opt-13b", "a100-40gb", 0.9, 2560)
    assert not c.enable_chunked_prefill and not c.enable_prefix_caching
    assert sustainable_rate([1, 2, 3], [0.1, 0.15, 0.3]) == pytest.approx(2 + 1 / 3)
    assert sustainable_rate([1, 2, 3], [0.1, 0.1, 0.1]) == 3


def test_paper_flag_errors(tmp_path, capsys):
    assert main(["validate", "--paper", str(tmp_path / "x"), "--paper-rates", "1"]) == 2
    assert "--paper-rates" in capsys.readouterr().err
