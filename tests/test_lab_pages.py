"""Every lab page, headless (Streamlit's AppTest): it renders, its main controls work, no exception.

Runs are kept small (tens of requests) so the suite stays fast; the simulator's own tests check
the numbers, these check that the pages drive it and show the result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = ("paged_attention", "batching", "what_if", "capacity", "canary", "cluster", "exercises")


def open_page(page: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page is not None:
        at.switch_page(f"lab/pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.error] + [e.value for e in at.info] + [e.value for e in at.success]
    parts += [e.value for e in at.warning]
    return "\n".join(str(p) for p in parts)


def test_home_links_every_page():
    at = open_page()
    assert at.title[0].value == "ServeLab"
    assert "exercises 6.1 to 6.4" in texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_first_without_error(page):
    # Each page works with nothing set by another page.
    needs = {"canary": "sim.rollout", "cluster": "lab.cluster.simbackend"}.get(page)
    if needs:
        pytest.importorskip(needs)
    at = open_page(page)
    assert at.title, f"{page} shows no title"
    assert not at.warning or "needs `" not in texts(at), texts(at)


def test_paged_attention_steps_to_a_preemption_and_shares_blocks():
    at = open_page("paged_attention")
    seen = []
    for _ in range(12):
        at.button(key="pa_next").click().run()
        assert not at.exception
        seen.append(texts(at))
    story = "\n".join(seen)
    assert "found in the prefix cache" in story or "come from the prefix cache" in story
    assert "is preempted" in story
    assert "resumes" in story
    table = at.dataframe[0].value
    assert "block table (logical -> physical)" in table.columns


def test_paged_attention_without_prefix_caching_shares_nothing():
    at = open_page("paged_attention", pa_caching=False)
    story = []
    for _ in range(4):
        at.button(key="pa_next").click().run()
        story += [m.value for m in at.markdown if m.value.startswith("**Step")]
    assert len(story) == 4
    assert "is admitted" in "\n".join(story)
    assert "prefix cache" not in "\n".join(story)


def test_paged_attention_shows_a_sliding_window_models_two_groups_side_by_side():
    at = open_page("paged_attention", pa_hybrid=True, pa_blocks=32)
    story, sliding_nulls = [], False
    for _ in range(10):
        at.button(key="pa_next").click().run()
        assert not at.exception
        story.append(texts(at))
        sliding, full = at.dataframe[0].value, at.dataframe[1].value
        assert list(sliding["request"]) == list(full["request"])
        column = "block table (logical -> physical)"
        sliding_nulls |= any("null" in t for t in sliding[column])
        assert not any("null" in t for t in full[column])  # full attention keeps every block
    assert sliding_nulls
    assert "fell out of the 8-token window" in "\n".join(story)
    assert "Sliding-window group" in texts(at) and "Full-attention group" in texts(at)


def test_what_if_memory_and_export():
    at = open_page("what_if", wi_tp=2)
    labels = [m.label for m in at.metric]
    assert "GPU KV cache (tokens)" in labels and "Max concurrency" in labels
    code = "\n".join(c.value for c in at.code)
    assert "vllm serve meta-llama/Llama-3.1-8B" in code
    assert "--tensor-parallel-size=2" in code
    assert "nvidia.com/gpu: 2" in code


def test_what_if_explains_a_model_that_does_not_fit():
    at = open_page("what_if", wi_model="meta-llama/Llama-3.1-70B", wi_gpu="l4", wi_tp=1)
    assert "vLLM would refuse to start" in texts(at)


def test_what_if_simulates_rates():
    at = open_page("what_if", wi_num_prompts=20, wi_rates=[2.0, 8.0], wi_output_len=64)
    at.button(key="wi_run").click().run()
    assert not at.exception
    df = at.dataframe[0].value
    assert list(df.request_rate) == [2.0, 8.0]
    assert (df.output_throughput > 0).all()


def test_capacity_planner_searches_ranks_and_exports():
    at = open_page("capacity", cp_gpus=["h100-80gb", "a100-80gb"], cp_tp=[1, 2], cp_mns=[64, 256], cp_mnbt=[8192],
                   cp_num_prompts=40, cp_output_len=64, cp_input_len=256, cp_rate=10.0, cp_workers=2,
                   cp_quant=["model's own"], cp_kv=["auto"])  # the dtype widgets exist where precision is modelled
    at.button(key="cp_run").click().run()
    assert not at.exception, at.exception
    assert "64 candidates (8 engine configurations x 8 replica counts)" in texts(at)
    table = at.dataframe[0].value
    assert len(table) >= 1 and list(table["$/hour"]) == sorted(table["$/hour"])
    assert "tok/s/GPU @10 req/s" in table and "@10 req/s: at the offered load" in texts(at)
    # rounded to show: cents an hour, whole tokens/s per GPU, a tenth of a token/s per user
    assert all(round(v, 2) == v for v in table["$/hour"]) and all(float(v).is_integer() for v in table["tok/s/GPU @10 req/s"])
    assert all(round(v, 1) == v for v in table["tok/s/user"])
    assert "8 engine configurations" in texts(at) and "pruned by the memory model" not in texts(at)
    assert any("vllm serve meta-llama/Llama-3.1-8B" in c.value for c in at.code)
    assert any("kind: Rollout" in c.value for c in at.code)
    assert at.get("plotly_chart")


def test_capacity_planner_shows_the_closest_when_no_configuration_meets():
    at = open_page("capacity", cp_gpus=["a100-80gb"], cp_tp=[1], cp_mns=[64], cp_mnbt=[8192], cp_num_prompts=40,
                   cp_output_len=64, cp_input_len=256, cp_tpot_ms=1.0, cp_workers=1, cp_quant=["model's own"], cp_kv=["auto"])
    at.button(key="cp_run").click().run()
    assert not at.exception, at.exception
    assert "No configuration meets the SLA" in texts(at)
    assert "p90 TPOT <= 1 ms by +" in at.dataframe[0].value["misses"].iloc[0]
    # a configuration that misses has no replicas, cost or throughput: no column of blanks
    assert not {"replicas", "GPUs", "$/hour", "req/s/replica", "tok/s/user"} & set(at.dataframe[0].value.columns)


def test_capacity_planner_says_why_when_every_configuration_is_pruned():
    at = open_page("capacity", cp_model="meta-llama/Llama-3.1-70B", cp_gpus=["l4"], cp_tp=[1, 2], cp_mns=[64],
                   cp_mnbt=[8192], cp_num_prompts=40, cp_workers=1, cp_quant=["model's own"], cp_kv=["auto"])
    at.button(key="cp_run").click().run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "Nothing to simulate: all 2 engine configurations were pruned" in shown
    assert "2: the weights do not fit in GPU memory (l4 tp1, l4 tp2)" in shown
    assert "No configuration meets the SLA" not in shown and not at.dataframe


def test_batching_compares_engines():
    at = open_page("batching", bt_num=24, bt_engines=["vllm", "hf-static"], bt_output=64, bt_input=64)
    at.button(key="bt_run").click().run()
    assert not at.exception
    df = at.dataframe[0].value
    gain = df.set_index("engine")["x over hf-static"]
    assert gain["vllm"] > 1.0
    assert len(at.get("plotly_chart")) >= 3


def test_exercises_page_shows_feedback_for_the_starter():
    at = open_page("exercises", ex_id="6.2")
    at.button(key="ex_run_6.2").click().run()
    assert "What to do" in texts(at)


def test_canary_instructor_demo_rolls_back():
    pytest.importorskip("sim.rollout")
    at = open_page("canary", cn_demo_seconds=0.0)
    at.button(key="cn_demo").click().run()
    assert not at.exception
    assert any("Rolled back" in e.value and "llm-judge-score" in e.value for e in at.error), texts(at)
    assert at.dataframe[0].value.event.str.contains("ABORT").any()


def test_canary_without_fault_promotes():
    pytest.importorskip("sim.rollout")
    at = open_page("canary")
    at.button(key="cn_run").click().run()
    assert any("Promoted" in s.value for s in at.success), texts(at)


@pytest.mark.parametrize("trigger, needle", [
    pytest.param("cost", "cost-per-request-vs-stable", id="cost"),
    pytest.param("manual", "Aborted by hand at 2.50 h", id="manual"),
])
def test_canary_trigger_preset_rolls_back_by_that_trigger(trigger, needle):
    pytest.importorskip("sim.rollout")
    at = open_page("canary", cn_trigger=trigger)
    at.button(key="cn_run").click().run()
    assert not at.exception
    assert any(needle in e.value for e in at.error), texts(at)
    assert any("servelab rollout simulate" in c.value for c in at.code)


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVELAB_STATE_DIR", str(tmp_path))
    return tmp_path


def test_cluster_deploy_then_abort(state_dir):
    pytest.importorskip("lab.cluster.simbackend")
    at = open_page("cluster", cl_clock="live")
    at.button(key="cl_deploy").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] in ("Paused", "Progressing") and metrics["Canary weight"] == "1%"
    at.button(key="cl_abort").click().run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "Degraded" and metrics["Canary weight"] == "0%"
    assert any("Rollout aborted update to revision 2" in c.value for c in at.caption), texts(at)


def test_cluster_retry_then_undo(state_dir):
    """Retry restarts an aborted rollout's steps; undo goes back to the stable revision (3)."""
    pytest.importorskip("lab.cluster.simbackend")
    at = open_page("cluster", cl_clock="live")
    at.button(key="cl_deploy").click().run()
    at.button(key="cl_abort").click().run()
    at.button(key="cl_retry").click().run()
    assert not at.exception and not at.error, texts(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] in ("Paused", "Progressing") and metrics["Canary weight"] == "1%"
    assert metrics["Step"] == "1 / 9" and at.session_state.cl_status["details"]["Revision"] == "2"
    at.button(key="cl_undo").click().run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "Healthy" and metrics["Canary weight"] == "0%" and metrics["Step"] == "9 / 9"
    assert at.session_state.cl_status["details"]["Revision"] == "3"  # the stable template, numbered anew


