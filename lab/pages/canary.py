"""Canary rollout: faults and thresholds in, a timeline of weight, metrics and analyses out."""

from __future__ import annotations

import shlex
import time

import pandas as pd
import streamlit as st
from plotly.subplots import make_subplots

from lab.pages.common import defaults, download_json, download_table, need

need("sim.rollout", "the Argo Rollouts canary simulation")
from lab.pages.canary_runs import (  # noqa: E402
    EDITED_MANIFESTS, FAULT_PRESETS, THRESHOLDS, cli_args, manifests_zip, run_rollout, thresholds_edited,
)
from sim.errors import ServeLabError  # noqa: E402
from sim.rollout.presets import PRESETS as TRIGGER_PRESETS  # noqa: E402

PHASE_COLORS = {"Successful": "#54A24B", "Failed": "#E45756", "Inconclusive": "#F58518", "Error": "#B279A2"}
defaults(
    cn_trigger="none",
    cn_faults=[],
    cn_custom="",
    cn_seed=0,
    cn_rate=20.0,
    cn_demo_seconds=30.0,  # how long the instructor demo's replay lasts (wall time)
    **{f"cn_th_{m}": d for (_, m), (_, d, _) in THRESHOLDS.items()},
)

st.title("Canary rollout")
st.caption(
    "The course's Argo Rollouts canary for `ai-api` (1% -> 10% -> 50% -> 100% over 7 hours, with "
    "Prometheus analyses every 5 and 30 minutes), simulated in seconds. Inject a fault into the "
    "new version and watch the analyses catch it and roll back."
)


def demo() -> None:
    st.session_state.cn_trigger = "none"
    st.session_state.cn_faults = ["quality=-0.15"]
    st.session_state.cn_custom = ""
    st.session_state.cn_animate = True
    st.session_state.cn_ran = True


controls, chart = st.columns([1, 3], gap="large")
with controls:
    st.button(
        "Instructor demo: a quality drop, rolled back",
        on_click=demo,
        type="primary",
        icon=":material/slideshow:",
        key="cn_demo",
        help="Injects quality=-0.15 into the canary and replays the rollout on the chart",
    )
    st.subheader("One rollback trigger")
    trigger = st.selectbox(
        "Show one trigger alone", ["none", *TRIGGER_PRESETS], key="cn_trigger",
        format_func=lambda t: "none" if t == "none" else f"{t}: {TRIGGER_PRESETS[t].summary}",
        help="A preset that the chosen trigger, and no other, catches (sim/rollout/presets.py): "
             "error rate, p99 against stable, cost per request, judged quality, or a manual abort",
    )
    st.subheader("Faults in the canary")
    faults = st.multiselect(
        "Presets", list(FAULT_PRESETS), key="cn_faults", format_func=lambda f: f"{f}: {FAULT_PRESETS[f]}"
    )
    custom = st.text_input(
        "More faults (SPEC, comma-separated)",
        key="cn_custom",
        placeholder="e.g. error-rate=0.05@2h-3h, stable:latency=2x",
        help="[stable:|canary:]KIND=VALUE[@START[-END]]; kinds: error-rate, latency, slow-gpu, kv-leak, crash-loop, cost, quality",
    )
    with st.expander("Analysis thresholds"):
        thresholds = []
        for (template, metric), (label, default, help_) in THRESHOLDS.items():
            value = st.number_input(f"{metric}: {label}", key=f"cn_th_{metric}", help=f"{template}: {help_}", format="%g")
            thresholds.append((template, metric, float(value)))
    with st.expander("Traffic"):
        rate = st.number_input("Requests per second", 1.0, 200.0, step=5.0, key="cn_rate")
        seed = st.number_input("Seed", 0, 10_000, step=1, key="cn_seed")
    if st.button("Run the rollout", icon=":material/play_arrow:", key="cn_run"):
        st.session_state.cn_ran = True
        st.session_state.cn_animate = False

preset = TRIGGER_PRESETS.get(trigger)
preset_faults = list(preset.faults) if preset else []
abort_at = preset.abort_at if preset else None
all_faults = tuple(preset_faults + list(faults) + [f.strip() for f in custom.split(",") if f.strip()])
if not st.session_state.get("cn_ran"):
    with chart:
        st.info("Choose faults (or none), then **Run the rollout**, or press the instructor demo.", icon=":material/info:")
    st.stop()

