"""Calibration profiles: the step-time model's efficiencies, per GPU (and model, TP size).

A profile is YAML (``sim/data/calibration.yaml`` ships with the package; ``--calibration FILE``
selects another). Each entry names what it applies to and its coefficients; the most specific
entry wins: (gpu, model, tensor_parallel_size), then (gpu, model), then (gpu), then the
``default`` entry. Every entry says what it was fitted to.
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
    except yaml.YAMLError as exc:
        raise ConfigError(f"--calibration: {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("profiles"), list):
        raise ConfigError(f"{path}: expected a mapping with a 'profiles' list")
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
            StepCoefficients(**coeffs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.coefficients: {exc}") from None
        out.append(entry)
    return tuple(out)


def select(profile: tuple[dict, ...], gpu: str, model: str, tp: int) -> StepCoefficients:
    def score(entry: dict) -> int:
        match = entry.get("match", {}) or {}
        if match.get("gpu") not in (None, gpu):
            return -1
        if match.get("model") not in (None, model):
            return -1
        if match.get("tensor_parallel_size") not in (None, tp):
            return -1
        return ("gpu" in match) * 4 + ("model" in match) * 2 + ("tensor_parallel_size" in match)

    best = max(profile, key=score, default=None)
    if best is None or score(best) < 0:
        return StepCoefficients()
    return StepCoefficients(**best["coefficients"])


def coefficients_for(config, model, gpu) -> StepCoefficients:
    path = config.calibration or str(SHIPPED)
    return select(load_profile(path), gpu.name, model.name, config.tensor_parallel_size)
