"""A checkpoint's own quantization: the ``quantization_config`` of its config.json, read as vLLM reads it.

vLLM 0.33 (``transformers_utils/config.py``) takes ``quantization_config`` from config.json, or,
when config.json has none, the whole of ``hf_quant_config.json`` beside it (ModelOpt 0.29 and
earlier wrote it there). ``transformers_utils/model_arch_config_convertor.py`` then names the
method: a ModelOpt file (``producer.name == "modelopt"``) whose ``quantization.quant_algo`` is
FP8, FP8_PER_CHANNEL_PER_TOKEN or FP8_PB_WO becomes ``quant_method: modelopt``. Three methods are
modelled here, the two FP8 ones and gpt-oss's MXFP4:

* ``fp8`` (``model_executor/layers/quantization/fp8.py``, ``Fp8Config.from_config``), e.g.
  Qwen/Qwen3-32B-FP8: ``activation_scheme`` ``static`` or ``dynamic`` (required); optional
  ``weight_block_size`` [n, k] (block-wise weight scales, dynamic activations only); without it
  one scale per weight tensor. ``ignored_layers`` (or ``modules_to_not_convert``) stay
  unquantized. Its KV cache stays in the model dtype unless ``--kv-cache-dtype`` says otherwise.
* ``modelopt`` (``modelopt.py``, ``ModelOptFp8Config``), e.g. nvidia/Llama-3.1-8B-Instruct-FP8:
  ``quant_algo`` FP8 (per-tensor weight and static per-tensor activation scales),
  FP8_PER_CHANNEL_PER_TOKEN or FP8_PB_WO (128x128 weight blocks); ``exclude_modules`` (or
  ``ignore``). A ``kv_cache_quant_algo`` of FP8 (or a ``kv_cache_scheme`` of 8-bit floats) turns
  ``--kv-cache-dtype auto`` into ``fp8_e4m3`` (``utils/torch_utils.py``,
  ``get_kv_cache_quant_algo_string``); an unknown one falls back to ``auto``, as vLLM does.

* ``mxfp4`` (gpt-oss): the MoE experts only; see :func:`_mxfp4`.
* ``awq`` and ``gptq`` (integer weights in groups along the input, made offline; vLLM 0.33 loads
  both through ``auto_awq.py``/``auto_gptq.py``): see :func:`_awq` and :func:`_gptq`.

Anything else (compressed-tensors, NVFP4, bitsandbytes ...) is a method vLLM
knows and ServeLab does not model: :func:`parse_quantization_config` names the field, the value
and what is modelled, and raises :class:`sim.errors.CatalogError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import CatalogError

MODELLED_METHODS = ("fp8", "modelopt", "mxfp4", "awq", "gptq")
MODELOPT_FP8_ALGOS = ("FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO")
MODELOPT_BLOCK = (128, 128)  # FP8_PB_WO's weight blocks (ModelOpt's 2-D block FP8)


@dataclass(frozen=True, slots=True)
class CheckpointQuant:
    """What a checkpoint's quantization_config says, in vLLM's terms."""

    method: str  # vLLM's quant method: "fp8" | "modelopt"
    weight_scheme: str  # "per-tensor" | "per-channel" | "block"
    activation_scheme: str  # "static" (scale in the checkpoint) | "dynamic" (computed per batch)
    weight_block_size: tuple[int, int] | None  # [n, k] of "block"
    kv_cache_dtype: str | None  # what --kv-cache-dtype auto becomes ("fp8_e4m3"), None: the model dtype
    ignored_layers: tuple[str, ...]  # modules left unquantized (lm_head, ...)
    description: str  # e.g. "modelopt FP8"
    warnings: tuple[str, ...] = ()  # what vLLM warns about while reading it
    # -- awq / gptq: integer weights in groups of ``group_size`` input channels ---------------
    weight_bits: int | None = None  # 4 (or 8)
    group_size: int | None = None  # input channels per scale; -1: one group per row (per channel)
    zero_points: bool = False  # AWQ's zero_point: an int zero per group, kept by Marlin
    lm_head_quantized: bool = False  # the config's "lm_head": true

    def is_ignored(self, module: str) -> bool:
        """Whether ``module`` (a vLLM module name such as "lm_head") is left unquantized."""
        from fnmatch import fnmatch

        return any(module == p or fnmatch(module, p) or p.rstrip("*").rstrip(".") == module
                   for p in self.ignored_layers)


def parse_quantization_config(qc, *, source: str) -> CheckpointQuant:
    """Read one ``quantization_config`` (or hf_quant_config.json) object; strict, like vLLM."""
    where = f"{source}: quantization_config"
    if not isinstance(qc, dict):
        raise CatalogError(f"{where}: expected a JSON object, found {_show(qc)}")
    method = _method(qc, where)
    if method == "modelopt":
        return _modelopt(qc, where)
    if method == "fp8":
        return _fp8(qc, where)
    if method == "mxfp4":
        return _mxfp4(qc, where)
    if method in ("awq", "gptq"):
        return _awq(qc, where) if method == "awq" else _gptq(qc, where)
    raise CatalogError(
        f"{where}.quant_method: {method!r} is not modelled; ServeLab models "
        f"{' and '.join(MODELLED_METHODS)} (FP8 weights: {', '.join(MODELOPT_FP8_ALGOS)} for modelopt). "
        f"Remove quantization_config to simulate the unquantized model"
    )


def _method(qc: dict, where: str) -> str:
    """vLLM's method name: ModelOpt files are recognised by their producer, others by quant_method."""
    producer = qc.get("producer")
    inner = qc.get("quantization")
    if isinstance(producer, dict) and producer.get("name") == "modelopt" and isinstance(inner, dict):
        algo = inner.get("quant_algo")
        if algo is not None:
            if not isinstance(algo, str) or algo.upper() not in MODELOPT_FP8_ALGOS:
                raise CatalogError(
                    f"{where}.quantization.quant_algo: {_show(algo)} is not modelled; ServeLab models the "
                    f"ModelOpt FP8 algorithms {', '.join(MODELOPT_FP8_ALGOS)}"
                )
            return "modelopt"
    method = qc.get("quant_method")
    if method is None:
        raise CatalogError(f"{where}: field 'quant_method' is missing; expected one of {', '.join(MODELLED_METHODS)}")
    if not isinstance(method, str):
        raise CatalogError(f"{where}.quant_method: expected a string, found {_show(method)}")
    return method.lower().replace("compressed_tensors", "compressed-tensors")