def test_cluster_fault_at_deploy_rolls_back(state_dir):
    pytest.importorskip("lab.cluster.simbackend")
    at = open_page("cluster", cl_clock="jump", cl_faults=["error-rate=0.02"])
    at.button(key="cl_deploy").click().run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "Degraded"
    assert any("error-rate" in e.value for e in at.error)


def test_cluster_kind_shows_preflight_and_plan():
    pytest.importorskip("lab.cluster.kind")
    at = open_page("cluster", cl_backend="kind")
    assert "Preflight" in [s.value for s in at.subheader]
    assert any("--context kind-servelab" in c.value for c in at.code)


@pytest.fixture
def kind_checks(monkeypatch):
    """Stand-in preflight findings for the kind backend (none of its programs is run)."""
    import streamlit as st

    from lab.cluster import preflight

    def use(checks):
        monkeypatch.setattr(preflight, "kind_checks", lambda: list(checks))

    st.cache_data.clear()  # the page caches the preflight
    yield use
    st.cache_data.clear()


PLUGIN_MISSING = ("kubectl-argo-rollouts", False, "not found on PATH (optional: to watch the canary)", False)


@pytest.mark.parametrize(
    "missing, cross, warned, usable",
    [
        pytest.param([PLUGIN_MISSING], [], ["kubectl-argo-rollouts"], True, id="optional-plugin-is-a-warning"),
        pytest.param([("kind", False, "not found on PATH", True), PLUGIN_MISSING], ["kind"],
                     ["kubectl-argo-rollouts"], False, id="required-kind-is-a-cross"),
    ],
)
def test_cluster_kind_preflight_marks(kind_checks, missing, cross, warned, usable):
    pytest.importorskip("lab.cluster.kind")
    from lab.cluster.base import Check

    found = [Check(name, True, "v1 (/usr/bin)") for name in ("docker", "kubectl", "istioctl")]
    kind_checks(found + [Check(name, ok, detail, "install it", required=req) for name, ok, detail, req in missing])
    at = open_page("cluster", cl_backend="kind")
    marks = [m.value for m in at.markdown if "**" in m.value and ":material/" in m.value]
    assert sorted(m.split("**")[1] for m in marks if m.startswith(":red[:material/close:]")) == cross
    assert sorted(m.split("**")[1] for m in marks if m.startswith(":orange[:material/warning:]")) == warned
    assert sum(m.startswith(":green[:material/check:]") for m in marks) == 3
    assert any("kind is not usable" in w.value for w in at.warning) is not usable
    assert any(b.key == "cl_kind_up" for b in at.button) is usable  # kind's verbs are offered


