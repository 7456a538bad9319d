"""The real H200 runs in `servelab validate`: rows, the simulated benchmark, MAPE, --cross, the fit."""

from __future__ import annotations

import json

import pytest

from sim.silicon import (DENSE_MODELS, ROUNDS, Setting, SiliconRow, async_scheduling, bench_key, fit, load_rows,
                         loss, mape, profile_entry, simulate_row)

# Two cheap rows of the file (short outputs, few clients, tensor parallel).
CHEAP = [r for r in load_rows() if r.model == "Llama-3.1-70B" and r.isl == 1024 and r.osl == 1024
         and r.concurrency == 4 and r.tp in (4, 8)]


def test_the_file_has_the_81_dense_rows_and_the_moe_rows_apart():
    dense = load_rows()
    assert len(dense) == 81 and {r.model for r in dense} == set(DENSE_MODELS)
    everything = load_rows(dense_only=False)
    assert len(everything) == 198 and sum(not r.dense for r in everything) == 117
    assert all(r.gpu == "h200_sxm" for r in dense)


def test_a_row_simulates_the_first_round_and_the_steady_state():
    row = CHEAP[0]
    out = simulate_row(row, Setting(prompts_per_client=2))
    for key in ("real_ttft_ms", "real_tpot_ms", "sim_ttft_ms", "sim_tpot_ms", "ttft_error", "tpot_error",
                "sim_frontend_ttft_ms", "first_round_ttft_ms", "steady_ttft_ms"):
        assert key in out
    # The first round is in lock step: slower to first token than the out-of-phase steady state.
    assert out["first_round_ttft_ms"] > out["steady_ttft_ms"]
    w = 1 / ROUNDS
    assert out["sim_ttft_ms"] == pytest.approx(w * out["first_round_ttft_ms"] + (1 - w) * out["steady_ttft_ms"])
    assert out["ttft_error"] == pytest.approx(out["sim_ttft_ms"] / row.ttft_ms - 1)
    assert 0 < out["sim_frontend_ttft_ms"] < out["sim_ttft_ms"]
    assert simulate_row(row, Setting(prompts_per_client=2)) == out  # deterministic


@pytest.mark.parametrize("version, expected", [("0.12.0", False), ("0.13.0", False), ("0.14.0", True),
                                               ("0.18.0", True), ("1.0", True), ("", False), ("nan", False)])
def test_a_row_schedules_asynchronously_from_vllm_0_14(version, expected):
    from dataclasses import replace

    assert async_scheduling(replace(CHEAP[0], vllm_version=version)) is expected


def test_each_row_runs_its_vllm_s_scheduling_loop():
    """The file's dense rows (vLLM 0.12.0, and 70B rows measured in October 2025) ran vLLM's
    synchronous loop; its gpt-oss rows (vLLM 0.18.0) the asynchronous one. The mode reaches the
    engine: the same benchmark runs slower steps without the overlap."""
    from dataclasses import replace

    rows = load_rows(dense_only=False)
    assert not any(async_scheduling(r) for r in rows if r.dense)
    assert all(async_scheduling(r) for r in rows if r.model == "GPT-OSS-120B")
    sync = CHEAP[0]
    newer = replace(sync, vllm_version="0.18.0")
    assert bench_key(sync) != bench_key(newer)
    a, b = simulate_row(sync, Setting(prompts_per_client=1)), simulate_row(newer, Setting(prompts_per_client=1))
    assert a["sim_tpot_ms"] > b["sim_tpot_ms"]


def test_mape_per_group_and_overall():
    rows = [{"model": "a", "ttft_error": 0.1, "tpot_error": -0.2}, {"model": "a", "ttft_error": -0.3, "tpot_error": 0.0},
            {"model": "b", "ttft_error": 0.5, "tpot_error": 0.1}]
    m = mape(rows, key=lambda r: r["model"])
    assert m["a"] == {"ttft": pytest.approx(0.2), "tpot": pytest.approx(0.1), "rows": 2}
    assert m["overall"]["ttft"] == pytest.approx(0.3) and m["overall"]["rows"] == 3
    assert loss(rows[:1]) == pytest.approx((abs(__import__("math").log(1.1)) + abs(__import__("math").log(0.8))) / 2)


def test_the_fit_moves_only_host_and_front_end_values_and_never_gets_worse():
    from sim.frontend import FrontendCoefficients
    from sim.steptime import StepCoefficients

    start = Setting(StepCoefficients(overhead_s=0.006, per_seq_s=2e-5), FrontendCoefficients(0.02, 1e-5, 3e-5),
                    prompts_per_client=1)
    from sim.silicon import simulate_rows

    one = CHEAP[-1:]
    before = loss(simulate_rows(one, start))
    result = fit(one, start, max_evaluations=3)
    assert result.num_evaluations <= 3
    assert loss(result.results) <= before
    c = result.coefficients
    # Only the host time moved among the step-time coefficients.
    assert (c.matmul_eff, c.kv_bw_eff, c.step_model) == (start.coefficients.matmul_eff,
                                                           start.coefficients.kv_bw_eff, "operators")
    entry = profile_entry(result, one, "test", "2026-12-02")
    assert entry["coefficients"]["step_model"] == "operators" and set(entry["frontend"]) == {
        "http_s", "tokenize_s_per_token", "detokenize_s_per_token"}
    assert entry["provenance"]["mape"]["overall"]["ttft"] >= 0


