"""The lab's first page: what ServeLab is and where to start."""

import streamlit as st

st.title("ServeLab")
st.markdown(
    """
A local simulator and teaching lab for serving LLMs. Everything here runs on a laptop,
without a GPU: a discrete-event simulator models vLLM's PagedAttention KV cache,
its continuous-batching scheduler and the canary rollouts of an AI service.

Use the pages on the left to explore.
"""
)