@pytest.mark.parametrize("exercise_id", ["6.1", "6.2", "6.3", "6.4"])
def test_exercises_page_checks_every_reference_solution(exercise_id):
    # Needs the part of sim each check runs (autoscale, rollout, engine).
    module = {"6.1": "sim.autoscale", "6.3": "sim.rollout", "6.4": "sim.engine"}.get(exercise_id)
    if module:
        pytest.importorskip(module)
    at = open_page("exercises", ex_id=exercise_id)
    at.radio(key=f"ex_source_{exercise_id}").set_value("The reference solution (instructors)").run()
    at.button(key=f"ex_run_{exercise_id}").click().run()
    assert not at.exception
    assert any("All checks passed" in s.value for s in at.success), texts(at)


def test_canary_thresholds_move_the_rollback():
    # With the background judge thresholds under the faulty canary's score, the 30-minute check
    # lets it through; the phase-2 gate (quality against stable) still catches it, hours later.
    pytest.importorskip("sim.rollout")
    at = open_page(
        "canary",
        cn_faults=["quality=-0.15"],
        **{"cn_th_llm-judge-score": 0.5, "cn_th_quality-vs-stable": 0.5},
    )
    at.button(key="cn_run").click().run()
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "ai-api-gate-phase2" in message and "llm-judge-score" not in message, texts(at)


