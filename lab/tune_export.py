"""What `servelab tune` and the Capacity planner page hand over for the winner: its `vllm serve`
line, a Deployment, and the course's Rollout (``manifests/rollout.yaml``) carrying it.

The Rollout keeps the course's canary as it is (steps, analysis, services, traffic routing) and
swaps in the winner's container: the official vLLM image, `vllm serve` with the winner's flags,
its GPUs, and the winner's replica count, so the canary takes it from there.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from lab.pages.serving import deployment_yaml, vllm_serve_args
from sim.config import EngineConfig

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def serve_args(config: EngineConfig) -> list[str]:
    """``vllm serve`` arguments, with the dtype flags where the configuration sets them."""
    args = list(vllm_serve_args(config))
    quant = getattr(config, "quantization", None)
    if quant and not any(a.startswith("--quantization") for a in args):
        args.append(f"--quantization={quant}")
    kv = getattr(config, "kv_cache_dtype", "auto")
    if kv and kv != "auto" and not any(a.startswith("--kv-cache-dtype") for a in args):
        args.append(f"--kv-cache-dtype={kv}")
    return args


def serve_command(config: EngineConfig) -> str:
    args = serve_args(config)
    return " \\\n".join(["vllm serve " + shlex.quote(args[0])] + ["  " + shlex.quote(a) for a in args[1:]])


# A real vLLM server answers /health only once the weights are loaded and the CUDA graphs
# captured: minutes for a large model. The startup probe gives it up to 20 minutes before the
# liveness probe starts counting (the course's Rollout probes an emulator that starts in seconds).
STARTUP_PROBE = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "failureThreshold": 120}
LIVENESS_PROBE = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3}


def _container(config: EngineConfig) -> dict:
    doc = yaml.safe_load(deployment_yaml(config))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["args"] = serve_args(config) + ["--port=8000"]
    container["startupProbe"] = dict(STARTUP_PROBE)
    container["livenessProbe"] = dict(LIVENESS_PROBE)
    return container


def _pin_note(config: EngineConfig) -> str:
    return (f"# Schedule it on {config.gpu} nodes: add a nodeSelector on your cluster's GPU label (for example\n"
            f"# nvidia.com/gpu.product, set by NVIDIA's GPU feature discovery); the label values differ by cluster.\n")


def deployment_manifest(config: EngineConfig, replicas: int, *, name: str = "vllm", namespace: str = "ai-prod") -> str:
    doc = yaml.safe_load(deployment_yaml(config, name=name, namespace=namespace))
    doc["spec"]["replicas"] = replicas
    doc["spec"]["template"]["spec"]["containers"][0] = _container(config)
    header = (f"# vLLM serving {config.model} on {replicas} x {config.tensor_parallel_size} {config.gpu} "
              f"(chosen by servelab tune)\n") + _pin_note(config)
    return header + yaml.safe_dump(doc, sort_keys=False)


def rollout_manifest(config: EngineConfig, replicas: int, *, manifests_dir: Path = MANIFESTS) -> str:
    """The course's Rollout with the winner's container and replica count."""
    with open(Path(manifests_dir) / "rollout.yaml", encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["spec"]["replicas"] = replicas
    pod = doc["spec"]["template"]["spec"]
    old = pod["containers"][0]
    new = _container(config)
    new["name"] = old.get("name", "vllm")
    if "readinessProbe" in old:  # the course's readiness gate; liveness waits for the startup probe
        new["readinessProbe"] = old["readinessProbe"]
    pod["containers"][0] = new
    pod.setdefault("volumes", [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}])
    header = (f"# The course's canary Rollout (manifests/rollout.yaml), shipping {config.model} on {replicas} x "
              f"{config.tensor_parallel_size} {config.gpu} as chosen by servelab tune\n") + _pin_note(config)
    return header + yaml.safe_dump(doc, sort_keys=False)