def test_cross_validation_holds_out_each_group(monkeypatch):
    import lab.calibrate.silicon as silicon

    rows = CHEAP[-1:] + [SiliconRow("nvidia/Llama-3.1-8B-Instruct-FP8", "h200_sxm", "0.12.0", 1000, 100, 4, 4, 1,
                               50.0, 6.0)]
    monkeypatch.setattr(silicon, "load_rows", lambda: rows)
    folds = silicon.cross_validate(None, max_evaluations=1, workers=1, progress=lambda *_: None)
    held = {f["held_out"]: f for f in folds}
    assert set(held) == {"model=Llama-3.1-70B", "model=nvidia/Llama-3.1-8B-Instruct-FP8", "gpu=h200_sxm",
                         "tp=4", "tp=8"}
    assert held["gpu=h200_sxm"]["ttft"] is None and "nothing is left" in held["gpu=h200_sxm"]["note"]
    assert held["tp=8"]["rows"] == 1 and held["tp=8"]["fitted_on"] == 1 and held["tp=8"]["ttft"] >= 0


def test_validate_silicon_json_has_the_rows_the_peer_script_joins_on(tmp_path, monkeypatch, capsys):
    import lab.calibrate.silicon as silicon
    from lab.cli.main import main

    moe = [r for r in load_rows(moe_only=True) if r.label == "gpt-oss-120b tp8 1024/1024 c4"
           or r.label == "GPT-OSS-120B tp8 1024/1024 c4"][:1]
    assert moe
    monkeypatch.setattr(silicon, "load_rows", lambda **kw: CHEAP + moe)
    monkeypatch.setattr(silicon, "pool_map", _serial_pool)
    out = tmp_path / "v.json"
    assert main(["validate", "--silicon", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Real vLLM runs on H200" in text and "MAPE overall (dense)" in text and "MAPE overall MoE" in text
    assert "(MoE: a prediction, never fitted to)" in text
    data = json.loads(out.read_text())["silicon"]
    assert len(data["rows"]) == 3 and data["targets"] == {"ttft": 0.20, "tpot": 0.08}
    assert data["moe_targets"] == {"ttft": 0.25, "tpot": 0.12}
    assert data["mape"]["overall"]["rows"] == 2 and data["mape"]["overall MoE"]["rows"] == 1
    assert [r["moe"] for r in data["rows"]] == [False, False, True]
    for key in ("model", "isl", "osl", "concurrency", "tp", "ep", "real_ttft_ms", "real_tpot_ms", "sim_ttft_ms",
                "sim_tpot_ms"):
        assert key in data["rows"][0]


def test_the_moe_rows_and_their_parallel_layout():
    """The source's moe_tp column gives each MoE row its data-parallel size (tp x dp = moe_tp x ep):
    no Qwen3-235B row runs on one GPU, 19 are data-parallel, 6 expert-parallel."""
    rows = load_rows(moe_only=True)
    qwen = [r for r in rows if r.model == "Qwen/Qwen3-235B-A22B-FP8"]
    assert len(qwen) == 51 and len(rows) == 117
    assert all(r.tp * r.data_parallel > 1 for r in qwen)
    assert sum(r.data_parallel > 1 for r in qwen) == 19 and sum(r.ep > 1 for r in qwen) == 6
    assert {r.data_parallel for r in qwen if r.tp == 1} == {2, 4}
    assert all(r.data_parallel == 1 for r in rows if r.model == "GPT-OSS-120B")
    assert all(r.data_parallel == 1 for r in load_rows())  # dense rows: no DP


def test_a_dp_row_runs_the_engine_s_dp_ranks():
    from sim.silicon import row_config

    row = next(r for r in load_rows(moe_only=True) if r.data_parallel == 2 and r.concurrency == 9)
    config = row_config(row)
    assert config.data_parallel_size == 2 and config.tensor_parallel_size == 1 and not config.enable_expert_parallel
    ep = next(r for r in load_rows(moe_only=True) if r.ep == 2)
    assert row_config(ep).enable_expert_parallel and row_config(ep).data_parallel_size == 1


def test_from_aiconfigurator_without_the_package_is_one_line(tmp_path, capsys):
    from lab.cli.main import main

    assert main(["calibrate", "fit", "--from-aiconfigurator", str(tmp_path), "--no-fit"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no systems/data folder" in err[0]


def _serial_pool(workers=None):
    from contextlib import nullcontext

    return nullcontext(map)


def test_rows_carry_the_moe_layout_and_the_data_parallel_size_it_implies():
    """The source records the MoE layers' TP and EP beside the attention TP; vLLM shards a MoE
    layer over dp x tp ranks, so rows whose MoE spans more ranks than attention ran data-parallel."""
    rows = load_rows(dense_only=False)
    assert len(rows) == 198
    qwen = [r for r in rows if r.model.startswith("Qwen/Qwen3-235B")]
    layouts = {(r.tp, r.moe_tp, r.ep, r.data_parallel) for r in qwen}
    assert (1, 2, 1, 2) in layouts and (1, 4, 1, 4) in layouts and (2, 4, 1, 2) in layouts
    assert (2, 1, 2, 1) in layouts and (4, 4, 1, 1) in layouts
    # Dense rows and the gpt-oss rows (moe_tp = tp) ran one engine.
    assert all(r.data_parallel == 1 for r in rows if not r.model.startswith("Qwen/"))
