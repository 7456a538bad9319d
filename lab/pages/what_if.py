"""Serving what-if: model, GPU and `vllm serve` flags -> KV capacity, concurrency, latency vs load."""

from __future__ import annotations

import time
from concurrent.futures.process import BrokenProcessPool

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from lab.pages import runs
from lab.pages.common import SOURCES, defaults, download_json, download_table, need
from lab.pages.serving import deployment_yaml, vllm_serve_command
from sim.config import GPU_MEMORY_UTILIZATION, PERFORMANCE_MODES, EngineConfig, config_scheduler_limits
from sim.errors import ServeLabError
from sim.parallel import kv_cache_placement

catalog = need("sim.catalog", "the model and GPU catalog")

GiB = 1024**3


def _is_moe(name: str) -> bool:
    try:
        return catalog.get_model(name).is_moe
    except ServeLabError:
        return False


def _model_label(name: str) -> str:
    """The model's id, with what kind it is: dense, MoE (experts, top-k), MLA, sliding window, quantized."""
    try:
        m = catalog.get_model(name)
    except ServeLabError:
        return name
    kinds = []
    if m.is_moe:
        kinds.append(f"MoE {m.num_experts} experts, top-{m.experts_per_token}")
    if m.is_mla:
        kinds.append("MLA")
    if m.is_hybrid:
        kinds.append("sliding window")
    if m.quantization is not None:
        kinds.append(m.quantization.method)
    return f"{name} ({', '.join(kinds)})" if kinds else name


# The weight and KV dtypes the page offers (the CLI takes every vLLM spelling; sim.precision).
# "checkpoint" stands for no --quantization flag: a selectbox whose value is None shows its
# placeholder ("Choose an option"), as though nothing had been chosen.
CHECKPOINT_OWN = "checkpoint"
QUANTIZATIONS = [CHECKPOINT_OWN, "fp8_per_tensor"]
KV_CACHE_DTYPES = ["auto", "fp8"]

defaults(
    wi_model="meta-llama/Llama-3.1-8B",
    wi_gpu="h100-80gb",
    wi_tp=1,
    wi_dp=1,
    wi_ep=False,
    wi_max_model_len=8192,
    # EngineConfig's default (vLLM's), as the CLI and the capacity planner use: one configuration, one KV size
    wi_gpu_util=GPU_MEMORY_UTILIZATION,
    wi_prefix=True,
    wi_mnbt=0,
    wi_mns=0,
    wi_perf="balanced",
    wi_quant=CHECKPOINT_OWN,
    wi_kv="auto",
    wi_input_len=512,
    wi_output_len=256,
    wi_num_prompts=200,
    wi_rates=[4.0, 16.0, 32.0, 64.0, 128.0],
)

st.title("Serving what-if")
st.caption(
    "Pick a model, a GPU and the flags you would give `vllm serve`. ServeLab computes the KV cache "
    "vLLM would allocate at start-up, then simulates the server under rising request rates."
)

controls, results = st.columns([1, 3], gap="large")
with controls:
    st.subheader("vllm serve")
    models = catalog.known_models()
    gpus = catalog.known_gpus()
    model = st.selectbox("Model", models, key="wi_model", format_func=_model_label)
    gpu = st.selectbox("GPU (`--gpu`)", gpus, key="wi_gpu")
    tp = st.select_slider("--tensor-parallel-size", [1, 2, 4, 8], key="wi_tp")
    dp = st.select_slider("--data-parallel-size", [1, 2, 4, 8], key="wi_dp",
                          help="engine cores (DP ranks), each with --tensor-parallel-size GPUs, its own KV cache "
                               "and its own batches, behind vLLM's load balancer")
    if _is_moe(model):  # where a MoE model's experts live (sim.parallel): TP alone, or EP over tp x dp GPUs
        ep = st.toggle("--enable-expert-parallel", key="wi_ep",
                       help="whole experts spread over tp x dp GPUs, instead of every expert sharded over them")
    else:
        ep = False
    max_model_len = st.number_input("--max-model-len", 256, 131072, step=256, key="wi_max_model_len")
    gpu_util = st.slider("--gpu-memory-utilization", 0.50, 0.98, step=0.01, key="wi_gpu_util")
    prefix = st.toggle("--enable-prefix-caching", key="wi_prefix")
    mnbt = st.number_input("--max-num-batched-tokens (0: vLLM's default)", 0, 65536, step=512, key="wi_mnbt")
    mns = st.number_input("--max-num-seqs (0: vLLM's default)", 0, 2048, step=16, key="wi_mns")
    perf = st.selectbox("--performance-mode", PERFORMANCE_MODES, key="wi_perf",
                        help="throughput doubles the default --max-num-batched-tokens and --max-num-seqs; "
                             "interactivity captures a CUDA graph for every batch size up to 32")
    quant = st.selectbox("--quantization", QUANTIZATIONS, key="wi_quant",
                         format_func=lambda q: "the checkpoint's own" if q == CHECKPOINT_OWN else q,
                         help="fp8_per_tensor: FP8 weights quantized at load time from a 16-bit checkpoint "
                              "(vLLM's online FP8; FP8 GEMMs from compute capability 8.9, Marlin below)")
    kv_dtype = st.selectbox("--kv-cache-dtype", KV_CACHE_DTYPES, key="wi_kv",
                            help="auto: the model's dtype, or the checkpoint's FP8 KV cache if it declares one; "
                                 "fp8 halves the bytes a token takes")
    st.subheader("Load (`vllm bench serve`)")
    input_len = st.number_input("--random-input-len", 16, 32768, step=64, key="wi_input_len")
    output_len = st.number_input("--random-output-len", 1, 8192, step=32, key="wi_output_len")
    num_prompts = st.number_input("--num-prompts per rate", 20, 2000, step=20, key="wi_num_prompts")
    rates = st.multiselect(
        "--request-rate (requests/s)", [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0], key="wi_rates"
    )

