"""Calibration tools for users with a GPU: the sweep of real vLLM runs, the operator profiler,
result-file parsers, and the subset of Vidur's operator timings ServeLab ships."""