def test_batching_spread_sweep():
    at = open_page("batching", bt_num=16, bt_engines=["vllm"], bt_output=48, bt_input=32)
    at.button(key="bt_run").click().run()
    at.button(key="bt_sweep").click().run()
    assert not at.exception
    sweep = at.dataframe[1].value
    assert list(sweep["range ratio"]) == [0.0, 0.5, 0.9]
    assert (sweep["gain"] > 0).all()


# -- today's models (issue 12) ------------------------------------------------------------------------
def test_what_if_offers_the_new_models():
    at = open_page("what_if")
    options = at.selectbox(key="wi_model").options
    for name in ("Qwen/Qwen3-32B", "google/gemma-3-27b-it", "mistralai/Mixtral-8x7B-v0.1", "Qwen/Qwen3-30B-A3B",
                 "deepseek-ai/DeepSeek-V3", "openai/gpt-oss-120b"):
        assert any(o.startswith(name) for o in options), name
    assert any("MoE 128 experts, top-8" in o for o in options)


def test_what_if_says_a_hybrid_models_blocks_are_not_its_tokens():
    # gpt-oss: sliding-window and full-attention groups share the pool; blocks x 16 != tokens.
    at = open_page("what_if", wi_model="openai/gpt-oss-120b", wi_gpu="h100-80gb")
    blocks = next(m for m in at.metric if m.label == "KV blocks")
    assert "2 groups (sliding attention, full attention)" in blocks.help
    dense = next(m for m in open_page("what_if").metric if m.label == "KV blocks")
    assert dense.help == "16 tokens a block"


def test_what_if_places_a_moe_models_experts_and_says_what_is_not_modelled():
    at = open_page("what_if", wi_model="Qwen/Qwen3-30B-A3B", wi_tp=2, wi_dp=2, wi_ep=True, wi_max_model_len=8192)
    placement = next(d.value for d in at.dataframe if "placement" in d.value.columns)
    experts = placement[placement.part == "routed experts"].iloc[0]
    assert experts.placement == "32 whole experts of 128 (EP 4)"
    text = texts(at)
    assert "Each of the 2 DP ranks has its own KV cache" in text
    from sim.catalog import get_gpu, get_model
    from sim.errors import ConfigError
    from sim.steptime import make_step_model

    try:  # until the MoE step time lands, the page says so in place of the load simulation
        make_step_model(get_model("qwen3-30b-a3b"), get_gpu("h100"), 2, data_parallel_size=2,
                        enable_expert_parallel=True)
        modelled = True
    except ConfigError:
        modelled = False
    assert ("Step time for this model is not modelled yet" in text) == (not modelled)
    code = "\n".join(c.value for c in at.code)
    assert "--data-parallel-size=2" in code and "--enable-expert-parallel" in code and "nvidia.com/gpu: 4" in code
    assert bool([b for b in at.button if b.key == "wi_run"]) == modelled


