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

* Qwen2/Qwen3, Gemma 3, Mixtral, Qwen3-MoE, DeepSeek-V3 (MLA) and gpt-oss: ``sim.architectures``,
  which reads their fields and counts their layers, experts and KV.

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

from sim.architectures import NEW_ARCHITECTURES
from sim.errors import CatalogError, ConfigError
from sim.quant_config import CheckpointQuant, parse_quantization_config

# HF model_type -> ours
ARCHITECTURES = {"opt": "opt", "llama": "llama", "mistral": "mistral", **NEW_ARCHITECTURES}
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
    # NVIDIA's ModelOpt FP8 checkpoints (config.json with their quantization config; see NOTICE.md).
    "llama-3.1-8b-fp8": "nvidia/Llama-3.1-8B-Instruct-FP8",
    "llama-3.1-70b-fp8": "nvidia/Llama-3.1-70B-Instruct-FP8",
    # Today's models (sim.architectures; sources in sim/data/models/NOTICE.md).
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "qwq-32b-awq": "Orion-zhen/QwQ-32B-Preview-AWQ",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-32b": "Qwen/Qwen3-32B",
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B",
    "qwen3-235b-a22b-fp8": "Qwen/Qwen3-235B-A22B-FP8",
    "gemma-3-27b": "google/gemma-3-27b-it",
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1",
    "mistralai/mixtral-8x7b-instruct-v0.1": "mistralai/Mixtral-8x7B-v0.1",
    "deepseek-v3": "deepseek-ai/DeepSeek-V3",
    "gpt-oss-20b": "openai/gpt-oss-20b",
    "gpt-oss-120b": "openai/gpt-oss-120b",
}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer, by the fields of its HuggingFace config.json."""

    name: str
    architecture: str  # "opt" | "llama" | "mistral" | one of sim.architectures.NEW_ARCHITECTURES' values
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
    # The checkpoint's own quantization_config (sim.quant_config), None for 16-bit checkpoints.
    quantization: CheckpointQuant | None = None
    # -- the newer architectures (sim.architectures); the defaults are the dense models' -------
    layer_types: tuple[str, ...] = ()  # per layer "full_attention" | "sliding_attention"; (): all full
    sliding_window: int | None = None  # tokens a sliding_attention layer sees
    qk_norm: bool = False  # RMSNorm on each q and k head (Qwen3, Gemma 3)
    qkv_bias: bool = False
    o_bias: bool = False
    norms_per_layer: int = 2
    attention_sinks: bool = False  # gpt-oss: one learned logit per head, no KV
    num_experts: int = 0  # routed experts per MoE layer; 0: dense
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    num_shared_experts: int = 0
    moe_layers: tuple[int, ...] = ()  # indices of the MoE layers
    router_bias: bool = False
    expert_bias: bool = False
    kv_lora_rank: int = 0  # MLA (DeepSeek); 0: not MLA
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    vision_params: int = 0  # a multimodal checkpoint's vision tower and projector (gemma3)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def is_hybrid(self) -> bool:
        """Sliding-window and full-attention layers side by side (vLLM's hybrid KV cache)."""
        return len(set(self.layer_types)) > 1

    @property
    def _new(self) -> bool:
        return self.architecture in NEW_ARCHITECTURES.values()

    @property
    def active_params(self) -> int:
        """Parameters per token (all but the idle routed experts); see sim.architectures."""
        from sim import architectures

        return architectures.active_params(self) if self._new else self.num_params

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
        if self._new:
            from sim import architectures

            return architectures.num_params(self)
        layer_s, layer_r = self._layer_params(1)
        emb_s, emb_r = self._embedding_params(1)
        return self.num_hidden_layers * (layer_s + layer_r) + emb_s + emb_r

    @property
    def weight_bytes(self) -> int:
        return self.num_params * self.dtype_bytes

    def weight_bytes_per_gpu(self, tp: int = 1, precision=None, moe=None) -> int:
        """Weights held by one GPU under tensor parallelism ``tp``.

        ``moe`` (:class:`sim.parallel.MoESharding`, from :meth:`sim.parallel.ParallelLayout.moe`)
        places a MoE model's routed experts under data or expert parallelism; None: every expert
        on every GPU, sharded over ``tp``. Under DP each GPU holds its rank's copy of the rest.

        With a ``precision`` (:class:`sim.precision.Precision`), parameters are counted in its
        activation dtype (``--dtype``), except the quantized linear layers: ``weight_bytes_per_param``
        each (FP8: 1) plus their fp32 scales. Embeddings, norms and biases stay in the activation
        dtype, and so does lm_head unless a ModelOpt checkpoint quantizes it, as vLLM does
        (``Fp8LinearMethod`` applies to ``LinearBase`` layers only).
        """
        self.check_tensor_parallel(tp)
        if self._new:
            from sim import architectures

            return architectures.weight_bytes_per_gpu(self, tp, precision, moe)
        layer_s, layer_r = self._layer_params(tp)
        emb_s, emb_r = self._embedding_params(tp)
        params = self.num_hidden_layers * (layer_s + layer_r) + emb_s + emb_r
        if precision is None:
            return params * self.dtype_bytes
        if not precision.is_quantized:
            return params * precision.activation_bytes
        linears = self.linear_shapes(tp)
        linear_params = sum(o * i for o, i, _ in linears)
        quantized = self.num_hidden_layers * sum(precision.linear_weight_bytes(o, i) for o, i, _ in linears)
        other = params - self.num_hidden_layers * linear_params
        if precision.lm_head_quantized:
            rows = self.vocab_size if tp == 1 else -(-(-(-self.vocab_size // VOCAB_PADDING) * VOCAB_PADDING) // tp)
            quantized += precision.linear_weight_bytes(rows, self.hidden_size)
            other -= rows * self.hidden_size
        return quantized + other * precision.activation_bytes

    def rope_cache_bytes(self, dtype_bytes: int | None = None) -> int:
        """vLLM's rotary cos/sin cache: ``max_position_embeddings x head_dim`` in the model dtype.

        A buffer, not a parameter, but on the GPU before the profile runs, so vLLM's "Model
        loading took X GiB" includes it (``rotary_embedding/base.py``); one per GPU. OPT has
        learned positions (parameters) instead. Llama-3.1's 131,072 positions make it 32 MiB.
        """
        if self.architecture == "opt":
            return 0
        rotary = self.qk_rope_head_dim if self.is_mla else self.head_dim
        caches = 2 if self.architecture == "gemma3" else 1  # Gemma 3: a local and a global rotary embedding
        return caches * self.max_position_embeddings * rotary * (dtype_bytes or self.dtype_bytes)

    def linear_shapes(self, tp: int = 1) -> list[tuple[int, int, int]]:
        """(out, in, fused logical weights) of one decoder layer's linear layers on one rank.

        vLLM fuses q, k, v into ``qkv_proj`` and gate, up into ``gate_up_proj``; biases (OPT) are
        not part of the weight and stay in the model dtype.
        """
        if self._new:
            from sim import architectures

            return [(x.out_features, x.in_features, x.fused) for x in architectures.layer_linears(self, 0, tp)
                    if x.kind != "router"]
        h, hd = self.hidden_size, self.head_dim
        q = self.num_attention_heads // tp * hd
        kv = self.kv_heads_per_rank(tp) * hd
        inter = -(-self.intermediate_size // tp)
        if self.architecture == "opt":
            return [(q + 2 * kv, h, 3), (h, q, 1), (inter, h, 1), (h, inter, 1)]
        return [(q + 2 * kv, h, 3), (h, q, 1), (2 * inter, h, 2), (h, inter, 1)]

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

    def kv_bytes_per_token(self, tp: int = 1, precision=None) -> int:
        """K and V of one token on one GPU: 2 * L * (kv_heads/tp) * head_dim * bytes per element.

        The bytes per element are the checkpoint dtype's, or ``precision.kv_bytes_per_element``
        (1 for an FP8 KV cache; its per-layer k/v scales are scalars outside the cache).
        """
        element = self.dtype_bytes if precision is None else precision.kv_bytes_per_element
        if self._new:
            from sim import architectures

            return self.num_hidden_layers * architectures.kv_bytes_per_token_per_layer(self, tp, element)
        return 2 * self.num_hidden_layers * self.kv_heads_per_rank(tp) * self.head_dim * element

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
    text = str(name_or_path)
    # An HF id has one "/" ("Qwen/Qwen3-32B"); a path ends in .json, starts like one or has more.
    if text.endswith(".json") or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        missing = "no such file" if text.endswith(".json") else "no such file or folder"
        raise CatalogError(f"--model {text}: {missing}; give the path of a HuggingFace config.json "
                           f"(or of the folder holding it), or a shipped model's name")
    close = close_models(key)
    hint = f" (closest shipped: {', '.join(close)})" if close else ""
    raise CatalogError(
        f"--model: unknown model {text!r}{hint}. The shipped models are the org--name.json files in "
        f"sim/data/models/; any other model works by the path of its HuggingFace config.json."
    )


def close_models(name: str, n: int = 3) -> list[str]:
    """Up to ``n`` shipped models whose HF name, name without the organisation or short alias is
    close to ``name`` (difflib), as HF names, closest first."""
    import difflib

    spelled = {key: path.stem.replace("--", "/") for key, path in _shipped_models().items()}
    choices = dict(spelled)
    choices.update({key.split("/", 1)[1]: hf for key, hf in spelled.items()})
    choices.update({alias: spelled[target.lower()] for alias, target in MODEL_ALIASES.items()
                    if target.lower() in spelled})
    out: list[str] = []
    for match in difflib.get_close_matches(str(name).strip().lower(), list(choices), n=4 * n, cutoff=0.6):
        if choices[match] not in out:
            out.append(choices[match])
    return out[:n]


@lru_cache(maxsize=64)
def _load_model(path: str) -> ModelSpec:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not a text file; expected a HuggingFace config.json (JSON, UTF-8)") from None
    if not isinstance(cfg, dict):
        raise CatalogError(f"{path}: expected a JSON object (a HuggingFace config.json), found {type(cfg).__name__}")
    sidecar = Path(path).with_name("hf_quant_config.json")
    if "quantization_config" not in cfg and Path(path).name == "config.json" and sidecar.is_file():
        # vLLM (transformers_utils/config.py): ModelOpt 0.29 and earlier wrote the quantization
        # config to hf_quant_config.json beside config.json; vLLM reads it as quantization_config.
        try:
            cfg = {**cfg, "quantization_config": json.loads(sidecar.read_text(encoding="utf-8"))}
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{sidecar}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        except OSError as exc:
            raise CatalogError(f"{sidecar}: cannot read it ({exc.strerror})") from None
    return model_from_config(cfg, source=path)


def model_from_config(cfg: dict, *, source: str = "<config>", name: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a parsed HF config.json; strict about the fields it needs."""
    from sim import architectures as archs

    if "model_type" not in cfg:
        raise CatalogError(f"{source}: field 'model_type' is missing; a HuggingFace config.json of this model has it")
    model_type = _typed(cfg["model_type"], "model_type", str, source)
    if model_type not in ARCHITECTURES:
        raise CatalogError(
            f"{source}: model_type {model_type!r} is not supported; ServeLab models "
            f"{', '.join(sorted(ARCHITECTURES))}. To add an architecture see docs/memory.md, "
            f"\"Adding an architecture\""
        )
    arch = ARCHITECTURES[model_type]
    outer = cfg
    cfg = archs.text_config(cfg, source)

    def need(field: str, kind: type = int):
        if field not in cfg or cfg[field] is None:
            raise CatalogError(f"{source}: field {field!r} is missing; a {model_type} config.json needs it")
        return _typed(cfg[field], field, kind, source)

    def opt_int(field: str, default: int = 0) -> int:
        value = cfg.get(field)
        return default if value is None else _typed(value, field, int, source, allow_zero=True)

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
    elif arch == "gpt_oss":
        # gpt-oss's config.json has no dtype; vLLM then reads the safetensors' (BF16 outside the
        # MXFP4 experts; transformers_utils/model_arch_config_convertor.py).
        field, dtype = "torch_dtype", "bfloat16"
    else:
        raise CatalogError(f"{source}: field 'torch_dtype' is missing; add the checkpoint's dtype (float16 or bfloat16)")
    if dtype not in DTYPE_BYTES:
        raise CatalogError(f"{source}: field {field!r}: {dtype!r} is not a supported dtype; expected one of "
                           f"{', '.join(DTYPE_BYTES)}")
    quantization = None
    if cfg.get("quantization_config") is not None:
        quantization = parse_quantization_config(cfg["quantization_config"], source=source)
    if arch == "opt" and cfg.get("word_embed_proj_dim", hidden) != hidden:
        raise CatalogError(f"{source}: OPT with word_embed_proj_dim != hidden_size (project_in/out) is not modelled")
    tie_default = arch in ("opt", "gemma3")  # OPTConfig and Gemma3TextConfig tie by default
    tie = cfg.get("tie_word_embeddings", tie_default)
    if not isinstance(tie, bool):
        raise CatalogError(f"{source}: field 'tie_word_embeddings': expected true or false, found {tie!r}")
    layers = need("num_hidden_layers")
    extra: dict = {}
    if arch in NEW_ARCHITECTURES.values():
        extra = archs.read_fields(cfg, outer, arch, layers, need, opt_int, source)
    return ModelSpec(
        name=name or outer.get("_name_or_path") or _name_from_path(source),
        architecture=arch,
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=need("vocab_size"),
        max_position_embeddings=need("max_position_embeddings"),
        dtype=dtype,
        tie_word_embeddings=tie,
        quantization=quantization,
        **extra,
    )


def _name_from_path(source: str) -> str:
    """A config.json without ``_name_or_path`` is named by where it was read, as vLLM names a model
    by its ``--model`` path: the folder of a ``config.json``, else the file. Not the folder's last
    part alone: two files in one folder would share it, and ``get_model`` of that name could find
    nothing, or a shipped model of the same short name."""
    path = Path(source)
    return str(path.parent) if path.name == "config.json" and str(path.parent) not in ("", ".") else source


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
    compute_capability: tuple[int, int] = (8, 0)  # CUDA's (major, minor); decides FP8 and bf16 support


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
            compute_capability=_capability(e.get("compute_capability"), name),
        )
        for alias in e.get("aliases", []):
            aliases[alias] = name
    return gpus, aliases


def _capability(value, name: str) -> tuple[int, int]:
    """"9.0" -> (9, 0); gpus.yaml must give it for every GPU."""
    major, dot, minor = str(value).partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        raise CatalogError(f"sim/data/gpus.yaml: gpus.{name}.compute_capability: expected MAJOR.MINOR "
                           f"(e.g. \"9.0\"), found {value!r}")
    return int(major), int(minor)


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
