"""Models and GPUs: the shapes and datasheet numbers the simulator computes with.

Models are HuggingFace ``config.json`` files, shipped under ``sim/data/models/`` (one per model,
named ``org--name.json``) and read with the real HF field names, so that any other model of a
supported architecture can be added by passing the path of its ``config.json`` (or of the folder
holding it). GPUs are in ``sim/data/gpus.yaml``, each with the source of its numbers.

Parameter counts are computed from the shapes, layer by layer, the way vLLM builds the model:

* OPT (``model_type: opt``): learned positional embeddings (``max_position_embeddings + 2``
  rows, OPT's offset), q/k/v/out projections with biases, a ReLU MLP ``fc1``/``fc2`` with biases,
  two LayerNorms per layer (weight and bias) and a final one, ``lm_head`` tied to the embeddings.
* Llama and Mistral: rotary positions (no parameters), q/k/v/o without biases (grouped-query
  attention: ``num_key_value_heads``), a gated SiLU MLP (gate, up, down), two RMSNorms per layer
  and a final one, an untied ``lm_head`` unless ``tie_word_embeddings``.

Under tensor parallelism vLLM shards the attention heads, the MLP and the vocabulary
(``VocabParallelEmbedding``/``ParallelLMHead``, the vocabulary padded to a multiple of 64), and
replicates norms, the biases of row-parallel layers and OPT's positional embeddings. KV heads are
replicated when ``tp > num_key_value_heads`` (each rank keeps one), as vLLM's ``QKVParallelLinear``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from sim.errors import CatalogError, ConfigError

ARCHITECTURES = {"opt": "opt", "llama": "llama", "mistral": "mistral"}  # HF model_type -> ours
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
VOCAB_PADDING = 64  # vLLM's DEFAULT_VOCAB_PADDING_SIZE
OPT_POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding keeps 2 extra rows

# Short names; the HF repo names and the ``org--name`` file stems are accepted as well.
MODEL_ALIASES = {
    "opt-13b": "facebook/opt-13b",
    "opt-66b": "facebook/opt-66b",
    "opt-175b": "facebook/opt-175b",
    "llama-7b": "huggyllama/llama-7b",
    "llama-13b": "huggyllama/llama-13b",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "llama-2-70b": "meta-llama/Llama-2-70b-hf",
    "meta-llama/llama-2-7b-chat-hf": "meta-llama/Llama-2-7b-hf",
    "meta-llama/llama-2-13b-chat-hf": "meta-llama/Llama-2-13b-hf",
    "meta-llama/llama-2-70b-chat-hf": "meta-llama/Llama-2-70b-hf",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    # Instruct variants have the same shapes as the base models.
    "meta-llama/llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B",
    "meta-llama/llama-3.1-70b-instruct": "meta-llama/Llama-3.1-70B",
    "meta-llama/meta-llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "meta-llama/meta-llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B",
    "meta-llama/meta-llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    "meta-llama/meta-llama-3.1-70b-instruct": "meta-llama/Llama-3.1-70B",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer, by the fields of its HuggingFace config.json."""

    name: str
    architecture: str  # "opt" | "llama" | "mistral"
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int  # OPT's ffn_dim
    vocab_size: int
    max_position_embeddings: int
    dtype: str  # "float16" | "bfloat16" | "float32"
    tie_word_embeddings: bool

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    # -- parameters ------------------------------------------------------------------------
    def _layer_params(self, tp: int) -> tuple[int, int]:
        """(sharded, replicated) parameters of one decoder layer on one of ``tp`` ranks."""
        h, hd = self.hidden_size, self.head_dim
        q_heads = self.num_attention_heads // tp
        kv_heads = self.kv_heads_per_rank(tp)
        inter = -(-self.intermediate_size // tp)
        if self.architecture == "opt":
            # q, k, v (column-parallel, biases sharded too) and out_proj (row-parallel).
            attn = (q_heads + 2 * kv_heads) * hd * (h + 1) + q_heads * hd * h
            mlp = h * inter + inter + inter * h  # fc1 weight+bias, fc2 weight
            replicated = h + h + 4 * h  # out_proj and fc2 biases; two LayerNorms (weight, bias)
        else:
            attn = (q_heads + 2 * kv_heads) * hd * h + q_heads * hd * h
            mlp = 3 * h * inter  # gate, up (merged column-parallel), down (row-parallel)
            replicated = 2 * h  # two RMSNorms
        return attn + mlp, replicated

    def _embedding_params(self, tp: int) -> tuple[int, int]:
        """(sharded, replicated) parameters outside the layers on one of ``tp`` ranks."""
        h = self.hidden_size
        # On one rank the vocabulary is the true one, unpadded, when tp == 1: count what the
        # checkpoint holds. Under TP, each rank holds padded_vocab / tp rows.
        if tp == 1:
            vocab_rows = self.vocab_size
        else:
            padded = -(-self.vocab_size // VOCAB_PADDING) * VOCAB_PADDING
            vocab_rows = -(-padded // tp)
        tables = 1 if self.tie_word_embeddings else 2  # embed_tokens, lm_head
        sharded = tables * vocab_rows * h
        if self.architecture == "opt":
            positions = (self.max_position_embeddings + OPT_POSITION_OFFSET) * h
            replicated = positions + 2 * h  # final LayerNorm
        else:
            replicated = h  # final RMSNorm
        return sharded, replicated

    @property
    def num_params(self) -> int:
        """All parameters of the checkpoint (tensor parallelism 1)."""
        layer_s, layer_r = self._layer_params(1)
        emb_s, emb_r = self._embedding_params(1)
        return self.num_hidden_layers * (layer_s + layer_r) + emb_s + emb_r

    @property
    def weight_bytes(self) -> int:
        return self.num_params * self.dtype_bytes

    def weight_bytes_per_gpu(self, tp: int = 1) -> int:
        """Weights held by one GPU under tensor parallelism ``tp``."""
        self.check_tensor_parallel(tp)
        layer_s, layer_r = self._layer_params(tp)
        emb_s, emb_r = self._embedding_params(tp)
        params = self.num_hidden_layers * (layer_s + layer_r) + emb_s + emb_r
        return params * self.dtype_bytes

    def matmul_params(self) -> int:
        """Parameters that take part in a matrix multiply for each token (lm_head included)."""
        h, hd, L = self.hidden_size, self.head_dim, self.num_hidden_layers
        attn = (2 * self.num_attention_heads + 2 * self.num_key_value_heads) * hd * h
        mlp = (2 if self.architecture == "opt" else 3) * h * self.intermediate_size
        return L * (attn + mlp) + self.vocab_size * h

    @property
    def flops_per_token(self) -> int:
        """Dense FLOPs of one token through the weights: 2 per multiply-accumulate."""
        return 2 * self.matmul_params()

    def attention_flops(self, num_new_tokens: int, context_len: int) -> int:
        """FLOPs of QK^T and PV for ``num_new_tokens`` tokens attending to ``context_len``."""
        per_pair = 2 * 2 * self.num_attention_heads * self.head_dim  # two matmuls, 2 FLOPs/MAC
        return self.num_hidden_layers * per_pair * num_new_tokens * context_len

    # -- KV cache ----------------------------------------------------------------------------
    def kv_heads_per_rank(self, tp: int = 1) -> int:
        """KV heads one GPU keeps: kv_heads/tp, and 1 (replicated) when tp > kv_heads."""
        return max(1, self.num_key_value_heads // tp)

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        """K and V of one token on one GPU: 2 * L * (kv_heads/tp) * head_dim * dtype_bytes."""
        return 2 * self.num_hidden_layers * self.kv_heads_per_rank(tp) * self.head_dim * self.dtype_bytes

    def check_tensor_parallel(self, tp: int) -> None:
        """Raise ConfigError for a tensor-parallel size vLLM would reject for this model."""
        if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
            raise ConfigError(f"--tensor-parallel-size: expected a positive integer, got {tp!r}")
        heads, kv = self.num_attention_heads, self.num_key_value_heads
        if heads % tp:
            raise ConfigError(
                f"--tensor-parallel-size {tp}: {self.name} has {heads} attention heads, which "
                f"tensor parallelism {tp} does not divide; use a divisor of {heads} "
                f"(e.g. {', '.join(str(d) for d in _divisors(heads)[:6])})"
            )
        if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
            raise ConfigError(
                f"--tensor-parallel-size {tp}: {self.name} has {kv} KV heads; vLLM needs "
                f"the KV heads divisible by the tensor-parallel size, or the size a multiple of them"
            )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# -- models -----------------------------------------------------------------------------------
def _data_dir() -> Path:
    return Path(str(resources.files("sim") / "data"))


@lru_cache(maxsize=1)
def _shipped_models() -> dict[str, Path]:
    """HF name (lower case) -> shipped config.json, from the file names ``org--name.json``."""
    out: dict[str, Path] = {}
    for path in sorted((_data_dir() / "models").glob("*.json")):
        out[path.stem.replace("--", "/").lower()] = path
    return out


def known_models() -> list[str]:
    """The shipped models' HF names, in their own spelling."""
    return [p.stem.replace("--", "/") for p in _shipped_models().values()]


def get_model(name_or_path: str) -> ModelSpec:
    """A shipped model by HF name, file stem or short alias; or a path to a config.json."""
    key = str(name_or_path).strip().lower().replace("--", "/")
    key = MODEL_ALIASES.get(key, key).lower()
    shipped = _shipped_models()
    if key in shipped:
        return _load_model(str(shipped[key]))
    # "Llama-2-7b-hf" without the organisation.
    by_repo = {k.split("/", 1)[1]: v for k, v in shipped.items()}
    if key in by_repo:
        return _load_model(str(by_repo[key]))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise CatalogError(f"{name_or_path}: the folder holds no config.json")
    if path.is_file():
        return _load_model(str(path.resolve()))
    aliases = ", ".join(sorted(k for k in MODEL_ALIASES if "/" not in k))
    looks_like_path = str(name_or_path).endswith(".json") or str(name_or_path).startswith((".", "/", "~"))
    raise CatalogError(
        (f"--model {name_or_path}: no such file or folder. " if looks_like_path else "")
        + f"unknown model {name_or_path!r}. Known models: {', '.join(known_models())} "
        f"(short names: {aliases}). To add one, pass the path of its HuggingFace config.json "
        f"(or of the folder holding it) as --model."
    )


@lru_cache(maxsize=64)
def _load_model(path: str) -> ModelSpec:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read it ({exc.strerror})") from None
    if not isinstance(cfg, dict):
        raise CatalogError(f"{path}: expected a JSON object (a HuggingFace config.json), found {type(cfg).__name__}")
    return model_from_config(cfg, source=path)


def model_from_config(cfg: dict, *, source: str = "<config>", name: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a parsed HF config.json; strict about the fields it needs."""

    def need(field: str, kind: type = int):
        if field not in cfg:
            raise CatalogError(f"{source}: field {field!r} is missing; a HuggingFace config.json of this model has it")
        return _typed(cfg[field], field, kind, source)

    model_type = need("model_type", str)
    if model_type not in ARCHITECTURES:
        raise CatalogError(
            f"{source}: model_type {model_type!r} is not supported; ServeLab models "
            f"{', '.join(sorted(ARCHITECTURES))} (decoder-only, dense)"
        )
    arch = ARCHITECTURES[model_type]
    hidden = need("hidden_size")
    heads = need("num_attention_heads")
    inter = need("ffn_dim") if arch == "opt" else need("intermediate_size")
    kv = _typed(cfg.get("num_key_value_heads") or heads, "num_key_value_heads", int, source)
    head_dim = _typed(cfg.get("head_dim") or 0, "head_dim", int, source, allow_zero=True)
    if not head_dim:
        if hidden % heads:
            raise CatalogError(f"{source}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}; give head_dim")
        head_dim = hidden // heads
    if heads % kv:
        raise CatalogError(f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
    if "torch_dtype" in cfg or "dtype" in cfg:
        field = "torch_dtype" if "torch_dtype" in cfg else "dtype"
        dtype = _typed(cfg[field], field, str, source)
    else:
        raise CatalogError(f"{source}: field 'torch_dtype' is missing; add the checkpoint's dtype (float16 or bfloat16)")
    if dtype not in DTYPE_BYTES:
        raise CatalogError(f"{source}: {dtype!r} is not a supported dtype; expected one of {', '.join(DTYPE_BYTES)}")
    if arch == "opt" and cfg.get("word_embed_proj_dim", hidden) != hidden:
        raise CatalogError(f"{source}: OPT with word_embed_proj_dim != hidden_size (project_in/out) is not modelled")
    tie_default = arch == "opt"  # OPTConfig ties by default; LlamaConfig and MistralConfig do not
    tie = cfg.get("tie_word_embeddings", tie_default)
    if not isinstance(tie, bool):
        raise CatalogError(f"{source}: field 'tie_word_embeddings': expected true or false, found {tie!r}")
    return ModelSpec(
        name=name or cfg.get("_name_or_path") or Path(source).parent.name or source,
        architecture=arch,
        num_hidden_layers=need("num_hidden_layers"),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=need("vocab_size"),
        max_position_embeddings=need("max_position_embeddings"),
        dtype=dtype,
        tie_word_embeddings=tie,
    )


def _typed(value, field: str, kind: type, source: str, allow_zero: bool = False):
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (value == 0 and not allow_zero):
            raise CatalogError(f"{source}: field {field!r}: expected a positive integer, found {value!r}")
    elif not isinstance(value, kind):
        raise CatalogError(f"{source}: field {field!r}: expected a {kind.__name__}, found {value!r}")
    return value


# -- GPUs -------------------------------------------------------------------------------------
GiB = 1024**3


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """One GPU, by its datasheet; ``memory_bytes`` is what CUDA reports as total."""

    name: str
    memory_bytes: int
    hbm_bandwidth_bytes_per_s: float
    dense_fp16_flops_per_s: float
    nvlink_bandwidth_bytes_per_s: float  # both directions; the PCIe link where interconnect == "pcie"
    interconnect: str = "nvlink"
    source: str = ""


@lru_cache(maxsize=1)
def _gpu_table() -> tuple[dict[str, GPUSpec], dict[str, str]]:
    with open(_data_dir() / "gpus.yaml", encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    gpus: dict[str, GPUSpec] = {}
    aliases: dict[str, str] = {}
    for name, e in doc["gpus"].items():
        gpus[name] = GPUSpec(
            name=name,
            memory_bytes=round(float(e["memory_gib"]) * GiB),
            hbm_bandwidth_bytes_per_s=float(e["hbm_bandwidth_gb_per_s"]) * 1e9,
            dense_fp16_flops_per_s=float(e["dense_fp16_tflops"]) * 1e12,
            nvlink_bandwidth_bytes_per_s=float(e["nvlink_gb_per_s"]) * 1e9,
            interconnect=str(e["interconnect"]),
            source=str(e["source"]),
        )
        for alias in e.get("aliases", []):
            aliases[alias] = name
    return gpus, aliases


def known_gpus() -> list[str]:
    return list(_gpu_table()[0])


def get_gpu(name: str) -> GPUSpec:
    """A GPU by name (``a100-80gb``) or alias (``h100``), case-insensitive."""
    gpus, aliases = _gpu_table()
    key = str(name).strip().lower().replace("_", "-")
    key = aliases.get(key, key)
    if key in gpus:
        return gpus[key]
    raise CatalogError(
        f"unknown GPU {name!r}. Known GPUs: {', '.join(gpus)} (aliases: {', '.join(sorted(aliases))}). "
        f"To add one, add an entry with its datasheet numbers to sim/data/gpus.yaml."
    )