def test_what_if_mla_model_shows_memory_and_says_step_time_is_not_modelled():
    at = open_page("what_if", wi_model="deepseek-ai/DeepSeek-V3", wi_gpu="h200", wi_tp=8, wi_max_model_len=8192)
    labels = [m.label for m in at.metric]
    assert "GPU KV cache (tokens)" in labels
    from sim.catalog import get_gpu, get_model
    from sim.errors import ConfigError
    from sim.steptime import make_step_model

    try:  # until MLA's step time lands, the page says so in place of the load simulation
        make_step_model(get_model("deepseek-v3"), get_gpu("h200"), 8)
        modelled = True
    except ConfigError:
        modelled = False
    assert any(b.key == "wi_run" for b in at.button) == modelled
    assert ("Step time for this model is not modelled yet" in texts(at)) == (not modelled)


def test_what_if_runs_data_parallel_ranks_of_a_dense_model():
    at = open_page("what_if", wi_dp=2, wi_num_prompts=20, wi_rates=[8.0], wi_output_len=32)
    assert "Each of the 2 DP ranks has its own KV cache" in texts(at)
    at.button(key="wi_run").click().run()
    assert not at.exception, at.exception
    assert (at.dataframe[-1].value.output_throughput > 0).all()


def test_capacity_planner_offers_expert_parallelism_for_a_moe_model():
    at = open_page("capacity", cp_model="Qwen/Qwen3-30B-A3B", cp_gpus=["h100-80gb"], cp_tp=[1, 2], cp_mns=[64],
                   cp_mnbt=[8192], cp_quant=["model's own"], cp_kv=["auto"], cp_max_replicas=2)
    assert next(m for m in at.metric if m.label == "Candidates").value == "4"  # TP1, TP2; x 2 replica counts
    at.toggle(key="cp_ep").set_value(True).run()
    assert not at.exception, at.exception
    candidates = next(m for m in at.metric if m.label == "Candidates")
    assert candidates.value == "6"  # TP1, TP2, TP2 with EP; x 2 replica counts
    dense = open_page("capacity")
    assert not [t for t in dense.toggle if t.key == "cp_ep"]


def test_capacity_planner_searches_a_quantized_checkpoint_in_its_own_weights():
    # vLLM refuses --quantization fp8 on gpt-oss's mxfp4 experts: the page does not offer it, and
    # a choice carried over from a 16-bit model is dropped (as `servelab tune`'s default).
    at = open_page("capacity", cp_quant=["model's own", "fp8"])
    assert at.multiselect(key="cp_quant").options == ["model's own", "fp8"]
    at.selectbox(key="cp_model").set_value("openai/gpt-oss-120b").run()
    assert not at.exception, at.exception
    assert at.multiselect(key="cp_quant").options == ["model's own"]
    assert at.multiselect(key="cp_quant").value == ["model's own"]


def test_capacity_planner_plans_with_headroom():
    at = open_page("capacity", cp_gpus=["h100-80gb"], cp_tp=[1], cp_mns=[64], cp_mnbt=[8192], cp_num_prompts=40,
                   cp_output_len=64, cp_input_len=256, cp_headroom=20, cp_workers=1, cp_quant=["model's own"],
                   cp_kv=["auto"])
    assert not at.exception, at.exception
    assert "p90 TTFT <= 400 ms, p90 TPOT <= 24 ms (the SLA less 20% headroom)" in texts(at)


