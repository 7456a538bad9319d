"""The newer architectures: how each reads its config.json and what each layer holds.

One function per concern, each following the vLLM 0.33 model file named beside it
(``vllm/model_executor/models/``):

* **qwen2** (``qwen2.py``): Llama's layer with biases on q, k and v (``QKVParallelLinear(bias=True)``).
* **qwen3** (``qwen3.py``): Llama's layer without biases, plus QK-norm: an RMSNorm of ``head_dim``
  on each head of q and of k (``q_norm``, ``k_norm``, replicated). ``head_dim`` is a field of its
  own (Qwen3-32B: 64 heads x 128 = 8192, hidden 5120).
* **gemma3** / **gemma3_text** (``gemma3.py``, ``gemma3_mm.py``): QK-norm, four RMSNorms per layer
  (before and after attention and MLP), a gated GELU MLP, tied embeddings, and interleaved
  sliding-window and global layers (``layer_types``, or ``sliding_window_pattern``: every 6th layer
  global, as transformers' ``Gemma3TextConfig`` derives it). The multimodal checkpoints
  (``model_type: gemma3``) nest the text model in ``text_config``, whose missing fields take
  ``Gemma3TextConfig``'s defaults; vLLM also loads their SigLIP vision tower and projector
  (``siglip.py``), counted here from ``vision_config``.
* **mixtral** (``mixtral.py``): Mistral's attention, a router (``gate``: ``num_local_experts x
  hidden``, replicated) and ``num_local_experts`` SwiGLU experts of ``intermediate_size``, of which
  ``num_experts_per_tok`` run per token.
* **qwen3_moe** (``qwen3_moe.py``): Qwen3's attention; MoE layers with ``num_experts`` experts of
  ``moe_intermediate_size`` (top ``num_experts_per_tok``), except the layers in ``mlp_only_layers``
  and those ``decoder_sparse_step`` skips, which have a dense MLP of ``intermediate_size``.
* **deepseek_v3** (``deepseek_v2.py``): Multi-head Latent Attention. ``fused_qkv_a_proj``
  (hidden -> ``q_lora_rank + kv_lora_rank + qk_rope_head_dim``, replicated on every TP rank), the
  ``q_a_layernorm`` and ``kv_a_layernorm``, ``q_b_proj`` (``q_lora_rank`` -> heads x
  ``(qk_nope_head_dim + qk_rope_head_dim)``), ``kv_b_proj`` (``kv_lora_rank`` -> heads x
  ``(qk_nope_head_dim + v_head_dim)``), ``o_proj`` (heads x ``v_head_dim`` -> hidden). The first
  ``first_k_dense_replace`` layers have a dense MLP of ``intermediate_size``; the others a router
  (with ``e_score_correction_bias``), ``n_routed_experts`` experts and ``n_shared_experts`` shared
  experts of ``moe_intermediate_size``. The multi-token-prediction layer
  (``num_nextn_predict_layers``) is loaded only for speculative decoding, so not counted.
* **gpt_oss** (``gpt_oss.py``): biases on q, k, v and o; one learned attention sink per head
  (``sinks``, no KV); a router with a bias; ``num_local_experts`` experts of ``intermediate_size``
  with biases on both projections; alternating sliding-window and full layers (``layer_types``).

Under tensor parallelism (no expert parallelism) vLLM shards every expert's projections like a
dense MLP's (``FusedMoE``: ``intermediate_size / tp`` per expert on every rank) and replicates the
router, the norms and the row-parallel biases.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import CatalogError

# HF model_type -> our architecture name. "gemma3" is the multimodal wrapper of "gemma3_text".
NEW_ARCHITECTURES = {
    "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3", "gemma3_text": "gemma3",
    "mixtral": "mixtral", "qwen3_moe": "qwen3_moe", "deepseek_v3": "deepseek_v3", "gpt_oss": "gpt_oss",
}
FULL, SLIDING = "full_attention", "sliding_attention"

# transformers' Gemma3TextConfig defaults (configuration_gemma3.py), which the nested
# text_config of the multimodal checkpoints leaves out.
GEMMA3_TEXT_DEFAULTS = {
    "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131_072,
    "sliding_window": 4096, "sliding_window_pattern": 6, "tie_word_embeddings": True,
}


@dataclass(frozen=True, slots=True)
class Linear:
    """One linear layer of a decoder layer, as one rank holds it.

    ``copies`` is how many of it the rank holds (routed experts: all of them, under TP);
    ``kind`` is "attention", "mlp" (dense or shared expert), "expert" (routed) or "router".
    """

    name: str
    out_features: int
    in_features: int
    kind: str
    copies: int = 1
    fused: int = 1  # logical weights fused into it (qkv: 3, gate_up: 2)

    @property
    def params(self) -> int:
        return self.out_features * self.in_features * self.copies


def text_config(cfg: dict, source: str) -> dict:
    """The text model's settings: ``text_config`` of a multimodal gemma3 checkpoint with
    ``Gemma3TextConfig``'s defaults under it; the config itself otherwise."""
    model_type = cfg.get("model_type")
    if model_type not in ("gemma3", "gemma3_text"):
        return cfg
    if model_type == "gemma3":
        inner = cfg.get("text_config")
        if not isinstance(inner, dict):
            raise CatalogError(f"{source}: field 'text_config' is missing; a gemma3 config.json nests its text "
                               f"model there (or pass a gemma3_text config)")
        merged = {**GEMMA3_TEXT_DEFAULTS, **inner}
        for key in ("torch_dtype", "dtype", "quantization_config"):
            if key in cfg and key not in merged:
                merged[key] = cfg[key]
        return merged
    return {**GEMMA3_TEXT_DEFAULTS, **cfg}


