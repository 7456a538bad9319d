"""Exercises: each exercise's task, the student's files (a folder or an upload), the check."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st
from plotly.subplots import make_subplots

from lab.exercises import EXERCISES, get_exercise
from lab.pages.common import defaults, download_json
from sim.errors import ServeLabError

defaults(ex_id="6.1", ex_results={})

st.title("Exercises")
st.caption(
    "The course's four exercises. Read the task, edit the starter files, then run the check here "
    "or with `servelab exercise check ID --path DIR`: it says what is right, what is wrong, "
    "where (file and YAML path) and what to do."
)

ids = list(EXERCISES)
exercise_id = st.segmented_control(
    "Exercise",
    ids,
    key="ex_id",
    format_func=lambda i: f"{i} · {EXERCISES[i].title.split(',')[0]}",
    required=True,
)
exercise = get_exercise(exercise_id or ids[0])

task_col, check_col = st.columns([1, 1], gap="large")
with task_col:
    st.subheader(f"{exercise.id}: {exercise.title}")
    with st.container(height=560):
        st.markdown(exercise.readme().split("\n", 1)[1])

with check_col:
    st.subheader("Check your files")
    source = st.radio(
        "Where are your files?",
        ["A folder on this machine", "Upload files", "The reference solution (instructors)"],
        key=f"ex_source_{exercise.id}",
    )
    folder: Path | None = None
    uploads = []
    if source == "A folder on this machine":
        folder = Path(
            st.text_input(
                "Folder",
                value=str(exercise.starter),
                key=f"ex_path_{exercise.id}",
                help=f"The folder that holds {', '.join(exercise.files)}.",
            )
        )
    elif source == "Upload files":
        uploads = st.file_uploader(
            f"Your {', '.join(exercise.files)}",
            accept_multiple_files=True,
            key=f"ex_upload_{exercise.id}",
        )
    else:
        folder = exercise.solution

    if st.button("Run the check", type="primary", key=f"ex_run_{exercise.id}", icon=":material/play_arrow:"):
        with st.status(f"Checking exercise {exercise.id}...", expanded=True) as status:
            try:
                if uploads:
                    with tempfile.TemporaryDirectory(prefix="servelab-ex-") as tmp:
                        for f in uploads:
                            (Path(tmp) / Path(f.name).name).write_bytes(f.getvalue())
                        result = exercise.check(tmp, progress=st.write)
                elif folder is not None:
                    result = exercise.check(folder, progress=st.write)
                else:
                    raise ServeLabError("upload your files first")
            except ServeLabError as exc:
                status.update(label="The check could not run", state="error")
                st.error(str(exc))
                result = None
            if result is not None:
                status.update(
                    label="Passed" if result.passed else f"{len(result.failures)} check(s) failed",
                    state="complete" if result.passed else "error",
                    expanded=False,
                )
                st.session_state.ex_results[exercise.id] = result

    result = st.session_state.ex_results.get(exercise.id)
    if result is not None:
        if result.passed:
            st.success(f"All checks passed for {result.path}", icon=":material/check_circle:")
        else:
            st.error(f"{len(result.failures)} check(s) failed for {result.path}", icon=":material/error:")
        for f in result.findings:
            where = f"`{f.where}` · " if f.where else ""
            if f.info:
                st.info(f"{where}{f.what}", icon=":material/info:")
            elif f.ok:
                st.markdown(f":green[:material/check:] {where}{f.what}")
            else:
                st.markdown(f":red[:material/close:] {where}**{f.what}**  \n&nbsp;&nbsp;&nbsp;&nbsp;*What to do:* {f.fix}")
        series = result.details.get("series")
        if series and "queue_depth" in series:
            fig = make_subplots(specs=[[{"secondary_y": True}]])
            minutes = [t / 60 for t in series["t_s"]]
            fig.add_scatter(x=minutes, y=series["queue_depth"], name="prompts waiting", line=dict(color="#F58518"))
            fig.add_scatter(x=minutes, y=series["replicas"], name="workers asked for", line_shape="hv",
                            line=dict(color="#4C78A8"), secondary_y=True)
            fig.add_scatter(x=minutes, y=series["ready_replicas"], name="workers ready", line_shape="hv",
                            line=dict(color="#4C78A8", dash="dot"), secondary_y=True)
            burst = result.details.get("burst", {})
            if burst:
                fig.add_vrect(x0=burst["start_s"] / 60, x1=burst["end_s"] / 60, fillcolor="#F58518", opacity=0.08,
                              line_width=0, annotation_text="burst")
            fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="minutes")
            fig.update_yaxes(title_text="queue depth", secondary_y=False)
            fig.update_yaxes(title_text="workers", secondary_y=True)
            st.plotly_chart(fig, key=f"ex_chart_{exercise.id}")
        for name, rows in result.details.items():
            if isinstance(rows, list) and rows and isinstance(rows[0], dict):
                st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        download_json(
            {
                "exercise": result.exercise_id,
                "path": result.path,
                "passed": result.passed,
                "findings": [f.__dict__ for f in result.findings],
                "details": result.details,
            },
            f"exercise-{exercise.id}-check",
            "Download the findings (JSON)",
            key=f"ex_dl_{exercise.id}",
        )
