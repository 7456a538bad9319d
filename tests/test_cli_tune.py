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
    assert (tmp_path / "out" / "vllm-serve.sh").stat().st_mode & 0o111  # runnable, as its #! line says
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_config_json_by_path_is_simulated_from_that_file(capsys, tmp_path):
    """An edited config.json keeps its _name_or_path; tune simulates the file (twice the layers:
    slower), not the shipped model of that name, and exports its path."""
    cfg = json.loads((ROOT / "sim" / "data" / "models" / "meta-llama--Llama-3.1-8B.json").read_text())
    cfg["_name_or_path"] = "meta-llama/Llama-3.1-8B"
    cfg["num_hidden_layers"] *= 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rows = {}
    for model in ("llama-3.1-8b", str(tmp_path)):
        argv = ["tune", *SMALL, "--gpu", "h100", "--tensor-parallel-size", "1", "--max-num-seqs", "64",
                "--sla", "p90_ttft_ms<=1000", "--json", "-"]
        argv[argv.index("--model") + 1] = model
        assert main(argv) == 0
        doc = json.loads(capsys.readouterr().out)
        rows[model] = doc["ranked"][0]
    assert doc["model"] == str(tmp_path) and f"vllm serve {tmp_path}" in doc["winner"]["vllm_serve_command"]
    deeper, shipped_row = rows[str(tmp_path)], rows["llama-3.1-8b"]
    assert deeper["output_throughput_per_gpu_at_max_load"] < 0.8 * shipped_row["output_throughput_per_gpu_at_max_load"]


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
    assert container["image"] == "vllm/vllm-openai:v0.33.0"  # the release simulated, not :latest
    assert "--tensor-parallel-size=2" in container["args"] and "--max-num-seqs=256" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    # A real vLLM takes minutes to load: liveness waits for a startup probe (not the emulator's 30 s).
    for c in (container, deployment["spec"]["template"]["spec"]["containers"][0]):
        assert c["startupProbe"]["httpGet"]["path"] == "/health"
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 600
        assert "initialDelaySeconds" not in c["livenessProbe"]
    assert "nodeSelector" in deployment_manifest(config, 3)  # the note on pinning the GPU type


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


def test_the_closest_rows_legend_names_only_what_they_show(capsys):
    # Rows that meet the latency terms but need too many replicas: no margin, no load per replica.
    rc = main(["tune", *SMALL, "--gpu", "h100", "--tensor-parallel-size", "1", "--max-num-seqs", "64",
               "--sla", "p90_ttft_ms<=1000,output_throughput>=1000000", "--max-replicas", "2"])
    out = capsys.readouterr().out
    assert rc == 1 and "replicas > 2" in out
    legend = out.strip().splitlines()[-1]
    assert legend.startswith("@max: one replica at the highest load found to meet the latency terms")
    assert "margin" not in legend and "req/s/replica" not in legend


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
    pytest.param(["--model", "Qwen/Qwen3-30B-A3B", "--gpu", "h100", "-tp", "1", "-ep", "on"], "nothing to search",
                 id="expert-parallel-on-one-gpu"),
    pytest.param(["--gpu", "h100", "--request-rate", "0"], "--request-rate: expected requests/s", id="rate-zero"),
    pytest.param(["--gpu", "h100", "--max-concurrency", "8", "--burstiness", "0.5"], "--burstiness with --max-concurrency",
                 id="burstiness-in-a-closed-loop"),
    pytest.param(["--gpu", "h100", "--dataset-name", "sharegpt", "--dataset-path", "ShareGPT_V3.json"],
                 "only --dataset-name trace reads a file", id="dataset-path-ignored-by-sharegpt"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, extra, fragment):
    args = ["tune", *SMALL, "--sla", "p90_ttft_ms<=500", *extra]
    if extra.count("--sla"):
        args = ["tune", *SMALL, *extra]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--workers", "--top"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_counts_below_one_are_refused_before_anything_runs(capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        main(["tune", *SMALL, "--gpu", "h100", "--sla", "p90_ttft_ms<=500", flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: expected a positive integer, got '{value}'" in capsys.readouterr().err