def layer_types(cfg: dict, arch: str, num_layers: int, source: str, opt_int) -> tuple[str, ...]:
    """Each layer's attention: ``layer_types`` when given; else gemma3's pattern (every
    ``sliding_window_pattern``-th layer global), Qwen's ``use_sliding_window`` rule (sliding from
    ``max_window_layers`` on), or all full."""
    given = cfg.get("layer_types")
    if given is not None:
        if (not isinstance(given, list) or len(given) != num_layers
                or not all(t in (FULL, SLIDING) for t in given)):
            raise CatalogError(f"{source}: field 'layer_types': expected {num_layers} entries, each "
                               f"{FULL!r} or {SLIDING!r}")
        return tuple(given)
    if arch == "gemma3":
        pattern = opt_int("sliding_window_pattern", 6)
        if pattern < 1:
            raise CatalogError(f"{source}: field 'sliding_window_pattern': expected a positive integer, found 0")
        return tuple(SLIDING if (i + 1) % pattern else FULL for i in range(num_layers))
    if arch in ("qwen2", "qwen3", "qwen3_moe") and cfg.get("use_sliding_window") is True and cfg.get("sliding_window"):
        first = opt_int("max_window_layers", num_layers)
        return tuple(SLIDING if i >= first else FULL for i in range(num_layers))
    if arch == "gpt_oss":
        raise CatalogError(f"{source}: field 'layer_types' is missing; gpt_oss alternates sliding_attention "
                           f"and full_attention layers and its config.json lists them")
    return ()


def moe_layers(cfg: dict, arch: str, num_layers: int, source: str, opt_int) -> tuple[int, ...]:
    """Indices of the layers whose MLP is a mixture of experts (the rules of vLLM's model files)."""
    if arch in ("mixtral", "gpt_oss"):
        return tuple(range(num_layers))
    if arch == "qwen3_moe":
        step = opt_int("decoder_sparse_step", 1)  # qwen3_moe.py: 0 means no MoE layer
        dense = cfg.get("mlp_only_layers") or []
        if not isinstance(dense, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in dense):
            raise CatalogError(f"{source}: field 'mlp_only_layers': expected a list of layer indices, found {dense!r}")
        return tuple(i for i in range(num_layers) if i not in dense and step > 0 and (i + 1) % step == 0)
    if arch == "deepseek_v3":
        first = opt_int("first_k_dense_replace", 0)
        freq = opt_int("moe_layer_freq", 1)
        if freq < 1:
            raise CatalogError(f"{source}: field 'moe_layer_freq': expected a positive integer, found 0")
        return tuple(i for i in range(num_layers) if i >= first and i % freq == 0)
    return ()


