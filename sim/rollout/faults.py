"""Injected faults: ``[stable:|canary:]KIND=VALUE[@START[-END]]`` (DESIGN.md).

The target is the canary (the new version) unless ``stable:`` is given. START and END are
durations from the rollout's start (``30m``, ``1h``); without them the fault lasts the whole
run. Kinds and values:

| kind        | value                                   | effect in the fleet                          |
|-------------|-----------------------------------------|----------------------------------------------|
| error-rate  | fraction, 0.02                          | that share of requests answer 500            |
| latency     | multiplier, 4x                          | every request's duration times 4 (a slow proxy or dependency) |
| slow-gpu    | step-time multiplier, 2x                | each engine step takes 2x: through the engine surface |
| kv-leak     | fraction of KV blocks lost per hour     | free KV shrinks over time: preemptions, then queueing |
| crash-loop  | mean time between crashes, 10m          | each pod crashes that often; requests to it fail while it restarts |
| cost        | output-token multiplier, 3x             | longer outputs: more tokens, cost and latency |
| price       | price-per-token multiplier, 3x          | same tokens, same latency, a higher price (a canary routed to a bigger model) |
| quality     | change in judge score, -0.15            | judged responses score that much lower       |
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from sim.errors import ServeLabError
from sim.rollout.durations import parse_go_duration

KINDS = ("error-rate", "latency", "slow-gpu", "kv-leak", "crash-loop", "cost", "price", "quality")
TARGETS = ("canary", "stable")
_EXAMPLES = {
    "error-rate": "error-rate=0.02",
    "latency": "latency=4x",
    "slow-gpu": "slow-gpu=2x",
    "kv-leak": "kv-leak=0.5",
    "crash-loop": "crash-loop=10m",
    "cost": "cost=3x",
    "price": "price=3x",
    "quality": "quality=-0.15",
}
GRAMMAR = "[stable:|canary:]KIND=VALUE[@START[-END]]"


class FaultSpecError(ServeLabError):
    """A --fault SPEC that does not parse."""


@dataclass(frozen=True)
class Fault:
    kind: str
    value: float  # fraction, multiplier, per-hour fraction, seconds (crash-loop) or delta
    target: str = "canary"
    start_s: float = 0.0
    end_s: float | None = None
    spec: str = ""

    def active(self, t_s: np.ndarray) -> np.ndarray:
        t = np.asarray(t_s, dtype=float)
        on = t >= self.start_s
        if self.end_s is not None:
            on &= t < self.end_s
        return on


def parse_fault(text: str) -> Fault:
    """Parse one SPEC; any malformed input raises FaultSpecError with what was expected."""
    if not isinstance(text, str):
        raise FaultSpecError(f"--fault: expected {GRAMMAR}, got {text!r}")
    spec = text.strip()
    where = f"--fault {text!r}"
    target = "canary"
    head, sep, when = spec.partition("@")
    if ":" in head.split("=", 1)[0]:
        target, _, head = head.partition(":")
        if target not in TARGETS:
            raise FaultSpecError(f"{where}: target must be stable: or canary:, got {target + ':'!r} (form: {GRAMMAR})")
    kind, eq, raw = head.partition("=")
    kind = kind.strip()
    if not eq:
        raise FaultSpecError(f"{where}: expected KIND=VALUE, e.g. error-rate=0.02 (form: {GRAMMAR})")
    if kind not in KINDS:
        raise FaultSpecError(f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    value = _parse_value(kind, raw.strip(), where)
    start_s, end_s = 0.0, None
    if sep:
        start_txt, dash, end_txt = when.partition("-")
        start_s = _parse_time(start_txt, where, "START")
        if dash:
            end_s = _parse_time(end_txt, where, "END")
            if end_s <= start_s:
                raise FaultSpecError(f"{where}: END ({end_txt}) must be after START ({start_txt})")
    return Fault(kind, value, target, start_s, end_s, spec)


def _parse_time(txt: str, where: str, what: str) -> float:
    txt = txt.strip()
    try:
        s = parse_go_duration(txt)
    except ValueError:
        raise FaultSpecError(f"{where}: {what} must be a duration like 30m or 1h, got {txt!r}") from None
    if not math.isfinite(s):
        raise FaultSpecError(f"{where}: {what} must be a finite duration, got {txt!r}")
    return s


def _number(raw: str, where: str, kind: str) -> float:
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", raw):
        raise FaultSpecError(f"{where}: expected a number for {kind}, got {raw!r} (e.g. {_EXAMPLES[kind]})")
    v = float(raw)
    if not math.isfinite(v):
        raise FaultSpecError(f"{where}: expected a finite number for {kind}, got {raw!r}")
    return v


def _parse_value(kind: str, raw: str, where: str) -> float:
    if kind in ("latency", "slow-gpu", "cost", "price"):
        v = _number(raw[:-1] if raw.lower().endswith("x") else raw, where, kind)
        if not 0 < v <= 1000:
            raise FaultSpecError(f"{where}: {kind} multiplier must be in (0, 1000], got {raw!r} (e.g. {_EXAMPLES[kind]})")
        return v
    if kind == "crash-loop":
        try:
            v = parse_go_duration(raw)
        except ValueError:
            raise FaultSpecError(f"{where}: crash-loop takes the mean time between crashes, like 10m, got {raw!r}") from None
        if not 10 <= v < math.inf:
            raise FaultSpecError(f"{where}: crash-loop mean time between crashes must be at least 10s, got {raw!r}")
        return v
    v = _number(raw, where, kind)
    if kind == "error-rate" and not 0 <= v <= 1:
        raise FaultSpecError(f"{where}: error-rate is a fraction from 0 to 1, got {raw!r}")
    if kind == "kv-leak" and not 0 <= v <= 100:
        raise FaultSpecError(f"{where}: kv-leak is the fraction of KV blocks lost per hour (0 to 100), got {raw!r}")
    if kind == "quality" and not -1 <= v <= 1:
        raise FaultSpecError(f"{where}: quality is a change in judge score from -1 to 1, got {raw!r}")
    return v


@dataclass(frozen=True)
class Effects:
    """Per-interval fault effects on one version (arrays over the intervals' start times)."""

    error_rate: np.ndarray
    latency_mult: np.ndarray
    step_mult: np.ndarray
    kv_lost_frac: np.ndarray
    crash_mtbc_s: np.ndarray  # inf: no crash loop
    cost_mult: np.ndarray
    quality_delta: np.ndarray
    price_mult: np.ndarray


def effects(faults: tuple[Fault, ...], target: str, t_s: np.ndarray) -> Effects:
    """Combine every fault on ``target`` active at each time (multipliers multiply, rates add)."""
    t = np.asarray(t_s, dtype=float)
    n = t.shape
    err, lat, step = np.zeros(n), np.ones(n), np.ones(n)
    kv, mtbc, cost, qual = np.zeros(n), np.full(n, np.inf), np.ones(n), np.zeros(n)
    price = np.ones(n)
    for f in faults:
        if f.target != target:
            continue
        on = f.active(t)
        if f.kind == "error-rate":
            err = np.where(on, 1 - (1 - err) * (1 - f.value), err)
        elif f.kind == "latency":
            lat = np.where(on, lat * f.value, lat)
        elif f.kind == "slow-gpu":
            step = np.where(on, step * f.value, step)
        elif f.kind == "kv-leak":
            lost = np.clip(f.value * (t - f.start_s) / 3600.0, 0.0, 1.0)
            kv = np.where(on, 1 - (1 - kv) * (1 - lost), kv)
        elif f.kind == "crash-loop":
            mtbc = np.where(on, np.minimum(mtbc, f.value), mtbc)
        elif f.kind == "cost":
            cost = np.where(on, cost * f.value, cost)
        elif f.kind == "price":
            price = np.where(on, price * f.value, price)
        elif f.kind == "quality":
            qual = np.where(on, qual + f.value, qual)
    return Effects(err, lat, step, kv, mtbc, cost, qual, price)
