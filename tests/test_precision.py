"""FP8 weights, FP8 KV cache and --dtype: sim/precision.py's rules, the memory they give, and bad input.

The memory checks come in three kinds:
* vLLM's own logs: "Model loading took / Loading model weights took X GB" (vLLM divides by 2**30)
  for known checkpoints, bf16 and FP8, reproduced to the printed digits;
* first principles: the FP8 plan of nvidia/Llama-3.1-8B-Instruct-FP8 on H100 and H200, every byte
  counted by hand here;
* vLLM's own code (in .venv-vllm, vLLM 0.33): its KV page size for each cache dtype and how its
  quantization classes read the shipped quantization configs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.cli.main import main
from sim.catalog import get_gpu, get_model, model_from_config
from sim.config import EngineConfig, cdiv
from sim.errors import CatalogError, ConfigError
from sim.memory import plan_for_config, plan_memory
from sim.precision import Precision, resolve_precision
from sim.quant_config import CheckpointQuant, parse_quantization_config
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


def _flags(**kw) -> EngineConfig:
    return EngineConfig(model="unused", gpu="unused", **kw)


def _llama3_8b(quantization_config=None, max_position_embeddings=8192) -> dict:
    """Meta-Llama-3-8B's config.json (Llama-3.1-8B's shapes, 8,192 positions, no rope scaling)."""
    cfg = json.loads((ROOT / "sim/data/models/meta-llama--Llama-3.1-8B.json").read_text())
    cfg.update(_name_or_path="meta-llama/Meta-Llama-3-8B-Instruct", max_position_embeddings=max_position_embeddings)
    cfg.pop("rope_scaling")
    if quantization_config is not None:
        cfg["quantization_config"] = quantization_config
    return cfg


# -- "Model loading took" against vLLM's own logs ------------------------------------------------
@pytest.mark.parametrize("model, flags, logged_gib", [
    # vLLM docs, docs/source/quantization/fp8.rst (v0.5): LLM(model="Meta-Llama-3-8B-Instruct-FP8"),
    # AutoFP8 static per-tensor scales, "Loading model weights took 8.4596 GB".
    pytest.param(model_from_config(_llama3_8b({"quant_method": "fp8", "activation_scheme": "static"}), source="t"),
                 {}, 8.4596, id="llama-3-8b-fp8-static-vllm-docs"),
    # Public vLLM logs of meta-llama/Meta-Llama-3.1-8B-Instruct in bf16: "Loading model weights took 14.9888 GB".
    pytest.param(get_model("llama-3.1-8b"), {}, 14.9888, id="llama-3.1-8b-bf16"),
    # Public vLLM logs of Llama-2-7b: "Loading model weights took 12.5523 GB".
    pytest.param(get_model("llama-2-7b"), {}, 12.5523, id="llama-2-7b-fp16"),
])
def test_model_loading_matches_vllm_logs(model, flags, logged_gib):
    plan = plan_memory(model, get_gpu("h100"), max_model_len=4096,
                       precision=resolve_precision(model, get_gpu("h100"), _flags(**flags)))
    assert round(plan.weights_bytes_per_gpu / GiB, 4) == pytest.approx(logged_gib, abs=0.0001)
    assert plan.loading_log_lines()[-1] == f"Model loading took {round(logged_gib, 2)} GiB memory"


# -- FP8 from first principles: nvidia/Llama-3.1-8B-Instruct-FP8 ----------------------------------
def _fp8_8b_weights_by_hand() -> int:
    L, h, inter, vocab, hd, heads, kv = 32, 4096, 14336, 128256, 128, 32, 8
    linear = (heads + 2 * kv) * hd * h + heads * hd * h + 2 * inter * h + inter * h  # qkv, o, gate_up, down
    fp8 = L * linear * 1  # 1 byte per weight
    scales = L * 4 * (4 + 4)  # 4 linear layers, each one fp32 weight scale and one static input scale
    bf16 = (2 * vocab * h + L * 2 * h + h) * 2  # embed_tokens, lm_head (excluded), norms
    rope = 131072 * hd * 2  # the rotary cos/sin cache, bf16
    return fp8 + scales + bf16 + rope


@pytest.mark.parametrize("gpu_name", ["h100", "h200"])
@pytest.mark.parametrize("kv_flag, kv_bytes", [("auto", 2), ("fp8", 1)], ids=["kv-bf16", "kv-fp8"])
def test_fp8_8b_memory_lines_from_first_principles(gpu_name, kv_flag, kv_bytes):
    model, gpu = get_model("nvidia/Llama-3.1-8B-Instruct-FP8"), get_gpu(gpu_name)
    config = EngineConfig(model=model.name, gpu=gpu_name, max_model_len=8192, kv_cache_dtype=kv_flag)
    plan = plan_for_config(config)
    weights = _fp8_8b_weights_by_hand()
    assert plan.weights_bytes_per_gpu == weights
    kv_per_token = 2 * 32 * 8 * 128 * kv_bytes  # K and V, 32 layers, 8 KV heads, head_dim 128
    assert plan.kv_bytes_per_token == kv_per_token
    # vLLM's budget (gpu_worker.py): what is left of utilization x memory after weights, non-torch
    # memory, the profile's activation peak and the CUDA-graph reserve; FP8 changes only the first
    # term and the bytes per token.
    requested = -(-gpu.memory_bytes * 92 // 100)
    available = requested - weights - plan.non_torch_bytes - plan.activation_peak_bytes - plan.cudagraph_bytes
    blocks = available // (16 * kv_per_token)
    assert (plan.available_kv_bytes, plan.num_gpu_blocks) == (available, blocks)
    assert plan.loading_log_lines()[-1] == f"Model loading took {round(weights / GiB, 2)} GiB memory" \
        == "Model loading took 8.49 GiB memory"
    assert plan.startup_log_lines() == [
        f"Available KV cache memory: {round(available / GiB, 2)} GiB",
        f"GPU KV cache size: {blocks * 16:,} tokens, "
        f"Maximum concurrency for 8,192 tokens per request: {blocks / cdiv(8192, 16):.2f}x",
    ]
    if kv_flag == "fp8":
        assert plan.loading_log_lines()[0].startswith("Using fp8 data type to store kv cache.")
    # Against the bf16 checkpoint: 6.5 GiB of weights saved, all of it given to the KV cache.
    bf16 = plan_for_config(dataclasses.replace(config, model="meta-llama/Llama-3.1-8B", kv_cache_dtype="auto"))
    saved = bf16.weights_bytes_per_gpu - weights
    assert saved == 32 * 218_103_808 - 32 * 4 * 8  # the linear weights' second byte, less the fp32 scales
    assert available - bf16.available_kv_bytes == saved


# -- vLLM's own code: KV page sizes and how it reads the quantization configs --------------------
def _vllm_python() -> Path:
    from tests.test_vllm_reference import harness

    path = Path(os.environ.get("SERVELAB_VLLM_PYTHON", harness.VENV_PYTHON))
    require(path.exists(), f"the vLLM reference venv ({path}; bash scripts/setup-vllm-reference)")
    return path


QUANT_CONFIGS = {
    "nvidia-8b-fp8": get_model("llama-3.1-8b-fp8"),
    "nvidia-70b-fp8": get_model("llama-3.1-70b-fp8"),
}
EXTRA_QUANT_CONFIGS = {  # written here, in the forms vLLM reads
    "qwen3-style-block": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                          "weight_block_size": [128, 128]},
    "fp8-static": {"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ["lm_head"]},
    "modelopt-flat-kv-scheme": {"quant_method": "modelopt", "quant_algo": "FP8_PB_WO", "ignore": ["lm_head"],
                                "kv_cache_scheme": {"dynamic": False, "num_bits": 8, "type": "float"}},
}
KV_CASES = [  # (model, tp, flags)
    ("llama-3.1-8b", 1, {"kv_cache_dtype": "fp8"}),
    ("llama-3.1-8b", 1, {"kv_cache_dtype": "fp8_e5m2"}),
    ("llama-3.1-8b", 2, {}),
    ("llama-2-7b", 1, {}),
    ("llama-3.1-70b-fp8", 4, {}),
    ("llama-3.1-70b-fp8", 4, {"kv_cache_dtype": "bfloat16"}),
]


@pytest.fixture(scope="module")
def vllm_answers() -> dict:
    kv = []
    for name, tp, flags in KV_CASES:
        model = get_model(name)
        p = resolve_precision(model, get_gpu("h100"), _flags(tensor_parallel_size=tp, **flags))
        cache = {"fp8_e4m3": "fp8", "fp8_e5m2": "fp8_e5m2"}.get(p.kv_cache_dtype, "auto")
        kv.append({"num_kv_heads": model.kv_heads_per_rank(tp), "head_size": model.head_dim, "block_size": 16,
                   "cache_dtype": cache, "model_dtype": p.activation_dtype})
    configs = [{"name": k, "quantization_config": m_raw} for k, m_raw in _raw_quant_configs().items()]
    result = subprocess.run([str(_vllm_python()), str(ROOT / "tools/vllm_reference/precision_probe.py")],
                            input=json.dumps({"kv": kv, "quant_configs": configs}), capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _raw_quant_configs() -> dict:
    raw = {k: json.loads((ROOT / "sim/data/models" / f"{m.name.replace('/', '--')}.json").read_text())
           ["quantization_config"] for k, m in QUANT_CONFIGS.items()}
    return {**raw, **EXTRA_QUANT_CONFIGS}


@pytest.mark.parametrize("i", range(len(KV_CASES)), ids=[f"{m}-tp{tp}-{f.get('kv_cache_dtype', 'auto')}"
                                                         for m, tp, f in KV_CASES])
def test_kv_page_size_is_vllms(vllm_answers, i):
    name, tp, flags = KV_CASES[i]
    model = get_model(name)
    precision = resolve_precision(model, get_gpu("h100"), _flags(tensor_parallel_size=tp, **flags))
    answer = vllm_answers["kv"][i]
    assert precision.kv_bytes_per_element == answer["element_size"]
    # vLLM: one page per layer; ServeLab: one token's K and V over all layers.
    assert 16 * model.kv_bytes_per_token(tp, precision) == model.num_hidden_layers * answer["page_size_bytes"]


@pytest.mark.parametrize("name", list(QUANT_CONFIGS) + list(EXTRA_QUANT_CONFIGS))
def test_quantization_configs_read_as_vllm_reads_them(vllm_answers, name):
    ours = parse_quantization_config(_raw_quant_configs()[name], source=name)
    vllm = next(a for a in vllm_answers["quant_configs"] if a["name"] == name)
    assert ours.method == vllm["method"]
    assert (ours.kv_cache_dtype or "auto") == (vllm["kv_cache_dtype_auto"] or "auto")
    if ours.method == "modelopt":
        assert list(ours.ignored_layers) == vllm["exclude_modules"]
        assert {"FP8": "per-tensor", "FP8_PER_CHANNEL_PER_TOKEN": "per-channel",
                "FP8_PB_WO": "block"}[vllm["quant_algo"]] == ours.weight_scheme
    else:
        assert ours.activation_scheme == vllm["activation_scheme"]
        assert (list(ours.weight_block_size) if ours.weight_block_size else None) == vllm["weight_block_size"]
        assert list(ours.ignored_layers) == vllm["ignored_layers"]


# -- what runs where --------------------------------------------------------------------------------
def _with_capability(gpu_name: str, cc: tuple[int, int]):
    return dataclasses.replace(get_gpu(gpu_name), name=f"{gpu_name}-cc{cc[0]}{cc[1]}", compute_capability=cc)


def _model_with(quantization_config: dict | None = None, torch_dtype: str = "bfloat16", base="llama-3.1-8b"):
    path = ROOT / "sim/data/models" / f"{get_model(base).name.replace('/', '--')}.json"
    cfg = json.loads(path.read_text())
    cfg["torch_dtype"] = torch_dtype
    cfg.pop("quantization_config", None)
    if quantization_config is not None:
        cfg["quantization_config"] = quantization_config
    return model_from_config(cfg, source="test config.json")


@pytest.mark.parametrize("model, gpu, flags, expected", [
    pytest.param("llama-3.1-8b-fp8", "h100", {}, ("bfloat16", "fp8", "bfloat16", "FLASH_ATTN"), id="modelopt-h100"),
    pytest.param("llama-3.1-8b-fp8", "h200", {"kv_cache_dtype": "fp8"}, ("bfloat16", "fp8", "fp8_e4m3", "FLASH_ATTN"),
                 id="modelopt-h200-fp8-kv-fa3"),
    pytest.param("llama-3.1-8b-fp8", "a100-80gb", {}, ("bfloat16", "fp8_marlin", "bfloat16", "FLASH_ATTN"),
                 id="a100-marlin-weight-only"),
    pytest.param("llama-3.1-8b-fp8", "l40s", {}, ("bfloat16", "fp8", "bfloat16", "FLASH_ATTN"), id="ada-w8a8"),
    pytest.param("llama-3.1-8b-fp8", "b200", {}, ("bfloat16", "fp8", "bfloat16", "FLASHINFER"), id="b200-flashinfer"),
    pytest.param("llama-3.1-8b", "h100", {"quantization": "fp8_per_block"},
                 ("bfloat16", "fp8_block", "bfloat16", "FLASH_ATTN"), id="block-hopper"),
    pytest.param("llama-3.1-8b", "l40s", {"quantization": "fp8_per_block"},
                 ("bfloat16", "fp8_marlin", "bfloat16", "FLASH_ATTN"), id="block-ada-marlin"),
    pytest.param("llama-3.1-8b", "t4", {"quantization": "fp8"}, ("float16", "fp8_marlin", "float16", "TRITON_ATTN"),
                 id="t4-online-fp8-marlin"),
    pytest.param("llama-3.1-8b", "a100-80gb", {"kv_cache_dtype": "fp8"},
                 ("bfloat16", "bfloat16", "fp8_e4m3", "FLASHINFER"), id="a100-fp8-kv-flashinfer"),
    pytest.param("llama-3.1-8b", "h100", {"kv_cache_dtype": "fp8_e5m2"},
                 ("bfloat16", "bfloat16", "fp8_e5m2", "FLASHINFER"), id="e5m2-not-flashattention"),
    pytest.param("llama-3.1-70b-fp8", "h200", {}, ("bfloat16", "fp8", "fp8_e4m3", "FLASH_ATTN"),
                 id="checkpoint-fp8-kv"),
    pytest.param("llama-3.1-70b-fp8", "h200", {"kv_cache_dtype": "bfloat16"},
                 ("bfloat16", "fp8", "bfloat16", "FLASH_ATTN"), id="explicit-bf16-kv-wins"),
    pytest.param("llama-3.1-8b", "t4", {}, ("float16", "float16", "float16", "TRITON_ATTN"), id="t4-bf16-falls-back"),
    pytest.param("llama-2-7b", "h100", {"dtype": "bfloat16"}, ("bfloat16", "bfloat16", "bfloat16", "FLASH_ATTN"),
                 id="cast-fp16-to-bf16"),
    pytest.param("llama-2-7b", "h100", {"dtype": "float32"}, ("float32", "float32", "float32", "TRITON_ATTN"),
                 id="float32-triton"),
    # MLA: FLASH_ATTN_MLA stores a 16-bit latent only (supported_kv_cache_dtypes), so FP8 KV on
    # Hopper goes to FLASHMLA, vLLM's next candidate.
    pytest.param("deepseek-v3", "h200", {"tensor_parallel_size": 8},
                 ("bfloat16", "fp8_block", "bfloat16", "FLASH_ATTN_MLA"), id="mla-hopper-bf16-kv"),
    pytest.param("deepseek-v3", "h200", {"tensor_parallel_size": 8, "kv_cache_dtype": "fp8"},
                 ("bfloat16", "fp8_block", "fp8_e4m3", "FLASHMLA"), id="mla-hopper-fp8-kv-flashmla"),
    pytest.param("deepseek-v3", "b200", {"tensor_parallel_size": 8, "kv_cache_dtype": "fp8"},
                 ("bfloat16", "fp8_block", "fp8_e4m3", "FLASHINFER_MLA"), id="mla-blackwell-fp8-kv"),
])
def test_what_runs(model, gpu, flags, expected):
    p = resolve_precision(get_model(model), get_gpu(gpu), _flags(**flags))
    assert (p.activation_dtype, p.gemm_dtype, p.kv_cache_dtype, p.attention_backend) == expected
    assert p.weight_bytes_per_param == (1 if p.is_quantized else p.activation_bytes)
    assert p.kv_bytes_per_element == (1 if p.kv_cache_dtype.startswith("fp8") else p.activation_bytes)
    assert p.kv_table_dtype == ("fp8" if p.kv_cache_dtype.startswith("fp8") else "bfloat16")


@pytest.mark.parametrize("gpu, backend, candidates", [
    ("a100-80gb", "TRITON_ATTN", ["TRITON_ATTN"]),  # FA2 and FlashInfer on 8.0 have no sinks
    ("l40s", "TRITON_ATTN", ["TRITON_ATTN"]),
    ("h100", "FLASH_ATTN", ["FLASH_ATTN", "TRITON_ATTN"]),  # FA3
    ("b200", "FLASHINFER", ["FLASHINFER", "FLASH_ATTN", "TRITON_ATTN"]),  # TRT-LLM kernels, FA4
])
def test_attention_sinks_need_a_backend_that_takes_them(gpu, backend, candidates):
    """gpt-oss's attention sinks: vLLM 0.33 keeps only backends whose supports_sink holds."""
    p = resolve_precision(get_model("openai/gpt-oss-120b"), get_gpu(gpu))
    assert p.attention_backend == backend
    assert f"Using {backend} attention backend out of potential backends: {candidates}." in p.log_lines
    plain = resolve_precision(get_model("llama-3.1-8b"), get_gpu(gpu))  # no sinks: FlashInfer first on 10.x only
    assert plain.attention_backend == ("FLASHINFER" if gpu == "b200" else "FLASH_ATTN")