def read_fields(cfg: dict, outer: dict, arch: str, layers: int, need, opt_int, source: str) -> dict:
    """The ModelSpec fields of these architectures, read the way vLLM's model files read them.

    ``need(field)`` returns a positive integer field or raises CatalogError naming it;
    ``opt_int(field, default)`` an optional non-negative one."""
    types = layer_types(cfg, arch, layers, source, opt_int)
    out: dict = {"layer_types": types}
    if SLIDING in types:
        out["sliding_window"] = need("sliding_window")
    out["qk_norm"] = arch in ("qwen3", "qwen3_moe", "gemma3")
    attention_bias = cfg.get("attention_bias", False)
    if not isinstance(attention_bias, bool):
        raise CatalogError(f"{source}: field 'attention_bias': expected true or false, found {attention_bias!r}")
    out["qkv_bias"] = arch == "qwen2" or (arch in ("qwen3", "qwen3_moe", "gpt_oss") and bool(attention_bias))
    out["o_bias"] = arch == "gpt_oss" and bool(attention_bias)
    out["norms_per_layer"] = 4 if arch == "gemma3" else 2
    out["attention_sinks"] = arch == "gpt_oss"
    if arch == "mixtral":
        out.update(num_experts=need("num_local_experts"), experts_per_token=need("num_experts_per_tok"),
                   moe_intermediate_size=need("intermediate_size"))
    elif arch == "gpt_oss":
        out.update(num_experts=need("num_local_experts"), experts_per_token=need("num_experts_per_tok"),
                   moe_intermediate_size=need("intermediate_size"), router_bias=True, expert_bias=True)
    elif arch == "qwen3_moe":
        out.update(num_experts=need("num_experts"), experts_per_token=need("num_experts_per_tok"),
                   moe_intermediate_size=need("moe_intermediate_size"))
    elif arch == "deepseek_v3":
        out.update(num_experts=need("n_routed_experts"), experts_per_token=need("num_experts_per_tok"),
                   moe_intermediate_size=need("moe_intermediate_size"),
                   num_shared_experts=opt_int("n_shared_experts"),
                   kv_lora_rank=need("kv_lora_rank"), q_lora_rank=opt_int("q_lora_rank"),
                   qk_nope_head_dim=need("qk_nope_head_dim"), qk_rope_head_dim=need("qk_rope_head_dim"),
                   v_head_dim=need("v_head_dim"))
    if out.get("num_experts"):
        out["moe_layers"] = moe_layers(cfg, arch, layers, source, opt_int)
        if out["experts_per_token"] > out["num_experts"]:
            raise CatalogError(f"{source}: num_experts_per_tok {out['experts_per_token']} is more than the "
                               f"{out['num_experts']} experts")
    if arch == "gemma3" and outer.get("model_type") == "gemma3" and isinstance(outer.get("vision_config"), dict):
        out["vision_params"] = siglip_params(outer["vision_config"], cfg["hidden_size"], source)
    return out


