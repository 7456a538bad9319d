import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.cli.main import main
from sim.human_readable import BINARY_SUFFIXES, DECIMAL_SUFFIXES, parse_int, parse_max_model_len
from tests.conftest import require


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for command in ("memory", "bench", "rollout", "cluster", "exercise", "validate"):
        assert command in out


def test_unknown_flag_exits_2_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "--no-such-flag"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr


@pytest.mark.parametrize("argv, prog", [
    pytest.param(["memory", "--model", "llama-2-7b", "--gpu", "h200", "--bogus"], "servelab memory", id="memory"),
    pytest.param(["bench", "throughput", "--model", "llama-2-7b", "--gpu", "h200", "--bogus"],
                 "servelab bench throughput", id="bench throughput"),
    pytest.param(["bench", "serve", "--model", "llama-2-7b", "--gpu", "h200", "--bogus", "x"],
                 "servelab bench serve", id="bench serve"),
    pytest.param(["serve", "llama-2-7b", "--gpu", "h200", "--bogus"], "servelab serve", id="serve"),
    pytest.param(["rollout", "--bogus"], "servelab rollout", id="rollout"),
    pytest.param(["--bogus", "memory"], "servelab", id="top level"),
])
def test_unknown_flag_names_the_subcommand_and_its_help(capsys, argv, prog):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    bogus = " ".join(a for a in argv if a in ("--bogus", "x"))
    assert capsys.readouterr().err.splitlines() == [f"error: {prog}: unrecognized arguments: {bogus}",
                                                    f"(run '{prog} --help' for the flags)"]


# -- vLLM's human-readable numbers (sim.human_readable) -------------------------------------------
SUFFIXES = {**DECIMAL_SUFFIXES, **BINARY_SUFFIXES}


@given(st.integers(0, 10**6), st.sampled_from(sorted(SUFFIXES)), st.sampled_from(["", " ", "\t", "\n"]))
def test_a_whole_number_and_a_suffix_is_the_number_times_its_power(n, suffix, space):
    # k, m, g, t are powers of ten and K, M, G, T powers of two, with white space around ignored.
    assert parse_int(f"{space}{n}{suffix}{space}") == n * SUFFIXES[suffix]


@given(st.integers())
def test_a_plain_integer_is_itself(n):
    assert parse_int(str(n)) == n


@given(st.integers(0, 10**6), st.from_regex(r"\A[0-9]{1,6}\Z"), st.sampled_from(sorted(DECIMAL_SUFFIXES)))
def test_a_fraction_takes_a_decimal_suffix_and_drops_what_is_below_one(whole, fraction, suffix):
    # vLLM multiplies in floating point and truncates: off by its rounding (1.005k is 1004), never more.
    exact = Decimal(f"{whole}.{fraction}") * DECIMAL_SUFFIXES[suffix]
    assert abs(parse_int(f"{whole}.{fraction}{suffix}") - exact) <= 1 + exact * Decimal(2) ** -51


@given(st.integers(0, 10**6), st.from_regex(r"\A[0-9]{1,6}\Z"), st.sampled_from(sorted(BINARY_SUFFIXES)))
def test_a_fraction_with_a_binary_suffix_is_refused_and_the_decimal_one_suggested(whole, fraction, suffix):
    with pytest.raises(ValueError, match=f"write {whole}.{fraction}{suffix.lower()}"):
        parse_int(f"{whole}.{fraction}{suffix}")


@given(st.one_of(st.text(), st.from_regex(r"\A\s*[-+]?[0-9._]{0,8}[kKmMgGtTb ]?\s*\Z"),
                 st.from_regex(r"\A[0-9]{300,5000}(\.[0-9])?[kg]?\Z")))
def test_any_text_is_a_number_or_a_value_error(text):
    # Never another exception (vLLM's own raises OverflowError for "9" * 400 + "k"): the CLI turns a
    # ValueError into one line naming the flag.
    try:
        assert isinstance(parse_int(text), int)
    except ValueError as exc:
        assert str(exc).startswith("expected a whole number")


@given(st.one_of(st.text(max_size=12), st.sampled_from(["auto", " AUTO ", "-1", "-01", "4k", "4096"])))
def test_max_model_len_refuses_vllms_auto_fit_and_reads_the_rest_alike(text):
    try:
        value = parse_int(text)
    except ValueError:
        value = None
    if text.strip().lower() == "auto" or value == -1:
        with pytest.raises(ValueError, match="does not simulate"):
            parse_max_model_len(text)
    elif value is None:
        with pytest.raises(ValueError):
            parse_max_model_len(text)
    else:
        assert parse_max_model_len(text) == value


