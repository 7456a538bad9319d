"""Cluster: deploy the manifests to the simulated cluster (or kind), then status, promote, abort."""

import streamlit as st

from lab.pages.common import need

st.title("Cluster")
need("lab.cluster", "the cluster backends")