try:
    config = EngineConfig(
        model=model,
        gpu=gpu,
        tensor_parallel_size=int(tp),
        data_parallel_size=int(dp),
        enable_expert_parallel=bool(ep),
        max_model_len=int(max_model_len),
        gpu_memory_utilization=float(gpu_util),
        enable_prefix_caching=bool(prefix),
        max_num_batched_tokens=int(mnbt) or None,
        max_num_seqs=int(mns) or None,
        performance_mode=str(perf),
        quantization=None if quant == CHECKPOINT_OWN else quant,
        kv_cache_dtype=str(kv_dtype),
    )
    # vLLM's own checks of the scheduler limits (--max-num-batched-tokens below --max-num-seqs, ...),
    # as `servelab memory` and `bench` run them: refused here too, never simulated or exported.
    config_scheduler_limits(config, "serve")
    plan = runs.memory_plan(config)
except ServeLabError as exc:
    with results:
        st.error(f"vLLM would refuse to start: {exc}", icon=":material/block:")
    st.stop()

@st.cache_data(show_spinner=False, max_entries=64)
def _step_time_gap(config: EngineConfig) -> str | None:
    """Why the load simulation cannot run for ``config`` (its step time is not modelled, or it asks
    for several DP ranks), in plain words; None when it can."""
    from sim.precision import resolve_precision
    from sim.steptime import make_step_model

    if config.data_parallel_size > 1:
        from sim.dp import check_data_parallel

        try:
            check_data_parallel(config)
        except ServeLabError as exc:
            return f"The load simulation does not run this layout: {exc}"
    model, gpu = catalog.get_model(config.model), catalog.get_gpu(config.gpu)
    try:
        make_step_model(model, gpu, config.tensor_parallel_size, precision=resolve_precision(model, gpu, config),
                        data_parallel_size=config.data_parallel_size,
                        enable_expert_parallel=config.enable_expert_parallel)
    except ServeLabError as exc:
        return f"Step time for this model is not modelled yet, so there is no load simulation: {exc}"
    return None


@st.cache_resource(show_spinner=False)
def _sweep_pools():
    """Worker processes kept for the server's life, one per core (the capacity planner's local
    executor): each rate of a sweep runs in its own process, and no sweep pays their start-up.
    Replaced when the simulator's code changes (sim.tune.executors.OnePool)."""
    from sim.tune.executors import LocalExecutor, OnePool

    def make(workers: int, fresh: bool) -> LocalExecutor:
        pool = LocalExecutor(workers or None, preload=("lab.pages.runs",), spawn=fresh)
        # The processes start, and load the catalog and calibration with a two-request run, while
        # the page is read, not when the button is pressed.
        pool.warm_up(runs.rate_summary, (EngineConfig(model="meta-llama/Llama-3.1-8B", gpu="h100-80gb",
                                                      max_model_len=2048),
                                         runs.RandomLoad(2, 16, 2, 0.0, 1.0)))
        return pool

    return OnePool(make=make, watch=SOURCES)


