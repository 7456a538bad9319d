"""The KV cache: a pool of fixed-size blocks (PagedAttention) and, for the Orca baselines,
contiguous per-request reservations."""