# -- a new user's findings: refused limits, KV placement, defaults, failed engines, a request that never fits --
def test_what_if_refuses_scheduler_limits_as_the_cli_does():
    from sim.catalog import get_gpu, get_model
    from sim.config import EngineConfig, vllm_scheduler_limits
    from sim.errors import ConfigError

    config = EngineConfig(model="Qwen/Qwen3-32B", gpu="h100-80gb", tensor_parallel_size=2, max_model_len=8192,
                          max_num_seqs=1024, max_num_batched_tokens=512)
    gpu = get_gpu("h100-80gb")
    with pytest.raises(ConfigError) as refused:
        vllm_scheduler_limits(config, get_model(config.model).max_position_embeddings, gpu.memory_bytes, gpu.name)
    at = open_page("what_if", wi_model="Qwen/Qwen3-32B", wi_tp=2, wi_mns=1024, wi_mnbt=512)
    assert [e.value for e in at.error] == [f"vLLM would refuse to start: {refused.value}"]
    assert not at.metric and not at.code and not [b for b in at.button if b.key == "wi_run"]  # nothing simulated or exported


@pytest.mark.parametrize("state, placement, where", [
    pytest.param(dict(wi_model="deepseek-ai/DeepSeek-V3", wi_gpu="h200", wi_tp=8),
                 "MLA latent, replicated: whole on each of the 8 TP GPUs", "on each of the 8 GPUs", id="mla"),
    pytest.param(dict(wi_model="Qwen/Qwen3-235B-A22B-FP8", wi_gpu="h100-80gb", wi_tp=8),
                 "4 KV heads over TP 8: each head copied onto 2 GPUs, 1 per GPU", "on each of the 8 GPUs",
                 id="fewer-kv-heads-than-tp"),
    pytest.param(dict(wi_model="Qwen/Qwen3-32B", wi_tp=2), "8 KV heads sharded over TP 2, 4 per GPU",
                 "on each of the 2 GPUs", id="sharded"),
    pytest.param(dict(wi_model="Qwen/Qwen3-8B"), "all 8 KV heads", "on the one GPU", id="one-gpu"),
])
def test_what_if_says_where_the_kv_cache_really_lives(state, placement, where):
    at = open_page("what_if", wi_max_model_len=8192, **state)
    table = next(d.value for d in at.dataframe if "placement" in d.value.columns)
    assert table[table.part == "KV cache"].iloc[0].placement == placement
    assert f"**Where it lives**, {where}" in texts(at)


def test_what_if_defaults_to_engine_configs_gpu_memory_utilization():
    import dataclasses

    from sim.config import EngineConfig

    default = next(f.default for f in dataclasses.fields(EngineConfig) if f.name == "gpu_memory_utilization")
    at = open_page("what_if")
    assert at.slider(key="wi_gpu_util").value == default
    assert f"--gpu-memory-utilization={default:g}" in "\n".join(c.value for c in at.code)


def test_batching_shows_failed_engines_as_an_error():
    # The model does not fit the GPU, so both engines fail for the same reason: one box names both
    # (it was repeated once per engine, five times with every engine selected).
    at = open_page("batching", bt_gpu="l4", bt_num=10, bt_engines=["vllm", "hf-static"], bt_output=16, bt_input=16)
    at.button(key="bt_run").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("2 of 2 engines failed. vllm, hf-static: "), errors
    assert "No available memory for the cache blocks" in errors[0] and "more below" not in errors[0]
    assert not at.success and not at.dataframe


