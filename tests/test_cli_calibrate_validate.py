"""`servelab calibrate` and `servelab validate` as a new user meets them: a flag the chosen mode
would ignore, a path that cannot be read or written, a bad value. Each is refused with exit
status 2 and a message naming the flag or file, before any simulation runs."""

from __future__ import annotations

import json

import pytest

from lab.cli.main import main

TP_FILE = {"elapsed_time": 10.0, "num_requests": 100, "total_num_tokens": 64_000, "requests_per_second": 10.0,
           "tokens_per_second": 6_400.0}
FIT = ["--gpu", "h100", "--model", "llama-3.1-8b", "--input-len", "512", "--output-len", "128"]


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail the test if a slow stage starts: every error here must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("a simulation started before the flags were checked")

    import lab.calibrate.fitcmd
    import lab.calibrate.silicon
    import sim.validate

    for module, name in ((lab.calibrate.silicon, "silicon_report"), (lab.calibrate.silicon, "cross_validate"),
                         (lab.calibrate.silicon, "fit_and_write"), (sim.validate, "validate"),
                         (lab.calibrate.fitcmd, "fit"), (lab.calibrate.fitcmd, "evaluate")):
        monkeypatch.setattr(module, name, refuse)


@pytest.fixture
def user_files(tmp_path):
    (tmp_path / "tp.json").write_text(json.dumps(TP_FILE))
    (tmp_path / "binary.yaml").write_bytes(bytes(range(128, 256)))
    (tmp_path / "runs.csv").write_text("model,tp,concurrency,ttft_ms,tpot_ms\nllama,1,8,40.0,9.5\n")
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "folder").mkdir()
    return tmp_path