def test_a_price_file_that_prices_one_gpu_under_two_names_is_exit_2(capsys, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpus:\n  h100-80gb: {usd_per_gpu_hour: 2.1, source: a, date: 2026-11-01}\n"
                      "  h100: {usd_per_gpu_hour: 3.0, source: b, date: 2026-11-01}\n")
    rc = main(["tune", *SMALL, "--gpu", "h100", "--sla", "p90_ttft_ms<=500", "--gpu-prices", str(prices)])
    err = capsys.readouterr().err
    assert rc == 2 and "gpus.h100: h100 is h100-80gb, already priced as gpus.h100-80gb" in err


def test_a_quantized_checkpoint_is_searched_in_its_own_weights_by_default(capsys, tmp_path):
    # gpt-oss ships mxfp4 weights; vLLM refuses --quantization fp8 on them, so the default offers none.
    rc = main(["tune", "--model", "openai/gpt-oss-120b", "--gpu", "h200", "-tp", "1", "--max-num-seqs", "64",
               "--max-num-batched-tokens", "8192", "--num-prompts", "20", "--random-input-len", "256",
               "--random-output-len", "32", "--executor", "serial", "--rate-tolerance", "0.3",
               "--sla", "p90_ttft_ms<=2000", "--json", str(tmp_path / "t.json")])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["counts"]["pruned_configs"] == 0 and doc["counts"]["engine_configs"] == 2  # kv-cache auto, fp8
    assert {r["quantization"] for r in doc["ranked"]} == {None}


