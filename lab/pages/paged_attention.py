"""PagedAttention: step through a small workload and watch the KV blocks."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lab.pages.common import defaults, download_json, need

need("sim.kv", "the PagedAttention block pool and KV manager")
need("sim.sched", "vLLM's scheduler")
from lab.pages.paged import PagedScenario, run_scenario  # noqa: E402

COLORS = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D"]

defaults(pa_step=0, pa_blocks=16, pa_caching=True, pa_system=8, pa_hybrid=False)
WINDOW = 8  # tokens: two blocks of 4

st.title("PagedAttention")
st.caption(
    "vLLM stores each request's KV cache in fixed-size blocks anywhere in GPU memory, found through "
    "a per-request block table, the way an OS maps virtual pages. Step through four requests on a "
    "tiny GPU (blocks of 4 tokens): A and B share a system prompt, C asks for 2 parallel samples, "
    "and D arrives when memory is tight."
)


@st.cache_data(show_spinner=False)
def scenario_views(scenario: PagedScenario):
    return run_scenario(scenario)


with st.sidebar:
    st.subheader("The tiny GPU")
    num_blocks = st.slider("KV blocks (incl. the null block)", 10, 32, key="pa_blocks")
    caching = st.toggle("--enable-prefix-caching", key="pa_caching")
    system = st.select_slider("Shared system prompt (tokens)", [0, 4, 8, 12, 16], key="pa_system")
    hybrid = st.toggle("Sliding-window model (as Gemma 3, gpt-oss)", key="pa_hybrid",
                       help=f"Half the layers attend to the last {WINDOW} tokens only: vLLM gives them a KV "
                            "cache group of their own, with its own block tables, over the same pool.")
scenario = PagedScenario(
    num_gpu_blocks=int(num_blocks),
    enable_caching=bool(caching),
    system_prompt_tokens=int(system),
    sliding_window=WINDOW if hybrid else 0,
    requests=PagedScenario().requests,
)
views = scenario_views(scenario)
last = len(views) - 1
st.session_state.pa_step = min(st.session_state.pa_step, last)


def _move(delta: int) -> None:
    st.session_state.pa_step = max(0, min(last, st.session_state.pa_step + delta))


nav = st.columns([1, 1.4, 6])
nav[0].button("Back", on_click=_move, args=(-1,), icon=":material/chevron_left:", key="pa_prev")
nav[1].button("Next step", on_click=_move, args=(1,), icon=":material/chevron_right:", key="pa_next", type="primary")
if last > 0:  # one step only (a request that can never be admitted stops the run): nothing to slide
    nav[2].slider("Engine step", 0, last, key="pa_step", label_visibility="collapsed")
view = views[st.session_state.pa_step]
names = [r.request_id for r in views[-1].requests] + [r.request_id for v in views for r in v.requests]
color_of = {n: COLORS[i % len(COLORS)] for i, n in enumerate(dict.fromkeys(sorted(set(names))))}

events = view.events or ["every running request decodes one token"]
st.markdown(f"**Step {view.step}.** " + " · ".join(events))
if views[-1].never_admitted:  # the run stops where the queue's head can never fit
    st.error(f"The run stops at step {views[-1].step}: {views[-1].never_admitted}", icon=":material/block:")

left, right = st.columns([1, 1], gap="large")
with left:
    st.subheader("Physical KV blocks")
    per_row = 8
    rows = -(-len(view.blocks) // per_row)
    xs, ys, texts, fills, lines, hovers = [], [], [], [], [], []
    for b in view.blocks:
        i = b["block_id"]
        xs.append(i % per_row)
        ys.append(i // per_row)
        owners = b["owners"]
        tag = {0: " SW", 1: " full"}.get(b.get("group"), "")
        if b["null"]:
            fills.append("#DDDDDD"); texts.append(f"{i}<br>null"); hovers.append("vLLM's null block: never handed out")
        elif owners:
            fills.append(color_of[owners[0]])
            texts.append(f"{i}<br>{'+'.join(owners)}{tag}")
            hovers.append(f"block {i}: ref_cnt {b['ref_cnt']}, held by {', '.join(owners)}" + (", cached" if b["cached"] else ""))
        else:
            fills.append("#F4F4F4" if not b["cached"] else "#FFF3C4")
            tag = "cached" if b["cached"] else "free"
            texts.append(f"{i}<br>{tag} #{b['free_position']}")
            hovers.append(f"block {i}: free, position {b['free_position']} in the free queue" + (", still holds cached KV (can be hit)" if b["cached"] else ""))
        lines.append(4 if b["ref_cnt"] > 1 else 1)
    # Each block is a rectangle in data coordinates, so the grid scales with the column: squares of
    # a fixed pixel size overlapped one another in a narrow window (900 px) and hid the labels.
    fig = go.Figure(
        go.Scatter(
            x=xs, y=ys, mode="text", text=texts, hovertext=hovers, hoverinfo="text",
            textfont=dict(size=11, color=["white" if b["owners"] else "#333333" for b in view.blocks]),
        )
    )
    for x, y, fill, width in zip(xs, ys, fills, lines):
        fig.add_shape(type="rect", x0=x - 0.46, x1=x + 0.46, y0=y - 0.44, y1=y + 0.44, layer="below",
                      fillcolor=fill, line=dict(width=width, color="black"))
    fig.update_layout(
        height=76 * rows + 10,
        xaxis=dict(visible=False, range=[-0.55, per_row - 0.45], fixedrange=True),
        yaxis=dict(visible=False, range=[rows - 0.5, -0.5], fixedrange=True),
        margin=dict(l=0, r=0, t=0, b=0),
        showlegend=False,
    )
    st.plotly_chart(fig, key="pa_blocks_chart")
    st.caption(
        "Coloured: in use (thick border: shared, reference count > 1). Grey: free, numbered by position "
        "in the free queue (#0 is handed out next). Yellow: free but still holding a cached full block, "
        "which a later request with the same prefix can claim back."
    )
    st.markdown(
        "**Free queue** (front first): " + (", ".join(str(b) for b in view.free_queue) or "empty")
    )

def _group_tables(requests) -> None:
    """A sliding-window model's two KV cache groups, side by side: one block table each."""
    cols = st.columns(2)
    titles = (f"Sliding-window group ({WINDOW}-token window)", "Full-attention group")
    for g, (col, title) in enumerate(zip(cols, titles)):
        col.markdown(f"**{title}**")
        table = [
            {"request": r.request_id,
             "block table (logical -> physical)": " ".join(
                 f"{i}->{'null' if b is None else b}" for i, b in enumerate(r.group_tables[g])) or "-"}
            for r in requests if r.group_tables
        ]
        col.dataframe(pd.DataFrame(table, columns=["request", "block table (logical -> physical)"]),
                      hide_index=True, key=f"pa_group_{g}")
    st.caption(
        f"Each group has its own block table per request; both draw blocks from the one pool on the left "
        f"(SW: sliding-window group, full: full-attention group). A sliding-window layer never reads a token "
        f"more than {WINDOW - 1} tokens back, so once a whole block falls out of the window vLLM hands it back "
        f"(it stays cached, yellow, until reused) and its entry becomes the null block. The full-attention "
        f"group keeps every block. A prefix-cache hit needs every full-attention block of the prefix, but "
        f"only the last window's sliding-window blocks."
    )


