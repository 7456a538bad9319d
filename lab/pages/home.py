"""The lab's first page: what ServeLab is and where to start."""

import streamlit as st

st.title("ServeLab")
st.markdown(
    """
A local simulator and teaching lab for serving LLMs. Everything here runs on a laptop, without a
GPU: a discrete-event simulator models vLLM's PagedAttention KV cache, its continuous-batching
scheduler, the flags of `vllm serve`, and the canary rollouts of an AI service.
"""
)
GUIDE = [
    ("lab/pages/paged_attention.py", "PagedAttention", ":material/grid_view:",
     "Step through a few requests and watch their KV blocks: block tables, the free queue, a shared "
     "system prompt stored once, a preemption; and the memory contiguous reservations waste."),
    ("lab/pages/batching.py", "Continuous vs static batching", ":material/view_timeline:",
     "The batch's slots over time for vLLM, Orca-style and HuggingFace static batching, and where "
     "the paper's 2-24x comes from."),
    ("lab/pages/what_if.py", "Serving what-if", ":material/tune:",
     "Model, GPU and flags -> KV cache, max concurrency, throughput and latency against request rate; "
     "export the `vllm serve` line and a Deployment."),
    ("lab/pages/capacity.py", "Capacity planner", ":material/price_check:",
     "Traffic and an SLA -> the cheapest GPUs, TP, replicas and flags that meet it, by simulation; "
     "export the winner's command, Deployment and Rollout."),
    ("lab/pages/canary.py", "Canary rollout", ":material/alt_route:",
     "Inject a fault and watch the course's Argo Rollouts canary catch it and roll back, in seconds."),
    ("lab/pages/cluster.py", "Cluster", ":material/hub:",
     "Deploy the manifests to the simulated cluster (or kind), then promote or abort."),
    ("lab/pages/exercises.py", "Exercises", ":material/school:",
     "The course's exercises 6.1 to 6.4 with automatic checks."),
]
cols = st.columns(3)
for i, (path, title, icon, text) in enumerate(GUIDE):
    with cols[i % 3].container(border=True):  # no fixed height: a narrow window would cut the text
        st.page_link(path, label=title, icon=icon)
        st.markdown(text)
st.caption(
    "Every figure here is simulated. The engine's step-time model is fitted to published vLLM "
    "measurements (`sim/data/calibration.yaml`); nothing on these pages was measured on a GPU."
)