def siglip_params(vc: dict, text_hidden: int, source: str) -> int:
    """Gemma 3's SigLIP vision tower (no head) and its projector (vLLM ``siglip.py``, ``gemma3_mm.py``):
    patch embedding (a conv with bias), position embeddings, per layer two LayerNorms, q/k/v/out and
    fc1/fc2 with biases; a final LayerNorm; the projector's RMSNorm and ``vision_hidden x text_hidden``."""
    from sim.catalog import _typed

    def get(field: str, default: int) -> int:
        return _typed(vc.get(field, default), f"vision_config.{field}", int, source)

    h, inter, layers = get("hidden_size", 1152), get("intermediate_size", 4304), get("num_hidden_layers", 27)
    patch, image, channels = get("patch_size", 14), get("image_size", 896), get("num_channels", 3)
    embeddings = channels * patch * patch * h + h + (image // patch) ** 2 * h
    per_layer = 4 * h + 4 * (h * h + h) + (h * inter + inter) + (inter * h + h)
    return embeddings + layers * per_layer + 2 * h + h + h * text_hidden


# -- what one decoder layer holds ---------------------------------------------------------------
def attention_linears(m, tp: int) -> list[Linear]:
    h = m.hidden_size
    heads = m.num_attention_heads // tp
    if m.kv_lora_rank:
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        out = []
        if m.q_lora_rank:
            out.append(Linear("fused_qkv_a_proj", m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim, h,
                              "attention", fused=2))
            out.append(Linear("q_b_proj", heads * qk, m.q_lora_rank, "attention"))
        else:
            out.append(Linear("q_proj", heads * qk, h, "attention"))
            out.append(Linear("kv_a_proj_with_mqa", m.kv_lora_rank + m.qk_rope_head_dim, h, "attention"))
        out.append(Linear("kv_b_proj", heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank, "attention"))
        out.append(Linear("o_proj", h, heads * m.v_head_dim, "attention"))
        return out
    hd = m.head_dim
    kv = m.kv_heads_per_rank(tp)
    return [Linear("qkv_proj", (heads + 2 * kv) * hd, h, "attention", fused=3),
            Linear("o_proj", h, heads * hd, "attention")]


def mlp_linears(m, layer: int, tp: int, moe=None) -> list[Linear]:
    """One layer's MLP on one GPU. ``moe`` (:class:`sim.parallel.MoESharding`) says how the routed
    experts are held; None: tensor parallelism ``tp`` alone (every expert, sharded over ``tp``)."""
    h = m.hidden_size
    if layer not in m.moe_layers:
        inter = -(-m.intermediate_size // tp)
        return [Linear("gate_up_proj", 2 * inter, h, "mlp", fused=2), Linear("down_proj", h, inter, "mlp")]
    experts = m.num_experts if moe is None else moe.local_experts
    inter = -(-m.moe_intermediate_size // (tp if moe is None else moe.tensor_parallel_size))
    out = [Linear("gate", m.num_experts, h, "router"),
           Linear("experts.w13", 2 * inter, h, "expert", copies=experts, fused=2),
           Linear("experts.w2", h, inter, "expert", copies=experts)]
    if m.num_shared_experts:
        shared = -(-m.num_shared_experts * m.moe_intermediate_size // tp)
        out += [Linear("shared_experts.gate_up_proj", 2 * shared, h, "mlp", fused=2),
                Linear("shared_experts.down_proj", h, shared, "mlp")]
    return out


def layer_linears(m, layer: int, tp: int = 1, moe=None) -> list[Linear]:
    return attention_linears(m, tp) + mlp_linears(m, layer, tp, moe)


def layer_other_params(m, layer: int, tp: int = 1, moe=None) -> int:
    """Norms, biases, sinks and router extras of one layer on one rank (all in the activation dtype)."""
    h = m.hidden_size
    heads = m.num_attention_heads // tp
    n = m.norms_per_layer * h
    if m.qk_norm:
        n += 2 * m.head_dim
    if m.kv_lora_rank:
        n += m.kv_lora_rank + (m.q_lora_rank or 0)  # kv_a_layernorm, q_a_layernorm
    if m.qkv_bias:
        n += (heads + 2 * m.kv_heads_per_rank(tp)) * m.head_dim
    if m.o_bias:
        n += h  # row-parallel bias: replicated
    if m.attention_sinks:
        n += heads
    if layer in m.moe_layers:
        if m.router_bias:
            n += m.num_experts
        if m.architecture == "deepseek_v3":
            n += m.num_experts  # e_score_correction_bias
        if m.expert_bias:
            experts = m.num_experts if moe is None else moe.local_experts
            inter = -(-m.moe_intermediate_size // (tp if moe is None else moe.tensor_parallel_size))
            n += experts * (2 * inter + h)  # w13 bias sharded, w2 bias on every rank
    return n


def embedding_params(m, tp: int) -> int:
    """embed_tokens and lm_head (unless tied) and the final norm on one rank, as in sim.catalog."""
    from sim.catalog import VOCAB_PADDING

    if tp == 1:
        rows = m.vocab_size
    else:
        rows = -(-(-(-m.vocab_size // VOCAB_PADDING) * VOCAB_PADDING) // tp)
    return (1 if m.tie_word_embeddings else 2) * rows * m.hidden_size + m.hidden_size


def num_params(m, tp: int = 1) -> int:
    """All parameters one of ``tp`` ranks holds (tp=1: the checkpoint's)."""
    layers = sum(sum(x.params for x in layer_linears(m, i, tp)) + layer_other_params(m, i, tp)
                 for i in range(m.num_hidden_layers))
    return layers + embedding_params(m, tp) + -(-m.vision_params // tp)


def active_params(m, include_embedding: bool = True) -> int:
    """Parameters one token passes through: all but the routed experts it is not sent to.

    ``include_embedding=False`` leaves out the embedding table (a lookup, not a multiply), as
    OpenAI's gpt-oss model card counts "active parameters"; the vision tower is left out."""
    total = num_params(m) - m.vision_params
    for i in m.moe_layers:
        idle = m.num_experts - m.experts_per_token
        total -= sum(x.params // x.copies * idle for x in mlp_linears(m, i, 1) if x.kind == "expert")
        if m.expert_bias:
            total -= idle * (2 * m.moe_intermediate_size + m.hidden_size)
    if not include_embedding:
        total -= m.vocab_size * m.hidden_size
    return total


def weight_bytes_per_gpu(m, tp: int, precision, moe=None) -> int:
    """Weights on one GPU: linear layers by the precision's rules, everything else in the
    activation dtype.

    * FP8 (``fp8``/``modelopt``, checkpoint or online): every linear layer except the router
      (vLLM builds it with ``quant_config=None``) and the modules the checkpoint ignores; routed
      experts included, with the same block or tensor scales per expert.
    * MXFP4 (gpt-oss): the routed experts only (the checkpoint's ``modules_to_not_convert`` names
      attention, router, embeddings and lm_head): 4 bits a weight plus one 8-bit (E8M0) scale per
      32 weights along the input dimension, i.e. 17/32 byte a weight.
    * INT4 (AWQ, GPTQ): see :func:`linear_bytes`.

    ``moe`` (:class:`sim.parallel.MoESharding`) places the routed experts (expert or data
    parallelism); None: every expert on every GPU, sharded over ``tp``.
    """
    return sum(weight_bytes_by_part(m, tp, precision, moe).values())


def weight_bytes_by_part(m, tp: int, precision, moe=None) -> dict[str, int]:
    """:func:`weight_bytes_per_gpu` split by where the bytes sit: ``attention`` (its linear layers),
    ``dense_mlp`` (dense MLPs and shared experts), ``routed_experts`` (their projections, scales and
    biases), ``router`` and ``other`` (embeddings, lm_head, norms, attention biases, vision tower).
    Routed experts follow ``moe``; all else is sharded by ``tp`` and replicated across DP ranks."""
    act = precision.activation_bytes if precision is not None else m.dtype_bytes
    align = getattr(precision, "moe_size_alignment", None) if precision is not None else None
    part = {"attention": 0, "dense_mlp": 0, "routed_experts": 0, "router": 0, "other": 0}
    name = {"attention": "attention", "mlp": "dense_mlp", "expert": "routed_experts", "router": "router"}
    part["other"] = (embedding_params(m, tp) + -(-m.vision_params // tp)) * act
    if precision is not None and precision.lm_head_quantized and not m.tie_word_embeddings:
        from sim.catalog import VOCAB_PADDING

        rows = m.vocab_size if tp == 1 else -(-(-(-m.vocab_size // VOCAB_PADDING) * VOCAB_PADDING) // tp)
        part["other"] += precision.linear_weight_bytes(rows, m.hidden_size) - rows * m.hidden_size * act
    moe_tp = tp if moe is None else moe.tensor_parallel_size
    for i in range(m.num_hidden_layers):
        other = layer_other_params(m, i, tp, moe)
        if i in m.moe_layers and m.expert_bias:
            experts = m.num_experts if moe is None else moe.local_experts
            expert_bias = experts * (2 * -(-m.moe_intermediate_size // moe_tp) + m.hidden_size)
            part["routed_experts"] += expert_bias * act
            other -= expert_bias
        part["other"] += other * act
        for x in layer_linears(m, i, tp, moe):
            if align and x.kind == "expert":
                x = _padded_expert(x, m, moe_tp, align)
            if x.kind == "expert" and precision is not None and precision.weight_scheme == "block":
                n, k = moe_fp8_block(m, moe_tp, precision.weight_block_size)
                part["routed_experts"] += x.params + 4 * x.copies * -(-x.out_features // n) * -(-x.in_features // k)
                continue
            part[name[x.kind]] += linear_bytes(x, precision, act)
    return part


def moe_fp8_block(m, tp: int, block: tuple[int, int]) -> tuple[int, int]:
    """The FP8 weight blocks of the experts under TP (vLLM ``fused_moe/oracle/fp8.py``,
    ``refine_fp8_moe_block_shape``): when the per-rank intermediate size does not tile into the
    checkpoint's blocks, vLLM refines the scales to ``gcd(block_n, block_k, intermediate/tp,
    hidden)`` (at least 32), e.g. Qwen3-235B-A22B-FP8 at TP8: 1536/8 = 192, blocks of 64x64."""
    import math

    n, k = block
    ispp = -(-m.moe_intermediate_size // tp)
    if ispp % n == 0 and (tp == 1 or ispp % k == 0):
        return block
    refine = math.gcd(n, k, ispp, m.hidden_size)
    return (refine, refine) if refine >= 32 else block


def _padded_expert(x: Linear, m, tp: int, align: tuple[int, int]) -> Linear:
    """An expert projection at the shapes vLLM's MXFP4 kernel allocates: hidden and the
    per-rank intermediate size rounded up to the kernel's multiples (sim.precision)."""
    def up(n: int, k: int) -> int:
        return -(-n // k) * k

    h, inter = up(m.hidden_size, align[0]), up(-(-m.moe_intermediate_size // tp), align[1])
    if x.name == "experts.w13":
        return Linear(x.name, 2 * inter, h, x.kind, x.copies, x.fused)
    return Linear(x.name, h, inter, x.kind, x.copies, x.fused)


def linear_bytes(x: Linear, precision, act: int) -> int:
    """One linear layer's bytes on one GPU. The router stays in the activation dtype under every
    method; MXFP4 quantizes the routed experts only; AWQ/GPTQ and FP8 every other linear layer
    (AWQ/GPTQ experts through ``AutoAWQMoEMethod``/``AutoGPTQMoEMethod``, the same packing)."""
    if precision is None or not precision.is_quantized or x.kind == "router":
        return x.params * act
    if precision.quantization == "mxfp4":
        if x.kind != "expert":
            return x.params * act
        return x.params // 2 + x.copies * x.out_features * -(-x.in_features // 32)
    return x.copies * precision.linear_weight_bytes(x.out_features, x.in_features)


# -- KV cache ----------------------------------------------------------------------------------
def kv_bytes_per_token_per_layer(m, tp: int, element: int) -> int:
    """One token's KV in one attention layer on one GPU.

    MLA keeps one latent "head" of ``kv_lora_rank + qk_rope_head_dim`` per layer (vLLM's
    ``MLAAttentionSpec``: ``num_kv_heads=1``, ``head_size=kv_lora_rank + qk_rope_head_dim``, no V)
    and every TP rank keeps all of it. Other attention: K and V of the rank's KV heads."""
    if m.kv_lora_rank:
        return (m.kv_lora_rank + m.qk_rope_head_dim) * element
    return 2 * m.kv_heads_per_rank(tp) * m.head_dim * element
