"""benchmarks/validate_vs_aiconfigurator.py: reading aiconfigurator's answer, the join, the errors.

No network and no aiconfigurator here: the texts below are what `aiconfigurator cli estimate`
(aiconfigurator 0.12.0, perf database vllm 0.24.0) printed on this machine, trimmed to the lines
the parser reads and a few around them; ServeLab's side is a small JSON file in the shape of
`servelab validate --silicon --json` written by hand. The silicon rows are two real rows of
../shared/reference/silicon/vllm-silicon.csv (from aiconfigurator-core 0.12.0, Apache-2.0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import _aiconfigurator as aic
from benchmarks import validate_vs_aiconfigurator as vva

ROOT = Path(__file__).resolve().parent.parent

# `aiconfigurator cli estimate --model-path meta-llama/Meta-Llama-3.1-8B --system h200_sxm --backend vllm
#  --isl 1024 --osl 1024 --batch-size 64 --tp-size 2 --gemm-quant-mode fp8 --kvcache-quant-mode bfloat16`
ESTIMATE_8B = """\
17:15:59 [aiconfigurator] [I] [main.py:2735] Estimating performance (agg) for meta-llama/Meta-Llama-3.1-8B on h200_sxm (backend=vllm, tp=2, bs=64)
17:16:00 [aiconfigurator] [I] [helpers.py:772] Resolved quant modes for LlamaForCausalLM: gemm=GEMMQuantMode.fp8 moe=MoEQuantMode.bfloat16 kvcache=KVCacheQuantMode.bfloat16 fmha=FMHAQuantMode.bfloat16 comm=CommQuantMode.half

============================================================
  Performance Estimate (agg)
============================================================
  Model:            meta-llama/Meta-Llama-3.1-8B
  System:           h200_sxm
  Backend:          vllm (0.24.0)
------------------------------------------------------------
  ISL:              1024
  OSL:              1024
  Batch Size:       64
  Context Tokens:   1024
  TP Size:          2
  PP Size:          1
------------------------------------------------------------
  TTFT:             76.317 ms
  TPOT:             5.592 ms
  Request Latency:  5797.068 ms
  Power (per GPU):  unavailable (0.0% coverage)
------------------------------------------------------------
  tokens/s:         11,293.99
  tokens/s/gpu:     5,646.99
============================================================
"""

# The same for Meta-Llama-3.1-70B at --batch-size 64 --tp-size 2: its KV-capacity warning.
ESTIMATE_70B_KV_WARNING = """\
17:14:43 [aiconfigurator] [I] [helpers.py:772] Resolved quant modes for LlamaForCausalLM: gemm=GEMMQuantMode.fp8 moe=MoEQuantMode.bfloat16 kvcache=KVCacheQuantMode.bfloat16 fmha=FMHAQuantMode.bfloat16 comm=CommQuantMode.half
  Backend:          vllm (0.24.0)
  TTFT:             316.389 ms
  TPOT:             28.218 ms
  Request Latency:  30,113.412 ms
17:14:43 [aiconfigurator] [W] [main.py:3006] Requested batch_size (64) exceeds estimated KV cache capacity (free_gpu_memory_fraction=backend default). The serving runtime will queue excess requests, causing significantly higher TTFT and inaccurate TPOT.
"""

# --model-path meta-llama/Llama-3.1-70B, which aiconfigurator 0.12.0 does not ship, offline.
ESTIMATE_MISSING_MODEL = """\
usage: aiconfigurator estimate [-h]
                               [--attention-backend {fa3,triton,trtllm_mha,flashinfer,fla,default}]
