"""The catalog: shipped HF configs, parameter counts, KV bytes, GPUs and bad input."""

from __future__ import annotations

import json

import pytest

from sim.catalog import get_gpu, get_model, known_gpus, known_models
from sim.errors import CatalogError, ConfigError

# Parameter counts as published by the model cards / papers (billions), within 1%.
PUBLISHED_PARAMS_B = [
    pytest.param("facebook/opt-13b", 12.85, id="opt-13b"),
    pytest.param("facebook/opt-66b", 65.7, id="opt-66b"),
    pytest.param("facebook/opt-175b", 175.0, id="opt-175b"),
    pytest.param("huggyllama/llama-7b", 6.74, id="llama-7b"),
    pytest.param("huggyllama/llama-13b", 13.02, id="llama-13b"),
    pytest.param("meta-llama/Llama-2-7b-hf", 6.74, id="llama-2-7b"),
    pytest.param("meta-llama/Llama-2-13b-hf", 13.02, id="llama-2-13b"),
    pytest.param("meta-llama/Llama-2-70b-hf", 68.98, id="llama-2-70b"),
    pytest.param("meta-llama/Llama-3.1-8B", 8.03, id="llama-3.1-8b"),
    pytest.param("meta-llama/Llama-3.1-70B", 70.55, id="llama-3.1-70b"),
    pytest.param("mistralai/Mistral-7B-v0.1", 7.24, id="mistral-7b"),
    # ModelOpt FP8 checkpoints keep the base model's shapes (their model cards: 8.0 and 70.6 billion).
    pytest.param("nvidia/Llama-3.1-8B-Instruct-FP8", 8.03, id="llama-3.1-8b-fp8"),
    pytest.param("nvidia/Llama-3.1-70B-Instruct-FP8", 70.55, id="llama-3.1-70b-fp8"),
]


@pytest.mark.parametrize("name, billions", PUBLISHED_PARAMS_B)
def test_param_count_matches_published(name, billions):
    model = get_model(name)
    assert model.num_params / 1e9 == pytest.approx(billions, rel=0.01)
    assert model.weight_bytes == model.num_params * model.dtype_bytes


def test_every_shipped_model_loads_and_the_list_is_complete():
    from tests.test_architectures import NEW_MODELS

    names = set(known_models())
    assert {p.values[0] for p in PUBLISHED_PARAMS_B} | set(NEW_MODELS) == names
    for name in names:
        assert get_model(name).name == name


@pytest.mark.parametrize(
    "name, tp, expected",
    [
        pytest.param("facebook/opt-13b", 1, 819_200, id="opt-13b-800KB-paper"),  # vLLM paper: 800 KB
        pytest.param("meta-llama/Llama-3.1-8B", 1, 128 * 1024, id="llama3-8b-128KiB"),  # reference sec. 3
        pytest.param("meta-llama/Llama-2-7b-hf", 2, 2 * 32 * 16 * 128 * 2, id="llama2-7b-tp2"),
        pytest.param("meta-llama/Llama-2-70b-hf", 8, 2 * 80 * 1 * 128 * 2, id="llama2-70b-tp8"),
        # 8 KV heads on 16 GPUs: vLLM replicates, each rank keeps one head.
        pytest.param("meta-llama/Llama-3.1-70B", 16, 2 * 80 * 1 * 128 * 2, id="kv-replicated"),
    ],
)
def test_kv_bytes_per_token(name, tp, expected):
    assert get_model(name).kv_bytes_per_token(tp) == expected


@pytest.mark.parametrize("alias, full", [
    ("opt-13b", "facebook/opt-13b"),
    ("llama-2-7b", "meta-llama/Llama-2-7b-hf"),
    ("LLAMA-2-70B", "meta-llama/Llama-2-70b-hf"),
    ("llama-3.1-8b", "meta-llama/Llama-3.1-8B"),
    ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B"),
    ("mistral-7b", "mistralai/Mistral-7B-v0.1"),
    ("meta-llama--Llama-2-13b-hf", "meta-llama/Llama-2-13b-hf"),
    ("Llama-2-13b-hf", "meta-llama/Llama-2-13b-hf"),
])
def test_aliases(alias, full):
    assert get_model(alias) == get_model(full)


def test_weights_shard_under_tensor_parallelism():
    model = get_model("meta-llama/Llama-2-70b-hf")
    one = model.weight_bytes_per_gpu(1)
    assert one == model.weight_bytes
    for tp in (2, 4, 8):
        per_gpu = model.weight_bytes_per_gpu(tp)
        # Sharded almost perfectly; norms are replicated, so a little above one/tp.
        assert one / tp <= per_gpu <= one / tp * 1.01


def test_flops_per_token_is_twice_the_matmul_params():
    model = get_model("meta-llama/Llama-2-7b-hf")
    # 2 FLOPs per parameter, minus the input embedding (a lookup) and the norms.
    assert model.flops_per_token == pytest.approx(2 * (model.num_params - 32000 * 4096), rel=1e-3)


@pytest.mark.parametrize("name, tp", [("facebook/opt-66b", 5), ("meta-llama/Llama-2-7b-hf", 3)])
def test_tensor_parallel_must_divide_heads(name, tp):
    with pytest.raises(ConfigError, match="--tensor-parallel-size"):
        get_model(name).weight_bytes_per_gpu(tp)


