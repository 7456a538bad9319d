"""The real H200 runs in ``servelab validate`` (tables, MAPE, ``--cross``) and the fit that
``servelab calibrate fit --from-aiconfigurator`` runs on them. The simulation and the fit are
:mod:`sim.silicon`; this module runs them on every core and prints."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

from sim.silicon import (MOE_TARGETS, TARGETS, Setting, fit, layout_label, load_rows, mape, profile_entry,
                         simulate_rows)


@contextmanager
def pool_map(workers: int | None = None):
    """A process pool's ``map`` over every core (or the builtin ``map`` on one core)."""
    n = workers or os.cpu_count() or 1
    if n <= 1:
        yield map
        return
    with ProcessPoolExecutor(n) as ex:
        yield lambda f, items: ex.map(f, items, chunksize=1)


def silicon_report(calibration: str | None = None, workers: int | None = None, moe: bool = True) -> dict:
    """The dense rows (fitted to) and, with ``moe``, the MoE rows (a prediction: never fitted to),
    simulated with the same tables and values. ``mape`` has one entry per model, ``overall``
    (the dense rows, as before) and ``overall MoE``."""
    rows = load_rows(dense_only=not moe)
    with pool_map(workers) as m:
        results = simulate_rows(rows, Setting(calibration=calibration), m)
    dense = [r for r in results if not r.get("moe")]
    moe_rows = [r for r in results if r.get("moe")]
    table = mape(dense, key=lambda r: r["model"])
    if moe_rows:
        per_model = mape(moe_rows, key=lambda r: r["model"])
        table["overall MoE"] = per_model.pop("overall")
        table.update(per_model)
    return {"rows": results, "mape": table, "targets": TARGETS, "moe_targets": MOE_TARGETS,
            "source": "sim/data/reference/vllm-silicon.csv (aiconfigurator-core 0.12.0, real vLLM runs on H200)"}


def print_silicon(report: dict) -> None:
    print("Real vLLM runs on H200 (closed loop, mean TTFT and TPOT; sim/data/reference/vllm-silicon.csv)")
    by_model: dict[str, list[dict]] = {}
    for r in report["rows"]:
        by_model.setdefault(r["model"], []).append(r)
    for model, rows in by_model.items():
        print()
        moe = rows[0].get("moe")
        print(f"  {model}" + ("  (MoE: a prediction, never fitted to)" if moe else ""))
        print(f"  {'layout':>9} {'isl/osl':>11} {'conc':>5} {'TTFT real':>10} {'sim':>9} {'error':>7} "
              f"{'TPOT real':>10} {'sim':>7} {'error':>7} {'front end':>10}")
        for r in sorted(rows, key=lambda r: (r["tp"], r.get("dp", 1), r.get("ep", 1), r["isl"], r["osl"],
                                             r["concurrency"])):
            layout = layout_label(r["tp"], r.get("dp", 1), r.get("ep", 1))
            print(f"  {layout:>9} {str(r['isl']) + '/' + str(r['osl']):>11} {r['concurrency']:>5} "
                  f"{r['real_ttft_ms']:>10.1f} {r['sim_ttft_ms']:>9.1f} {r['ttft_error']:>+7.1%} "
                  f"{r['real_tpot_ms']:>10.2f} {r['sim_tpot_ms']:>7.2f} {r['tpot_error']:>+7.1%} "
                  f"{r['sim_frontend_ttft_ms']:>8.1f}ms")
    print()
    moe_models = {r["model"] for r in report["rows"] if r.get("moe")}
    for name, m in report["mape"].items():
        t = report.get("moe_targets", report["targets"]) if (name in moe_models or name == "overall MoE") \
            else report["targets"]
        ok = lambda v, k: "ok" if v <= t[k] else "MISS"
        label = "overall (dense)" if name == "overall" else name
        print(f"  MAPE {label:<34} TTFT {m['ttft']:>6.1%} ({ok(m['ttft'], 'ttft')} <= {t['ttft']:.0%})   "
              f"TPOT {m['tpot']:>6.1%} ({ok(m['tpot'], 'tpot')} <= {t['tpot']:.0%})   rows {m['rows']}")