aiconfigurator estimate: error: argument --model-path/--model: 'meta-llama/Llama-3.1-70B' is not a valid HuggingFace model path or local path with config.json. Error: Failed to download meta-llama/Llama-3.1-70B's config.json from HuggingFace: <urlopen error [Errno -2] Name or service not known>
"""

# --batch-size 64 --tp-size 1 for the 70B: aiconfigurator's memory model refuses it (exit 1, traceback).
ESTIMATE_OOM = """\
17:18:18 [aiconfigurator] [I] [helpers.py:772] Resolved quant modes for LlamaForCausalLM: gemm=GEMMQuantMode.fp8 moe=MoEQuantMode.bfloat16 kvcache=KVCacheQuantMode.bfloat16 fmha=FMHAQuantMode.bfloat16 comm=CommQuantMode.half
Traceback (most recent call last):
  File "/work/wt-peer/.venv-aiconfigurator/lib/python3.11/site-packages/aiconfigurator/cli/api.py", line 1646, in _run_agg_estimate
    raise RuntimeError(
RuntimeError: OOM: the model 'meta-llama/Meta-Llama-3.1-70B' does not fit in GPU memory on system 'h200_sxm' with the given parallelism (tp=1, pp=1, dp=1). Try increasing tp_size/pp_size, using a quantized model, or using a system with more VRAM per GPU.
"""

CSV_HEAD = "model,gpu,vllm_version,precision,gemm_quant_mode,moe_quant_mode,isl,osl,concurrency,tp,ep,ttft_ms,tpot_ms,measured\n"
CSV_ROWS = (
    "Llama-3.1-70B,h200_sxm,,fp8,fp8,fp8,1024,8192,8,1,1,247.3047496867366,24.0974342786796,2025-10-29\n"
    "nvidia/Llama-3.1-8B-Instruct-FP8,h200_sxm,0.12.0,fp8,fp8,fp8,1000,100,112,1,1,71.91,11.25,\n"
    "Qwen/Qwen3-235B-A22B-FP8,h200_sxm,0.12.0,fp8,fp8,fp8,1000,100,64,4,4,100.0,20.0,\n"
)


def test_parse_estimate_reads_the_summary_box_and_what_it_resolved():
    est = aic.parse_estimate(ESTIMATE_8B)
    assert est == {"ttft_ms": 76.317, "tpot_ms": 5.592, "backend": "vllm", "perf_db_version": "0.24.0",
                   "gemm": "fp8", "moe": "bfloat16", "kvcache": "bfloat16", "fmha": "bfloat16",
                   "kv_capacity_warning": False}
    warned = aic.parse_estimate(ESTIMATE_70B_KV_WARNING)
    assert (warned["ttft_ms"], warned["tpot_ms"], warned["kv_capacity_warning"]) == (316.389, 28.218, True)


def test_parse_estimate_names_aiconfigurators_error():
    with pytest.raises(ValueError, match=r"^no TTFT from aiconfigurator: argument --model-path/--model: 'meta-llama/Llama-3.1-70B' is not a valid"):
        aic.parse_estimate(ESTIMATE_MISSING_MODEL)
    with pytest.raises(ValueError, match="^no TTFT from aiconfigurator: OOM: the model 'meta-llama/Meta-Llama-3.1-70B'"):
        aic.parse_estimate(ESTIMATE_OOM)
    with pytest.raises(ValueError, match="no TPOT from aiconfigurator"):
        aic.parse_estimate("  TTFT:             76.317 ms\n")


@given(st.text())
def test_parse_estimate_on_any_text_answers_or_says_why(text):
    try:
        est = aic.parse_estimate(text)
    except ValueError as exc:
        assert str(exc).startswith(("no TTFT from aiconfigurator: ", "no TPOT from aiconfigurator: "))
    else:
        assert est["ttft_ms"] >= 0 and est["tpot_ms"] >= 0


@given(st.decimals(min_value=0, max_value=10**7, places=3), st.decimals(min_value=0, max_value=10**5, places=3),
       st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_parse_estimate_reads_back_the_values_in_the_box(ttft, tpot, noise):
    text = ESTIMATE_8B.replace("76.317 ms", f"{ttft:,} ms").replace("5.592 ms", f"{tpot} ms")
    est = aic.parse_estimate(noise.replace("TTFT", "").replace("TPOT", "") + "\n" + text)
    assert est["ttft_ms"] == pytest.approx(float(ttft)) and est["tpot_ms"] == pytest.approx(float(tpot))


def test_estimate_argv_is_the_documented_command():
    argv = aic.estimate_argv("meta-llama/Meta-Llama-3.1-70B", "h200_sxm", isl=1024, osl=128, batch_size=32, tp=4,
                             gemm_quant_mode="fp8", kvcache_quant_mode="bfloat16")
    assert " ".join(argv) == ("estimate --model-path meta-llama/Meta-Llama-3.1-70B --system h200_sxm --backend vllm "
                              "--isl 1024 --osl 128 --batch-size 32 --tp-size 4 --gemm-quant-mode fp8 "
                              "--kvcache-quant-mode bfloat16")


def test_read_best_configs_reads_what_default_saved(tmp_path):
    # The first row of agg/best_config_topn.csv that `aiconfigurator cli default --model-path
    # nvidia/Llama-3.1-70B-Instruct-FP8 --system h200_sxm --backend vllm --total-gpus 8 --isl 1024 --osl 1024
    # --ttft 1000 --tpot 30 --save-dir DIR` wrote here (columns cut to the first twelve and a few more).
    run = tmp_path / "nvidia" / "Llama-3.1-70B-Instruct-FP8_h200_sxm_vllm_isl1024_osl1024_ttft1000_tpot30_271143"
    (run / "agg").mkdir(parents=True)
    (run / "agg" / "best_config_topn.csv").write_text(
        "model,isl,osl,prefix,concurrency,request_rate,bs,global_bs,ttft,tpot,tokens/s/gpu,tp,pp,gemm,kvcache\n"
        "nvidia/Llama-3.1-70B-Instruct-FP8,1024,1024,0,112,3.599,112,112,947.526,29.496,1840.779,2,1,fp8_static,fp8\n")
    best = aic.read_best_configs(tmp_path)
    assert list(best) == ["agg"]
    assert (best["agg"][0]["tp"], best["agg"][0]["bs"], best["agg"][0]["tpot"]) == ("2", "112", "29.496")


def test_read_rows_keeps_the_dense_rows_and_maps_them_to_shipped_configs(tmp_path):
    path = tmp_path / "silicon.csv"
    path.write_text(CSV_HEAD + CSV_ROWS)
    rows, others = vva.read_rows(path)
    assert others == ["Qwen/Qwen3-235B-A22B-FP8"]
    assert [r["model"] for r in rows] == ["Llama-3.1-70B", "nvidia/Llama-3.1-8B-Instruct-FP8"]
    assert [vva.aic_argv(r, "bfloat16")[2] for r in rows] == ["meta-llama/Meta-Llama-3.1-70B",
                                                            "meta-llama/Meta-Llama-3.1-8B"]
    assert rows[1]["concurrency"] == 112 and rows[1]["real_tpot_ms"] == 11.25


def test_join_and_mape(tmp_path):
    path = tmp_path / "silicon.csv"
    path.write_text(CSV_HEAD + CSV_ROWS)
    rows, _ = vva.read_rows(path)
    # ServeLab names the 70B by its Hub id and leaves out the 8B row: joined by model's last part.
    doc = {"silicon": {"rows": [
        {"model": "meta-llama/Llama-3.1-70B", "gpu": "h200_sxm", "isl": 1024, "osl": 8192, "concurrency": 8,
         "tp": 1, "ep": 1, "real_ttft_ms": 247.3, "real_tpot_ms": 24.1, "sim_ttft_ms": 200.0, "sim_tpot_ms": 26.0},
        {"model": "meta-llama/Llama-3.1-70B", "gpu": "h200_sxm", "isl": 1024, "osl": 8192, "concurrency": 16,
         "tp": 1, "ep": 1, "real_ttft_ms": 1.0, "real_tpot_ms": 1.0, "sim_ttft_ms": 1.0, "sim_tpot_ms": 1.0},
    ]}}
    sl_file = tmp_path / "servelab.json"
    sl_file.write_text(json.dumps(doc))
    sl, reason = vva.servelab_rows(sl_file)
    assert reason == ""
    joined = vva.join(rows, sl)
    assert joined[0]["sim_ttft_ms"] == 200.0 and joined[1] is None

    aic_answers = [aic.parse_estimate(ESTIMATE_70B_KV_WARNING), aic.parse_estimate(ESTIMATE_8B)]
    table = vva.build_table(rows, aic_answers, joined)
    real_ttft, real_tpot = 247.3047496867366, 24.0974342786796
    err_70b_ttft = (316.389 - real_ttft) / real_ttft * 100
    err_8b_ttft = (76.317 - 71.91) / 71.91 * 100
    assert table[0]["aic_ttft_err_pct"] == pytest.approx(err_70b_ttft)
    assert table[0]["sim_tpot_err_pct"] == pytest.approx((26.0 - real_tpot) / real_tpot * 100)
    assert table[1]["aic_ttft_err_pct"] == pytest.approx(err_8b_ttft) and table[1]["sim_ttft_err_pct"] is None
    assert table[0]["aic_kv_capacity_warning"] and not table[1]["aic_kv_capacity_warning"]

    summary = vva.summarize(table)
    assert summary["aic"]["overall"]["ttft_mape_pct"] == pytest.approx((abs(err_70b_ttft) + abs(err_8b_ttft)) / 2)
    assert (summary["aic"]["overall"]["rows"], summary["aic"]["overall"]["of"]) == (2, 2)
    assert summary["sim"]["overall"]["tpot_mape_pct"] == pytest.approx(abs(table[0]["sim_tpot_err_pct"]))
    assert summary["sim"]["nvidia/Llama-3.1-8B-Instruct-FP8"]["ttft_mape_pct"] is None
    # Like for like: only the 70B row has both answers.
    both = summary["both"]["overall"]
    assert both["aic"]["ttft_mape_pct"] == pytest.approx(abs(err_70b_ttft)) and both["aic"]["rows"] == 1
    assert both["sim"]["rows"] == 1


def test_mape_is_the_mean_of_absolute_errors():
    assert vva.mape([10.0, -30.0, None]) == pytest.approx(20.0)
    assert vva.pct_error(90.0, 100.0) == pytest.approx(-10.0)
    assert vva.mape([None]) is None


def test_servelab_json_without_silicon_rows_is_reported(tmp_path):
    bad = tmp_path / "v.json"
    bad.write_text(json.dumps({"rows": []}))
    sl, reason = vva.servelab_rows(bad)
    assert sl is None and "no usable silicon.rows" in reason


def _run(*args: str, venv: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if venv is not None:
        env["SERVELAB_AICONFIGURATOR_VENV"] = str(venv)
    return subprocess.run([sys.executable, "benchmarks/validate_vs_aiconfigurator.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_bad_flags_get_one_line_and_exit_2(tmp_path):
    done = _run("--csv", str(tmp_path / "nope.csv"), "--no-install", "--no-servelab")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--csv" in done.stderr and "cannot read" in done.stderr
    path = tmp_path / "silicon.csv"
    path.write_text(CSV_HEAD + CSV_ROWS)
    done = _run("--csv", str(path), "--model", "Mixtral", "--no-install", "--no-servelab")
    assert done.returncode == 2 and "--model 'Mixtral'" in done.stderr
    done = _run("--csv", str(path), "--rows", "-1", "--no-install", "--no-servelab")
    assert done.returncode == 2 and done.stderr.startswith("error: --rows: expected 0 (all) or a positive count")
    (tmp_path / "other.csv").write_text("model,isl,osl\nx,1,2\n")
    done = _run("--csv", str(tmp_path / "other.csv"), "--no-install", "--no-servelab")
    assert done.returncode == 2 and "missing concurrency, gemm_quant_mode, gpu, tp, tpot_ms, ttft_ms" in done.stderr
    path.write_text(CSV_HEAD + CSV_ROWS.replace(",1000,100,112,", ",1000,100,lots,"))
    done = _run("--csv", str(path), "--no-install", "--no-servelab")
    assert done.returncode == 2 and "line 3: invalid literal for int()" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_aiconfigurator_one_line_says_so_and_the_table_still_prints(tmp_path):
    path = tmp_path / "silicon.csv"
    path.write_text(CSV_HEAD + CSV_ROWS)
    sl_file = tmp_path / "servelab.json"
    sl_file.write_text(json.dumps({"silicon": {"rows": [
        {"model": "Llama-3.1-70B", "gpu": "h200_sxm", "isl": 1024, "osl": 8192, "concurrency": 8, "tp": 1, "ep": 1,
         "real_ttft_ms": 247.3, "real_tpot_ms": 24.1, "sim_ttft_ms": 272.0, "sim_tpot_ms": 24.1}]}}))
    done = _run("--csv", str(path), "--no-install", "--servelab-json", str(sl_file), "--json", str(tmp_path / "o.json"),
                venv=tmp_path / "no-venv")
    assert done.returncode == 0, done.stderr
    skipped = [line for line in done.stdout.splitlines() if line.startswith("aiconfigurator is skipped:")]
    assert len(skipped) == 1 and "does not hold aiconfigurator==0.12.0" in skipped[0]
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["aiconfigurator"]["available"] is False and doc["servelab"]["unmatched_rows"] == 1
    assert doc["rows"][0]["sim_ttft_err_pct"] == pytest.approx((272.0 - 247.3047496867366) / 247.3047496867366 * 100)
    assert doc["mape"]["servelab"]["overall"]["rows"] == 1 and doc["mape"]["aiconfigurator"]["overall"]["rows"] == 0


def test_a_failing_servelab_run_gives_its_last_error_line():
    # A real subprocess that fails as `servelab validate` does on a flag it lacks: the error line, exit 2.
    script = ("import sys; print('noise'); "
              "sys.stderr.write('error: --silicon: no such flag\\n(run servelab --help)\\n'); sys.exit(2)")
    command = [sys.executable, "-c", script]
    sl, reason = vva.servelab_rows(None, command)
    assert sl is None
    assert reason.endswith("exited 2: error: --silicon: no such flag")


def test_moe_rows_carry_their_layout_to_both_tools():
    rows, others = vva.read_rows(vva.DEFAULT_CSV, moe=True)
    assert len(rows) == 117 and set(others) == set(vva.DENSE_MODELS)
    # Qwen3-235B at tp 1 with moe_tp 2 ran attention data-parallel over two GPUs.
    dp_row = next(r for r in rows if r["model"].startswith("Qwen") and r["tp"] == 1 and r["moe_tp"] == 2)
    assert dp_row["dp"] == 2
    argv = vva.aic_argv(dp_row, "bfloat16")
    assert argv[argv.index("--attention-dp-size") + 1] == "2" and argv[argv.index("--moe-tp-size") + 1] == "2"
    assert "--gemm-quant-mode" not in argv  # read from the shipped config
    # Rows differing only in layout join to different ServeLab rows.
    same = [r for r in rows if r["model"].startswith("Qwen") and (r["isl"], r["osl"], r["concurrency"]) == (8000, 100, 4)]
    assert len({vva.row_key(r) for r in same}) == len(same) == 3