with chart:
    try:
        with st.spinner("Simulating 7 hours of traffic and analysis..."):
            out = run_rollout(tuple(thresholds), all_faults, int(seed), float(rate), abort_at)
    except ServeLabError as exc:
        st.error(str(exc))
        st.stop()
    result, series = out["result"], out["series"]
    hours = series["t_s"] / 3600.0
    if result["promoted"]:
        st.success(
            f"Promoted: the canary reached 100% after {result['duration_s'] / 3600:.1f} h and passed every analysis "
            f"(status {result['status']}).",
            icon=":material/check_circle:",
        )
    elif result["aborted_at_s"] is not None and not (result["abort_reason"] or {}).get("metric"):
        st.error(
            f"Aborted by hand at {result['aborted_at_s'] / 3600:.2f} h (the manual trigger: "
            f"`kubectl argo rollouts abort ai-api`). Canary weight back to 0, status {result['status']}.",
            icon=":material/undo:",
        )
    elif result["aborted_at_s"] is not None:
        reason = result["abort_reason"] or {}
        value = reason.get("value")
        value_text = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
        st.error(
            f"Rolled back at {result['aborted_at_s'] / 3600:.2f} h: **{reason.get('metric')}** = {value_text} "
            f"({reason.get('analysis')}). Canary weight back to 0, status {result['status']}. "
            f"{result['requests']['canary']:,} of {result['requests']['total']:,} requests had gone to the canary.",
            icon=":material/undo:",
        )
    else:
        st.warning(f"Status {result['status']} after {result['duration_s'] / 3600:.1f} h.")

    panels = [
        ("weight", "canary weight (%)"),
        ("error_rate", "error rate"),
        ("p99_ms", "p99 latency (ms)"),
        ("cost_per_request", "cost per request ($)"),
        ("quality", "judge score"),
    ]
    measurements = pd.DataFrame(result.get("measurements") or [])

    def figure(upto_h: float):
        fig = make_subplots(rows=len(panels) + 1, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                            subplot_titles=[p[1] for p in panels] + ["analysis measurements"])
        keep = hours <= upto_h + 1e-9
        for row, (key, _) in enumerate(panels, start=1):
            if key == "weight":
                fig.add_scatter(x=hours[keep], y=series["weight"][keep], line_shape="hv", name="weight",
                                line=dict(color="#4C78A8"), row=row, col=1, showlegend=False)
                continue
            for version, color in (("stable", "#9D9D9D"), ("canary", "#F58518")):
                fig.add_scatter(x=hours[keep], y=series[key][version][keep], name=version, line=dict(color=color),
                                row=row, col=1, showlegend=row == 2, legendgroup=version)
        if len(measurements):
            shown = measurements[measurements.t_s / 3600 <= upto_h + 1e-9]
            for phase, group in shown.groupby("phase"):
                fig.add_scatter(x=group.t_s / 3600, y=group.metric, mode="markers", name=phase,
                                marker=dict(color=PHASE_COLORS.get(phase, "black"), size=7, symbol="square"),
                                row=len(panels) + 1, col=1,
                                hovertext=[f"{m} = {v}" for m, v in zip(group.metric, group.value)])
        if result["aborted_at_s"] is not None and result["aborted_at_s"] / 3600 <= upto_h + 1e-9:
            fig.add_vline(x=result["aborted_at_s"] / 3600, line_color="#E45756", line_dash="dash")
        fig.update_xaxes(range=[0, max(float(hours.max()) if len(hours) else 1.0, 0.5)])
        fig.update_xaxes(title_text="hours since the rollout started", row=len(panels) + 1, col=1)
        fig.update_layout(height=900, margin=dict(l=10, r=10, t=30, b=10))
        return fig

    slot = st.empty()
    end_h = float(hours.max()) if len(hours) else 0.0
    replay_s = float(st.session_state.cn_demo_seconds)
    if st.session_state.get("cn_animate") and replay_s > 0:
        frames = 15
        for k in range(1, frames + 1):
            slot.plotly_chart(figure(end_h * k / frames), key=f"cn_chart_{k}")
            time.sleep(replay_s / frames)
        st.session_state.cn_animate = False
    else:
        slot.plotly_chart(figure(end_h), key="cn_chart")

    timeline = pd.DataFrame(result["timeline"])
    timeline.insert(0, "time", [f"{int(t // 3600)}h{int(t % 3600 // 60):02d}m" for t in timeline.t_s])
    st.subheader("Timeline")
    st.dataframe(timeline[["time", "weight", "event"]], hide_index=True, height=260)
    left, right = st.columns(2)
    with left:
        download_table(timeline, "rollout-timeline", key="cn_dl_timeline")
    with right:
        download_json(result, "rollout-result", "Download the result (servelab rollout simulate --json)", key="cn_dl_json")
    command = "servelab " + shlex.join(cli_args(tuple(thresholds), all_faults, int(seed), float(rate), abort_at))
    edited = thresholds_edited(tuple(thresholds))
    st.caption("Same run from the command line" + (
        f" (unzip the manifests below first: `{EDITED_MANIFESTS}/` holds the thresholds above):" if edited else ":"))
    st.code(command, language="bash")
    if edited:
        st.download_button("Manifests with these thresholds (zip)", manifests_zip(tuple(thresholds)),
                           file_name=f"{EDITED_MANIFESTS}.zip", key="cn_dl_manifests", icon=":material/folder_zip:")
