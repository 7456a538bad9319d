"""Durations as Argo Rollouts reads them.

Analysis ``interval`` and ``initialDelay`` go through Go's ``time.ParseDuration`` ("30s",
"5m", "1h30m", "1.5h"). A pause ``duration`` is an int-or-string: an integer (or a string
of digits) is seconds, anything else goes through ``time.ParseDuration``
(``RolloutPause.DurationSeconds`` in ``types.go``).
"""

from __future__ import annotations

import re

_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string; raises ValueError with the expected form."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration like 30s, 5m, 1h, got {text!r}")
    s = text.strip()
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    if not s:
        raise ValueError('expected a duration like 30s, 5m, 1h, got ""')
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f'expected a duration like 30s, 5m, 1h, got "{text}"')
        total += float(m.group(1)) * _UNITS_S[m.group(2)]
        pos = m.end()
    return total


def parse_pause_duration(value: int | str) -> float:
    """A pause's int-or-string duration in seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m, 1h or a number of seconds, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a non-negative number of seconds, got {value}")
        return float(value)
    if isinstance(value, str) and value.strip().isdigit():
        return float(int(value.strip()))
    return parse_go_duration(value)


def format_duration(seconds: float) -> str:
    """1h, 1h30m, 5m, 45s: the shortest Go-style spelling of whole seconds."""
    s = int(round(seconds))
    if s == 0:
        return "0s"
    out = ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out
