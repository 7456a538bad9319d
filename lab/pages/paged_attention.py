"""PagedAttention: step through a small workload and watch the KV blocks."""

import streamlit as st

from lab.pages.common import need

st.title("PagedAttention")
need("sim.kv", "the PagedAttention block pool and KV manager")
need("sim.sched", "vLLM's scheduler")
