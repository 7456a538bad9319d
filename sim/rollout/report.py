"""Plain data for pictures and timelines: the fleet's series over time, read back with the
same PromQL the analyses use (so a chart shows what the analysis saw)."""

from __future__ import annotations

import math

import numpy as np

PANELS = {
    # name -> (query template over {svc}, unit)
    "error_rate": ('sum(rate(http_requests_total{{service="{svc}",status=~"5.."}}[5m])) / sum(rate(http_requests_total{{service="{svc}"}}[5m]))', "fraction"),
    "p99_ms": ('histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{service="{svc}"}}[5m])) by (le)) * 1000', "ms"),
    "cost_per_request": ('sum(rate(llm_request_cost_dollars_total{{service="{svc}"}}[5m])) / sum(rate(http_requests_total{{service="{svc}"}}[5m]))', "$"),
    "quality": ('sum(rate(llm_judge_quality_score_sum{{service="{svc}"}}[30m])) / sum(rate(llm_judge_quality_score_count{{service="{svc}"}}[30m]))', "score"),
}


def timeseries(sim, step_s: float = 120.0) -> dict:
    """{t_s, weight, <panel>: {canary, stable}} sampled every step_s up to the simulation's end."""
    from sim.promql.evaluate import range_query

    end = sim.fleet.t_s
    t = np.arange(step_s, end + 1e-9, step_s) if end >= step_s else np.array([end])
    hist = sim.fleet.weight_history
    wt = np.array([h[0] for h in hist])
    wv = np.array([h[1] for h in hist])
    weight = wv[np.searchsorted(wt, t, side="right") - 1]
    out: dict = {"t_s": t, "weight": weight}
    if sim.promoted:
        out["weight"] = np.where(t >= (sim.timeline[-1].t_s if sim.timeline else end), 100, weight)
    services = sim.fleet.services
    for name, (q, _unit) in PANELS.items():
        out[name] = {}
        for version in ("canary", "stable"):
            query = q.format(svc=services[version])
            vals = np.full(len(t), np.nan)
            for i, res in enumerate(range_query(query, sim.fleet.store, float(t[0]), float(t[-1]), step_s)[: len(t)]):
                v = res.values()
                if v and math.isfinite(v[0]):
                    vals[i] = v[0]
            out[name][version] = vals
    return out