def cross_validate(calibration: str | None, max_evaluations: int, workers: int | None = None,
                   progress=print) -> list[dict]:
    """Leave one model, one GPU, one TP size out at a time: refit on the rest (from the shipped
    values), predict what was left out."""
    from sim.calibration import SHIPPED, entry_coefficients, load_profile, select_entry
    from sim.frontend import FrontendCoefficients

    rows = load_rows()
    entry = select_entry(load_profile(calibration or str(SHIPPED)), "h200", "", 1, step_model="operators")
    start = Setting(coefficients=entry_coefficients(entry), frontend=FrontendCoefficients(**(entry or {}).get("frontend", {})),
                    calibration=calibration, prompts_per_client=2)
    groups = ([("model", m) for m in sorted({r.model for r in rows})]
              + [("gpu", g) for g in sorted({r.gpu for r in rows})]
              + [("tp", t) for t in sorted({r.tp for r in rows})])
    out = []
    with pool_map(workers) as m:
        for kind, value in groups:
            held = [r for r in rows if getattr(r, kind) == value]
            train = [r for r in rows if getattr(r, kind) != value]
            if not train:
                out.append({"held_out": f"{kind}={value}", "rows": len(held), "ttft": None, "tpot": None,
                            "note": f"every row is {kind}={value}: nothing is left to fit on"})
                progress(f"  {kind}={value}: every row has it, nothing left to fit on (skipped)")
                continue
            t0 = time.perf_counter()
            fitted = fit(train, start, max_evaluations=max_evaluations, map_fn=m)
            predicted = simulate_rows(held, replace(start, coefficients=fitted.coefficients,
                                                    frontend=fitted.frontend, prompts_per_client=4), m)
            per_model = mape(predicted, key=lambda r: r["model"])
            mp = per_model.pop("overall")
            out.append({"held_out": f"{kind}={value}", "rows": len(held), "ttft": mp["ttft"], "tpot": mp["tpot"],
                        "fitted_on": len(train), "evaluations": fitted.num_evaluations, "per_model": per_model})
            detail = "; ".join(f"{name.split('/')[-1]} {m['ttft']:.1%} / {m['tpot']:.1%}"
                               for name, m in per_model.items()) if len(per_model) > 1 else ""
            progress(f"  {kind}={value}: {len(held)} rows held out, fitted on {len(train)} "
                     f"({fitted.num_evaluations} evaluations, {time.perf_counter() - t0:.0f} s): "
                     f"TTFT MAPE {mp['ttft']:.1%}, TPOT MAPE {mp['tpot']:.1%}" + (f" ({detail})" if detail else ""))
    return out


def fit_and_write(output: str, base_path: str, max_evaluations: int, command: str, workers: int | None = None) -> dict:
    """Fit the operator entry to every dense row and write the profile (the shipped one's other
    entries kept)."""
    from datetime import datetime, timezone

    from lab.calibrate.fitcmd import write_operator_entry
    from sim.calibration import entry_coefficients, load_profile, select_entry
    from sim.frontend import FrontendCoefficients

    rows = load_rows()
    entry = select_entry(load_profile(base_path), "h200", "", 1, step_model="operators")
    start = Setting(coefficients=entry_coefficients(entry),
                    frontend=FrontendCoefficients(**(entry or {}).get("frontend", {})), prompts_per_client=2)
    t0 = time.perf_counter()
    with pool_map(workers) as m:
        result = fit(rows, start, max_evaluations=max_evaluations, map_fn=m,
                     progress=lambda n, loss: print(f"  evaluation {n}: mean |log error| {loss:.4f} "
                                                    f"({time.perf_counter() - t0:.0f} s)", flush=True))
        final = simulate_rows(rows, replace(start, coefficients=result.coefficients, frontend=result.frontend,
                                            prompts_per_client=4), m)
    result.results = final
    new = profile_entry(result, rows, command, datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    write_operator_entry(output, base_path, new)
    return new
