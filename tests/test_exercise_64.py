"""Exercise 6.4: the reference TP2 Deployment and report pass; the starter and typical mistakes fail."""

import pytest
import yaml

pytest.importorskip("sim.engine", reason="the engine simulator is not in this checkout")

from lab.exercises import get_exercise  # noqa: E402
from lab.exercises.ex64_tensor_parallel import parse_vllm_serve  # noqa: E402

EX = get_exercise("6.4")
DEPLOYMENT = (EX.solution / "deployment.yaml").read_text()
REPORT = yaml.safe_load((EX.solution / "report.yaml").read_text())


def write(tmp_path, deployment: str = DEPLOYMENT, report: dict | None = None):
    (tmp_path / "deployment.yaml").write_text(deployment)
    (tmp_path / "report.yaml").write_text(yaml.safe_dump(report or REPORT))
    return tmp_path


def test_reference_solution_passes():
    result = EX.check(EX.solution)
    assert result.passed, result.report()
    rows = {row["tensor_parallel_size"]: row for row in result.details["comparison"]}
    assert rows[2]["num_gpu_blocks"] > rows[1]["num_gpu_blocks"]


def linear_claim():
    tp1 = REPORT["tp1"]["requests_per_second"]
    return {**REPORT, "tp2": {"requests_per_second": 2 * tp1}, "throughput_gain": 2.0}


MISTAKES = [
    pytest.param(None, None, "--tensor-parallel-size is 1 (not set", "containers[0].args", id="starter-no-tp"),
    pytest.param(
        DEPLOYMENT.replace("nvidia.com/gpu: 2", "nvidia.com/gpu: 1"),
        None,
        "asks for 1 GPU(s) (resources.limits nvidia.com/gpu) for 2 tensor-parallel rank(s)",
        "resources.limits",
        id="one-gpu-for-two-ranks",
    ),
    pytest.param(
        DEPLOYMENT.split("          volumeMounts:")[0]
        + "      volumes: []\n",
        None,
        "no memory-backed volume at /dev/shm",
        "volumeMounts",
        id="no-shared-memory",
    ),
    pytest.param(DEPLOYMENT, linear_claim(), "you report 2.00x", "throughput_gain", id="assumes-linear-scaling"),
    pytest.param(
        DEPLOYMENT.replace("--tensor-parallel-size=2", "--tensor-parallel-size=3").replace("nvidia.com/gpu: 2", "nvidia.com/gpu: 3"),
        None,
        "--tensor-parallel-size is 3",
        "containers[0].args",
        id="tp-3",
    ),
    pytest.param(
        DEPLOYMENT,
        {**REPORT, "throughput_gain": 1.5},
        "throughput_gain 1.5 is not tp2 / tp1",
        "throughput_gain",
        id="gain-not-the-ratio",
    ),
]


@pytest.mark.parametrize("deployment, report, expected, where", MISTAKES)
def test_mistakes_fail_with_feedback(tmp_path, deployment, report, expected, where):
    folder = EX.starter if deployment is None else write(tmp_path, deployment, report)
    result = EX.check(folder)
    assert not result.passed
    hits = [f for f in result.failures if expected in f.what]
    assert hits, result.report()
    assert where in hits[0].where and hits[0].fix


def test_tp_that_does_not_divide_the_heads_is_explained(tmp_path):
    deployment = DEPLOYMENT.replace("--tensor-parallel-size=2", "--tensor-parallel-size=3").replace(
        "nvidia.com/gpu: 2", "nvidia.com/gpu: 3"
    )
    result = EX.check(write(tmp_path, deployment))
    assert any("3" in f.what and "head" in f.what.lower() for f in result.failures), result.report()


@pytest.mark.parametrize(
    "argv, model, fields",
    [
        pytest.param(["vllm", "serve", "m", "--tensor-parallel-size=2"], "m", {"tensor_parallel_size": 2}, id="equals"),
        pytest.param(["vllm", "serve", "m", "-tp", "2", "--max-model-len", "4096"], "m", {"tensor_parallel_size": 2, "max_model_len": 4096}, id="spaced"),
        pytest.param(
            ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m", "--no-enable-prefix-caching"],
            "m",
            {"enable_prefix_caching": False},
            id="api-server-module",
        ),
        pytest.param(["vllm", "serve", "m", "--port", "8000", "--max-num-seqs=8"], "m", {"max_num_seqs": 8}, id="ignores-unknown-flag-with-value"),
    ],
)
def test_parse_vllm_serve(argv, model, fields):
    got_model, got_fields, _ = parse_vllm_serve(argv)
    assert got_model == model and got_fields == fields