def _modelopt(qc: dict, where: str) -> CheckpointQuant:
    # ModelOpt writes either {"producer":..., "quantization": {...}} (hf_quant_config.json) or a
    # flat {"quant_method": "modelopt", "quant_algo": ...} (config.json, ModelOpt 0.31+).
    inner = qc.get("quantization")
    if "quantization" in qc:
        if not isinstance(inner, dict):
            raise CatalogError(f"{where}.quantization: expected a JSON object, found {_show(inner)}")
        body, prefix = inner, f"{where}.quantization"
        excluded = body.get("exclude_modules", [])
        excluded_field = "exclude_modules"
    else:
        body, prefix = qc, where
        excluded_field = "ignore" if "ignore" in qc else "exclude_modules"
        excluded = qc.get(excluded_field, [])
    algo = body.get("quant_algo")
    if not algo:
        raise CatalogError(f"{prefix}: field 'quant_algo' is missing; expected one of {', '.join(MODELOPT_FP8_ALGOS)}")
    if not isinstance(algo, str) or algo.upper() not in MODELOPT_FP8_ALGOS:
        raise CatalogError(
            f"{prefix}.quant_algo: {_show(algo)} is not modelled; ServeLab models the ModelOpt FP8 "
            f"algorithms {', '.join(MODELOPT_FP8_ALGOS)}"
        )
    algo = algo.upper()
    if not isinstance(excluded, list) or not all(isinstance(m, str) for m in excluded):
        raise CatalogError(f"{prefix}.{excluded_field}: expected a list of module names, found {_show(excluded)}")
    kv, warnings = _modelopt_kv(qc, body, prefix)
    scheme = {"FP8": "per-tensor", "FP8_PER_CHANNEL_PER_TOKEN": "per-channel", "FP8_PB_WO": "block"}[algo]
    return CheckpointQuant(
        method="modelopt",
        weight_scheme=scheme,
        activation_scheme="static" if algo == "FP8" else "dynamic",
        weight_block_size=MODELOPT_BLOCK if scheme == "block" else None,
        kv_cache_dtype=kv,
        ignored_layers=tuple(excluded),
        description=f"modelopt {algo}" + (" with FP8 KV cache" if kv else ""),
        warnings=warnings,
    )