def _run(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize("argv,expected", [
    pytest.param(["--silicon", "--no-silicon"], "--no-silicon: not used with --silicon", id="silicon-and-no-silicon"),
    pytest.param(["--silicon", "--points", "llama"], "--points: not used with --silicon", id="silicon-points"),
    pytest.param(["--silicon", "--max-prompts", "50"], "--max-prompts: not used with --silicon", id="silicon-cap"),
    pytest.param(["--paper-prompts", "10"], "--paper-prompts: only with --paper DIR", id="paper-prompts-alone"),
    pytest.param(["--paper-profile", "shipped"], "--paper-profile: only with --paper DIR", id="paper-profile-alone"),
    pytest.param(["--paper", "{tmp}/p", "--cross"], "--cross: not used with --paper", id="paper-cross"),
    pytest.param(["--paper", "{tmp}/p", "--calibration", "x.yaml"], "--calibration: not used with --paper",
                 id="paper-calibration"),
    pytest.param(["--cross", "--points", "llama"], "--points: not used with --cross", id="cross-points"),
    pytest.param(["--cross", "--cross-evaluations", "0"], "--cross-evaluations: expected a positive integer, got 0",
                 id="cross-evaluations-zero"),
    pytest.param(["--cross-evaluations", "5"], "--cross-evaluations: only with --cross", id="evaluations-alone"),
    pytest.param(["--cross", "--calibration", "{tmp}/folder"], "--calibration {tmp}/folder: is a folder",
                 id="cross-calibration-folder"),
    pytest.param(["--silicon", "--calibration", "{tmp}/binary.yaml"], "not a text file", id="calibration-binary"),
    pytest.param(["--silicon", "--calibration", "{tmp}/missing.yaml"], "--calibration: file {tmp}/missing.yaml not found",
                 id="calibration-missing"),
    pytest.param(["--silicon", "--json", "{tmp}/folder"], "--json {tmp}/folder: is a folder", id="json-folder"),
    pytest.param(["--silicon", "--json", "{tmp}/tp.json/out.json"], "--json {tmp}/tp.json/out.json: cannot create",
                 id="json-under-a-file"),
    pytest.param(["--max-prompts", "-1"], "--max-prompts: expected 0 (no cap)", id="max-prompts-negative"),
])
def test_validate_refuses_before_running(user_files, nothing_runs, capsys, argv, expected):
    argv = [a.replace("{tmp}", str(user_files)) for a in argv]
    assert expected.replace("{tmp}", str(user_files)) in _run(["validate", *argv], capsys)


@pytest.mark.parametrize("argv,expected", [
    pytest.param(["--tables-dir", "x"], "--tables-dir: only with --from-aiconfigurator", id="tables-dir-alone"),
    pytest.param(["--no-fit"], "--no-fit: only with --from-aiconfigurator", id="no-fit-alone"),
    pytest.param(["{tmp}/tp.json", "--from-aiconfigurator"], "reads no result files, but 1 file(s) were given",
                 id="files-with-aiconfigurator"),
    pytest.param(["{tmp}/tp.json", *FIT, "--calibration", "{tmp}/folder"], "--calibration {tmp}/folder: is a folder",
                 id="calibration-folder"),
    pytest.param(["{tmp}/tp.json", *FIT, "--calibration", "{tmp}/binary.yaml"], "not a text file",
                 id="calibration-binary"),
    pytest.param(["{tmp}/tp.json", *FIT, "-o", "{tmp}/tp.json/out.yaml"], "--output {tmp}/tp.json/out.yaml: cannot create",
                 id="output-under-a-file"),
    pytest.param(["{tmp}/tp.json", *FIT, "-o", "{tmp}/folder"], "--output {tmp}/folder: is a folder",
                 id="output-folder"),
    pytest.param(["{tmp}/tp.json", "--gpu", "h100", "--model", "llama-3.1-8b", "--input-len", "0", "--output-len", "128"],
                 "--input-len and --output-len: expected positive token counts, got 0 and 128", id="input-len-zero"),
    pytest.param(["{tmp}/runs.csv", "--gpu", "h100"], "found the header 'model,tp,concurrency,ttft_ms,tpot_ms'",
                 id="own-runs-as-csv"),
    pytest.param(["{tmp}/empty.json", "--gpu", "h100"], "empty.json: not a JSON file", id="empty-json"),
    pytest.param(["{tmp}/folder/missing.csv", "--gpu", "h100"], "missing.csv: no such file", id="missing-csv"),
])
def test_calibrate_fit_refuses_before_fitting(user_files, nothing_runs, capsys, argv, expected):
    argv = [a.replace("{tmp}", str(user_files)) for a in argv]
    assert expected.replace("{tmp}", str(user_files)) in _run(["calibrate", "fit", *argv], capsys)


def test_calibrate_fit_names_what_a_csv_of_whole_runs_should_be(user_files, nothing_runs, capsys):
    err = _run(["calibrate", "fit", str(user_files / "runs.csv"), "--gpu", "h100"], capsys)
    assert "vllm bench serve --save-result" in err and "op,m,n,k,dtype_bytes,time_ms" in err


def test_binary_operator_csv_is_named(user_files, nothing_runs, capsys):
    path = user_files / "ops.csv"
    path.write_bytes(bytes(range(128, 256)))
    assert f"{path}: not a text file" in _run(["calibrate", "fit", str(path), "--gpu", "h100"], capsys)


COLLECT = ["calibrate", "collect", "--dry-run", "--model", "llama-3.1-8b", "--gpu", "h100"]


@pytest.mark.parametrize("argv,expected", [
    pytest.param(["--gpu", "tpu-v5"], "--gpu: unknown GPU 'tpu-v5'", id="unknown-gpu"),
    pytest.param(["--request-rates", "1,nan"], "--request-rates: expected finite rates > 0", id="nan-rate"),
    pytest.param(["--request-rates", "inf"], "an infinite rate is the throughput sweep's job", id="inf-rate"),
    pytest.param(["--port", "0"], "--port: expected a TCP port from 1 to 65535", id="port-zero"),
    pytest.param(["--num-prompts", "0"], "--num-prompts: expected a positive integer, got 0", id="num-prompts"),
    pytest.param(["-tp", "0"], "--tensor-parallel-size: expected a positive integer, got 0", id="tp-zero"),
    pytest.param(["--lengths", "512x128"], "--lengths: expected input:output pairs", id="lengths"),
])
def test_calibrate_collect_checks_every_flag_before_the_sweep(capsys, argv, expected):
    assert expected in _run([*COLLECT, *argv], capsys)


def test_calibrate_collect_dry_run_with_good_flags_still_prints_the_sweep(capsys):
    assert main([*COLLECT, "--request-rates", "2,8", "--port", "8100"]) == 0
    out = capsys.readouterr().out
    assert "--request-rate 2 " in out and "--request-rate 8 " in out and "--port 8100" in out


@pytest.mark.parametrize("make, expected", [
    pytest.param(lambda p: p.mkdir(), "is a folder", id="folder"),
    pytest.param(lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"), "not a text file", id="binary"),
    pytest.param(lambda p: p.write_text("- just a list\n"), "expected a mapping with a 'profiles' list", id="not-a-profile"),
])
def test_every_command_reading_a_calibration_profile_gets_one_line(tmp_path, make, expected):
    """sim.calibration.load_profile itself names the flag and the file (bench reads it too)."""
    from sim.calibration import load_profile
    from sim.errors import ConfigError

    path = tmp_path / "profile.yaml"
    make(path)
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    assert str(err.value).startswith(f"--calibration {path}") and expected in str(err.value)