def _placement(plan: dict) -> None:
    """Where the weights and the KV cache live on one GPU (sim.parallel, sim.architectures)."""
    parts = plan.get("weight_bytes_by_part") or {}
    if not parts:
        return
    tp, dp = plan["tensor_parallel_size"], plan["data_parallel_size"]
    shard = "whole" if tp == 1 else f"sharded over TP {tp}"
    shard += f", a copy on each of {dp} DP ranks" if dp > 1 else ""
    rows = [("attention", parts["attention"], shard), ("embeddings, lm_head, norms", parts["other"], shard)]
    if parts["dense_mlp"]:
        rows.append(("dense MLPs, shared experts", parts["dense_mlp"], shard))
    if plan["experts_per_gpu"] is not None:
        experts = catalog.get_model(plan["model"]).num_experts
        rows.append(("router", parts["router"], "on every GPU"))
        if plan["expert_parallel_size"] > 1:
            noun = "expert" if plan['experts_per_gpu'] == 1 else "experts"
            where = f"{plan['experts_per_gpu']} whole {noun} of {experts} (EP {plan['expert_parallel_size']})"
        else:
            moe_tp = plan["moe_tensor_parallel_size"]
            where = f"all {experts} experts, each sharded over {moe_tp} GPU{'s' if moe_tp > 1 else ''}"
        rows.append(("routed experts", parts["routed_experts"], where))
    kv = kv_cache_placement(catalog.get_model(plan["model"]), tp)
    rows.append(("KV cache", plan["available_kv_bytes"], kv + ("; each DP rank its own" if dp > 1 else "")))
    n = plan["num_gpus"]
    st.markdown("**Where it lives**, " + (f"on each of the {n} GPUs" if n > 1 else "on the one GPU")
                + (" (the fullest: experts do not divide evenly)"
                   if plan["experts_per_gpu"] and plan["expert_parallel_size"] > 1
                   and experts % plan["expert_parallel_size"] else ""))
    st.dataframe(pd.DataFrame([{"part": name, "GiB per GPU": round(b / GiB, 2), "placement": where}
                               for name, b, where in rows]), hide_index=True)