@pytest.mark.parametrize("cc, expected", [((8, 0), "bfloat16"), ((7, 5), "float16")], ids=["ampere", "turing"])
def test_float32_checkpoint_goes_to_the_gpus_first_dtype(cc, expected):
    p = resolve_precision(_model_with(torch_dtype="float32"), _with_capability("a100-80gb", cc))
    assert p.activation_dtype == expected
    assert f"Downcasting torch.float32 to torch.{expected}." in p.log_lines


def test_vllms_warnings_are_in_the_log_lines():
    assert any("does not have native support for FP8" in line
               for line in resolve_precision(get_model("llama-3.1-8b-fp8"), get_gpu("a100-80gb")).log_lines)
    assert resolve_precision(get_model("llama-3.1-8b"), get_gpu("h100"), _flags(quantization="fp8")).log_lines[0] \
        == "--quantization fp8 is deprecated for online quantization; use --quantization fp8_per_tensor instead."
    lines = resolve_precision(get_model("llama-3.1-8b"), get_gpu("t4")).log_lines
    assert lines[0] == ("Your device 't4' (with compute capability 7.5) doesn't support torch.bfloat16. "
                        "Falling back to torch.float16 for compatibility.")


def test_block_scales_are_counted():
    model, gpu = get_model("llama-3.1-8b"), get_gpu("h100")
    block = resolve_precision(model, gpu, _flags(quantization="fp8_per_block"))
    tensor = resolve_precision(model, gpu, _flags(quantization="fp8_per_tensor"))
    # One fp32 per 128x128 block: qkv 48x32, o 32x32, gate_up 224x32, down 32x112 blocks per layer.
    blocks_per_layer = 48 * 32 + 32 * 32 + 224 * 32 + 32 * 112
    assert model.weight_bytes_per_gpu(1, block) - model.weight_bytes_per_gpu(1, tensor) \
        == 32 * (4 * blocks_per_layer - 4 * 4)


