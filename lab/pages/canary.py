"""Canary rollout: faults and thresholds in, a timeline of weight, metrics and analyses out."""

import streamlit as st

from lab.pages.common import need

st.title("Canary rollout")
need("sim.rollout", "the Argo Rollouts canary simulation")