def test_batching_fits_max_model_len_to_the_longest_prompt():
    at = open_page("batching", bt_num=10, bt_engines=["vllm"], bt_input=3072, bt_output=16, bt_spread=0.0)
    at.button(key="bt_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "`--max-model-len 3328`" in texts(at)  # 3072 + 16, rounded up to a multiple of 256
    assert at.dataframe[0].value["requests/s"].iloc[0] > 0
    # past Llama-2-13B's 4096 positions: said before running, not an error per engine
    at = open_page("batching", bt_num=10, bt_engines=["vllm"], bt_input=4096, bt_output=16, bt_spread=0.0)
    assert not at.exception, at.exception
    assert "The longest request this workload draws has 4,112 tokens" in texts(at)
    assert not [b for b in at.button if b.key == "bt_run"] and not at.error


def test_batching_asks_for_an_engine():
    at = open_page("batching", bt_engines=[])
    at.button(key="bt_run").click().run()
    assert not at.exception, at.exception
    assert "Select at least one engine to run." in [w.value for w in at.warning]


def test_paged_attention_says_a_request_can_never_be_admitted():
    at = open_page("paged_attention", pa_hybrid=True, pa_blocks=10, pa_system=16)
    shown = texts(at)
    assert "A can never be admitted: its 21 tokens need 12 KV blocks, but only 9 of the 10 are usable" in shown
    assert not [s for s in at.slider if s.key == "pa_step"]  # the run stops there: no steps of nothing
    assert "every running request decodes one token" not in shown


def test_paged_attention_counts_only_tokens_whose_kv_is_written():
    from lab.pages.paged import PagedScenario, run_scenario

    for view in run_scenario(PagedScenario(num_gpu_blocks=10, system_prompt_tokens=16, enable_caching=False)):
        paged = view.contiguous["paged"]
        assert paged["used_by_requests"] <= paged["held"], view.step  # no sharing: tokens never exceed slots
    at = open_page("paged_attention", pa_blocks=10, pa_system=16, pa_caching=False, pa_step=3)
    assert "hold the KV of **24** tokens" in texts(at) and "take **24** token slots" in texts(at)
    row = at.dataframe[0].value.iloc[0]
    assert row["request"] == "A" and row["tokens in KV"] == "24 of 25 (21 prompt)"


def test_capacity_planner_keeps_max_model_len_within_the_models_limit():
    # Qwen3-32B takes 40,960 tokens; 30,000 + 4,000 fit, so nothing blames a max_model_len the page chose
    at = open_page("capacity", cp_model="Qwen/Qwen3-32B", cp_gpus=["h200"], cp_tp=[2], cp_mns=[64], cp_mnbt=[8192],
                   cp_input_len=30000, cp_output_len=4000, cp_num_prompts=20, cp_workers=1, cp_rate=0.0,
                   cp_quant=["model's own"], cp_kv=["auto"], cp_ttft_ms=0.0, cp_tpot_ms=0.0, cp_e2el_ms=3600000.0,
                   cp_max_replicas=1)
    assert not at.error, texts(at)
    too_long = open_page("capacity", cp_model="Qwen/Qwen3-32B", cp_input_len=32768, cp_output_len=8192 + 0)
    assert not too_long.error  # 40,960 tokens: exactly the limit
    opt = open_page("capacity", cp_model="facebook/opt-13b", cp_input_len=2000, cp_output_len=256)
    assert [e.value for e in opt.error] == [
        "the longest request is 2,256 tokens (--random-input-len 2000 + --random-output-len 256), more than "
        "facebook/opt-13b can take: 2,048 tokens (max_position_embeddings in its config.json); shorten the input "
        "or the output"]


def test_capacity_planner_reports_configurations_it_cannot_simulate_as_an_input_problem():
    at = open_page("capacity", cp_model="openai/gpt-oss-120b", cp_gpus=["a100-80gb"], cp_tp=[1, 2], cp_mns=[64],
                   cp_mnbt=[8192], cp_num_prompts=20, cp_workers=1, cp_quant=["model's own"], cp_kv=["auto"])
    at.button(key="cp_run").click().run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "Nothing could be simulated: the simulator cannot model any of the 2 engine configurations" in shown
    assert "- 2: --model openai/gpt-oss-120b (MoE): the operator tables cannot price it" in shown
    assert "(a100-80gb tp1, a100-80gb tp2)" in shown
    assert "No configuration meets the SLA" not in shown and not at.dataframe
    assert "2 not simulatable on their GPU, 0 simulated in 0 runs" in shown


def test_capacity_planner_caps_worker_processes_at_the_core_count():
    import os

    at = open_page("capacity", cp_workers=256)
    assert at.number_input(key="cp_workers").value == (os.cpu_count() or 1)


def test_canary_command_line_reproduces_the_pages_run():
    pytest.importorskip("sim.rollout")
    import shlex

    from lab.cli.main import build_parser
    from lab.pages.canary_runs import EDITED_MANIFESTS

    at = open_page("canary", cn_rate=1.0, cn_seed=7, cn_trigger="manual", cn_faults=["latency=1.3x"],
                   cn_custom="stable:latency=2x", **{"cn_th_error-rate": 0.05})
    at.button(key="cn_run").click().run()
    assert not at.exception
    command = next(c.value for c in at.code if c.value.startswith("servelab rollout simulate"))
    argv = shlex.split(command)[1:]
    args = build_parser(argv).parse_args(argv)
    assert (args.rate, args.seed, args.abort_at, args.trials, args.traffic, args.judge) == \
        (1.0, 7, "2h30m", None, "poisson", "threshold")
    assert args.fault == ["latency=1.3x", "stable:latency=2x"] and args.preset is None
    assert args.manifests == EDITED_MANIFESTS  # the moved threshold, in the manifests offered for download
    assert any(b.label.startswith("Manifests with these thresholds") for b in at.get("download_button"))


def test_paged_attention_counts_a_sliding_window_models_slots_in_whole_tokens():
    """With a sliding window each block holds one KV cache group's half of the layers: the paged
    count is in the same slots as the contiguous ones (a token's KV in every layer), so paging never
    looks worse than reserving exactly the true lengths (the sliding group drops old blocks)."""
    from lab.pages.paged import PagedScenario, run_scenario

    for blocks, caching in ((16, True), (32, False), (24, True)):
        scenario = PagedScenario(num_gpu_blocks=blocks, enable_caching=caching, sliding_window=8)
        for view in run_scenario(scenario):
            c = view.contiguous
            assert c["capacity_tokens"] == (blocks - 1) * scenario.block_size // 2
            assert c["paged"]["held"] <= c["capacity_tokens"]
            if not caching:  # (shared prefix blocks count once in "held", per request in "used")
                assert c["paged"]["used_by_requests"] <= c["paged"]["held"]
            assert c["paged"]["held"] <= c["orca-oracle"]["held"] + scenario.block_size * len(view.requests)


def test_what_if_offers_the_weight_and_kv_dtypes():
    """--kv-cache-dtype fp8 halves a token's KV bytes, so the cache holds about twice the tokens;
    both dtype flags reach the exported vllm serve line; a checkpoint already in FP8 refuses online
    FP8 with the CLI's line."""
    base = open_page("what_if")
    fp8 = open_page("what_if", wi_kv="fp8", wi_quant="fp8_per_tensor")
    assert not fp8.exception, fp8.exception

    def tokens(at):
        return int(next(m.value for m in at.metric if m.label == "GPU KV cache (tokens)").replace(",", ""))

    assert 1.9 < tokens(fp8) / tokens(base) < 2.6  # FP8 KV, and FP8 weights leave more room
    code = "\n".join(c.value for c in fp8.code)
    assert "--kv-cache-dtype=fp8" in code and "--quantization=fp8_per_tensor" in code
    refused = open_page("what_if", wi_model="Qwen/Qwen3-235B-A22B-FP8", wi_gpu="h200", wi_tp=4,
                        wi_quant="fp8_per_tensor")
    assert refused.error and "--quantization" in refused.error[0].value


def test_what_if_shows_the_checkpoints_own_quantization_as_chosen():
    """--quantization starts at "the checkpoint's own", shown as chosen (a None option had shown the
    empty placeholder "Choose an option"); it adds no flag to the exported line, fp8_per_tensor does,
    and choosing the checkpoint's own again takes the flag away."""
    at = open_page("what_if")
    box = at.selectbox(key="wi_quant")
    assert box.index == 0 and box.options[0] == "the checkpoint's own"
    assert "--quantization" not in "\n".join(c.value for c in at.code)
    box.select_index(1).run()
    assert "--quantization=fp8_per_tensor" in "\n".join(c.value for c in at.code)
    at.selectbox(key="wi_quant").select_index(0).run()
    assert not at.exception, at.exception
    assert "--quantization" not in "\n".join(c.value for c in at.code)