def test_modelopt_quantizes_lm_head_unless_excluded():
    qc = {"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "FP8", "exclude_modules": []}}
    model, gpu = _model_with(qc), get_gpu("h100")
    p = resolve_precision(model, gpu)
    excluded = get_model("llama-3.1-8b-fp8")
    lm_head = 128256 * 4096
    assert p.lm_head_quantized
    assert model.weight_bytes_per_gpu(1, p) == \
        excluded.weight_bytes_per_gpu(1, resolve_precision(excluded, gpu)) - lm_head + 8  # 1 byte + one fp32 scale


# -- every refusal, as vLLM words it ------------------------------------------------------------------
REFUSALS = [
    pytest.param("llama-3.1-8b", ("t4", None), {"dtype": "bfloat16"},
                 "--dtype bfloat16: Bfloat16 is only supported on GPUs with compute capability of at least 8.0",
                 id="bf16-below-8.0"),
    pytest.param("llama-3.1-8b-fp8", ("t4", None), {},
                 "The quantization method modelopt is not supported for the current GPU (t4). Minimum capability: 80",
                 id="modelopt-below-8.0"),
    pytest.param("llama-3.1-8b", ("t4", (7, 0)), {"quantization": "fp8"},
                 "The quantization method fp8 is not supported for the current GPU (t4-cc70). Minimum capability: 75",
                 id="fp8-below-7.5"),
    pytest.param("llama-3.1-8b", ("t4", None), {"kv_cache_dtype": "fp8"},
                 "--kv-cache-dtype fp8: FP8 KV cache is not supported by the Triton attention backend on t4",
                 id="fp8-kv-below-8.0"),
    # On 8.0 FlashInfer reads an FP8 KV cache, but not with gpt-oss's attention sinks; the line says
    # so (not "FlashInfer needs 8.0", which the A100 has) and offers the model's own dtype.
    pytest.param("gpt-oss-20b", ("a100-80gb", None), {"kv_cache_dtype": "fp8"},
                 "native FP8 (fp8e4nv) requires SM89+, and the model's attention sinks need FlashAttention 3 (9.x) "
                 "or FlashInfer's TRT-LLM kernels (10.x), so only Triton runs them here. "
                 "Re-run with --kv-cache-dtype bfloat16", id="fp8-kv-sinks-on-8.0"),
    pytest.param("deepseek-v3", ("h200", None), {"kv_cache_dtype": "fp8_e5m2", "tensor_parallel_size": 8},
                 "--kv-cache-dtype fp8_e5m2: no MLA attention backend of vLLM stores an fp8_e5m2 KV cache (on h200: "
                 "FLASH_ATTN_MLA, FLASHMLA, TRITON_MLA); use --kv-cache-dtype fp8 (= fp8_e4m3) or auto",
                 id="mla-fp8-e5m2"),
    pytest.param("gpt-oss-20b", ("a100-80gb", None), {"kv_cache_dtype": "fp8", "dtype": "float16"},
                 "Re-run with --kv-cache-dtype float16", id="fp8-kv-suggests-the-model-dtype"),
    pytest.param("llama-3.1-8b", ("h100", None), {"quantization": "fp8", "dtype": "float32"},
                 "--dtype: torch.float32 is not supported for quantization method fp8", id="fp8-float32"),
    pytest.param("llama-3.1-8b", ("h100", None), {"quantization": "modelopt"},
                 "--quantization modelopt: meta-llama/Llama-3.1-8B has no ModelOpt quantization_config",
                 id="modelopt-without-checkpoint"),
    pytest.param("block-checkpoint", ("h100", None), {"quantization": "fp8_per_tensor"},
                 "Quantization method specified in the model config (fp8) does not match", id="method-mismatch"),
    pytest.param("llama-2-7b", ("h100", None), {"quantization": "fp8_per_block", "tensor_parallel_size": 4},
                 "Weight output_partition_size = 2752 is not divisible by weight quantization block_n = 128",
                 id="block-shape-under-tp"),
    pytest.param("llama-2-7b", ("h100", None), {"kv_cache_dtype": "bfloat16"},
                 "--kv-cache-dtype bfloat16: an explicit float16 or bfloat16 KV cache must match the model data type",
                 id="kv-dtype-mismatch"),
]


@pytest.mark.parametrize("model, gpu, flags, message", REFUSALS)
def test_refusals(model, gpu, flags, message):
    gpu_name, cc = gpu
    spec = _with_capability(gpu_name, cc) if cc else get_gpu(gpu_name)
    m = _model_with({"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}) \
        if model == "block-checkpoint" else get_model(model)
    with pytest.raises(ConfigError) as err:
        resolve_precision(m, spec, _flags(**flags))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("flags, message", [
    ({"quantization": "bitsandbytes"},
     "--quantization: 'bitsandbytes' is not modelled (vLLM has it; ServeLab does not model it)"),
    ({"quantization": "int3"}, "--quantization: 'int3' is not modelled; ServeLab models fp8,"),
    ({"dtype": "fp8"}, "--dtype: expected one of auto, half, float16, bfloat16, float, float32, got 'fp8'"),
    ({"kv_cache_dtype": "int8"}, "--kv-cache-dtype: expected one of auto, fp8, fp8_e4m3, fp8_e5m2"),
], ids=["vllm-method-not-modelled", "unknown-method", "bad-dtype", "bad-kv-dtype"])
def test_engine_config_checks_the_spelling(flags, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        EngineConfig(model="llama-3.1-8b", gpu="h100", **flags)


# -- config.json: what is not modelled, one line each; and a fuzz ----------------------------------
@pytest.mark.parametrize("qc, message", [
    ({"quant_method": "awq", "bits": 4}, "quantization_config: field 'q_group_size' is missing (vLLM reads "
                                         "q_group_size or group_size)"),
    ({"quant_method": "compressed-tensors"}, "quantization_config.quant_method: 'compressed-tensors' is not modelled"),
    ({"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4"}},
     "quantization_config.quantization.quant_algo: 'NVFP4' is not modelled"),
    ({"quant_method": "modelopt", "quant_algo": "W4A8_AWQ"}, "quantization_config.quant_algo: 'W4A8_AWQ' is not modelled"),
    ({"quant_method": "fp8"}, "field 'activation_scheme' is missing"),
    ({"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]},
     "block-wise weights (weight_block_size) need the dynamic activation scheme"),
    ({"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128]},
     "weight_block_size: expected two positive integers"),
    ({"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "NVFP4"}},
     "kv_cache_quant_algo: 'NVFP4' is not modelled"),
    ({"bits": 4}, "quantization_config: field 'quant_method' is missing"),
    ([1, 2], "quantization_config: expected a JSON object"),
], ids=["awq", "compressed-tensors", "nvfp4", "modelopt-unknown-algo", "fp8-no-scheme", "block-static",
        "block-1d", "nvfp4-kv", "no-method", "not-an-object"])
def test_unmodelled_quantization_is_one_line(qc, message):
    with pytest.raises(CatalogError) as err:
        parse_quantization_config(qc, source="config.json")
    assert str(err.value).startswith("config.json: ") and message in str(err.value) and "\n" not in str(err.value)


def test_unknown_modelopt_kv_algo_falls_back_to_auto_with_vllms_warning():
    q = parse_quantization_config({"producer": {"name": "modelopt"},
                                   "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "INT8"}}, source="c")
    assert q.kv_cache_dtype is None and "Falling back to 'auto'." in q.warnings[0]


_KEYS = ["quant_method", "activation_scheme", "weight_block_size", "ignored_layers", "modules_to_not_convert",
         "producer", "quantization", "quant_algo", "kv_cache_quant_algo", "kv_cache_scheme", "ignore",
         "exclude_modules", "fmt", "bits", "w_bit", "group_size", "q_group_size", "zero_point", "sym", "desc_act",
         "lm_head"]
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2, 300), st.floats(allow_nan=True),
                  st.sampled_from(["fp8", "FP8", "modelopt", "static", "dynamic", "FP8_PB_WO", "fp8_e4m3", "awq", "gptq",
                                   "FP8_PER_CHANNEL_PER_TOKEN", "NVFP4", "lm_head", "float", ""]),
                  st.text(max_size=6))
_value = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.sampled_from(_KEYS + ["name", "num_bits",
                                                                                              "type", "dynamic"]),
                                                                     inner, max_size=4)), max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _value, max_size=6))
def test_fuzzed_quantization_config_parses_or_says_why(qc):
    try:
        q = parse_quantization_config(qc, source="config.json")
    except CatalogError as exc:
        assert str(exc).startswith("config.json: quantization_config") and "\n" not in str(exc)
        return
    assert isinstance(q, CheckpointQuant) and q.method in ("fp8", "modelopt", "mxfp4", "awq", "gptq")
    assert q.weight_scheme in ("per-tensor", "per-channel", "block", "mxfp4", "group")
    assert (q.weight_block_size is not None) == (q.weight_scheme == "block")
    assert q.kv_cache_dtype in (None, "fp8_e4m3")
    # Whatever parses also plans, or is refused in one line by vLLM's rules.
    model = _model_with(qc)
    try:
        p = resolve_precision(model, get_gpu("h100"))
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(p, Precision) and model.weight_bytes_per_gpu(1, p) < get_model("llama-3.1-8b").weight_bytes


def test_hf_quant_config_json_beside_config_json_is_read(tmp_path):
    cfg = json.loads((ROOT / "sim/data/models/meta-llama--Llama-3.1-70B.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(
        {"producer": {"name": "modelopt", "version": "0.23.0"},
         "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]}}))
    model = get_model(str(tmp_path))
    assert model.quantization == get_model("llama-3.1-70b-fp8").quantization
    (tmp_path / "hf_quant_config.json").write_text("{not json")
    from sim.catalog import _load_model

    _load_model.cache_clear()
    with pytest.raises(CatalogError, match="hf_quant_config.json: not valid JSON"):
        get_model(str(tmp_path))
    _load_model.cache_clear()


# -- the command line ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["memory", "--model", "llama-3.1-8b", "--gpu", "h100", "-q", "awq"],
     "error: --quantization awq: meta-llama/Llama-3.1-8B has no awq quantization_config in its config.json"),
    (["memory", "--model", "llama-3.1-8b", "--gpu", "t4", "--kv-cache-dtype", "fp8"],
     "error: --kv-cache-dtype fp8: FP8 KV cache is not supported"),
    (["memory", "--model", "llama-3.1-8b-fp8", "--gpu", "t4"],
     "error: config.json quantization_config: The quantization method modelopt"),
    (["memory", "--model", "llama-3.1-8b", "--gpu", "h100", "--dtype", "fp16"], "error: --dtype: expected one of"),
    (["bench", "throughput", "--model", "llama-3.1-8b", "--gpu", "t4", "--dtype", "bfloat16", "--num-prompts", "2"],
     "error: --dtype bfloat16: Bfloat16 is only supported"),
    (["bench", "serve", "--model", "llama-3.1-8b", "--gpu", "h100", "--quantization", "bitsandbytes",
      "--num-prompts", "2"], "error: --quantization: 'bitsandbytes' is not modelled"),
], ids=["memory-awq", "memory-t4-fp8-kv", "memory-modelopt-t4", "memory-bad-dtype", "bench-throughput-bf16-t4",
        "bench-serve-gptq"])
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_cli_unquantized_config_json_with_bad_quantization(capsys, tmp_path):
    cfg = json.loads((ROOT / "sim/data/models/meta-llama--Llama-3.1-8B.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["memory", "--model", str(tmp_path), "--gpu", "h100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quantization_config.sym: false is not supported by vLLM 0.33" in err


def test_cli_memory_json_has_a_precision_object(capsys):
    assert main(["memory", "--model", "llama-3.1-70b-fp8", "--gpu", "h200", "-tp", "2", "--max-model-len", "8192",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["precision"] == {
        "activation_dtype": "bfloat16", "gemm_dtype": "fp8", "kv_cache_dtype": "fp8_e4m3", "kv_table_dtype": "fp8",
        "quantization": "modelopt", "weight_scheme": "per-tensor", "weight_block_size": None,
        "weight_bytes_per_param": 1, "kv_bytes_per_element": 1, "lm_head_quantized": False,
        "linear_kernel": "CutlassFP8ScaledMMLinearKernel", "attention_backend": "FLASH_ATTN",
        "moe_size_alignment": None, "weight_bits": None, "group_size": None, "zero_points": False,
        "source": "config.json quantization_config: modelopt FP8 with FP8 KV cache; KV cache fp8_e4m3 from the checkpoint",
    }
    assert data["kv_bytes_per_token"] == 2 * 80 * 4 * 128 * 1


def test_cli_memory_prints_vllms_lines_for_fp8(capsys):
    assert main(["memory", "--model", "llama-3.1-8b", "--gpu", "h100", "-q", "fp8", "--kv-cache-dtype", "fp8",
                 "--max-model-len", "8192"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("--quantization fp8 is deprecated")
    assert out[1].startswith("Using fp8 data type to store kv cache.")
    assert out[3] == "Model loading took 8.49 GiB memory"
    assert any(line.strip().startswith("precision: weights FP8 (per-tensor scales") for line in out)


def test_rollout_container_args_carry_the_precision_flags():
    from sim.rollout.podargs import engine_config_from_args

    config = engine_config_from_args(("vllm", "serve", "meta-llama/Llama-3.1-8B", "--gpu=h100", "-q", "fp8",
                                      "--kv-cache-dtype=fp8", "--dtype", "bfloat16"), "rollout.yaml")
    assert (config.quantization, config.kv_cache_dtype, config.dtype) == ("fp8", "fp8", "bfloat16")


def test_fp8_kv_cache_doubles_the_blocks_the_engine_gets():
    base = EngineConfig(model="llama-3.1-8b", gpu="h100", max_model_len=8192)
    bf16, fp8 = plan_for_config(base), plan_for_config(base.with_(kv_cache_dtype="fp8"))
    assert fp8.num_gpu_blocks in (2 * bf16.num_gpu_blocks, 2 * bf16.num_gpu_blocks + 1)
