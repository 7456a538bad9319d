"""What the lab exports (the `vllm serve` line, the Deployment) and what exercise 6.4 reads back."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.exercises.ex64_tensor_parallel import parse_vllm_serve
from lab.pages.serving import deployment_yaml, vllm_serve_args, vllm_serve_command
from sim.config import EngineConfig

K8S_VERSION = "1.31.0"
ROOT = Path(__file__).resolve().parents[1]

configs = st.builds(
    EngineConfig,
    model=st.sampled_from(["meta-llama/Llama-3.1-8B", "meta-llama/Llama-2-13b-hf"]),
    gpu=st.sampled_from(["h100-80gb", "a100-40gb"]),
    tensor_parallel_size=st.sampled_from([1, 2, 4]),
    max_model_len=st.one_of(st.none(), st.integers(256, 8192)),
    gpu_memory_utilization=st.floats(0.5, 0.98).map(lambda x: round(x, 2)),
    enable_prefix_caching=st.booleans(),
    max_num_batched_tokens=st.one_of(st.none(), st.integers(512, 16384)),
    max_num_seqs=st.one_of(st.none(), st.integers(1, 1024)),
)


@settings(max_examples=60, deadline=None)
@given(configs)
def test_exported_flags_read_back_the_same(config):
    # The what-if page's export and exercise 6.4's reader agree on every flag.
    model, fields, ignored = parse_vllm_serve(["vllm", "serve", *vllm_serve_args(config)])
    assert model == config.model and ignored == []
    for name, value in fields.items():
        assert getattr(config, name) == value, name
    assert fields["tensor_parallel_size"] == config.tensor_parallel_size


@settings(max_examples=20, deadline=None)
@given(configs)
def test_exported_deployment_is_valid_kubernetes(config):
    doc = yaml.safe_load(deployment_yaml(config))
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    container = doc["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == config.tensor_parallel_size
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_command_line_is_one_flag_per_line():
    text = vllm_serve_command(EngineConfig(model="meta-llama/Llama-3.1-8B", gpu="h100-80gb", tensor_parallel_size=2))
    assert text.splitlines()[0] == "vllm serve meta-llama/Llama-3.1-8B \\"
    assert "  --tensor-parallel-size=2 \\" in text.splitlines()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("exercises/6.4/solution/deployment.yaml", id="6.4-solution"),
        pytest.param("exercises/6.4/starter/deployment.yaml", id="6.4-starter"),
    ],
)
def test_exercise_deployments_are_valid_kubernetes(path):
    for doc in yaml.safe_load_all((ROOT / path).read_text()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
