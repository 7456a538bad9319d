"""ServeLab's Streamlit entry point: it builds the navigation; each page is one file in lab/pages.

Run it with ``streamlit run app.py`` (``make lab`` does). Every page works on its own: it sets
the session state it needs when absent, and runs the simulator through ``st.cache_data``.
"""

import streamlit as st

st.set_page_config(page_title="ServeLab", page_icon=":material/dns:", layout="wide")

# Streamlit stacks columns only below 640 px of window. Between that and a laptop's width the
# sidebar leaves about 450 px, and the pages' [1, 3] controls-and-results columns squeeze the
# controls to 80 px (labels broken into syllables, metrics cut to "4..."). Below 1200 px a column
# keeps at least 12rem and the row wraps: controls above results, metrics two a row.
st.html(
    """<style>
@media (max-width: 1200px) {
  [data-testid="stColumn"] { min-width: min(12rem, 100%); }
}
</style>"""
)

PAGES = {
    "Start": [
        st.Page("lab/pages/home.py", title="Home", icon=":material/home:", default=True),
    ],
    "vLLM, inside": [
        st.Page("lab/pages/paged_attention.py", url_path="paged-attention", title="PagedAttention", icon=":material/grid_view:"),
        st.Page("lab/pages/batching.py", url_path="batching", title="Continuous vs static batching", icon=":material/view_timeline:"),
        st.Page("lab/pages/what_if.py", url_path="what-if", title="Serving what-if", icon=":material/tune:"),
        st.Page("lab/pages/capacity.py", url_path="capacity", title="Capacity planner", icon=":material/price_check:"),
    ],
    "Shipping it": [
        st.Page("lab/pages/canary.py", url_path="canary", title="Canary rollout", icon=":material/alt_route:"),
        st.Page("lab/pages/cluster.py", url_path="cluster", title="Cluster", icon=":material/hub:"),
    ],
    "Course": [
        st.Page("lab/pages/exercises.py", url_path="exercises", title="Exercises", icon=":material/school:"),
    ],
}
st.navigation(PAGES).run()
