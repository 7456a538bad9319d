"""One preset per rollback trigger (sim/rollout/presets.py), each caught by its trigger alone.

The 50-seed rates are benchmarks/rollout_trials.py's; here three seeds per preset, plus the
price fault's promise: the same tokens and latencies as a fault-free canary, at a higher cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from lab.cli.main import main
from sim.rollout import parse_fault, run_trials, simulate
from sim.rollout.api import DEFAULT_MANIFESTS
from sim.rollout.faults import effects
from sim.rollout.presets import PRESETS, TRIGGER_OF_METRIC, TRIGGERS, trigger_of, triggers_failed


def test_one_preset_per_trigger_and_every_manifest_metric_has_a_trigger():
    assert tuple(PRESETS) == TRIGGERS
    assert all(p.trigger == name for name, p in PRESETS.items())
    names = set()
    for path in sorted(Path(DEFAULT_MANIFESTS).glob("analysis-*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            names |= {metric["name"] for metric in doc["spec"]["metrics"]}
    # preemptions-vs-stable (the phase-3 parity gate) is no course trigger; every other metric is.
    assert names - set(TRIGGER_OF_METRIC) == {"preemptions-vs-stable"}


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_is_caught_by_its_trigger_alone(name):
    p = PRESETS[name]
    rep = run_trials(DEFAULT_MANIFESTS, p.faults, 3, 0, abort_at_s=p.abort_at_s)
    assert rep.aborts_by_trigger == {p.trigger: 3}, rep
    assert rep.caught_alone_by_trigger == {p.trigger: 3}, rep
    assert rep.false_alarm_rate == 0.0


def test_price_fault_moves_cost_not_latency():
    clean = simulate(DEFAULT_MANIFESTS, (), seed=0)
    priced = simulate(DEFAULT_MANIFESTS, ("price=3x",), seed=0)
    # Cost: canary over stable cost per request crossed 2 (the value that aborted).
    assert priced.abort_reason["metric"] == "cost-per-request-vs-stable"
    assert 2.0 < priced.abort_reason["value"] < 4.5
    # Latency: every p99 measurement before the abort is the fault-free run's, to the digit
    # (common random numbers: same traffic, and the price fault changes no duration).
    def p99(r):
        return [(m["t_s"], m["value"]) for m in r.measurements if m["metric"] in ("latency-p99", "p99-vs-stable")]

    assert p99(priced) and p99(priced) == p99(clean)[: len(p99(priced))]


def test_price_fault_effects():
    f = parse_fault("price=2.5x@1h")
    assert (f.kind, f.value) == ("price", 2.5)
    e = effects((f,), "canary", np.array([0.0, 3600.0]))
    assert e.price_mult.tolist() == [1.0, 2.5] and e.cost_mult.tolist() == [1.0, 1.0]


def test_trigger_of_and_failed_triggers():
    assert trigger_of(None) == "manual"
    assert trigger_of({"metric": "p99-vs-stable"}) == "p99"
    ms = [{"t_s": 300.0, "metric": "latency-p99", "phase": "Failed", "dry_run": False},
          {"t_s": 300.0, "metric": "cost-per-request-vs-stable", "phase": "Successful", "dry_run": False},
          {"t_s": 600.0, "metric": "error-rate", "phase": "Failed", "dry_run": False}]
    assert triggers_failed(ms) == ["error-rate", "p99"]
    assert triggers_failed(ms, until_s=300.0) == ["p99"]


def test_cli_preset(capsys):
    assert main(["rollout", "simulate", "--preset", "cost"]) == 0
    out = capsys.readouterr().out
    assert "cost-per-request-vs-stable" in out and "faults price=3x" in out
    assert main(["rollout", "simulate", "--preset", "manual"]) == 0
    assert "aborted at 2:30:00" in capsys.readouterr().out
    assert main(["rollout", "simulate", "--preset", "latency"]) == 2
    assert "--preset: expected one of error-rate, p99, cost, quality, manual" in capsys.readouterr().err
