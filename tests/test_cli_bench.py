"""`servelab bench`: vLLM's JSON fields, and clear one-line errors for bad input."""

import json
import subprocess
import sys

import pytest

from lab.cli.main import main


def run_cli(*argv):
    proc = subprocess.run([sys.executable, "-m", "lab", *argv], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_throughput_json_has_vllm_fields(tmp_path, capsys):
    out = tmp_path / "tp.json"
    rc = main(["bench", "throughput", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--input-len", "200",
               "--output-len", "50", "--num-prompts", "100", "--output-json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    for key in ("elapsed_time", "num_requests", "total_num_tokens", "requests_per_second", "tokens_per_second"):
        assert key in data
    assert data["num_requests"] == 100 and data["total_num_tokens"] == 100 * 250
    assert data["requests_per_second"] == pytest.approx(100 / data["elapsed_time"])
    printed = capsys.readouterr().out
    assert printed.startswith("Throughput: ")
    for key in ("mean_batch_size", "num_preemptions", "prefix_cache_hit_rate", "kv_usage_over_time"):
        assert key in data["servelab"]


def test_serve_result_has_vllm_fields(tmp_path, capsys):
    rc = main(["bench", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-80gb", "--dataset-name", "sharegpt",
               "--num-prompts", "80", "--request-rate", "5", "--save-result", "--result-dir", str(tmp_path),
               "--result-filename", "r.json", "--metric-percentiles", "50,99"])
    assert rc == 0
    data = json.loads((tmp_path / "r.json").read_text())
    for key in ("duration", "completed", "request_throughput", "output_throughput", "total_token_throughput"):
        assert key in data
    for m in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "p99", "p50"):
            assert f"{stat}_{m}_ms" in data
    assert data["completed"] == 80
    assert data["median_ttft_ms"] > 0 and data["mean_e2el_ms"] > data["mean_ttft_ms"]
    out = capsys.readouterr().out
    assert "Serving Benchmark Result" in out and "Median TTFT (ms):" in out
    # As vLLM's client: the per-request arrays only with --save-detailed.
    assert not {"input_lens", "output_lens", "ttfts"} & set(data)
    assert main(["bench", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-80gb", "--num-prompts", "8",
                 "--save-result", "--save-detailed", "--result-dir", str(tmp_path), "--result-filename", "d.json"]) == 0
    detailed = json.loads((tmp_path / "d.json").read_text())
    assert len(detailed["input_lens"]) == len(detailed["output_lens"]) == len(detailed["ttfts"]) == 8


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(["--model", "gpt-17", "--gpu", "a100-80gb"], "unknown model 'gpt-17'", id="unknown model"),
        pytest.param(["--model", "llama-2-7b", "--gpu", "tpu-v9"], "a100-80gb", id="unknown gpu"),
        pytest.param(["--model", "llama-2-70b", "--gpu", "a100-80gb", "-tp", "3"], "tensor", id="tp does not divide heads"),
        pytest.param(["--model", "llama-2-70b", "--gpu", "l4"], "GiB", id="model does not fit"),
        pytest.param(["--model", "llama-2-7b", "--gpu", "a100-80gb", "--input-len", "5000"], "max-model-len", id="prompt too long"),
        pytest.param(["--model", "llama-2-7b", "--gpu", "a100-80gb", "--input-len", "-3"], "input", id="negative length"),
        pytest.param(["--model", "llama-2-7b", "--gpu", "a100-80gb", "--output-len", "0"], "output", id="zero output length"),
        pytest.param(["--model", "llama-2-7b", "--gpu", "a100-80gb", "--num-prompts", "0"], "num-prompts", id="zero prompts"),
        pytest.param(["--model", "llama-2-7b", "--gpu", "a100-80gb", "--gpu-memory-utilization", "1.5"], "gpu-memory-utilization", id="utilization > 1"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(argv, message):
    rc, out, err = run_cli("bench", "throughput", *argv)
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    assert err.startswith("error:")
    assert message.lower() in err.lower()


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--model", "gpt-oss-20b", "--gpu", "a100-80gb", "--kv-cache-dtype", "fp8"], id="fp8 kv refused"),
        pytest.param(["--model", "llama-2-70b", "--gpu", "l4"], id="model does not fit"),
    ],
)
def test_bench_serve_refused_at_start_up_prints_no_client_lines(argv):
    """The server refuses these flags at start-up, so the benchmark client never starts: no
    "Traffic request rate" line before the one error line."""
    rc, out, err = run_cli("bench", "serve", *argv, "--num-prompts", "4")
    assert rc == 2, (out, err)
    assert err.startswith("error:") and "Traceback" not in err
    assert "Traffic request rate" not in out


def test_tokenizer_sets_the_vocabulary_vllms_random_prompts_are_drawn_from(tmp_path, capsys):
    """vLLM's random dataset draws prompts as runs of consecutive ids over the tokenizer's
    vocabulary, so with a tiny one most prompts repeat and hit the prefix cache; a folder
    without tokenizer.json is one clear line and exit 2."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(40)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    tok.save(str(tmp_path / "tokenizer.json"))
    common = ["bench", "serve", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--num-prompts", "60",
              "--random-input-len", "64", "--random-output-len", "4", "--request-rate", "inf"]

    def hit_rate(*extra) -> float:
        assert main([*common, *extra, "--save-result", "--result-dir", str(tmp_path), "--result-filename", "r.json"]) == 0
        return json.loads((tmp_path / "r.json").read_text())["servelab"]["prefix_cache_hit_rate"]

    assert hit_rate() < 0.05  # 32,000 ids: a repeat among 60 prompts is rare
    assert hit_rate("--tokenizer", str(tmp_path)) > 0.3  # 40 ids: 60 prompts start at most 40 ways
    capsys.readouterr()
    rc, out, err = run_cli(*common, "--tokenizer", str(tmp_path / "nowhere"))
    assert rc == 2 and "Traceback" not in err and "--tokenizer" in err and "tokenizer.json" in err


def test_bad_request_rate_for_serve():
    rc, out, err = run_cli("bench", "serve", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--request-rate", "-1")
    assert rc == 2 and "Traceback" not in err and "request" in err.lower()


def test_throughput_counts_n_samples_as_vllm_does(tmp_path):
    """vLLM's throughput benchmark: a request is a prompt; its n outputs all count as output."""
    out = tmp_path / "n.json"
    rc = main(["bench", "throughput", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--input-len", "300",
               "--output-len", "100", "--num-prompts", "20", "--n", "4", "--output-json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["num_requests"] == 20
    assert data["total_num_prompt_tokens"] == 20 * 300
    assert data["total_num_output_tokens"] == 20 * 4 * 100
    assert data["total_num_tokens"] == 20 * 300 + 20 * 4 * 100


SERVE = ["bench", "serve", "--model", "llama-2-7b", "--gpu", "h200", "--num-prompts", "10"]


@pytest.mark.parametrize("value", ["50,150", "-5", "nan", "50,,99", ""])
def test_metric_percentiles_out_of_range_is_one_line_exit_2(capsys, value):
    assert main([*SERVE, "--metric-percentiles", value]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: --metric-percentiles: expected comma-separated percentiles from 0 to 100, "
                                f"like 50,90,99; got {value!r}"]


def test_metric_percentiles_at_the_ends_are_accepted(capsys):
    assert main([*SERVE, "--metric-percentiles", "0,100", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["p0_ttft_ms"] <= data["p100_ttft_ms"]


@pytest.mark.parametrize("command", ["throughput", "serve"])
@pytest.mark.parametrize("argv, expect", [
    pytest.param(["--no-enable-chunked-prefill", "--max-num-batched-tokens", "2048"],
                 "--max-num-batched-tokens (2048) is smaller than --max-model-len (4096, the model's maximum) with "
                 "--no-enable-chunked-prefill", id="no-chunked-mnbt-below-len"),
    pytest.param(["--no-enable-chunked-prefill", "--max-num-batched-tokens", "4k"],
                 "--max-num-batched-tokens (4000) is smaller", id="no-chunked-4k"),
    pytest.param(["--max-num-batched-tokens", "100", "--max-num-seqs", "256"],
                 "--max-num-batched-tokens (100) must be greater than or equal to --max-num-seqs (256)",
                 id="mnbt-below-seqs"),
    pytest.param(["--long-prefill-token-threshold", "5000"],
                 "--long-prefill-token-threshold (5000) cannot be greater than --max-model-len (4096",
                 id="long-prefill"),
    pytest.param(["--block-size", "7"], "--block-size: expected a multiple of 16", id="block-size"),
])
def test_settings_vllm_refuses_are_one_line_exit_2(capsys, command, argv, expect):
    assert main(["bench", command, "--model", "llama-2-7b", "--gpu", "a100-80gb", "--num-prompts", "5", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expect in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    pytest.param([], id="defaults"),
    pytest.param(["--no-enable-chunked-prefill"], id="no-chunked: default raised to max-model-len"),
    pytest.param(["--no-enable-chunked-prefill", "--max-num-batched-tokens", "4K"], id="no-chunked 4K = 4096"),
    pytest.param(["--max-num-batched-tokens", "100"], id="mnbt alone: vLLM lowers the default seqs"),
    pytest.param(["--max-num-seqs", "8192"], id="seqs up to the offline default tokens"),
])
@pytest.mark.parametrize("gpu", ["a100-80gb", "h100-80gb", "b200", "l40s"])
def test_settings_vllm_accepts_run_offline(capsys, argv, gpu):
    assert main(["bench", "throughput", "--model", "llama-2-7b", "--gpu", gpu, "--num-prompts", "5",
                 "--input-len", "64", "--output-len", "4", *argv]) == 0


def test_engine_flags_read_vllms_human_readable_numbers():
    from lab.bench.runs import engine_config
    from lab.cli.main import build_parser

    argv = ["bench", "serve", "--model", "llama-3.1-8b", "--gpu", "h100", "--max-model-len", "32k",
            "--max-num-batched-tokens", "16K", "--kv-cache-memory-bytes", "1.5g"]
    config = engine_config(build_parser(argv).parse_args(argv))
    assert (config.max_model_len, config.max_num_batched_tokens, config.kv_cache_memory_bytes) == (
        32000, 16384, 1_500_000_000)


LATENCY = ["bench", "latency", "--model", "llama-3.1-8b", "--gpu", "h100", "--batch-size", "8", "--input-len", "32"]


def test_bench_latency_prints_vllms_lines_and_json(tmp_path, capsys):
    """`vllm bench latency`'s output and JSON; prefix caching off (its default), so the same
    batch takes the same time on every iteration of a deterministic engine."""
    out = tmp_path / "lat.json"
    assert main([*LATENCY, "--output-len", "64", "--num-iters-warmup", "2", "--num-iters", "4",
                 "--output-json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Warming up...\nAvg latency: ")
    for p in (10, 25, 50, 75, 90, 99):
        assert f"\n{p}% percentile latency: " in text
    data = json.loads(out.read_text())
    assert set(data) == {"model_id", "avg_latency", "latencies", "percentiles"}
    assert len(data["latencies"]) == 4 and set(data["percentiles"]) == {"10", "25", "50", "75", "90", "99"}
    assert max(data["latencies"]) - min(data["latencies"]) < 1e-9 and data["avg_latency"] > 0


def test_bench_latency_is_the_batch_run_alone(capsys):
    """One batch of 8 x (32 in, 64 out) takes what `bench throughput` takes for the same 8
    requests sent at once; twice the output, about twice the time (decode dominates)."""
    def latency(output_len):
        assert main([*LATENCY, "--output-len", str(output_len), "--num-iters-warmup", "0", "--num-iters", "1"]) == 0
        line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("Avg latency:"))
        return float(line.split()[2])

    short, long = latency(64), latency(128)
    assert 1.8 < long / short < 2.1
    from sim.config import EngineConfig, config_scheduler_limits
    from sim.runner import run_engine
    from sim.workload import WorkloadSpec, build_workload
    import numpy as np

    config = EngineConfig(model="llama-3.1-8b", gpu="h100", enable_prefix_caching=False)
    config_scheduler_limits(config, "offline")
    spec = WorkloadSpec(dataset_name="random", num_prompts=8, random_input_len=32, random_output_len=64)
    result = run_engine(config, build_workload(spec, np.random.default_rng(0)), usage="offline")
    assert abs(result.elapsed_s - short) < 1e-6 * short


def test_bench_latency_with_prefix_caching_finds_the_prompts_cached_after_the_first_batch(tmp_path, capsys):
    out = tmp_path / "lat.json"
    assert main([*LATENCY, "--input-len", "1024", "--output-len", "16", "--enable-prefix-caching",
                 "--num-iters-warmup", "0", "--num-iters", "3", "--output-json", str(out)]) == 0
    first, second, third = json.loads(out.read_text())["latencies"]
    assert second < 0.9 * first and abs(second - third) < 1e-9


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(["--use-beam-search"], "--use-beam-search", id="beam search"),
        pytest.param(["--profile"], "--profile", id="profile"),
        pytest.param(["--num-iters", "0"], "--num-iters", id="no iterations"),
        pytest.param(["--batch-size", "0"], "--batch-size", id="empty batch"),
        pytest.param(["--max-model-len", "100", "--output-len", "128"], "--max-model-len", id="too long"),
    ],
)
def test_bench_latency_bad_input_is_one_line_and_exit_2(argv, message):
    rc, out, err = run_cli(*LATENCY, *argv)
    assert rc == 2, (out, err)
    assert err.startswith("error:") and "Traceback" not in err and message in err