def _modelopt_kv(qc: dict, body: dict, prefix: str) -> tuple[str | None, tuple[str, ...]]:
    """``get_kv_cache_quant_algo_string``: FP8 -> fp8_e4m3; None -> model dtype; unknown -> auto."""
    kv = body.get("kv_cache_scheme") or qc.get("kv_cache_scheme") or body.get("kv_cache_quant_algo") \
        or qc.get("kv_cache_quant_algo")
    if kv is None:
        return None, ()
    if isinstance(kv, dict):
        if kv.get("dynamic") is False and kv.get("num_bits") == 8 and kv.get("type") == "float":
            kv = "fp8"
        elif kv.get("num_bits") == 4 and kv.get("type") == "float":
            kv = "nvfp4"
    if isinstance(kv, str) and kv.lower() == "fp8":
        return "fp8_e4m3", ()
    if isinstance(kv, str) and kv.lower() == "nvfp4":
        raise CatalogError(f"{prefix}.kv_cache_quant_algo: 'NVFP4' is not modelled; ServeLab models an FP8 KV cache")
    # vLLM: "WARNING: Unknown kv_cache_quant_algo '...' in model config. Supported values: [...].
    # Falling back to 'auto'." We do the same, and keep the warning for the start-up lines.
    return None, (f"Unknown kv_cache_quant_algo '{kv}' in model config. Supported values: ['fp8', 'nvfp4']. "
                  f"Falling back to 'auto'.",)


