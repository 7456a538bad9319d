"""Schedulers: vLLM V1's (``scheduler.py``) and the baselines vLLM replaced (``baselines.py``)."""
