"""Capacity planner: the cheapest deployment that meets an SLA, by simulation (`servelab tune`)."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures.process import BrokenProcessPool

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lab.pages.common import SOURCES, defaults, download_table, need
from sim.errors import ServeLabError

catalog = need("sim.catalog", "the model and GPU catalog")
tune_mod = need("sim.tune", "the capacity planner")
from sim.tune.space import default_precisions  # noqa: E402  (after the check that sim.tune exists)
from lab.tune_report import plural  # noqa: E402

defaults(
    cp_model="meta-llama/Llama-3.1-8B",
    cp_ep=False,
    cp_gpus=["h100-80gb", "a100-80gb", "l40s"],
    cp_tp=[1, 2, 4],
    cp_mns=[64, 128, 256, 512],
    cp_mnbt=[2048, 8192, 16384],
    cp_max_replicas=8,
    cp_input_len=512,
    cp_output_len=256,
    cp_num_prompts=200,
    cp_rate=20.0,
    cp_percentile="p90",
    cp_ttft_ms=500.0,
    cp_tpot_ms=30.0,
    cp_e2el_ms=0.0,
    cp_headroom=0,
    cp_workers=0,
)

st.title("Capacity planner")
st.caption(
    "Which GPU, how many, which tensor parallelism and which `vllm serve` flags meet your latency "
    "targets at the lowest cost? ServeLab simulates every candidate under your traffic, queueing "
    "included, finds each one's highest request rate that still meets the SLA by bisection, and "
    "ranks them by price (`servelab tune` on the command line)."
)

controls, results = st.columns([1, 3], gap="large")
with controls:
    st.subheader("Model and traffic")
    model = st.selectbox("Model", catalog.known_models(), key="cp_model")
    rate = st.number_input("Request rate to carry, in all (req/s; 0: one replica at its best)", 0.0, 10000.0,
                           step=1.0, key="cp_rate")
    input_len = st.number_input("--random-input-len", 16, 32768, step=64, key="cp_input_len")
    output_len = st.number_input("--random-output-len", 1, 8192, step=32, key="cp_output_len")
    num_prompts = st.number_input("Requests per simulation", 20, 2000, step=20, key="cp_num_prompts")
    st.subheader("SLA")
    percentile = st.selectbox("Percentile", ["median", "p90", "p95", "p99"], key="cp_percentile")
    ttft = st.number_input("TTFT at most (ms; 0: no limit)", 0.0, 600000.0, step=50.0, key="cp_ttft_ms")
    tpot = st.number_input("TPOT at most (ms; 0: no limit)", 0.0, 10000.0, step=5.0, key="cp_tpot_ms")
    e2el = st.number_input("E2E latency at most (ms; 0: no limit)", 0.0, 3600000.0, step=500.0, key="cp_e2el_ms")
    headroom = st.number_input("Headroom (% of each limit to spare)", 0, 50, step=5, key="cp_headroom",
                               help="plan against limits this much tighter than the SLA (servelab tune --headroom), "
                                    "to allow for the simulator's own error")
    st.subheader("Search space")
    gpus = st.multiselect("GPUs", catalog.known_gpus(), key="cp_gpus")
    tps = st.multiselect("--tensor-parallel-size", [1, 2, 4, 8], key="cp_tp")
    mns = st.multiselect("--max-num-seqs", [32, 64, 128, 256, 512, 1024], key="cp_mns")
    mnbt = st.multiselect("--max-num-batched-tokens", [1024, 2048, 4096, 8192, 16384, 32768], key="cp_mnbt")
    try:
        quant_default, kv_default = default_precisions(model)
    except ServeLabError:  # an unknown model is reported where the search starts
        quant_default, kv_default = default_precisions()
    if len(kv_default) > 1:  # the simulator models weight and KV-cache precision
        # A quantized checkpoint (gpt-oss's mxfp4, an FP8 or AWQ one) is searched in its own
        # weights: vLLM refuses --quantization fp8 on most, and on an FP8 one it is the same engine.
        quant_options = ["model's own", "fp8"] if "fp8" in quant_default else ["model's own"]
        defaults(cp_quant=list(quant_options), cp_kv=list(kv_default))
        st.session_state.cp_quant = [q for q in st.session_state.cp_quant if q in quant_options] or ["model's own"]
        quants = st.multiselect("--quantization", quant_options, key="cp_quant")
        kvs = st.multiselect("--kv-cache-dtype", list(kv_default), key="cp_kv")
        quantization = tuple(None if q == "model's own" else q for q in quants)
        kv_dtypes = tuple(kvs)
    else:
        quantization, kv_dtypes = quant_default, kv_default
    try:
        moe = catalog.get_model(model).is_moe
    except ServeLabError:
        moe = False
    # MoE models: also try the experts whole on each TP GPU (sim.parallel); vLLM refuses it on dense ones
    ep_both = moe and st.toggle("also try --enable-expert-parallel", key="cp_ep",
                                help="each candidate with TP > 1 runs with the experts sharded and with them whole")
    max_replicas = st.number_input("Replicas at most", 1, 64, key="cp_max_replicas")
    cores = os.cpu_count() or 1
    if st.session_state.cp_workers > cores:  # more processes than cores only share them
        st.session_state.cp_workers = cores
    workers = st.number_input(f"Local worker processes (0: every core; this machine has {cores})", 0, cores,
                              key="cp_workers")


@st.cache_resource(show_spinner=False)
def _pools():
    """Worker processes kept for the server's life (one per core unless the page says), so a
    search does not pay their start-up; one pool at a time, replaced when the count changes."""
    from sim.tune.executors import OnePool

    return OnePool(watch=SOURCES)


terms = [f"{percentile}_{m}_ms<={v:g}" for m, v in (("ttft", ttft), ("tpot", tpot), ("e2el", e2el)) if v > 0]

try:
    from sim.tune.prices import shipped_prices
    from sim.tune.space import SearchSpace, default_max_model_len
    from sim.workload import WorkloadSpec

    sla = tune_mod.parse_sla(",".join(terms)).with_headroom(headroom / 100)
    workload = WorkloadSpec(num_prompts=int(num_prompts), random_input_len=int(input_len),
                            random_output_len=int(output_len))
    space = SearchSpace(model=model, gpus=tuple(gpus), tensor_parallel_sizes=tuple(sorted(tps)),
                        max_num_seqs=tuple(sorted(mns)), max_num_batched_tokens=tuple(sorted(mnbt)),
                        quantization=quantization, kv_cache_dtype=kv_dtypes, max_replicas=int(max_replicas),
                        enable_expert_parallel=(False, True) if ep_both else (False,),
                        # at most the model's own limit; a request longer than it is an input error
                        max_model_len=default_max_model_len(
                            int(input_len) + int(output_len), model,
                            lengths=f"--random-input-len {int(input_len)} + --random-output-len {int(output_len)}"))
    request = tune_mod.TuneRequest(space, workload, sla, shipped_prices(), target_load=float(rate) or None)
except ServeLabError as exc:
    with results:
        st.error(str(exc), icon=":material/block:")
    st.stop()

with results:
    c = st.columns([1, 1, 2])
    c[0].metric("Candidates", f"{space.num_candidates:,}",
                help=f"{plural(len(space.engine_configs()), 'engine configuration')} x "
                     f"{plural(space.max_replicas, 'replica count')}")
    c[1].metric("Load", f"{rate:g} req/s" if rate else "best per replica")
    c[2].markdown(f"**SLA**  \n{sla.describe()}")
    go_search = st.button("Search", type="primary", icon=":material/search:", key="cp_run")
    if go_search:
        bar = st.progress(0.0, text="pruning the configurations vLLM would refuse...")

        def progress(done: int, total: int, ev) -> None:
            bar.progress(done / total if total else 1.0,
                         text=f"simulated {done} of {plural(total, 'engine configuration')}")

        t0 = time.perf_counter()
        executor = _pools().get(int(workers))
        try:
            result = tune_mod.tune(request, executor, progress=progress)
        except ServeLabError as exc:
            st.error(str(exc))
            st.stop()
        except BrokenProcessPool:
            _pools().drop()  # a worker died (killed, out of memory): a new pool next time
            st.error("A simulation process stopped unexpectedly; press Search again to retry.")
            st.stop()
        bar.empty()
        st.session_state.cp_result = (request, result, time.perf_counter() - t0, executor.workers)

    stored = st.session_state.get("cp_result")
    if stored is None or stored[0] != request:
        st.info("Set the traffic, the SLA and the search space, then press Search.")
        st.stop()
    _, result, wall_s, num_workers = stored
    from lab.tune_export import deployment_manifest, rollout_manifest, serve_command
    from lab.tune_report import (counts_line, display_rows, drop_empty_columns, nothing_simulated_text,
                                 pruned_lines, result_dict, shows_layout, table_legend, table_rows)
    from sim.tune.prune import group_pruned
    from sim.tune.space import layout_of

    counts = result.counts
    st.caption(f"{counts_line(counts)}, {wall_s:.1f} s on {plural(num_workers, 'local process', 'local processes')}.")
    layout = shows_layout(space.engine_configs())  # a "layout" column (tp2 ep2) when EP is searched
    bullets = lambda struck: "\n".join(f"- {line.strip()}" for line in pruned_lines(struck))
    if not result.evaluations:  # an input problem, not an SLA miss
        said = nothing_simulated_text(counts)
        st.error(said[0].upper() + said[1:] + ".\n\n"
                 + (f"Pruned (vLLM would refuse them), by kind:\n\n{bullets(result.pruned)}\n\n" if result.pruned else "")
                 + (f"Not simulatable (the simulator cannot model their step time on that GPU), by kind:\n\n"
                    f"{bullets(result.unsimulatable)}\n\n" if result.unsimulatable else "")
                 + "Change the search space as the reasons suggest.", icon=":material/block:")
        st.code("\n\n".join(f"{g.kind}:\n{g.example}" for g in group_pruned(result.pruned + result.unsimulatable)),
                language=None, wrap_lines=True)
        st.stop()
    if result.unsimulatable:
        st.warning(f"Not simulatable, left out of the results: {plural(counts.unsimulatable_configs, 'configuration')} "
                   f"whose step time the simulator cannot model on that GPU, by kind:\n\n{bullets(result.unsimulatable)}",
                   icon=":material/warning:")
    if not result.ranked:
        st.error("No configuration meets the SLA. The closest ones, with the term each misses and by how much:",
                 icon=":material/block:")
        rows = drop_empty_columns(display_rows(table_rows(result.closest, request.mode, show_layout=layout)))
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        st.stop()

    st.subheader("Throughput per GPU against speed per user")
    fig = go.Figure()
    pts = result.points
    label = lambda d: (f"{d.config.gpu} {layout_of(d.config)} seqs {d.config.max_num_seqs} "
                       f"tokens {d.config.max_num_batched_tokens}")
    fig.add_scatter(x=[d.tokens_per_s_per_user for d in pts], y=[d.tokens_per_s_per_gpu for d in pts], mode="markers",
                    name="meets the SLA", text=[label(d) for d in pts], marker=dict(size=7, opacity=0.5))
    front = sorted(result.pareto, key=lambda d: d.tokens_per_s_per_user)
    fig.add_scatter(x=[d.tokens_per_s_per_user for d in front], y=[d.tokens_per_s_per_gpu for d in front],
                    mode="lines+markers", name="Pareto front", text=[label(d) for d in front])
    w = result.winner
    w_point = next(d for d in pts if d.config == w.config)  # one replica at its best, like the others
    fig.add_scatter(x=[w_point.tokens_per_s_per_user], y=[w_point.tokens_per_s_per_gpu], mode="markers",
                    name="cheapest", marker=dict(size=14, symbol="star"), text=[label(w)])
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="output tokens/s per user",
                      yaxis_title="output tokens/s per GPU")
    st.plotly_chart(fig, key="cp_pareto")

    st.subheader("Ranked (cheapest first)")
    df = pd.DataFrame(display_rows(table_rows(result.ranked, request.mode, show_layout=layout)))  # rounded to show
    st.dataframe(df, hide_index=True, key="cp_table")
    st.caption(table_legend(result.ranked, request.mode) + ". The plot: one replica of each, at its highest load "
               "meeting the SLA.")
    download_table(df, f"capacity-{model.split('/')[-1]}", key="cp_dl_table")

    st.subheader("Ship the winner")
    st.markdown(
        f"**{w.replicas} x {w.config.tensor_parallel_size} {w.config.gpu}**"
        + (f" ({layout_of(w.config)})" if layout else "") + f": ${w.cost_per_hour:.2f} an hour, "
        f"${w.cost_per_million_tokens:.3f} per million output tokens."
    )
    command = serve_command(w.config)
    deployment = deployment_manifest(w.config, w.replicas)
    rollout = rollout_manifest(w.config, w.replicas)
    st.code(command, language="bash")
    a, b, c2, d = st.columns(4)
    # Labelled by file name: four buttons share the row, and longer labels were cut at 1400 px.
    a.download_button("vllm-serve.sh", command + "\n", file_name="vllm-serve.sh", key="cp_dl_cmd",
                      icon=":material/terminal:", help="the winner's `vllm serve` command")
    b.download_button("deployment.yaml", deployment, file_name="deployment.yaml", key="cp_dl_deploy",
                      icon=":material/download:", help="a Deployment of the winner")
    c2.download_button("rollout.yaml", rollout, file_name="rollout.yaml", key="cp_dl_rollout",
                       icon=":material/alt_route:", help="the course's canary Rollout, with the winner's container")
    d.download_button("tune.json", json.dumps(result_dict(result, wall_s=wall_s), indent=2),
                      file_name="tune.json", key="cp_dl_json", icon=":material/data_object:",
                      help="the whole search, as `servelab tune --json`")
    with st.expander("The Rollout"):
        st.code(rollout, language="yaml")
