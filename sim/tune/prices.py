"""What a GPU-hour costs: the shipped table (``sim/data/gpu_prices.yaml``) or the user's.

Every figure carries its source and date; the table is data, not code, so that a team can put
its own negotiated prices in a file and pass it with ``servelab tune --gpu-prices FILE``.
Reading that file is the CLI's job (``sim`` does no user I/O); :func:`prices_from_doc` checks
its parsed contents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from sim.catalog import get_gpu
from sim.errors import CatalogError, ConfigError


@dataclass(frozen=True, slots=True)
class GPUPrice:
    gpu: str  # the catalog's name
    usd_per_gpu_hour: float
    source: str
    date: str


def prices_from_doc(doc, *, origin: str = "the price table", strict: bool = True) -> dict[str, GPUPrice]:
    """``{gpus: {NAME: {usd_per_gpu_hour, source, date}}}`` -> prices by catalog GPU name.

    ``strict``: a GPU the catalog does not know is an error (a user's file); otherwise it is
    skipped (the shipped table may price GPUs this version's catalog does not have yet)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("gpus"), dict):
        raise ConfigError(f"{origin}: expected a mapping 'gpus:' of GPU name -> {{usd_per_gpu_hour, source, date}}")
    out: dict[str, GPUPrice] = {}
    named: dict[str, str] = {}  # catalog name -> the name the table gave it
    for name, entry in doc["gpus"].items():
        where = f"{origin}: gpus.{name}"
        try:
            gpu = get_gpu(str(name)).name
        except CatalogError as exc:
            if not strict:
                continue
            raise ConfigError(f"{where}: {exc}") from None
        if gpu in named:  # two names for one GPU ("h100" and "h100-80gb"): which price is meant?
            raise ConfigError(f"{where}: {name} is {gpu}, already priced as gpus.{named[gpu]}; keep one entry")
        named[gpu] = name
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping with usd_per_gpu_hour, source and date")
        price = entry.get("usd_per_gpu_hour")
        if not _positive_finite(price):
            raise ConfigError(f"{where}.usd_per_gpu_hour: expected a positive number of US dollars, got {price!r}")
        for key in ("source", "date"):
            if not str(entry.get(key) or "").strip():
                raise ConfigError(f"{where}.{key}: missing; every price needs its source and the date it was published")
        out[gpu] = GPUPrice(gpu, float(price), str(entry["source"]), str(entry["date"]))
    return out


def _positive_finite(value) -> bool:
    """A number of dollars: not a bool (YAML's ``yes``), finite, above 0. An int too large for a
    float (YAML reads 400 digits as an int) is refused here, not left to overflow later."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value > 0 and math.isfinite(float(value))
    except OverflowError:
        return False


@lru_cache(maxsize=1)
def shipped_prices() -> dict[str, GPUPrice]:
    path = resources.files("sim") / "data" / "gpu_prices.yaml"
    return prices_from_doc(yaml.safe_load(path.read_text(encoding="utf-8")), origin="sim/data/gpu_prices.yaml", strict=False)