with right:
    st.subheader("Block tables")
    rows = []
    for r in view.requests:
        rows.append(
            {
                "request": r.request_id,
                "status": r.status,
                # KV written (computed tokens): a just-sampled token's KV is written by the next step
                "tokens in KV": f"{r.num_computed_tokens} of {r.num_tokens} ({r.num_prompt_tokens} prompt)",
                "block table (logical -> physical)": " ".join(f"{i}->{b}" for i, b in enumerate(r.block_table)) or "-",
                "preemptions": r.num_preemptions,
            }
        )
    if scenario.sliding_window:
        _group_tables(view.requests)
    else:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    used = sum(1 for b in view.blocks if b["owners"])
    shared = sum(1 for b in view.blocks if b["ref_cnt"] > 1)
    m = st.columns(3)
    m[0].metric("Blocks in use", f"{used} / {len(view.blocks) - 1}")
    m[1].metric("Shared blocks", shared, help="held by more than one request, stored once")
    hit_rate = view.prefix_hits_tokens / view.prefix_queries_tokens if view.prefix_queries_tokens else 0.0
    m[2].metric("Prefix-cache hits", f"{hit_rate:.0%}", help=f"{view.prefix_hits_tokens} of {view.prefix_queries_tokens} prompt tokens")

st.subheader("The same requests on contiguous reservations")
c = view.contiguous
labels, used_, reserved_, internal_ = [], [], [], []
for policy in ("orca-oracle", "orca-pow2", "orca-max"):
    p = c[policy]
    labels.append(policy)
    used_.append(p["used"]); reserved_.append(p["reserved"]); internal_.append(p["internal"])