@pytest.mark.parametrize("name, close", [
    pytest.param("llama-3-8b", "meta-llama/Llama-3.1-8B", id="alias misspelt"),
    pytest.param("Qwen/Qwen3-32B-Instruct", "Qwen/Qwen3-32B", id="hf id with a suffix"),
    pytest.param("mixtral", "mistralai/Mixtral-8x7B-v0.1", id="repo name prefix"),
    pytest.param("bert-base-uncased", None, id="nothing close"),
])
def test_unknown_model_names_close_ones_and_where_the_catalog_is(name, close):
    with pytest.raises(CatalogError) as err:
        get_model(name)
    msg = str(err.value)
    assert f"unknown model {name!r}" in msg and "sim/data/models/" in msg and "config.json" in msg
    assert (close in msg) if close else "closest" not in msg
    assert len(msg) < 400 and "facebook/opt-66b" not in msg  # a few close names, never the whole catalog


def test_model_from_path_file_and_folder(tmp_path):
    cfg = json.loads(open(_shipped("meta-llama--Llama-2-7b-hf")).read())
    cfg["num_hidden_layers"] = 2
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    by_folder = get_model(str(folder))
    by_file = get_model(str(folder / "config.json"))
    assert by_folder == by_file
    assert by_folder.num_hidden_layers == 2


@pytest.mark.parametrize("field", ["hidden_size", "num_attention_heads", "vocab_size", "torch_dtype", "intermediate_size"])
def test_missing_field_names_file_and_field(tmp_path, field):
    cfg = json.loads(open(_shipped("meta-llama--Llama-2-7b-hf")).read())
    del cfg[field]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(CatalogError) as err:
        get_model(str(path))
    assert str(path) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("text, expect", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"model_type": "gpt2"}', "not supported"),
])
def test_bad_config_files(tmp_path, text, expect):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(CatalogError, match=expect):
        get_model(str(path))


def test_a_binary_config_file_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    for given in (tmp_path / "config.json", tmp_path):  # the file, or the folder holding it
        with pytest.raises(CatalogError, match="not a text file"):
            get_model(str(given))


def test_wrong_type_is_rejected(tmp_path):
    cfg = json.loads(open(_shipped("facebook--opt-13b")).read())
    cfg["hidden_size"] = "5120"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(CatalogError, match="hidden_size.*positive integer"):
        get_model(str(path))


def test_empty_folder(tmp_path):
    with pytest.raises(CatalogError, match="no config.json"):
        get_model(str(tmp_path))


# -- GPUs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, mem_gib, bw_tb, tflops", [
    ("a10g", 22, 0.6, 70),
    ("l4", 22, 0.3, 121),
    ("l40s", 44.4, 0.864, 362),
    ("a100-40gb", 39.5, 1.555, 312),
    ("a100-80gb", 79.2, 2.039, 312),
    ("h100-80gb", 79.2, 3.35, 989),
    ("h200", 139.8, 4.8, 989),
    ("b200", 178.35, 7.7, 2250),
    ("t4", 14.74, 0.32, 65),
])
def test_gpu_datasheets(name, mem_gib, bw_tb, tflops):
    gpu = get_gpu(name)
    assert gpu.memory_bytes / 2**30 == pytest.approx(mem_gib, rel=0.01)
    assert gpu.hbm_bandwidth_bytes_per_s == pytest.approx(bw_tb * 1e12)
    assert gpu.dense_fp16_flops_per_s == pytest.approx(tflops * 1e12)
    assert gpu.source


def test_gpu_aliases_and_unknown():
    assert get_gpu("H100") == get_gpu("h100-80gb")
    assert get_gpu("A100_80GB") == get_gpu("a100-80gb")
    assert len(known_gpus()) == 9
    with pytest.raises(CatalogError) as err:
        get_gpu("tpu-v5")
    assert "a100-80gb" in str(err.value) and "gpus.yaml" in str(err.value)


def _shipped(stem: str) -> str:
    from sim.catalog import _data_dir

    return str(_data_dir() / "models" / f"{stem}.json")


# -- fuzz: a config.json with any field changed loads or fails with CatalogError --------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sim.catalog import model_from_config  # noqa: E402

_BASE = None


def _base_config() -> dict:
    global _BASE
    if _BASE is None:
        _BASE = json.loads(open(_shipped("meta-llama--Llama-3.1-8B")).read())
    return dict(_BASE)


_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(), max_size=2))


@settings(max_examples=150, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(["hidden_size", "num_attention_heads", "num_key_value_heads",
                                                "head_dim", "intermediate_size", "vocab_size", "num_hidden_layers",
                                                "max_position_embeddings", "torch_dtype", "model_type",
                                                "tie_word_embeddings", "ffn_dim"]),
                               _values, max_size=3),
       drop=st.sets(st.sampled_from(["hidden_size", "torch_dtype", "model_type", "num_key_value_heads"]), max_size=2))
def test_config_fuzz_loads_or_fails_cleanly(changes, drop):
    cfg = _base_config()
    cfg.update(changes)
    for key in drop:
        cfg.pop(key, None)
    try:
        model = model_from_config(cfg, source="fuzz/config.json")
    except CatalogError as exc:
        assert str(exc).startswith("fuzz/config.json")
        return
    assert model.num_attention_heads % model.num_key_value_heads == 0
    assert model.num_params > 0 and model.kv_bytes_per_token() > 0


@pytest.mark.parametrize("path, expect", [
    ("./models/missing/config.json", "no such file;"),
    ("/tmp/servelab-missing-model.json", "no such file;"),
    ("models/org/missing", "no such file or folder"),
])
def test_missing_path_says_so(path, expect):
    with pytest.raises(CatalogError) as err:
        get_model(path)
    msg = str(err.value)
    assert msg.startswith(f"--model {path}: {expect}") and "unknown model" not in msg and len(msg) < 200