def _load_chart(df: pd.DataFrame):
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Output tokens/s", "Mean TTFT (ms)", "Mean TPOT (ms)"))
    for col, name in enumerate(("output_throughput", "mean_ttft_ms", "mean_tpot_ms"), start=1):
        fig.add_scatter(x=df.request_rate, y=df[name], mode="lines+markers", name=name, row=1, col=col)
        fig.update_xaxes(title_text="request rate (req/s)", type="log", row=1, col=col)
    fig.update_layout(height=330, showlegend=False, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def _sweep(config: EngineConfig, loads: list) -> list[dict]:
    """Simulate every load, in parallel, drawing the curve again as each one finishes.
    Finished rates are kept in the session, so a rerun shows them at once."""
    done = st.session_state.setdefault("wi_sweep_done", {})
    # Keyed by the code too (the version the pool's workers run): after an edit under sim/ the
    # rates are simulated again.
    pools = _sweep_pools()
    pool = pools.get(0)
    code = pools.version
    todo = [load for load in loads if (code, config, load) not in done]
    chart = st.empty()
    progress = st.progress(0.0, text="simulating...") if todo else None

    def rows() -> list[dict]:
        return [{"request_rate": load.request_rate, **done[(code, config, load)]} for load in loads
                if (code, config, load) in done]

    last_draw_s = time.monotonic()
    try:
        for i, (load, summary) in enumerate(pool.map_unordered(runs.rate_summary, [(config, l) for l in todo])):
            done[(code, config, load)] = summary
            progress.progress((i + 1) / len(todo), text=f"{load.request_rate:g} requests/s done")
            # Redraw as rates finish, at most four times a second (a plotly figure costs the browser
            # a moment to draw); the last one is drawn below.
            if i < len(todo) - 1 and time.monotonic() - last_draw_s >= 0.25:
                chart.plotly_chart(_load_chart(pd.DataFrame(rows())), key=f"wi_load_chart_{i}")
                last_draw_s = time.monotonic()
    except ServeLabError as exc:
        st.error(str(exc))
        st.stop()
    except BrokenProcessPool:
        pools.drop()  # a worker died (killed, out of memory): start a new pool next time
        st.error("A simulation process stopped unexpectedly; press the button again to retry.")
        st.stop()
    if progress is not None:
        progress.empty()
    if len(done) > 256:  # keep the session small: drop the oldest
        for key in list(done)[: len(done) - 256]:
            del done[key]
    chart.plotly_chart(_load_chart(pd.DataFrame(rows())), key="wi_load_chart")
    return rows()


with results:
    st.subheader("At start-up")
    c = st.columns(4)
    c[0].metric("GPU KV cache (tokens)", f"{plan['kv_cache_tokens']:,}")
    groups = plan.get("kv_cache_groups") or ()
    blocks_help = f"{plan['block_size']} tokens a block"
    if len(groups) > 1:  # a hybrid model: blocks x block size is not the token count (sim.memory)
        blocks_help += (f" of one KV cache group's layers; this model's {len(groups)} groups "
                        f"({', '.join(dict.fromkeys(g['kind'].replace('_', ' ') for g in groups))}) draw on one pool, "
                        f"and vLLM states the cache in tokens as max concurrency x max model length")
    c[1].metric("KV blocks", f"{plan['num_gpu_blocks']:,}", help=blocks_help)
    c[2].metric(
        "Max concurrency",
        f"{plan['max_concurrency']:.2f}x",
        help=f"requests of {plan['max_model_len']:,} tokens that fit at once",
    )
    c[3].metric("Weights per GPU", f"{plan['weights_bytes_per_gpu'] / GiB:.1f} GiB")
    if plan["data_parallel_size"] > 1:
        st.caption(f"Each of the {plan['data_parallel_size']} DP ranks has its own KV cache: in all "
                   f"{plan['total_kv_cache_tokens']:,} tokens, maximum concurrency "
                   f"{plan['total_max_concurrency']:.2f}x, on {plan['num_gpus']} GPUs.")
    parts = [
        ("weights", plan["weights_bytes_per_gpu"]),
        ("activations", plan["activation_peak_bytes"]),
        (f"CUDA graphs (up to {max(plan['cudagraph_capture_sizes'], default=0):,} tokens)",
         plan["cudagraph_bytes"]),
        ("non-torch", plan["non_torch_bytes"]),
        # a block holds block_size tokens of the widest KV cache group's layers (all layers, but in a hybrid model)
        ("KV cache", plan["num_gpu_blocks"] * max(g["num_layers"] * g["page_size_bytes"] for g in plan["kv_cache_groups"])),
    ]
    parts.append(("left unused", max(plan["total_bytes"] - sum(b for _, b in parts), 0)))
    fig = go.Figure(
        [go.Bar(y=["one GPU"], x=[b / GiB], name=name, orientation="h") for name, b in parts],
        # The legend goes under the bar, two entries a row: beside it, six entries did not fit the
        # chart's height and plotly scrolled the first ("weights") out of sight.
        layout=dict(barmode="stack", height=260, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="GiB",
                    legend=dict(orientation="h", yanchor="top", y=-0.5, xanchor="left", x=0,
                                entrywidth=0.5, entrywidthmode="fraction", traceorder="normal")),
    )
    st.plotly_chart(fig, key="wi_memory_chart")
    _placement(plan)
    st.code("\n".join(plan["startup_log_lines"]), language="text", wrap_lines=True)

    st.subheader("Under load")
    gap = _step_time_gap(config)
    if gap is not None:  # the memory above stands; the load simulation needs a step time
        st.info(gap, icon=":material/info:")
    else:
        _sweep_pools().get(0)  # started while the page is read
        if st.button("Simulate the rates", type="primary", icon=":material/play_arrow:", key="wi_run"):
            st.session_state.wi_ran = True
    if gap is None and st.session_state.get("wi_ran") and rates:
        rows = _sweep(config, [runs.RandomLoad(int(num_prompts), int(input_len), int(output_len), 0.0, float(rate))
                               for rate in sorted(rates)])
        df = pd.DataFrame(rows)
        st.dataframe(df.round(2), hide_index=True)
        download_table(df, f"what-if-{model.split('/')[-1]}-{gpu}-tp{tp}", key="wi_dl")
        saturated = df[df.p99_ttft_ms > 10 * df.p99_ttft_ms.min()]
        if len(saturated):
            st.info(
                f"From {saturated.request_rate.min():g} requests/s on, requests queue: TTFT grows while "
                "throughput stops rising. That rate is past what this configuration can serve.",
                icon=":material/info:",
            )
    elif gap is None and not rates:
        st.info("Choose at least one request rate.")

    st.subheader("Take it to a real GPU")
    left, right = st.columns(2)
    command = vllm_serve_command(config)
    left.code(command, language="bash")
    left.download_button("Download the command", command + "\n", file_name="vllm-serve.sh", key="wi_dl_cmd")
    manifest = deployment_yaml(config)
    right.code(manifest, language="yaml")
    right.download_button("Download the Deployment", manifest, file_name="vllm-deployment.yaml", key="wi_dl_yaml")
    download_json(plan, "memory-plan", "Download the memory plan (JSON)", key="wi_dl_plan")