fig = go.Figure()
fig.add_bar(y=["vllm (paged)"] + labels, x=[c["paged"]["held"]] + used_, name="written KV (paged: blocks held)", orientation="h")
fig.add_bar(y=["vllm (paged)"] + labels, x=[0] + reserved_, name="reserved for tokens not written yet", orientation="h")
fig.add_bar(y=["vllm (paged)"] + labels, x=[0] + internal_, name="reserved and never used (internal fragmentation)", orientation="h")
fig.add_vline(x=c["capacity_tokens"], line_dash="dash", annotation_text="GPU capacity")
fig.update_layout(barmode="stack", height=260, xaxis_title="tokens of KV cache", margin=dict(l=10, r=10, t=10, b=10))
st.plotly_chart(fig, key="pa_contiguous_chart")
st.markdown(
    f"Right now the live requests hold the KV of **{c['paged']['used_by_requests']:g}** tokens between them "
    "(a token just sampled has none yet: the next step writes it); paged, "
    f"they take **{c['paged']['held']:g}** token slots (shared prefix blocks count once, only each request's "
    f"last block has slack). "
    + ("A slot is one token's KV in every layer; with the sliding window a block holds one KV cache group's "
       "half of the layers, so it counts as half a block of slots, and the sliding group drops the blocks "
       "that leave its window. " if scenario.sliding_window else "")
    + f"Reserving each request's memory up front takes {c['orca-oracle']['held']} "
    f"(knowing every output length in advance), {c['orca-pow2']['held']} (rounding the output up to a power "
    f"of two) or {c['orca-max']['held']} (reserving max_model_len = {scenario.max_model_len}), against a "
    f"capacity of {c['capacity_tokens']}. Contiguous buffers also cannot share the system prompt."
)
with st.expander("How ServeLab differs from vLLM here"):
    st.markdown(
        "- Blocks of 4 tokens so that each is visible; vLLM's default is 16.\n"
        "- Parallel samples (C#0, C#1) are separate requests sharing the prompt's *full* blocks through "
        "the prefix cache, as vLLM V1 does. vLLM V0 also shared the last, partial block and copied it "
        "on the first write (copy-on-write), as the vLLM paper describes; V1 gives each sample its own "
        "last block, and so does this page. The engine has the paper's way too: "
        "`servelab bench throughput --n 4 --parallel-sampling copy-on-write`.\n"
        "- A preempted request is recomputed, never swapped to CPU memory (vLLM V1 removed swapping)."
    )
download_json(
    [v.__dict__ | {"requests": [r.__dict__ for r in v.requests]} for v in views],
    "paged-attention-steps",
    "Download every step (JSON)",
    key="pa_dl",
)
