"""Step time from measured operators (see sim/ops/model.py)."""
