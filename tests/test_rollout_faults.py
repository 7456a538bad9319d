"""The fault SPEC grammar: a table of good and bad specs, a fuzz test, and the effects."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.rollout.faults import KINDS, Fault, FaultSpecError, effects, parse_fault


@pytest.mark.parametrize(
    "spec, expected",
    [
        pytest.param("error-rate=0.02", Fault("error-rate", 0.02, "canary", 0.0, None), id="default-target"),
        pytest.param("canary:latency=4x", Fault("latency", 4.0, "canary", 0.0, None), id="latency-x"),
        pytest.param("stable:latency=1.5", Fault("latency", 1.5, "stable", 0.0, None), id="stable-no-x"),
        pytest.param("slow-gpu=2x@30m", Fault("slow-gpu", 2.0, "canary", 1800.0, None), id="start"),
        pytest.param("kv-leak=0.5@1h-2h30m", Fault("kv-leak", 0.5, "canary", 3600.0, 9000.0), id="start-end"),
        pytest.param("crash-loop=10m", Fault("crash-loop", 600.0, "canary", 0.0, None), id="crash-loop-duration"),
        pytest.param("cost=3x", Fault("cost", 3.0, "canary", 0.0, None), id="cost"),
        pytest.param("quality=-0.15", Fault("quality", -0.15, "canary", 0.0, None), id="quality-negative"),
    ],
)
def test_parses(spec, expected):
    f = parse_fault(spec)
    assert (f.kind, f.value, f.target, f.start_s, f.end_s) == (
        expected.kind, expected.value, expected.target, expected.start_s, expected.end_s)


@pytest.mark.parametrize(
    "spec, message",
    [
        pytest.param("boom=1", "unknown kind 'boom'; expected one of error-rate", id="unknown-kind"),
        pytest.param("latency", "expected KIND=VALUE", id="no-value"),
        pytest.param("latency=fast", "expected a number for latency, got 'fast'", id="not-a-number"),
        pytest.param("error-rate=1.5", "error-rate is a fraction from 0 to 1", id="rate-above-1"),
        pytest.param("latency=0x", "multiplier must be in (0, 1000]", id="zero-multiplier"),
        pytest.param("prod:latency=2x", "target must be stable: or canary:", id="bad-target"),
        pytest.param("latency=2x@1h-30m", "END (30m) must be after START (1h)", id="end-before-start"),
        pytest.param("latency=2x@soon", "START must be a duration like 30m or 1h, got 'soon'", id="bad-start"),
        pytest.param("crash-loop=often", "mean time between crashes, like 10m", id="crash-loop-not-duration"),
        pytest.param("quality=-3", "quality is a change in judge score from -1 to 1", id="quality-range"),
        pytest.param("error-rate=nan", "expected a number for error-rate", id="nan"),
    ],
)
def test_rejects_with_a_clear_message(spec, message):
    with pytest.raises(FaultSpecError) as e:
        parse_fault(spec)
    assert message in str(e.value)
    assert repr(spec) in str(e.value)  # the message names the flag's value


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.builds(
            lambda t, k, v, s: f"{t}{k}={v}{s}",
            st.sampled_from(["", "canary:", "stable:", "x:", ":"]),
            st.sampled_from(KINDS + ("", "latency ")),
            st.text(alphabet="0123456789.-x+eEmhs", max_size=8),
            st.sampled_from(["", "@", "@1h", "@30m-1h", "@1h-", "@-1h", "@1h-2h-3h"]),
        ),
    )
)
def test_fuzz_never_crashes(text):
    try:
        f = parse_fault(text)
    except FaultSpecError as e:
        assert str(e).startswith("--fault ")
        return
    assert f.kind in KINDS and f.target in ("canary", "stable")
    assert f.end_s is None or f.end_s > f.start_s


def test_effects_respect_target_and_window():
    faults = (parse_fault("latency=4x@1h-2h"), parse_fault("stable:error-rate=0.1"), parse_fault("kv-leak=0.5@1h"))
    t = np.array([0.0, 3600.0, 5400.0, 7200.0])
    c = effects(faults, "canary", t)
    s = effects(faults, "stable", t)
    assert c.latency_mult.tolist() == [1, 4, 4, 1]
    assert c.error_rate.tolist() == [0, 0, 0, 0] and s.error_rate.tolist() == pytest.approx([0.1] * 4)
    assert c.kv_lost_frac.tolist() == pytest.approx([0, 0, 0.25, 0.5])
    assert s.latency_mult.tolist() == [1, 1, 1, 1]
