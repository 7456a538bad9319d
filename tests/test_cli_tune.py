"""`servelab tune` from the command line: tables, --json, the exported manifests, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lab.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--model", "llama-3.1-8b", "--random-input-len", "256", "--random-output-len", "64", "--num-prompts", "60",
         "--tensor-parallel-size", "1,2", "--max-num-seqs", "64,256", "--max-num-batched-tokens", "8192",
         "--executor", "serial", "--rate-tolerance", "0.2", "--quantization", "none", "--kv-cache-dtype", "auto"]


def test_tune_prints_the_ranked_table_the_pareto_front_and_the_winner(capsys, tmp_path):
    rc = main(["tune", *SMALL, "--gpu", "h100,a100-80gb", "--request-rate", "12",
               "--sla", "p90_ttft_ms<=1000,p90_tpot_ms<=40", "--json", str(tmp_path / "t.json"),
               "--output-dir", str(tmp_path / "out"), "--png", str(tmp_path / "pareto.png")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Candidates: 64 (8 engine configurations x 8 replica counts" in out
    assert "Meeting the SLA" in out and "Pareto front" in out and "$/hour" in out
    assert "vllm serve meta-llama/Llama-3.1-8B" in out
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["counts"]["candidates"] == 64 and doc["counts"]["simulated_configs"] == 8
    winner = doc["winner"]
    assert winner == {**doc["ranked"][0], **{k: winner[k] for k in ("vllm_serve_command", "deployment_yaml", "rollout_yaml")}}
    assert winner["replicas"] * winner["request_rate_per_replica"] >= 12
    costs = [r["cost_per_hour_usd"] for r in doc["ranked"]]
    assert costs == sorted(costs)
    assert {g: p["source"] != "" for g, p in doc["prices"].items()} == {"h100-80gb": True, "a100-80gb": True}
    for name in ("vllm-serve.sh", "deployment.yaml", "rollout.yaml"):
        assert (tmp_path / "out" / name).is_file()
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serve_args_carry_the_dtype_flags_once():
    # A configuration with vLLM's precision fields (EngineConfig has them once precision is modelled).
    from types import SimpleNamespace

    from lab.tune_export import serve_args

    config = SimpleNamespace(model="meta-llama/Llama-3.1-8B", tensor_parallel_size=1, max_model_len=4096,
                             gpu_memory_utilization=0.9, enable_prefix_caching=True, max_num_batched_tokens=8192,
                             max_num_seqs=256, block_size=16, dtype="auto", quantization="fp8", kv_cache_dtype="fp8")
    args = serve_args(config)
    assert sum(a.startswith("--quantization") for a in args) == 1 and "--quantization=fp8" in " ".join(args)
    assert sum(a.startswith("--kv-cache-dtype") for a in args) == 1


def test_exported_manifests_are_valid_kubernetes_and_keep_the_course_canary(tmp_path):
    from lab.cluster.manifests import validate
    from lab.tune_export import deployment_manifest, rollout_manifest
    from sim.config import EngineConfig

    config = EngineConfig(model="meta-llama/Llama-3.1-8B", gpu="h100-80gb", tensor_parallel_size=2,
                          max_num_seqs=256, max_num_batched_tokens=8192, max_model_len=4096)
    deployment = yaml.safe_load(deployment_manifest(config, 3))
    rollout = yaml.safe_load(rollout_manifest(config, 3))
    assert validate([deployment, rollout], ROOT / "manifests" / "schemas") == []
    course = yaml.safe_load((ROOT / "manifests" / "rollout.yaml").read_text())
    assert rollout["spec"]["strategy"] == course["spec"]["strategy"]
    assert rollout["spec"]["replicas"] == deployment["spec"]["replicas"] == 3
    container = rollout["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("vllm/vllm-openai")
    assert "--tensor-parallel-size=2" in container["args"] and "--max-num-seqs=256" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_json_to_stdout_is_pure_json(capsys):
    rc = main(["tune", *SMALL, "--gpu", "h100", "--sla", "p99_e2el_ms<=20000", "--json", "-"])
    captured = capsys.readouterr()
    assert rc == 0
    assert json.loads(captured.out)["winner"]["gpu"] == "h100-80gb"
    assert "Candidates" in captured.err


def test_an_sla_nobody_meets_prints_the_closest_and_exits_1(capsys):
    rc = main(["tune", *SMALL, "--gpu", "a100-80gb", "--sla", "p90_ttft_ms<=5,p90_tpot_ms<=2"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "No configuration meets the SLA" in captured.out
    assert "p90 TPOT <= 2 ms by +" in captured.out
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("extra, fragment", [
    pytest.param(["--gpu", "tpu-v9"], "unknown GPU 'tpu-v9'", id="unknown-gpu"),
    pytest.param(["--gpu", "h100", "--gpu-prices", "/nonexistent/prices.yaml"], "cannot read it", id="missing-prices"),
    pytest.param(["--gpu", "h100", "--sla", "p90_ttft<=5"], "--sla: cannot read", id="bad-sla"),
    pytest.param(["--gpu", "h100", "--headroom", "1.5"], "--headroom: expected a fraction", id="bad-headroom"),
    pytest.param(["--gpu", "h100", "--max-concurrency", "8", "--request-rate", "3"], "give one", id="rate-and-concurrency"),
    pytest.param(["--gpu", "h100", "--dataset-name", "trace", "--dataset-path", "azure-conv", "--trace-time-scale", "0.5"],
                 "tune sets the load itself", id="trace-time-scale"),
    pytest.param(["--gpu", "h100", "--executor", "ray", "--ray-address", "127.0.0.1:9"], "nothing answers",
                 id="ray-address-nobody-listens"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, extra, fragment):
    args = ["tune", *SMALL, "--sla", "p90_ttft_ms<=500", *extra]
    if extra.count("--sla"):
        args = ["tune", *SMALL, *extra]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_price_file_without_a_gpu_being_searched_is_exit_2(capsys, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpus:\n  a100-80gb: {usd_per_gpu_hour: 1.1, source: our contract, date: 2026-11-01}\n")
    rc = main(["tune", *SMALL, "--gpu", "h100", "--sla", "p90_ttft_ms<=500", "--gpu-prices", str(prices)])
    err = capsys.readouterr().err
    assert rc == 2 and "no price for h100-80gb" in err
    prices.write_text("gpus: [broken\n")
    assert main(["tune", *SMALL, "--gpu", "h100", "--sla", "p90_ttft_ms<=500", "--gpu-prices", str(prices)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_headroom_shows_in_the_json_and_the_sla_line(capsys):
    rc = main(["tune", *SMALL, "--gpu", "h100", "--sla", "p99_e2el_ms<=20000", "--headroom", "0.2", "--json", "-"])
    captured = capsys.readouterr()
    assert rc == 0
    data = json.loads(captured.out)
    assert data["sla_headroom"] == 0.2 and "p99 E2EL <= 16000 ms" in data["sla"]
    assert "less 20% headroom" in captured.err
