"""Fault specs (DESIGN.md's grammar) and what each one does to the emulator.

``[stable:|canary:]KIND=VALUE[@START[-END]]``; START and END are durations from the server's
start (``30s``, ``5m``, ``1h``, ``1h30m``, or plain seconds). The rollout simulator has its own
parser (``sim/rollout/faults.py``); this small one keeps the emulator independent of it until
the two are merged, and both follow the same grammar.

What each kind does here (the server is one version, one pod):

=============  =======================  ===================================================
kind           value                    effect in the emulator
=============  =======================  ===================================================
error-rate     fraction, 0..1           that share of requests get an HTTP 500
latency        multiplier (``3x``)      token delivery is stretched: a token the engine
                                        makes ``d`` seconds after arrival leaves at ``M*d``
slow-gpu       multiplier (``2x``)      the engine's step time is multiplied
kv-leak        fraction per hour        that share of the KV blocks is lost each hour
crash-loop     duration (``10m``)       mean time between crashes; each crash kills the
                                        requests in flight and the server is down (health
                                        503, requests 503) for ``min(30 s, MTBF / 4)``
cost           multiplier (``2x``)      answers that end by themselves get that much longer
quality        score change (``-0.15``) that share (here: the absolute value) of built-in
                                        questions gets a wrong answer
=============  =======================  ===================================================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sim.errors import ConfigError

KINDS = ("error-rate", "latency", "slow-gpu", "kv-leak", "crash-loop", "cost", "quality")
TARGETS = ("canary", "stable")

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    value: float
    target: str = "canary"
    start_s: float = 0.0
    end_s: float = math.inf
    spec: str = ""

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s


def parse_duration_s(text: str, where: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    m = _DURATION_RE.match(text)
    if not text or not m or not any(m.groups()):
        raise ConfigError(f"{where}: expected a duration such as 90s, 30m, 1h or 1h30m, got {text!r}")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def _multiplier(text: str, where: str) -> float:
    raw = text[:-1] if text.lower().endswith("x") else text
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{where}: expected a multiplier such as 3x, got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"{where}: expected a multiplier above 0, got {text!r}")
    return value


def _number(text: str, where: str, lo: float, hi: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number in [{lo}, {hi}], got {text!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: expected a number in [{lo}, {hi}], got {text!r}")
    return value


def parse_fault(spec: str, where: str = "--fault") -> Fault:
    """Parse one SPEC; errors name the flag, show the spec and say what was expected."""
    here = f"{where} {spec!r}"
    body = spec.strip()
    target = "canary"
    if ":" in body.split("=", 1)[0]:
        target, body = body.split(":", 1)
        if target not in TARGETS:
            raise ConfigError(f"{here}: the target before ':' must be canary or stable, got {target!r}")
    if "=" not in body:
        raise ConfigError(f"{here}: expected KIND=VALUE[@START[-END]], e.g. error-rate=0.02@10m")
    kind, rest = body.split("=", 1)
    kind = kind.strip()
    if kind not in KINDS:
        raise ConfigError(f"{here}: unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
    value_text, _, window = rest.partition("@")
    start_s, end_s = 0.0, math.inf
    if window:
        start_text, dash, end_text = window.partition("-")
        start_s = parse_duration_s(start_text, f"{here} START")
        if dash:
            end_s = parse_duration_s(end_text, f"{here} END")
            if end_s <= start_s:
                raise ConfigError(f"{here}: END must come after START")
    if kind == "error-rate":
        value = _number(value_text, here, 0.0, 1.0)
    elif kind in ("latency", "slow-gpu", "cost"):
        value = _multiplier(value_text, here)
    elif kind == "kv-leak":
        value = _number(value_text, here, 0.0, 1.0)
    elif kind == "crash-loop":
        value = parse_duration_s(value_text, f"{here} VALUE")
        if value <= 0:
            raise ConfigError(f"{here}: the mean time between crashes must be above 0")
    else:  # quality
        value = _number(value_text, here, -1.0, 1.0)
    return Fault(kind=kind, value=value, target=target, start_s=start_s, end_s=end_s, spec=spec.strip())


def role_of_service(service: str) -> str | None:
    """``ai-api-canary`` -> canary, ``ai-api-stable`` -> stable, anything else -> None."""
    for role in TARGETS:
        if service.endswith(f"-{role}"):
            return role
    return None


def applies(fault: Fault, service: str) -> bool:
    """A fault aimed at the other version does not apply to this server.

    The same fault list can then be given to the stable and the canary pods. A server whose
    service name says neither takes every fault it is given."""
    role = role_of_service(service)
    return role is None or role == fault.target


def crash_downtime_s(mtbf_s: float) -> float:
    return min(30.0, mtbf_s / 4)


class FaultSet:
    """The faults in force, and the combined effect at a time (seconds since the server's start)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> bool:
        if not applies(fault, self.service):
            return False
        self.faults.append(fault)
        return True

    def clear(self) -> None:
        self.faults.clear()

    def active(self, kind: str, t_s: float) -> list[Fault]:
        return [f for f in self.faults if f.kind == kind and f.active(t_s)]

    def product(self, kind: str, t_s: float) -> float:
        """Multipliers combine by product (two latency faults of 2x make 4x)."""
        out = 1.0
        for f in self.active(kind, t_s):
            out *= f.value
        return out

    def error_rate(self, t_s: float) -> float:
        ok = 1.0
        for f in self.active("error-rate", t_s):
            ok *= 1.0 - f.value
        return 1.0 - ok

    def wrong_share(self, t_s: float) -> float:
        """Share of built-in questions answered wrong: the quality drops, added, as a fraction."""
        return min(1.0, sum(max(0.0, -f.value) for f in self.active("quality", t_s)))

    def kv_leak_per_hour(self, t_s: float) -> float:
        return sum(f.value for f in self.active("kv-leak", t_s))

    def describe(self) -> list[dict]:
        return [
            {"spec": f.spec, "kind": f.kind, "value": f.value, "target": f.target,
             "start_s": f.start_s, "end_s": None if math.isinf(f.end_s) else f.end_s}
            for f in self.faults
        ]
