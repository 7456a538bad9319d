"""The scripts in benchmarks/ still run and print their rows.

They print speed figures that the docs quote; these tests run each one on a tiny input, as a
user would (a subprocess from the repository root), and check that every row is there. They
check no time: wall-clock targets are read off the scripts' output, never asserted.
(benchmarks/vllm_match.py needs the vLLM venv and is run by tests/test_vllm_reference.py;
benchmarks/validate_vs_aiconfigurator.py runs here without installing aiconfigurator, on two rows.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_engine_speed_prints_every_run():
    out = run_script("benchmarks/engine_speed.py", "--num-prompts", "200", "--repeat", "1")
    lines = out.splitlines()
    assert any(line.startswith("vidur point: llama-2-70b tp2 a100, 200 x 512/128") for line in lines)
    for model in ("llama-2-7b a100-80gb", "llama-2-70b tp2 a100-80gb"):
        assert any(line.startswith(f"sharegpt-like, {model}, 200 offline") for line in lines)
    for model in ("dense twin h200", "MoE h200"):  # item 5: the MoE row
        assert any(line.startswith(f"sharegpt-like, {model}, 200 offline") for line in lines)
    # Item 3b: Gemma 3 with one block table, with its KV cache groups, and without fast-forward.
    assert any(line.startswith("sharegpt-like, gemma-3-27b h200, 200 offline, one table") for line in lines)
    assert sum("with KV cache groups" in line for line in lines) == 2
    assert sum("online at 80% of capacity" in line for line in lines) == 5
    assert sum(line.lstrip().startswith("floor:") for line in lines) == 2
    assert sum("without fast-forward" in line for line in lines) == 3
    assert any(line.startswith("MoE / dense cpu time: offline ") and "(target: at most 2x)" in line for line in lines)
    # Every engine row reports the simulated time against the wall time.
    rows = [line for line in lines if "simulated req/s" in line]
    assert len(rows) == 16
    assert all("x real time" in line for line in rows)


@pytest.mark.parametrize("args, expected", [
    (("benchmarks/promql_speed.py", "--hours", "0.25", "--repeat", "1"), "range_query"),
    (("benchmarks/rollout_speed.py", "--repeat", "1"), "status Healthy"),
    (("benchmarks/rollout_trials.py", "--trials", "1", "error-rate=0.02"), "error-rate=0.02"),
    (("benchmarks/rollout_surface_fidelity.py", "--requests", "200"), "largest relative difference"),
])
def test_other_benchmarks_run(args, expected):
    assert expected in run_script(*args)


def test_tune_speed_prints_its_counts():
    out = run_script("benchmarks/tune_speed.py", "--gpu", "h100", "--tensor-parallel-size", "1", "--num-prompts", "40")
    assert "candidates: 96 (12 engine configurations x 8 replica counts)" in out
    for word in ("pruned:", "simulated:", "stopped early", "wall time:", "winner:"):
        assert word in out


def test_tune_decision_quality_scores_the_picks():
    out = run_script("benchmarks/tune_decision_quality.py", "--model", "8B-Instruct")
    assert "nvidia/Llama-3.1-8B-Instruct-FP8: " in out and "decisions reach 95%" in out
    assert "-> score" in out


def test_tune_vs_aiconfigurator_prints_servelab_and_the_peer_or_why_not():
    out = run_script("benchmarks/tune_vs_aiconfigurator.py", "--no-install", "--question", "8b", "--num-prompts", "40")
    assert "servelab tune:" in out and "ServeLab simulates:" in out
    assert "aiconfigurator 0.12.0" in out  # its answer, or "skipped (...)"


@pytest.mark.browser
def test_what_if_speed_times_the_sweep():
    from conftest import require_program

    require_program("chromium")
    out = run_script("benchmarks/what_if_speed.py", "--repeat", "1")
    assert "first point of the curve after" in out and "whole curve and table after" in out


def test_validate_vs_aiconfigurator_runs_without_installing(tmp_path):
    # Two real rows of the silicon CSV (aiconfigurator-core 0.12.0, Apache-2.0). --no-install: where
    # .venv-aiconfigurator is missing (CI) one line says aiconfigurator is skipped and the table
    # still prints; where it is there, its two answers come from its cache or take a few seconds.
    csv = tmp_path / "silicon.csv"
    csv.write_text(
        "model,gpu,vllm_version,precision,gemm_quant_mode,moe_quant_mode,isl,osl,concurrency,tp,ep,"
        "ttft_ms,tpot_ms,measured\n"
        "Llama-3.1-70B,h200_sxm,,fp8,fp8,fp8,1024,8192,8,1,1,247.3047496867366,24.0974342786796,2025-10-29\n"
        "nvidia/Llama-3.1-8B-Instruct-FP8,h200_sxm,0.12.0,fp8,fp8,fp8,1000,100,112,1,1,71.91,11.25,\n")
    out = run_script("benchmarks/validate_vs_aiconfigurator.py", "--csv", str(csv), "--no-install", "--no-servelab",
                     "--json", str(tmp_path / "out.json"))
    assert "2 dense rows" in out
    assert ("aiconfigurator is skipped:" in out) != ("aiconfigurator 0.12.0 (perf database" in out)
    assert sum(line.startswith((" 1024  8192    8       tp1 |", " 1000   100  112       tp1 |"))
               for line in out.splitlines()) == 2
    assert "MAPE" in out
    # --moe: the MoE rows, each with its layout (a real Qwen3-235B row that ran tp 1 x dp 2).
    moe = tmp_path / "moe.csv"
    moe.write_text(
        "model,gpu,vllm_version,precision,gemm_quant_mode,moe_quant_mode,isl,osl,concurrency,tp,moe_tp,ep,"
        "ttft_ms,tpot_ms,measured\n"
        "Qwen/Qwen3-235B-A22B-FP8,h200_sxm,0.12.0,fp8,fp8,fp8,1000,100,8,1,2,1,356.9,54.9,\n")
    out = run_script("benchmarks/validate_vs_aiconfigurator.py", "--csv", str(moe), "--moe", "--no-install",
                     "--no-servelab")
    assert "1 MoE rows" in out
    assert sum(line.startswith(" 1000   100    8   tp1 dp2 |") for line in out.splitlines()) == 1


def test_hybrid_kv_concurrency_prints_both_allocations():
    out = run_script("benchmarks/hybrid_kv_concurrency.py", "--input-len", "8000", "--num-prompts", "24")
    rows = [line for line in out.splitlines() if "running at once" in line]
    assert [r.split("  ")[0] for r in rows] == ["every layer full attention", "KV cache groups (vLLM default)"]


def test_closed_loop_client_delay_with_no_delay_is_bench_serve(tmp_path):
    """With no delay the script's simulation is `servelab bench serve` on the same workload
    (same TTFT and TPOT); a delay of the re-sent requests changes what the clients measure."""
    import json

    out = run_script("benchmarks/closed_loop_client_delay.py", "--delays-ms", "0", "20", "--vocab-size", "1998")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["0.0", "20.0"]
    tok = pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(1998)}
    tok.Tokenizer(tok.models.WordLevel(vocab, unk_token="w0")).save(str(tmp_path / "tokenizer.json"))
    run_script("-m", "lab", "bench", "serve", "--gpu", "h100-80gb", "--closed-loop-start", "together",
               "--model", "meta-llama/Llama-3.1-8B", "--random-input-len", "512", "--random-output-len", "128",
               "--num-prompts", "1000", "--max-concurrency", "256", "--tokenizer", str(tmp_path),
               "--save-result", "--result-dir", str(tmp_path), "--result-filename", "b.json")
    bench = json.loads((tmp_path / "b.json").read_text())
    assert float(rows[0][2]) == pytest.approx(bench["mean_ttft_ms"], abs=0.05)
    assert float(rows[0][6]) == pytest.approx(bench["mean_tpot_ms"], abs=0.005)
    assert float(rows[1][2]) != pytest.approx(float(rows[0][2]), rel=0.01)


def test_silicon_held_out_simulates_the_rows_validate_does_not_check(tmp_path):
    """A small silicon_sample.csv in the package's format: one H100 row of Llama-3.1-70B (held out:
    simulated), one row that vllm-silicon.csv already holds (left out), one FP4 row and one SGLang
    row (not taken), and one Qwen3-32B row at TP 1 that does not fit one H100 (refused, with why)."""
    header = ("id,silicon_data_source,backend,backend_version,model_path,system,precision,mode,isl,osl,"
              "gemm_quant_mode,moe_quant_mode,batch_size,tp_size,pp_size,attention_dp_size,moe_tp_size,"
              "moe_ep_size,silicon_ttft_ms,silicon_tpot_ms")
    rows = [
        "a,,vllm,,meta-llama/Llama-3.1-70B,h100_sxm,fp8,agg,1024,128,fp8,fp8,4,8,1,1,1,1,80.0,8.0",
        "b,,vllm,,meta-llama/Llama-3.1-70B,h200_sxm,fp8,agg,1024,8192,fp8,fp8,8,1,1,1,1,1,247.3047496867366,24.1",
        "c,,vllm,,meta-llama/Llama-3.1-70B,b200_sxm,fp4,agg,1024,128,nvfp4,nvfp4,4,8,1,1,1,1,50.0,5.0",
        "d,,sglang,,meta-llama/Llama-3.1-70B,h100_sxm,fp8,agg,1024,128,fp8,fp8,4,8,1,1,1,1,80.0,8.0",
        "e,,vllm,0.12.0,Qwen/Qwen3-32B,h100_sxm,,agg,4000,1000,,,24,1,1,,0,0,294.8,16.9",
    ]
    sample = tmp_path / "silicon_sample.csv"
    sample.write_text("\n".join([header, *rows]) + "\n")
    out = run_script("benchmarks/silicon_held_out.py", "--csv", str(sample), "--json", str(tmp_path / "h.json"))
    assert "2 held-out vLLM rows" in out
    assert any(line.startswith("h100_sxm  Llama-3.1-70B") for line in out.splitlines())
    assert "refused: Qwen3-32B tp1 4000/1000 c24 on h100_sxm" in out
    assert "1 rows simulated, 1 refused" in out
    [total] = [line.split() for line in out.splitlines() if line.startswith("all ")]
    assert total[1] == "1"  # one row over every group
    import json

    done = json.loads((tmp_path / "h.json").read_text())
    [row] = done["rows"]
    assert row["real_ttft_ms"] == 80.0 and row["tp"] == 8 and row["sim_tpot_ms"] > 0
    assert row["ttft_error"] == row["sim_ttft_ms"] / 80.0 - 1
    missing = subprocess.run([sys.executable, "benchmarks/silicon_held_out.py", "--csv", str(tmp_path / "none.csv")],
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert missing.returncode == 2 and "--csv" in missing.stderr and "no such file" in missing.stderr
