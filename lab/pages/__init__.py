"""The lab's pages, one file each (``app.py`` lists them), and small helpers they share.

Page files are run by Streamlit as scripts; modules here whose name does not appear in
``app.py`` (``common``, ``paged``, ``serving``...) hold the little computation and drawing code
the pages share, so that each page stays: widgets -> frozen config -> cached sim call -> draw.
"""
