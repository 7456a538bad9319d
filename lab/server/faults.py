"""Fault specs (DESIGN.md's grammar) and what each one does to the emulator.

``[stable:|canary:]KIND=VALUE[@START[-END]]``; START and END are durations from the server's
start (``30s``, ``5m``, ``1h``, ``1h30m``). Specs are parsed by the rollout simulator's parser
(``sim/rollout/faults.py``), so a spec means the same to ``servelab rollout simulate`` and to
the emulator; this module says what each fault does to one emulator.

What each kind does here (the server is one version, one pod):

=============  =======================  ===================================================
kind           value                    effect in the emulator
=============  =======================  ===================================================
error-rate     fraction, 0..1           that share of requests get an HTTP 500
latency        multiplier (``3x``)      token delivery is stretched: a token the engine
                                        makes ``d`` seconds after arrival leaves at ``M*d``
slow-gpu       multiplier (``2x``)      the engine's step time is multiplied
kv-leak        fraction per hour        that share of the KV blocks is lost each hour
crash-loop     duration, >= 10 s        mean time between crashes; each crash kills the
               (``10m``)                requests in flight and the server is down (health
                                        503, requests 503) for ``min(30 s, MTBF / 4)``
cost           multiplier (``2x``)      answers that end by themselves get that much longer
price          multiplier (``3x``)      the same tokens cost that much more: only
                                        ``llm_request_cost_dollars_total`` moves
quality        score change (``-0.15``) that share (here: the absolute value) of built-in
                                        questions gets a wrong answer
=============  =======================  ===================================================
"""

from __future__ import annotations

from sim.errors import ConfigError
from sim.rollout.faults import TARGETS, Fault, FaultSpecError
from sim.rollout.faults import parse_fault as _parse_rollout_fault


def parse_fault(spec: str, where: str = "--fault") -> Fault:
    """Parse one SPEC with the rollout simulator's parser, so that both read one grammar;
    ``where`` (the flag or the route) starts the error message."""
    try:
        return _parse_rollout_fault(spec)
    except FaultSpecError as exc:
        raise ConfigError(str(exc).replace("--fault", where, 1)) from None


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
        return [f for f in self.faults if f.kind == kind and bool(f.active(t_s))]

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
             "start_s": f.start_s, "end_s": f.end_s}
            for f in self.faults
        ]
