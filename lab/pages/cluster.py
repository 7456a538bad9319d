"""Cluster: deploy the manifests to the simulated cluster (or kind), then status, promote, abort.

The page drives the same backends as ``servelab cluster``; the simulated cluster keeps its state
in ``$SERVELAB_STATE_DIR`` (``~/.servelab``), so the page and the command line see one cluster.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import streamlit as st

from lab.pages.common import defaults, download_json, need

need("lab.cluster", "the cluster backends")
from lab.cluster.base import ClusterError  # noqa: E402
from lab.pages.canary_runs import FAULT_PRESETS  # noqa: E402
from sim.errors import ServeLabError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
defaults(
    cl_backend="sim",
    cl_manifests=str(REPO / "manifests"),
    cl_seed=0,
    cl_faults=[],
    cl_fault_now="",
    cl_clock="live",
    cl_speed_min_per_s=2.0,
)

st.title("Cluster")
st.caption(
    "Deploy the course's manifests and steer the Rollout the way `kubectl argo rollouts` does. The "
    "simulated cluster (the default) runs them in ServeLab's simulator; a local kind cluster runs "
    "the very same files once its preflight passes. `servelab cluster ...` drives the same cluster."
)


@st.cache_data(ttl=60, show_spinner=False)
def kind_preflight() -> list[dict]:
    from lab.cluster.kind import KindBackend

    return [c.__dict__ for c in KindBackend().preflight()]


def kind_plan(manifests: str) -> str:
    from lab.cluster.kind import KindBackend

    out = io.StringIO()
    backend = KindBackend(dry_run=True, out=out)
    backend.manifests_dir = Path(manifests)
    backend.up()
    backend.deploy(Path(manifests))
    return out.getvalue()


backend_name = st.segmented_control(
    "Backend",
    ["sim", "kind"],
    key="cl_backend",
    required=True,
    format_func=lambda b: {"sim": "Simulated cluster", "kind": "kind (local Kubernetes)"}[b],
)
manifests = st.text_input("Manifests folder", key="cl_manifests")

if backend_name == "kind":
    checks = kind_preflight()
    ready = all(c["ok"] or not c["required"] for c in checks)
    st.subheader("Preflight")
    for c in checks:
        if c["ok"]:
            st.markdown(f":green[:material/check:] **{c['name']}**: {c['detail']}")
        elif c["required"]:
            st.markdown(f":red[:material/close:] **{c['name']}**: {c['detail']}  \n{c['fix']}")
        else:  # optional (the kubectl plugin): a warning, as the CLI's [warn]; kind stays usable
            optional = "" if "optional" in c["detail"] else " (optional)"
            st.markdown(f":orange[:material/warning:] **{c['name']}**{optional}: {c['detail']}  \n{c['fix']}")
    if not ready:
        st.warning(
            "kind is not usable on this machine yet: install what is missing above (docs/kind.md walks "
            "through it), or use the simulated cluster.",
            icon=":material/warning:",
        )
    with st.expander("What deploying to kind would run (dry run)"):
        try:
            st.code(kind_plan(manifests), language="bash")
        except ServeLabError as exc:
            st.error(str(exc))
    if ready:
        from lab.cluster.kind import KindBackend

        kind = KindBackend()
        cols = st.columns(3) + st.columns(4)  # two rows: the cluster, then the rollout's verbs
        try:
            if cols[0].button("Create the cluster", key="cl_kind_up"):
                with st.status("kind: creating the cluster and installing Argo Rollouts, Prometheus...") as s:
                    st.write(kind.up())
                    s.update(state="complete")
            if cols[1].button("Deploy", key="cl_kind_deploy", type="primary"):
                st.session_state.cl_kind_status = kind.deploy(Path(manifests)).to_dict()
            if cols[2].button("Status", key="cl_kind_status_btn"):
                st.session_state.cl_kind_status = kind.status().to_dict()
            if cols[3].button("Promote", key="cl_kind_promote"):
                st.session_state.cl_kind_status = kind.promote().to_dict()
            if cols[4].button("Abort", key="cl_kind_abort"):
                st.session_state.cl_kind_status = kind.abort().to_dict()
            if cols[5].button("Retry", key="cl_kind_retry", help="Restart an aborted rollout's steps from 0"):
                st.session_state.cl_kind_status = kind.retry().to_dict()
            if cols[6].button("Undo", key="cl_kind_undo", help="Back to the stable revision"):
                st.session_state.cl_kind_status = kind.undo().to_dict()
        except ServeLabError as exc:
            st.error(str(exc))
        if st.session_state.get("cl_kind_status"):
            st.json(st.session_state.cl_kind_status)
    st.stop()

# --- the simulated cluster ---
from lab.cluster.simbackend import SimBackend  # noqa: E402


def act(label: str, call) -> None:
    try:
        with st.spinner(label):
            st.session_state.cl_status = call().to_dict()
            st.session_state.cl_error = None
    except (ClusterError, ServeLabError) as exc:
        st.session_state.cl_error = str(exc)


with st.container(border=True):
    a, b, c = st.columns([2, 2, 1])
    deploy_faults = a.multiselect(
        "Faults in the new version at deploy", list(FAULT_PRESETS), key="cl_faults",
        format_func=lambda f: f"{f}: {FAULT_PRESETS[f]}",
    )
    seed = c.number_input("Seed", 0, 10_000, key="cl_seed")
    clock = b.radio(
        "Clock",
        ["live", "jump"],
        key="cl_clock",
        format_func=lambda k: {"live": "Live: simulated time runs with the wall clock, faster", "jump": "Jump: run to the end at once"}[k],
        help="Live lets you promote or abort while the canary runs; Jump runs the rollout until it settles.",
    )
    speed_min = b.number_input(
        "Simulated minutes per wall-clock second", 0.5, 600.0, step=0.5, key="cl_speed_min_per_s",
        disabled=clock != "live",
    )
    if st.button("Deploy", type="primary", icon=":material/rocket_launch:", key="cl_deploy"):
        speed = float(speed_min) * 60.0 if clock == "live" else None
        act(
            "Deploying...",
            lambda: SimBackend().deploy(Path(manifests), seed=int(seed), speed=speed, faults=list(deploy_faults)),
        )

verbs = st.columns(4) + st.columns(4)  # two rows of four: they stay readable at 900 px
if verbs[0].button("Status", icon=":material/refresh:", key="cl_status_btn"):
    act("Reading the Rollout...", lambda: SimBackend().status())
if verbs[1].button("Wait 30 min", icon=":material/fast_forward:", key="cl_advance"):
    act("Advancing the clock...", lambda: SimBackend(advance_s=1800.0).status())
if verbs[2].button("Promote", icon=":material/skip_next:", key="cl_promote"):
    act("Promoting...", lambda: SimBackend().promote())
if verbs[3].button("Promote --full", icon=":material/done_all:", key="cl_promote_full"):
    act("Promoting fully...", lambda: SimBackend().promote(full=True))
if verbs[4].button("Abort", icon=":material/cancel:", key="cl_abort"):
    act("Aborting...", lambda: SimBackend().abort())
if verbs[5].button("Retry", icon=":material/replay:", key="cl_retry",
                   help="kubectl argo rollouts retry: an aborted rollout starts its steps again from 0"):
    act("Retrying...", lambda: SimBackend().retry())
if verbs[6].button("Undo", icon=":material/undo:", key="cl_undo",
                   help="kubectl argo rollouts undo: the spec goes back to the stable revision"):
    act("Undoing...", lambda: SimBackend().undo())
if verbs[7].button("Tear down", icon=":material/delete:", key="cl_down"):
    st.session_state.cl_status = None
    st.session_state.cl_error = None
    st.toast(SimBackend().down())

with st.expander("Inject a fault now"):
    spec = st.text_input("Fault SPEC", key="cl_fault_now", placeholder="canary:error-rate=0.05")
    if st.button("Set the fault", key="cl_set_fault") and spec:
        act("Setting the fault...", lambda: SimBackend().set_fault(spec))

if st.session_state.get("cl_error"):
    st.error(st.session_state.cl_error)
status = st.session_state.get("cl_status")
if not status:
    st.info("Nothing shown yet: **Deploy**, or **Status** to read a cluster deployed from the command line.")
    st.stop()

m = st.columns(4)
m[0].metric("Status", status["phase"])
step = status.get("current_step_index")
m[1].metric("Step", "-" if step is None else f"{step} / {status['total_steps']}")
m[2].metric("Canary weight", f"{status['canary_weight']}%")
t = status.get("t_s")
m[3].metric("Simulated time", "-" if t is None else f"{int(t // 3600)}h{int(t % 3600 // 60):02d}m")
if status.get("message"):
    st.caption(status["message"])
reason = status.get("abort_reason")
if reason:
    value = reason.get("value")
    measured = f": {reason['metric']} = {value:.4g}" if reason.get("metric") and isinstance(value, (int, float)) else ""
    st.error(f"Aborted by {reason.get('analysis', '?')}{measured}. {reason.get('message', '')}", icon=":material/undo:")
if status.get("timeline"):
    timeline = pd.DataFrame(status["timeline"])
    if "t_s" in timeline:
        timeline.insert(0, "time", [f"{int(t // 3600)}h{int(t % 3600 // 60):02d}m" for t in timeline.t_s])
        timeline = timeline.drop(columns="t_s")
    st.dataframe(timeline, hide_index=True, height=300)
download_json(status, "cluster-status", "Download the status (JSON)", key="cl_dl")
