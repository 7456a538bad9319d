"""What runs: the dtypes and kernels vLLM 0.33 picks for a model, a GPU and the precision flags.

``resolve_precision(model, gpu, config)`` follows vLLM's own rules, in the order vLLM applies
them, and raises :class:`sim.errors.ConfigError` where vLLM refuses. Each rule names the vLLM
file it comes from (paths under ``vllm/``, vLLM 0.33):

1. **Model dtype** (``config/model.py``: ``_get_and_verify_dtype``, ``_resolve_auto_dtype``;
   ``platforms/cuda.py``: ``supported_dtypes``, ``check_if_supports_dtype``). ``--dtype auto``
   takes the checkpoint's ``torch_dtype``; a float32 checkpoint goes to the GPU's first supported
   dtype (bfloat16 on compute capability 8.0+, float16 below); a bfloat16 checkpoint on a GPU
   without bfloat16 (below 8.0) falls back to float16 with a warning. An explicit
   ``--dtype bfloat16`` below 8.0 is refused.
2. **Quantization method** (``config/model.py``: ``_verify_quantization``;
   ``model_executor/model_loader/weight_utils.py``: ``get_quant_config``). A checkpoint's own
   method wins; ``--quantization`` must then name the same method (vLLM's "does not match" error),
   except that a ModelOpt FP8 checkpoint is read as ``modelopt`` whatever the flag says (its
   ``override_quantization_method``). On an unquantized checkpoint, ``--quantization fp8`` is
   online per-tensor FP8 (deprecated in favour of ``fp8_per_tensor``, with a warning);
   ``fp8_per_tensor``, ``fp8_per_channel`` and ``fp8_per_block`` (128x128) are the online
   shorthands (``config/quantization.py``); ``modelopt`` needs a ModelOpt checkpoint.
3. **Method limits** (``config/vllm.py``: ``_get_quantization_config``): the GPU's capability
   must reach the method's minimum (``fp8`` 7.5 in ``fp8.py``, ``modelopt`` 8.0 in
   ``modelopt.py``, online 7.5 in ``online/base.py``), and the model dtype must be bfloat16 or
   float16 (``get_supported_act_dtypes``). Block scales must tile each rank's shard
   (``quantization/utils/fp8_utils.py``: ``validate_fp8_block_shape``).
4. **FP8 GEMM kernel** (``model_executor/kernels/linear/__init__.py``, the ``_POSSIBLE_FP8_*``
   lists tried in order): per-tensor and per-channel FP8 run as W8A8 on FP8 tensor cores from
   8.9 (CUTLASS, ``csrc/.../scaled_mm_entry.cu``: SM89 with CUDA 12.4, SM90+; FlashInfer first on
   10.x for static per-tensor scales). Block-scaled FP8 runs as W8A8 from 9.0 (DeepGEMM or
   CUTLASS block kernels). Everywhere else from 7.5 vLLM falls back to **Marlin**, weight-only
   FP8: the weights stay 1 byte and are dequantized inside the GEMM, activations stay 16-bit
   (``kernels/linear/scaled_mm/marlin.py``, ``quantization/utils/marlin_utils_fp8.py``). So an
   A100 runs an FP8 checkpoint, at bfloat16 GEMM speed for large batches, with half the weight
   bytes to read.
5. **KV-cache dtype** (``config/cache.py``; ``utils/torch_utils.py``:
   ``resolve_kv_cache_dtype_string``). ``auto`` is the model dtype, or ``fp8_e4m3`` when a
   ModelOpt checkpoint declares an FP8 KV cache. ``fp8`` means ``fp8_e4m3``. An explicit
   ``bfloat16`` or ``float16`` must match the model dtype (it overrides a checkpoint's FP8 KV).
6. **Attention backend** (``platforms/cuda.py``: ``_get_backend_priorities``; each backend's
   ``supported_kv_cache_dtypes``, ``supports_compute_capability``, ``supported_dtypes`` in
   ``v1/attention/backends/``). Tried in order FLASH_ATTN, FLASHINFER, TRITON_ATTN,
   FLEX_ATTENTION (FLASHINFER first on 10.x). FlashAttention needs 8.0+ and float16/bfloat16 and reads an FP8 KV cache only
   as FA3 on 9.x or FA4 on 10.x, never e5m2 (``fa_utils.py``: ``flash_attn_supports_kv_cache_dtype``);
   FlashInfer (a vLLM dependency) takes 8.0 to 12.1 and every FP8 KV format; Triton takes any GPU
   but refuses an FP8 KV cache below 8.9 (``triton_attn.py``). So an FP8 KV cache works on every
   GPU of 8.0 and up (through FlashInfer below 9.0) and is refused on a T4.

The record it returns is what the memory model and the step time read: ``gemm_dtype`` (the key of
the measured GEMM tables), ``kv_table_dtype`` (of the attention tables), ``weight_bytes_per_param``
and ``kv_bytes_per_element``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ConfigError

DTYPE_FLAGS = ("auto", "half", "float16", "bfloat16", "float", "float32")
KV_CACHE_DTYPE_FLAGS = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16")
QUANTIZATION_FLAGS = ("fp8", "fp8_per_tensor", "fp8_per_channel", "fp8_per_block", "modelopt", "awq", "gptq", "mxfp4")
# Methods whose weights are made offline: the flag must match a checkpoint quantized that way.
CHECKPOINT_ONLY = {"modelopt": "modelopt", "awq": "awq", "gptq": "gptq", "mxfp4": "mxfp4"}
# vLLM's other names for the same checkpoint methods (override_quantization_method in auto_awq.py, auto_gptq.py)
METHOD_ALIASES = {"awq": ("awq", "awq_marlin", "auto_awq", "marlin"), "gptq": ("gptq", "gptq_marlin", "auto_gptq"),
                  "mxfp4": ("mxfp4", "gpt_oss_mxfp4")}
# vLLM 0.33's other --quantization names (model_executor/layers/quantization/__init__.py): known to
# vLLM, not modelled here. Named in the error so that a user knows which of the two it is.
VLLM_UNMODELLED_METHODS = (
    "compressed-tensors", "fbgemm_fp8",
    "fp_quant", "modelopt_fp4", "modelopt_mxfp8", "modelopt_mixed", "humming", "experts_int8", "quark",
    "moe_wna16", "torchao", "inc", "deepseek_v4_fp8", "online", "mxfp8",
    "int8_per_channel_weight_only", "nvfp4_per_token", "bitsandbytes",
)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8_e4m3": 1, "fp8_e5m2": 1}
_FLAG_DTYPE = {"half": "float16", "float16": "float16", "float": "float32", "float32": "float32", "bfloat16": "bfloat16"}
# get_min_capability() of each method's config class: fp8.py, modelopt.py, online/base.py, mxfp4.py,
# auto_awq.py (75), auto_gptq.py (60)
MIN_CAPABILITY = {"fp8": (7, 5), "modelopt": (8, 0), "online": (7, 5), "mxfp4": (8, 0), "awq": (7, 5), "gptq": (6, 0)}
ONLINE_SCHEMES = {"fp8": "per-tensor", "fp8_per_tensor": "per-tensor", "fp8_per_channel": "per-channel",
                  "fp8_per_block": "block"}
ONLINE_BLOCK = (128, 128)  # kFp8Static128BlockSym


@dataclass(frozen=True, slots=True)
class Precision:
    """The dtypes one engine runs with, resolved by :func:`resolve_precision`."""

    activation_dtype: str  # "bfloat16" | "float16" | "float32": the model dtype after --dtype
    gemm_dtype: str  # "bfloat16" | "float16" | "float32" | "fp8" | "fp8_block" | "fp8_marlin"
    kv_cache_dtype: str  # "bfloat16" | "float16" | "float32" | "fp8_e4m3" | "fp8_e5m2"
    quantization: str | None = None  # vLLM's method: None | "fp8" | "modelopt" | "fp8_per_tensor" | ...
    weight_scheme: str | None = None  # None | "per-tensor" | "per-channel" | "block"
    weight_block_size: tuple[int, int] | None = None  # [n, k] of block scales
    static_activation_scale: bool = False  # one input_scale per layer in the checkpoint (modelopt FP8)
    lm_head_quantized: bool = False  # ModelOpt quantizes lm_head unless exclude_modules names it
    linear_kernel: str | None = None  # the FP8 GEMM kernel vLLM selects, None when unquantized
    attention_backend: str = "FLASH_ATTN"
    # MXFP4 MoE: (hidden, intermediate per rank) rounded up to these multiples by the kernel vLLM picks
    moe_size_alignment: tuple[int, int] | None = None
    # AWQ / GPTQ (weight_scheme "group"): bits per weight, input channels per group (-1: a whole
    # row), and whether an integer zero point per group is kept (AWQ's zero_point)
    weight_bits: int | None = None
    group_size: int | None = None
    zero_points: bool = False
    source: str = "model dtype"  # where the precision comes from, in words
    log_lines: tuple[str, ...] = ()  # vLLM's start-up lines about it (warnings and info)

    # -- what the memory model and the step time read ------------------------------------------
    @property
    def is_quantized(self) -> bool:
        return self.quantization is not None

    @property
    def activation_bytes(self) -> int:
        return DTYPE_BYTES[self.activation_dtype]

    @property
    def weight_bytes_per_param(self) -> float:
        """Bytes per weight of the quantized linear layers (FP8: 1; INT4: 0.5; unquantized: the model dtype).

        Scales are counted apart by :meth:`linear_scale_bytes`: fp32, one per tensor (and one
        static input scale), one per output channel, or one per ``n x k`` block.
        """
        if self.weight_scheme == "group":
            return self.weight_bits / 8  # type: ignore[operator]
        return 1 if self.is_quantized else self.activation_bytes

    def linear_weight_bytes(self, out_features: int, in_features: int) -> int:
        """Bytes of one linear layer of ``out x in`` on one rank, scales and zero points included.

        AWQ/GPTQ (``auto_awq.py``, ``auto_gptq.py`` create_weights, then Marlin's repack, which keeps
        the sizes): ``qweight`` bits per weight; ``scales`` one per group of ``group_size`` input
        channels and output, in the model dtype; AWQ's ``qzeros`` bits per group and output (GPTQ's
        symmetric zeros are dropped after loading). Marlin's padding of odd shapes and GPTQ's
        ``desc_act`` permutation (an int32 per input channel) are not counted.
        """
        if self.weight_scheme == "group":
            bits = self.weight_bits or 4
            groups = 1 if self.group_size in (None, -1) else -(-in_features // self.group_size)
            zeros = groups * out_features * bits // 8 if self.zero_points else 0
            return out_features * in_features * bits // 8 + zeros + groups * out_features * self.activation_bytes
        if not self.is_quantized:
            return out_features * in_features * self.activation_bytes
        return out_features * in_features + self.linear_scale_bytes(out_features, in_features)

    @property
    def kv_bytes_per_element(self) -> int:
        return DTYPE_BYTES[self.kv_cache_dtype]

    @property
    def kv_table_dtype(self) -> str:
        """Key of the measured attention tables: "fp8" for an FP8 KV cache, else "bfloat16".

        float16 and float32 KV caches read the bfloat16 tables (float16 runs the same kernels at
        the same speed; float32 is not measured, and the step time says so).
        """
        return "fp8" if self.kv_cache_dtype.startswith("fp8") else "bfloat16"

    def linear_scale_bytes(self, out_features: int, in_features: int) -> int:
        """fp32 scale bytes of one quantized linear layer of ``out x in`` on one rank.

        A fused layer (qkv, gate_up) has one scale per logical weight in the checkpoint;
        vLLM merges them into one while loading (``process_fp8_weight_tensor_strategy``), and
        "Model loading took" is measured after that, so one per layer is counted.
        """
        if not self.is_quantized:
            return 0
        if self.weight_scheme == "block":
            n, k = self.weight_block_size  # type: ignore[misc]
            return 4 * (-(-out_features // n)) * (-(-in_features // k))
        if self.weight_scheme == "per-channel":
            return 4 * out_features
        return 4 * (1 + (1 if self.static_activation_scale else 0))

    def to_dict(self) -> dict:
        return {
            "activation_dtype": self.activation_dtype,
            "gemm_dtype": self.gemm_dtype,
            "kv_cache_dtype": self.kv_cache_dtype,
            "kv_table_dtype": self.kv_table_dtype,
            "quantization": self.quantization,
            "weight_scheme": self.weight_scheme,
            "weight_block_size": list(self.weight_block_size) if self.weight_block_size else None,
            "weight_bytes_per_param": self.weight_bytes_per_param,
            "kv_bytes_per_element": self.kv_bytes_per_element,
            "lm_head_quantized": self.lm_head_quantized,
            "linear_kernel": self.linear_kernel,
            "attention_backend": self.attention_backend,
            "moe_size_alignment": list(self.moe_size_alignment) if self.moe_size_alignment else None,
            "weight_bits": self.weight_bits,
            "group_size": self.group_size,
            "zero_points": self.zero_points,
            "source": self.source,
        }


def check_precision_flags(dtype: str, quantization: str | None, kv_cache_dtype: str) -> None:
    """The spelling of --dtype, --quantization and --kv-cache-dtype (EngineConfig calls it)."""
    if dtype not in DTYPE_FLAGS:
        raise ConfigError(f"--dtype: expected one of {', '.join(DTYPE_FLAGS)}, got {dtype!r}")
    if kv_cache_dtype not in KV_CACHE_DTYPE_FLAGS:
        raise ConfigError(
            f"--kv-cache-dtype: expected one of {', '.join(KV_CACHE_DTYPE_FLAGS)}, got {kv_cache_dtype!r}"
        )
    if quantization is not None and quantization not in QUANTIZATION_FLAGS:
        known = " (vLLM has it; ServeLab does not model it)" if quantization in VLLM_UNMODELLED_METHODS else ""
        raise ConfigError(
            f"--quantization: {quantization!r} is not modelled{known}; ServeLab models "
            f"{', '.join(QUANTIZATION_FLAGS)}"
        )


def resolve_precision(model, gpu, config=None) -> Precision:
    """The precision vLLM 0.33 runs ``model`` with on ``gpu`` under ``config``'s flags.

    ``config`` is anything with ``dtype``, ``quantization``, ``kv_cache_dtype`` and
    ``tensor_parallel_size`` (an :class:`sim.config.EngineConfig`); None means vLLM's defaults.
    """
    dtype_flag = getattr(config, "dtype", "auto")
    quant_flag = getattr(config, "quantization", None)
    kv_flag = getattr(config, "kv_cache_dtype", "auto")
    tp = getattr(config, "tensor_parallel_size", 1)
    # the ranks each routed expert is sharded over: tp x dp, or 1 under expert parallelism (sim.parallel)
    world = tp * getattr(config, "data_parallel_size", 1)
    moe_tp = 1 if getattr(config, "enable_expert_parallel", False) and world > 1 else world
    check_precision_flags(dtype_flag, quant_flag, kv_flag)
    cc = gpu.compute_capability
    lines: list[str] = []

    act = _model_dtype(model, gpu, dtype_flag, lines)
    quant = _quantization(model, gpu, quant_flag, act, tp, lines, moe_tp)
    method, scheme, block, static_act, lm_head_q, source = quant
    gemm, kernel = _gemm(act, method, scheme, cc, static_act, lines)
    if scheme == "group":
        gemm = f"int{model.quantization.weight_bits}_wo"  # no measured table: priced as 16-bit GEMMs, said so
    moe_alignment = None
    if method == "mxfp4":
        kernel, moe_alignment = _mxfp4_moe_backend(cc)

    ckpt_kv = model.quantization.kv_cache_dtype if model.quantization is not None else None
    kv_string = kv_flag if kv_flag != "auto" else (ckpt_kv or "auto")  # what vLLM's cache_dtype becomes
    if kv_string in ("bfloat16", "float16") and kv_string != act:
        # config/cache.py: "An explicit float16 or bfloat16 must match the model data type."
        raise ConfigError(f"--kv-cache-dtype {kv_string}: an explicit float16 or bfloat16 KV cache must match the "
                          f"model data type ({act}); use --kv-cache-dtype auto or {act}")
    kv = {"auto": act, "bfloat16": act, "float16": act, "fp8_e5m2": "fp8_e5m2"}.get(kv_string, "fp8_e4m3")
    if kv_string.startswith("fp8"):
        lines.append(f"Using {kv_string} data type to store kv cache. It reduces the GPU memory footprint and "
                     f"boosts the performance. Meanwhile, it may cause accuracy drop without a proper scaling factor")
    if getattr(model, "is_mla", False):
        backend = _mla_backend(gpu, kv, kv_flag, lines)
    else:
        backend = _attention_backend(gpu, act, kv, kv_string, kv_flag, lines,
                                     sinks=getattr(model, "attention_sinks", False))
    if kv_flag == "auto" and ckpt_kv:
        source += f"; KV cache {ckpt_kv} from the checkpoint"
    elif kv_flag != "auto":
        source += f"; --kv-cache-dtype {kv_flag}"
    return Precision(
        activation_dtype=act, gemm_dtype=gemm, kv_cache_dtype=kv, quantization=method, weight_scheme=scheme,
        weight_block_size=block, static_activation_scale=static_act, lm_head_quantized=lm_head_q,
        linear_kernel=kernel, attention_backend=backend, source=source, log_lines=tuple(lines),
        moe_size_alignment=moe_alignment,
        weight_bits=model.quantization.weight_bits if scheme == "group" else None,
        group_size=model.quantization.group_size if scheme == "group" else None,
        zero_points=model.quantization.zero_points if scheme == "group" else False,
    )


# -- 1. model dtype -------------------------------------------------------------------------------
def _torch(name: str) -> str:
    return f"torch.{name}"


def _model_dtype(model, gpu, flag: str, lines: list[str]) -> str:
    cc = gpu.compute_capability
    supported = ["bfloat16", "float16", "float32"] if cc >= (8, 0) else ["float16", "float32"]
    ckpt = model.dtype
    if flag == "auto":
        wanted = supported[0] if ckpt == "float32" else ckpt
        if wanted not in supported:
            lines.append(f"Your device '{gpu.name}' (with compute capability {_cc(cc)}) doesn't support "
                         f"{_torch(wanted)}. Falling back to {_torch(supported[0])} for compatibility.")
            wanted = supported[0]
    else:
        wanted = _FLAG_DTYPE[flag]
        if wanted == "bfloat16" and cc < (8, 0):
            # platforms/cuda.py: check_if_supports_dtype
            raise ConfigError(
                f"--dtype {flag}: Bfloat16 is only supported on GPUs with compute capability of at least 8.0; "
                f"{gpu.name} has compute capability {_cc(cc)}. Use --dtype half (float16) instead"
            )
    if wanted != ckpt:
        if wanted == "float32":
            lines.append(f"Upcasting {_torch(ckpt)} to {_torch(wanted)}.")
        elif ckpt == "float32":
            lines.append(f"Downcasting {_torch(ckpt)} to {_torch(wanted)}.")
        else:
            lines.append(f"Casting {_torch(ckpt)} to {_torch(wanted)}.")
    return wanted


# -- 2 and 3. quantization method and its limits ---------------------------------------------------
def _quantization(model, gpu, flag: str | None, act: str, tp: int, lines: list[str], moe_tp: int | None = None):
    """(method, weight scheme, block, static activation scale, lm_head quantized, source)."""
    ckpt = model.quantization
    if ckpt is not None:
        modelopt_fp8 = ckpt.method == "modelopt" and ckpt.weight_scheme == "per-tensor"
        alias = flag in METHOD_ALIASES.get(ckpt.method, ())
        if flag is not None and flag != ckpt.method and not modelopt_fp8 and not alias:
            raise ConfigError(
                f"--quantization {flag}: Quantization method specified in the model config ({ckpt.method}) does "
                f"not match the quantization method specified in the `quantization` argument ({flag}); "
                f"leave --quantization out to use the checkpoint's"
            )
        method, scheme, block = ckpt.method, ckpt.weight_scheme, ckpt.weight_block_size
        static_act = ckpt.activation_scheme == "static" and scheme == "per-tensor"
        lm_head_q = (ckpt.method == "modelopt" and not model.tie_word_embeddings and not ckpt.is_ignored("lm_head")) \
            or (ckpt.method in ("awq", "gptq") and ckpt.lm_head_quantized)
        source = f"config.json quantization_config: {ckpt.description}"
        lines.extend(ckpt.warnings)
        min_cap = MIN_CAPABILITY[method]
    elif flag is None:
        return None, None, None, False, False, f"model dtype ({model.dtype})"
    elif flag == "modelopt":
        raise ConfigError(
            f"--quantization modelopt: {model.name} has no ModelOpt quantization_config (or hf_quant_config.json); "
            f"modelopt loads checkpoints quantized by NVIDIA ModelOpt. To quantize this one at load time use "
            f"--quantization fp8_per_tensor"
        )
    elif flag in CHECKPOINT_ONLY:
        raise ConfigError(
            f"--quantization {flag}: {model.name} has no {flag} quantization_config in its config.json; {flag} "
            f"weights are made offline, so vLLM loads them only from a checkpoint quantized that way. Use such a "
            f"checkpoint (its config.json by path), or --quantization fp8_per_tensor to quantize at load time"
        )
    else:
        method, scheme = flag, ONLINE_SCHEMES[flag]
        block = ONLINE_BLOCK if scheme == "block" else None
        static_act, lm_head_q = False, False
        if flag == "fp8":
            lines.append("--quantization fp8 is deprecated for online quantization; use --quantization "
                         "fp8_per_tensor instead.")
        source = f"--quantization {flag} (weights quantized to FP8 at load time)"
        min_cap = MIN_CAPABILITY["online"]
    cc = gpu.compute_capability
    if cc < min_cap:
        raise ConfigError(
            f"{_where(ckpt, flag)}: The quantization method {method} is not supported for the current GPU "
            f"({gpu.name}). Minimum capability: {min_cap[0]}{min_cap[1]}. Current capability: {cc[0]}{cc[1]}. "
            f"{_gpus_from(min_cap)}"
        )
    if scheme == "group":
        _check_group_shape(model, tp, ckpt, moe_tp or tp)
    if act not in ("bfloat16", "float16"):
        raise ConfigError(
            f"--dtype: {_torch(act)} is not supported for quantization method {method}. Supported dtypes: "
            f"[torch.bfloat16, torch.float16]"
        )
    if scheme == "block" and not getattr(model, "is_mla", False):
        _check_block_shape(model, tp, block, _where(ckpt, flag))
    if scheme == "block" and getattr(model, "is_moe", False):
        from sim.architectures import moe_fp8_block

        moe_tp = moe_tp or tp
        refined = moe_fp8_block(model, moe_tp, block)
        if refined != tuple(block):
            lines.append(f"FP8 MoE block scales refined from {list(block)} to {list(refined)} to fit the "
                         f"TP-sharded intermediate size {-(-model.moe_intermediate_size // moe_tp)}.")
    return method, scheme, block, static_act, lm_head_q, source


def _gpus_from(min_cap: tuple[int, int]) -> str:
    """What would work: the catalog's GPUs of at least ``min_cap``."""
    from sim.catalog import get_gpu, known_gpus

    ok = [g for g in known_gpus() if get_gpu(g).compute_capability >= min_cap]
    return f"Use a GPU of compute capability {min_cap[0]}.{min_cap[1]} or newer ({', '.join(ok)})" if ok else ""