def _fp8(qc: dict, where: str) -> CheckpointQuant:
    if "activation_scheme" not in qc:
        # vLLM: "Cannot find any of ['activation_scheme'] in the model's quantization config."
        raise CatalogError(f"{where}: field 'activation_scheme' is missing; the fp8 method needs static or dynamic")
    act = qc["activation_scheme"]
    if act not in ("static", "dynamic"):
        raise CatalogError(f"{where}.activation_scheme: expected static or dynamic, found {_show(act)}")
    block = qc.get("weight_block_size")
    if block is not None:
        if (not isinstance(block, list) or len(block) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
            raise CatalogError(f"{where}.weight_block_size: expected two positive integers [n, k], found {_show(block)}")
        if act != "dynamic":
            raise CatalogError(
                f"{where}.activation_scheme: block-wise weights (weight_block_size) need the dynamic activation "
                f"scheme, found {act!r}"
            )
    ignored = qc.get("ignored_layers") or qc.get("modules_to_not_convert") or []
    if not isinstance(ignored, list) or not all(isinstance(m, str) for m in ignored):
        raise CatalogError(f"{where}.ignored_layers: expected a list of module names, found {_show(ignored)}")
    scheme = "block" if block is not None else "per-tensor"
    return CheckpointQuant(
        method="fp8",
        weight_scheme=scheme,
        activation_scheme=act,
        weight_block_size=tuple(block) if block is not None else None,  # type: ignore[arg-type]
        kv_cache_dtype=None,
        ignored_layers=tuple(ignored),
        description="fp8, " + (f"{block[0]}x{block[1]} weight blocks" if block else "per-tensor scales")
        + f", {act} activations",
    )


def _mxfp4(qc: dict, where: str) -> CheckpointQuant:
    """gpt-oss's MXFP4 (vLLM ``mxfp4.py``, renamed ``gpt_oss_mxfp4`` for GptOss in
    ``models/config.py``): the MoE experts hold 4-bit E2M1 weights with one E8M0 scale per 32;
    everything in ``modules_to_not_convert`` (attention, router, embeddings, lm_head) stays in the
    model dtype, and vLLM quantizes no other linear layer with it (``Mxfp4Config.get_quant_method``
    returns an unquantized method for linear layers)."""
    ignored = qc.get("modules_to_not_convert") or qc.get("ignored_layers") or []
    if not isinstance(ignored, list) or not all(isinstance(m, str) for m in ignored):
        raise CatalogError(f"{where}.modules_to_not_convert: expected a list of module names, found {_show(ignored)}")
    return CheckpointQuant(
        method="mxfp4", weight_scheme="mxfp4", activation_scheme="dynamic", weight_block_size=None,
        kv_cache_dtype=None, ignored_layers=tuple(ignored),
        description="mxfp4, MoE experts only (4-bit weights, one 8-bit scale per 32)",
    )


def _int_field(qc: dict, names: tuple[str, ...], where: str, allowed=None) -> int:
    """The first of ``names`` present (vLLM's ``get_from_keys``), an integer, one of ``allowed``."""
    for name in names:
        if name in qc:
            value = qc[name]
            if not isinstance(value, int) or isinstance(value, bool) or (allowed and value not in allowed):
                want = f"one of {', '.join(map(str, allowed))}" if allowed else "an integer"
                raise CatalogError(f"{where}.{name}: expected {want}, found {_show(value)}")
            return value
    raise CatalogError(f"{where}: field {names[0]!r} is missing (vLLM reads {' or '.join(names)})")


def _group_size(qc: dict, where: str, names: tuple[str, ...]) -> int:
    g = _int_field(qc, names, where)
    if g != -1 and g <= 0:
        raise CatalogError(f"{where}.{names[-1]}: expected a positive number of input channels or -1 "
                           f"(one group per row), found {g}")
    return g


def _bool_field(qc: dict, name: str, where: str, default=None) -> bool:
    value = qc.get(name, default)
    if not isinstance(value, bool):
        if value is None:
            raise CatalogError(f"{where}: field {name!r} is missing; expected true or false")
        raise CatalogError(f"{where}.{name}: expected true or false, found {_show(value)}")
    return value


def _not_converted(qc: dict, where: str, field: str = "modules_to_not_convert") -> tuple[str, ...]:
    ignored = qc.get(field) or []
    if not isinstance(ignored, list) or not all(isinstance(m, str) for m in ignored):
        raise CatalogError(f"{where}.{field}: expected a list of module names, found {_show(ignored)}")
    return tuple(ignored)


def _awq(qc: dict, where: str) -> CheckpointQuant:
    """AWQ (``auto_awq.py``, ``AutoAWQConfig.from_config``): ``bits`` (or ``w_bit``; vLLM 0.33 takes
    4 or 8), ``group_size`` (or ``q_group_size``; -1 one group per row), ``zero_point``, optional
    ``lm_head`` and ``modules_to_not_convert``. Each linear layer holds ``qweight`` (bits per weight,
    packed in int32), ``qzeros`` (bits per group and output, packed) and ``scales`` (one per group
    and output, in the model dtype)."""
    bits = _int_field(qc, ("w_bit", "bits"), where, allowed=(4, 8))
    group = _group_size(qc, where, ("q_group_size", "group_size"))
    zero = _bool_field(qc, "zero_point", where)
    lm_head = _bool_field(qc, "lm_head", where, default=False)
    return CheckpointQuant(
        method="awq", weight_scheme="group", activation_scheme="none", weight_block_size=None,
        kv_cache_dtype=None, ignored_layers=_not_converted(qc, where),
        description=f"awq, {bits}-bit weights, groups of {group if group > 0 else 'a whole row'}"
        + (", zero points" if zero else ""),
        weight_bits=bits, group_size=group, zero_points=zero, lm_head_quantized=lm_head,
    )


def _gptq(qc: dict, where: str) -> CheckpointQuant:
    """GPTQ (``auto_gptq.py``, ``AutoGPTQConfig``): ``bits`` 4 or 8, ``group_size``, ``desc_act``,
    ``sym`` (vLLM 0.33 takes symmetric weights only: "Unsupported quantization config: bits=4,
    sym=False"), optional ``lm_head``. After loading, Marlin keeps ``qweight`` and ``scales`` and
    drops the symmetric ``qzeros`` (``kernels/linear/mixed_precision/marlin.py``)."""
    bits = _int_field(qc, ("bits",), where, allowed=(4, 8))
    group = _group_size(qc, where, ("group_size",))
    _bool_field(qc, "desc_act", where)
    sym = _bool_field(qc, "sym", where)
    if not sym:
        raise CatalogError(f"{where}.sym: false is not supported by vLLM 0.33 ('Unsupported quantization config: "
                           f"bits={bits}, sym=False'); it runs symmetric GPTQ (sym: true) only")
    lm_head = _bool_field(qc, "lm_head", where, default=False)
    return CheckpointQuant(
        method="gptq", weight_scheme="group", activation_scheme="none", weight_block_size=None,
        kv_cache_dtype=None, ignored_layers=(),
        description=f"gptq, {bits}-bit symmetric weights, groups of {group if group > 0 else 'a whole row'}",
        weight_bits=bits, group_size=group, zero_points=False, lm_head_quantized=lm_head,
    )


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
