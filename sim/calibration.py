"""Calibration profiles: the step-time model's efficiencies, per GPU (and model, TP size).

A profile is YAML (``sim/data/calibration.yaml`` ships with the package; ``--calibration FILE``
selects another). Each entry names what it applies to and its coefficients; the most specific
entry wins: (gpu, model, tensor_parallel_size), then (gpu, model), then (gpu), then the
``default`` entry. Every entry says what it was fitted to.

Entries are of two kinds (``coefficients.step_model``): ``operators`` entries hold the engine
core's CPU time and, under ``frontend``, the API server's (the GPU's time comes from measured
operator tables, see :mod:`sim.ops`); ``roofline`` entries hold the roofline's efficiencies, for
GPUs without tables. An entry that matches a ``vllm`` version describes measurements of an older
vLLM and is used only for them (``servelab validate``'s published points).
"""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache
from pathlib import Path

import yaml

from sim.errors import ConfigError
from sim.steptime import StepCoefficients

SHIPPED = Path(__file__).parent / "data" / "calibration.yaml"
COEFFICIENT_NAMES = tuple(f.name for f in fields(StepCoefficients))


@lru_cache(maxsize=16)
def load_profile(path: str) -> tuple[dict, ...]:
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--calibration: file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"--calibration {path}: is a folder; expected a calibration profile (YAML), "
                          f"such as the one `servelab calibrate fit -o FILE` writes") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--calibration {path}: not a text file; expected a calibration profile (YAML)") from None
    except OSError as exc:
        raise ConfigError(f"--calibration {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--calibration: {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("profiles"), list):
        raise ConfigError(f"--calibration {path}: expected a mapping with a 'profiles' list")
    out = []
    for i, entry in enumerate(doc["profiles"]):
        where = f"{path}: profiles[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(entry).__name__}")
        coeffs = entry.get("coefficients")
        if not isinstance(coeffs, dict):
            raise ConfigError(f"{where}.coefficients: missing or not a mapping")
        unknown = set(coeffs) - set(COEFFICIENT_NAMES)
        if unknown:
            raise ConfigError(
                f"{where}.coefficients: unknown field(s) {sorted(unknown)}; expected some of {list(COEFFICIENT_NAMES)}"
            )
        try:
            entry_coefficients(entry)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.coefficients: {exc}") from None
        frontend = entry.get("frontend")
        if frontend is not None:
            from sim.frontend import FrontendCoefficients

            try:
                FrontendCoefficients(**frontend)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}.frontend: {exc}") from None
        out.append(entry)
    return tuple(out)


def entry_coefficients(entry: dict | None) -> StepCoefficients:
    """An entry's coefficients. An entry that does not name its step model was fitted to the
    roofline (every profile before the operator tables was), and to vLLM versions that ran the
    CPU and the GPU one after the other."""
    if entry is None:
        return StepCoefficients()
    coeffs = dict(entry["coefficients"])
    coeffs.setdefault("step_model", "roofline")
    coeffs.setdefault("async_scheduling", coeffs["step_model"] == "operators")
    return StepCoefficients(**coeffs)


def select_entry(profile: tuple[dict, ...], gpu: str, model: str, tp: int, *,
                 step_model: str | None = None, vllm: str | None = None) -> dict | None:
    """The most specific entry that matches: (gpu, model, tensor_parallel_size), then (gpu,
    model), then (gpu), then the ``default``; None if nothing matches.

    ``step_model`` keeps only entries for that model ("operators" or "roofline"). Entries that
    match a ``vllm`` version (measurements of an older vLLM) are chosen only when that version
    is asked for: the reference points of ``servelab validate`` do; a user's run is today's vLLM.
    """
    best, best_score = None, -1
    for entry in profile:
        match = entry.get("match", {}) or {}
        if match.get("vllm") != vllm and (vllm is None or "vllm" in match):
            continue
        if any(match.get(k) not in (None, v) for k, v in
               (("gpu", gpu), ("model", model), ("tensor_parallel_size", tp))):
            continue
        if step_model is not None and entry["coefficients"].get("step_model", "roofline") != step_model:
            continue
        score = ("gpu" in match) * 4 + ("model" in match) * 2 + ("tensor_parallel_size" in match) + ("vllm" in match) * 8
        if score > best_score:
            best, best_score = entry, score
    return best


def select(profile: tuple[dict, ...], gpu: str, model: str, tp: int) -> StepCoefficients:
    """The coefficients for a run of today's vLLM: the operator entry where the GPU has measured
    operator tables, the roofline entry elsewhere."""
    from sim.ops.tables import AIC_SYSTEMS

    kind = "operators" if gpu in AIC_SYSTEMS else "roofline"
    entry = select_entry(profile, gpu, model, tp, step_model=kind)
    if entry is None and kind == "operators":
        entry = select_entry(profile, gpu, model, tp, step_model="roofline")
    return entry_coefficients(entry)


def frontend_for(config, model, gpu):
    """The serving front end's coefficients (:mod:`sim.frontend`): the ``frontend`` mapping of
    the operator entry that matches, or none (zeros)."""
    from sim.frontend import FrontendCoefficients

    path = config.calibration or str(SHIPPED)
    entry = select_entry(load_profile(path), gpu.name, model.name, config.tensor_parallel_size,
                         step_model="operators")
    return FrontendCoefficients(**((entry or {}).get("frontend") or {}))


def coefficients_for(config, model, gpu) -> StepCoefficients:
    path = config.calibration or str(SHIPPED)
    return select(load_profile(path), gpu.name, model.name, config.tensor_parallel_size)
