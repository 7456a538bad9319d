"""Tensor-parallel all-reduce, from ``custom_allreduce_perf.parquet`` (vLLM's custom all-reduce).

Table: ``allreduce/<graph|eager>/tp<N>[message_size]``, the latency (ms) of one all-reduce of
``message_size`` bfloat16 elements over N GPUs, inside a CUDA graph or run eagerly.

Per step, under ``--tensor-parallel-size N > 1``, every decoder layer all-reduces its hidden
states twice (after ``o_proj`` and after ``down_proj``, the row-parallel layers): two messages
of ``tokens x hidden`` elements. vLLM replays CUDA graphs for batches up to its largest capture
size (:mod:`sim.cudagraphs`: 512 tokens by default, 1,024 on B200 and for gpt-oss) and runs
larger (prefill-heavy) steps eagerly; the table has both.

A MoE layer under data parallelism gathers every DP rank's tokens before the experts and
reduce-scatters the result after them (:mod:`sim.ops.moe`); :func:`allreduce_call_ms` prices one
such collective.
"""

from __future__ import annotations

import numpy as np

from sim.ops.tables import TableError, interp_array


def allreduce_call_ms(tables: dict, gpus: int, elements: np.ndarray, m: np.ndarray,
                      cudagraph_max_tokens: int) -> np.ndarray:
    """One all-reduce of ``elements`` bfloat16 values over ``gpus`` GPUs, in ms, for steps of
    ``m`` tokens (CUDA graph or eager by ``m``)."""
    if gpus == 1:
        return np.zeros(len(m))
    sizes = tables["allreduce/message_size"].astype(np.float64)
    out = np.empty(len(m))
    for mode in ("graph", "eager"):
        key = f"allreduce/{mode}/tp{gpus}"
        if key not in tables:
            measured = sorted(int(k.rsplit("tp", 1)[1]) for k in tables if k.startswith("allreduce/graph/tp"))
            raise TableError(f"no all-reduce table for {gpus} GPUs (measured: {', '.join(map(str, measured))})")
        pick = (m <= cudagraph_max_tokens) if mode == "graph" else (m > cudagraph_max_tokens)
        out[pick] = interp_array(elements[pick], sizes, tables[key].astype(np.float64))
    return out


def allreduce_ms(tables: dict, tp: int, hidden_size: int, num_layers: int, m: np.ndarray,
                 cudagraph_max_tokens: int) -> np.ndarray:
    """Both all-reduces of every layer, in ms, for steps of ``m`` tokens (an array)."""
    if tp == 1:
        return np.zeros(len(m))
    return 2 * num_layers * allreduce_call_ms(tables, tp, m * hidden_size, m, cudagraph_max_tokens)