def test_a_price_file_without_a_gpu_being_searched_is_exit_2(capsys, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpus:\n  a100-80gb: {usd_per_gpu_hour: 1.1, source: our contract, date: 2026-11-01}\n")
    rc = main(["tune", *SMALL, "--gpu", "h100", "--sla", "p90_ttft_ms<=500", "--gpu-prices", str(prices)])
    err = capsys.readouterr().err
    assert rc == 2 and "no price for h100-80gb" in err
    # A short name in the file may be another GPU: the message names what the table prices.
    prices.write_text("gpus:\n  a100: {usd_per_gpu_hour: 1.1, source: our contract, date: 2026-11-01}\n")
    assert main(["tune", *SMALL, "--gpu", "a100-80gb", "--sla", "p90_ttft_ms<=500", "--gpu-prices", str(prices)]) == 2
    assert "no price for a100-80gb; the table prices a100-40gb" in capsys.readouterr().err
    prices.write_bytes(b"\xff\xfe\x00price\x81")  # not text at all: one line, not a traceback
    assert main(["tune", *SMALL, "--gpu", "h100", "--sla", "p90_ttft_ms<=500", "--gpu-prices", str(prices)]) == 2
    assert "not a text file" in capsys.readouterr().err
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


@pytest.mark.parametrize("model, gpu, tp, kind", [
    pytest.param("Qwen/Qwen3-32B", "h200", "3", "4: TP 3 does not divide the 64 attention heads (h200 tp3)",
                 id="tp-does-not-divide-heads"),
    pytest.param("deepseek-ai/DeepSeek-V3", "h100", "8", "2: the weights do not fit in GPU memory (h100-80gb tp8)",
                 id="weights-do-not-fit"),
])
def test_a_search_space_pruned_whole_says_why_and_exits_2(capsys, tmp_path, model, gpu, tp, kind):
    rc = main(["tune", *SMALL, "--model", model, "--gpu", gpu, "-tp", tp, "--quantization", "none,fp8",
               "--sla", "p90_ttft_ms<=1000", "--json", str(tmp_path / "t.json")])
    captured = capsys.readouterr()
    assert rc == 2  # a search-space error, not an SLA nobody meets
    assert kind in captured.out and "e.g. " in captured.out  # counted by kind, with vLLM's full reason under each
    assert "No configuration meets the SLA" not in captured.out
    assert captured.err.startswith("error: nothing to simulate: all") and len(captured.err.splitlines()) == 1
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["winner"] is None and doc["counts"]["simulated_configs"] == 0
    assert [g["configs"] for g in doc["pruned_by_kind"]] == [doc["counts"]["pruned_configs"]]
    assert {p["kind"] for p in doc["pruned"]} == {doc["pruned_by_kind"][0]["kind"]}


def test_some_pruned_and_none_meeting_is_still_exit_1_with_the_closest(capsys):
    rc = main(["tune", *SMALL, "--gpu", "a100-80gb", "-tp", "1,3", "--max-num-seqs", "64",
               "--sla", "p90_ttft_ms<=5,p90_tpot_ms<=2"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "  1: TP 3 does not divide the 32 attention heads (a100-80gb tp3)" in captured.out
    assert "No configuration meets the SLA" in captured.out and "p90 TPOT <= 2 ms by +" in captured.out
    assert "nothing to simulate" not in captured.err


def test_expert_parallel_shows_in_the_layout_column_and_the_json(capsys):
    rc = main(["tune", *SMALL, "--model", "Qwen/Qwen3-30B-A3B", "--gpu", "h100", "-tp", "2", "-ep", "on,off",
               "--max-num-seqs", "64", "--request-rate", "5", "--sla", "p90_tpot_ms<=50", "--json", "-"])
    captured = capsys.readouterr()
    assert rc == 0
    table = captured.err.split("Meeting the SLA")[1].split("\n\n")[0].splitlines()
    assert "layout" in table[1].split() and "TP" not in table[1].split()
    layouts = sorted(" ".join(row.split()[2:4]) if "ep2" in row else row.split()[2] for row in table[3:5])
    assert layouts == ["tp2", "tp2 ep2"]  # the pair no longer looks identical
    doc = json.loads(captured.out)
    assert sorted((r["layout"], r["enable_expert_parallel"], r["data_parallel_size"]) for r in doc["ranked"]) == \
        [("tp2", False, 1), ("tp2 ep2", True, 1)]
    assert "(tp2" in captured.err.split("Winner: ")[1].splitlines()[0]
    assert ("--enable-expert-parallel" in doc["winner"]["vllm_serve_command"]) == doc["winner"]["enable_expert_parallel"]


def test_the_columns_say_what_load_they_are_measured_at(capsys):
    rc = main(["tune", *SMALL, "--gpu", "h100", "--request-rate", "5", "--sla", "p90_tpot_ms<=50", "--json", "-"])
    captured = capsys.readouterr()
    assert rc == 0
    ranked, pareto = captured.err.split("Meeting the SLA")[1].split("Pareto front")
    assert "$/Mtok @5 req/s" in ranked and "tok/s/GPU @5 req/s" in ranked
    assert "@5 req/s: at the offered load, spread over each row's replicas" in ranked
    assert "$/Mtok @max" in pareto and "tok/s/GPU @max" in pareto
    assert "@max: one replica at req/s/replica, the highest load found to meet the SLA" in pareto
    doc = json.loads(captured.out)
    assert {r["throughput_and_cost_at"] for r in doc["ranked"]} == {"target_load"}
    assert {r["throughput_and_cost_at"] for r in doc["pareto"]} == {"max_load_meeting_sla"}
    for r in doc["ranked"]:  # at the offered load every row serves the same tokens; at max load they differ
        assert r["output_throughput"] == pytest.approx(doc["ranked"][0]["output_throughput"])
        assert r["output_throughput_per_gpu_at_max_load"] >= r["output_throughput_per_gpu"] * (1 - 1e-9)
    for r in doc["pareto"]:
        assert r["output_throughput_per_gpu_at_max_load"] == pytest.approx(r["output_throughput_per_gpu"])


def test_the_exported_command_is_the_simulated_configuration(capsys):
    """Every flag of the winner's `vllm serve` line reads back as the engine configuration that
    was simulated; fp8 weights are written in vLLM 0.33's non-deprecated spelling."""
    from dataclasses import fields

    from lab.tune_export import serve_args
    from sim.config import EngineConfig
    from sim.rollout.podargs import engine_config_from_args
    from sim.tune.space import SearchSpace

    rc = main(["tune", *SMALL, "--gpu", "h100", "-tp", "1", "--quantization", "fp8", "--kv-cache-dtype", "fp8",
               "--sla", "p99_e2el_ms<=20000", "--json", "-"])
    captured = capsys.readouterr()
    assert rc == 0
    winner = json.loads(captured.out)["winner"]
    default = next(f.default for f in fields(EngineConfig) if f.name == "gpu_memory_utilization")
    assert winner["gpu_memory_utilization"] == default
    command = winner["vllm_serve_command"]
    assert f"--gpu-memory-utilization={default:g}" in command
    assert "--quantization=fp8_per_tensor" in command and "--kv-cache-dtype=fp8" in command
    space = SearchSpace(model="Qwen/Qwen3-30B-A3B", gpus=("h100", "a100-80gb"), tensor_parallel_sizes=(1, 2),
                        max_num_seqs=(64,), max_num_batched_tokens=(2048, 8192), quantization=(None, "fp8"),
                        kv_cache_dtype=("auto", "fp8"), enable_prefix_caching=(True, False),
                        enable_expert_parallel=(False, True), gpu_memory_utilization=0.85)
    for config in space.engine_configs():
        args = ("vllm", "serve", *serve_args(config), f"--gpu={config.gpu}")
        assert engine_config_from_args(args, "export") == config, args


def test_tune_reads_token_counts_as_vllm_does():
    """--max-num-batched-tokens and --max-model-len take vLLM's human-readable forms (8k is
    8,000; 8K is 8,192), as memory and bench do; a bad one is refused by argparse."""
    import argparse

    from lab.cli.engine_args import max_model_len_arg
    from lab.cli.tune import _ints

    assert _ints("--max-num-batched-tokens", human_readable=True)("2k, 8K,16384") == (2000, 8192, 16384)
    assert max_model_len_arg("8k") == 8000
    with pytest.raises(argparse.ArgumentTypeError, match="8k or 8K"):
        _ints("--max-num-batched-tokens", human_readable=True)("2x")
    with pytest.raises(argparse.ArgumentTypeError):
        _ints("--max-num-seqs")("8k")  # vLLM reads --max-num-seqs as a plain integer


def test_configurations_the_simulator_cannot_run_are_an_input_problem_not_an_sla_miss(capsys, tmp_path):
    # gpt-oss-120b on an A100: no operator table prices its attention there (not an SLA miss)
    rc = main(["tune", *SMALL, "--model", "openai/gpt-oss-120b", "--gpu", "a100-80gb", "-tp", "1,2",
               "--max-num-seqs", "64", "--sla", "p90_ttft_ms<=500", "--json", str(tmp_path / "t.json")])
    captured = capsys.readouterr()
    assert rc == 2  # like a space pruned whole
    assert "Not simulatable: 2 configurations" in captured.out
    assert "(a100-80gb tp1, a100-80gb tp2)" in captured.out and "cannot price it" in captured.out
    assert "No configuration meets the SLA" not in captured.out
    assert captured.err.startswith("error: nothing could be simulated: the simulator cannot model any of the 2 "
                                   "engine configurations on their GPU") and len(captured.err.splitlines()) == 1
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["closest"] == [] and doc["counts"]["unsimulatable_configs"] == 2
    assert [g["configs"] for g in doc["unsimulatable_by_kind"]] == [2]


def test_max_model_len_is_capped_at_the_models_limit_and_a_longer_request_is_an_input_error(capsys):
    import argparse

    from lab.cli.tune import add_cli_args, build_request

    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([*SMALL, "--model", "Qwen/Qwen3-32B", "--gpu", "h200", "--random-input-len", "30000",
                              "--random-output-len", "4000", "--sla", "p90_ttft_ms<=500"])
    assert build_request(args).space.max_model_len == 40960  # not 65,536, which vLLM would refuse
    rc = main(["tune", *SMALL, "--model", "Qwen/Qwen3-32B", "--gpu", "h200", "--random-input-len", "40000",
               "--random-output-len", "4000", "--sla", "p90_ttft_ms<=500"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "the longest request is 44,000 tokens (--random-input-len 40000 + --random-output-len 4000), more than " \
           "Qwen/Qwen3-32B can take: 40,960 tokens" in err