def _check_group_shape(model, tp: int, ckpt, moe_tp: int) -> None:
    """AWQ/GPTQ ``create_weights``: each rank's input channels of a row-parallel layer (o_proj,
    down_proj, the experts' w2) must hold whole groups ("The input size is not aligned with the
    quantized weight shape. This can be caused by too large tensor parallel size.")."""
    g = ckpt.group_size
    if g in (None, -1):
        return
    sizes = {"o_proj": model.num_attention_heads // tp * model.head_dim}
    if getattr(model, "is_mla", False):
        sizes["o_proj"] = model.num_attention_heads // tp * model.v_head_dim
    if not getattr(model, "is_moe", False) or len(model.moe_layers) < model.num_hidden_layers:
        sizes["down_proj"] = -(-model.intermediate_size // tp)
    if getattr(model, "is_moe", False):
        sizes["experts.w2"] = -(-model.moe_intermediate_size // moe_tp)
    for name, size in sizes.items():
        if size % g:
            raise ConfigError(
                f"--tensor-parallel-size {tp}: {name}'s {size} input channels per GPU do not hold whole "
                f"{ckpt.method} groups of {g} (quantization_config.group_size); vLLM: 'The input size is not "
                f"aligned with the quantized weight shape. This can be caused by too large tensor parallel "
                f"size.' Use a smaller --tensor-parallel-size"
                + (" or --enable-expert-parallel" if name == "experts.w2" else "")
            )


def _where(ckpt, flag) -> str:
    return "config.json quantization_config" if ckpt is not None else f"--quantization {flag}"


def _check_block_shape(model, tp: int, block: tuple[int, int], where: str) -> None:
    """``validate_fp8_block_shape``: each rank's shard of every linear layer tiles into blocks."""
    n, k = block
    hd = model.head_dim
    q = model.num_attention_heads // tp * hd
    kv = model.kv_heads_per_rank(tp) * hd
    inter = -(-model.intermediate_size // tp)
    outputs = [q, kv, kv, inter, inter] if tp > 1 else [q, kv, inter]  # merged qkv / gate_up: all but the last
    inputs = [q, inter] if tp > 1 else []  # row-parallel o_proj and down_proj
    for size in outputs:
        if size % n:
            raise ConfigError(f"{where}: Weight output_partition_size = {size} is not divisible by weight "
                              f"quantization block_n = {n} (tensor parallelism {tp}); try another "
                              f"--tensor-parallel-size")
    for size in inputs:
        if size % k:
            raise ConfigError(f"{where}: Weight input_size_per_partition = {size} is not divisible by weight "
                              f"quantization block_k = {k} (tensor parallelism {tp}); try another "
                              f"--tensor-parallel-size")


# -- 4. GEMM kernel --------------------------------------------------------------------------------
def _gemm(act: str, method, scheme, cc, static_act: bool, lines: list[str]) -> tuple[str, str | None]:
    if method is None:
        return act, None
    if method == "mxfp4":  # only the experts are MXFP4; the dense GEMMs run in the model dtype
        return act, "MXFP4 fused MoE (experts only)"
    if scheme == "group":  # weight-only integers, dequantized inside the GEMM; activations stay 16-bit
        return "int_wo", "a mixed-precision weight-only kernel (vLLM's choose_mp_linear_kernel)"
    native = cc >= (9, 0) if scheme == "block" else cc >= (8, 9)
    if native:
        if scheme == "block":
            return "fp8_block", "DeepGemmFp8BlockScaledMMKernel or CutlassFp8BlockScaledMMKernel"
        if cc >= (10, 0) and static_act:
            return "fp8", "FlashInferFP8ScaledMMLinearKernel"
        return "fp8", "CutlassFP8ScaledMMLinearKernel"
    lines.append("Your GPU does not have native support for FP8 computation but FP8 quantization is being used. "
                 "Weight-only FP8 compression will be used leveraging the Marlin kernel. This may degrade "
                 "performance for compute-heavy workloads.")
    return "fp8_marlin", "MarlinFP8ScaledMMLinearKernel"


def _mxfp4_moe_backend(cc: tuple[int, int]) -> tuple[str, tuple[int, int]]:
    """gpt-oss's MXFP4 experts: the backend vLLM picks (``fused_moe/oracle/mxfp4.py``,
    ``_get_priority_backends_for_gpt_oss``, first supported) and how it pads the expert shapes
    (``mxfp4_round_up_hidden_size_and_intermediate_size``), as (hidden, intermediate) multiples.
    On 10.x FlashInfer's TRT-LLM kernel (128 intermediate, 256 hidden); on 9.x and 11-12.x OpenAI's
    Triton kernels (intermediate to 64; ``_triton_kernel_moe_supports_current_device``: 9.0 to
    12.x, ordered after Marlin on 12.x); below 9.0 Marlin (128, 256)."""
    if cc[0] == 10:
        return "FLASHINFER_TRTLLM_MXFP4_BF16", (256, 128)
    if cc[0] == 9 or cc[0] == 11:
        return "TRITON (OpenAI triton_kernels)", (1, 64)
    return "MARLIN", (256, 128)


# -- 6. attention backend --------------------------------------------------------------------------
def _attention_backend(gpu, act: str, kv: str, kv_string: str, kv_flag: str, lines: list[str],
                       sinks: bool = False) -> str:
    """The backend vLLM picks (see the module docstring, item 6). A model with attention sinks
    (gpt-oss) needs a backend whose ``supports_sink`` holds: FlashAttention only as FA3 (9.x) or
    FA4 (10.x) (``fa_utils.py``: ``flash_attn_supports_sinks``), FlashInfer only through its TRT-LLM
    kernels on 10.x (``flashinfer.py``: ``supports_sink``), Triton everywhere; FlexAttention none."""
    cc = gpu.compute_capability
    fp8_kv = kv.startswith("fp8")
    first = ["FLASHINFER", "FLASH_ATTN"] if cc[0] == 10 else ["FLASH_ATTN", "FLASHINFER"]
    valid = []
    for backend in [*first, "TRITON_ATTN", "FLEX_ATTENTION"]:
        if backend == "FLASH_ATTN":
            ok = cc >= (8, 0) and act != "float32" and (
                not fp8_kv or (kv == "fp8_e4m3" and cc[0] in (9, 10))) and (not sinks or cc[0] in (9, 10))
        elif backend == "FLASHINFER":
            ok = (8, 0) <= cc <= (12, 1) and act != "float32" and (not sinks or cc[0] == 10)
        elif backend == "FLEX_ATTENTION":  # never first: listed, as vLLM lists it, when it could run
            ok = not fp8_kv and not sinks
        else:
            ok = True
        if ok:
            valid.append(backend)
    chosen = valid[0]
    if chosen == "TRITON_ATTN" and fp8_kv and cc < (8, 9):
        flag = f"--kv-cache-dtype {kv_flag}" if kv_flag != "auto" else "the checkpoint's kv_cache_quant_algo (FP8)"
        # Why neither FlashAttention nor FlashInfer took it: the GPU is too old, or (from 8.0) the
        # model's attention sinks, which they serve only on 9.x/10.x (see the docstring).
        if cc < (8, 0):
            others = "FlashAttention and FlashInfer need 8.0"
        elif sinks:
            others = ("the model's attention sinks need FlashAttention 3 (9.x) or FlashInfer's TRT-LLM kernels "
                      "(10.x), so only Triton runs them here")
        else:
            others = "FlashAttention and FlashInfer do not run float32"
        suggested = act if act in ("float16", "bfloat16") else "auto"
        raise ConfigError(
            f"{flag}: FP8 KV cache is not supported by the Triton attention backend on {gpu.name} (compute "
            f"capability {_cc(cc)}); native FP8 (fp8e4nv) requires SM89+, and {others}. "
            f"Re-run with --kv-cache-dtype {suggested}"
        )
    lines.append(f"Using {chosen} attention backend out of potential backends: "
                 f"[{', '.join(repr(b) for b in valid)}].")
    return chosen


def _mla_backend(gpu, kv: str, kv_flag: str, lines: list[str]) -> str:
    """MLA models (DeepSeek) take vLLM's MLA backends (``platforms/cuda.py``, ``use_mla``): on 9.x
    FLASH_ATTN_MLA first (FA3), on 10.x FLASHINFER_MLA, elsewhere TRITON_MLA (each backend's
    ``supports_compute_capability`` in ``v1/attention/backends/mla/``). FLASHINFER_MLA's kernels
    take blocks of 32 or 64 tokens, so on 10.x vLLM raises the block size to 32; ServeLab plans
    with ``--block-size`` as given (pass 32 there).

    An FP8 KV cache (``kv``) drops the backends whose ``supported_kv_cache_dtypes`` lack it:
    FLASH_ATTN_MLA stores only 16-bit, so on 9.x FLASHMLA comes first; the others store
    fp8_e4m3 and none fp8_e5m2."""
    major = gpu.compute_capability[0]
    valid = {9: ["FLASH_ATTN_MLA", "FLASHMLA", "TRITON_MLA"],
             10: ["FLASHINFER_MLA", "CUTLASS_MLA", "FLASHMLA", "TRITON_MLA"]}.get(major, ["TRITON_MLA"])
    if kv == "fp8_e5m2":
        raise ConfigError(f"--kv-cache-dtype {kv_flag}: no MLA attention backend of vLLM stores an fp8_e5m2 KV "
                          f"cache (on {gpu.name}: {', '.join(valid)}); use --kv-cache-dtype fp8 (= fp8_e4m3) or auto")
    if kv.startswith("fp8"):
        valid = [b for b in valid if b != "FLASH_ATTN_MLA"]
    lines.append(f"Using {valid[0]} attention backend out of potential backends: "
                 f"[{', '.join(repr(b) for b in valid)}].")
    return valid[0]


def _cc(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"
