"""ServeLab's Streamlit entry point: it builds the navigation; each page is one file in lab/pages."""

import streamlit as st

st.set_page_config(page_title="ServeLab", page_icon=":material/dns:", layout="wide")

pages = [
    st.Page("lab/pages/home.py", title="Home", icon=":material/home:", default=True),
]
st.navigation(pages).run()