# Against vLLM 0.33's own human_readable_int and human_readable_int_or_auto, in the reference venv.
VLLM_EXAMPLES = [
    "0", "8192", "+8192", "-5", "-1", "-01", "007", " 32k ", "32K", "25.6k", "1.5k", "1.5K", "12.0K", "1.005k",
    "1.0005k", "3.999999999999999999k", "0.000001k", "10G", "10g", "1.5g", "2M", "2m", "1T", "1t", "1_000",
    "1_000k", "1e3", "1e3k", ".5k", "5.k", "1.2.3k", "k", "", "abc", "32kb", "32 k", "-1k", "+1k", "\u0661\u0662k",
    "4096\n", "0x10", "1.5", "auto", "AUTO", "99999999999999999999k", "9" * 400 + "k",
]


@pytest.mark.vllm_reference
def test_human_readable_numbers_match_vllm():
    from tests.test_vllm_reference import harness

    require(harness.reference_venv_ready(), "the vLLM reference venv (.venv-vllm)")
    script = ("import json, sys\n"
              "from vllm.utils.argparse_utils import human_readable_int as a, human_readable_int_or_auto as b\n"
              "def run(f, x):\n"
              "    try:\n        return f(x)\n"
              "    except Exception:\n        return None\n"
              "print(json.dumps([[run(a, x), run(b, x)] for x in json.load(sys.stdin)]))\n")
    proc = subprocess.run([str(harness.VENV_PYTHON), "-c", script], input=json.dumps(VLLM_EXAMPLES), text=True,
                          capture_output=True, timeout=300, env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])

    def ours(parse, text):
        try:
            return parse(text)
        except ValueError:
            return None

    for text, (plain, or_auto) in zip(VLLM_EXAMPLES, theirs):
        assert ours(parse_int, text) == plain, text
        # vLLM's auto (-1) is the one value ServeLab refuses that vLLM takes.
        assert ours(parse_max_model_len, text) == (None if or_auto == -1 else or_auto), text


@pytest.mark.parametrize("argv, field, value", [
    pytest.param(["--max-model-len", "2k"], "max_model_len", 2000, id="2k"),
    pytest.param(["--max-model-len", "2K"], "max_model_len", 2048, id="2K"),
    pytest.param(["--max-num-batched-tokens", "16K", "--max-model-len", "4096"], "max_num_batched_tokens", 16384,
                 id="16K"),
    pytest.param(["--kv-cache-memory-bytes", "1G", "--max-model-len", "2048"], "num_gpu_blocks", 2**30 // (16 * 524288),
                 id="1G bytes"),
])
def test_memory_reads_human_readable_numbers(capsys, argv, field, value):
    assert main(["memory", "--model", "llama-2-7b", "--gpu", "h100", *argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[field] == value


@pytest.mark.parametrize("command", [
    pytest.param(["memory", "--model", "llama-2-7b"], id="memory"),
    pytest.param(["bench", "throughput", "--model", "llama-2-7b"], id="bench throughput"),
    pytest.param(["serve", "llama-2-7b"], id="serve"),
])
@pytest.mark.parametrize("flag, value, expect", [
    pytest.param("--max-num-batched-tokens", "1.5K", "for 1.5 x 1,000 write 1.5k", id="fraction K"),
    pytest.param("--kv-cache-memory-bytes", "10GB", "expected a whole number", id="GB"),
    pytest.param("--max-model-len", "auto", "does not simulate", id="auto"),
])
def test_bad_human_readable_number_is_one_error_line_naming_the_flag(capsys, command, flag, value, expect):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--gpu", "h100", flag, value])
    assert exc.value.code == 2
    first, hint = capsys.readouterr().err.splitlines()
    assert first.startswith("error: servelab ") and f"argument {flag}: " in first and expect in first
    assert hint.endswith("--help' for the flags)")


def test_vllm_command_lines_in_manifests_read_the_same_forms():
    # A Rollout's pod args and exercise 6.4's deployment are `vllm serve` lines too.
    from lab.exercises.ex64_tensor_parallel import parse_vllm_serve
    from sim.errors import ManifestError
    from sim.rollout.podargs import engine_config_from_args

    argv = ("vllm", "serve", "llama-2-7b", "--gpu=h100", "--max-model-len=2k", "--max-num-batched-tokens", "4K")
    config = engine_config_from_args(argv, "rollout.yaml")
    assert (config.max_model_len, config.max_num_batched_tokens) == (2000, 4096)
    assert parse_vllm_serve(list(argv))[1] == {"max_model_len": 2000, "max_num_batched_tokens": 4096}
    with pytest.raises(ManifestError, match=r"--max-num-batched-tokens: expected a whole number .* got '4KB'"):
        engine_config_from_args((*argv[:-1], "4KB"), "rollout.yaml")
