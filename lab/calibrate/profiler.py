"""Operator profiler: GEMMs and attention at a model's shapes, per tensor-parallel rank.

Times each GEMM of one decoder layer (qkv, o, gate_up, down) and the lm_head for a range of
token counts, and attention for prefill (one sequence of n tokens, causal) and decode (a batch
of one-token queries against a context), with warmup, on CUDA (CUDA events) or on the CPU
(``time.perf_counter``; tiny shapes, for tests). Output: a CSV that ``servelab calibrate fit``
reads (``op,m,n,k,dtype_bytes,time_ms`` plus context columns) and, next to it, a JSON with the
provenance (device, torch and CUDA versions, date, model, tensor-parallel size).

GEMM rows: ``m`` tokens times an ``n x k`` weight (``y = x W^T``, W of shape (n, k)).
Attention rows (``attn_prefill``, ``attn_decode``): ``m`` = batch, ``n`` = context tokens,
``k`` = head dim, ``num_heads`` = query heads per rank; the fit ignores them for now (the
step model's attention terms are calibrated end to end), they are there to check against.

Run on a GPU machine::

    python3 -m lab.calibrate.profiler --model meta-llama/Llama-3.1-8B --output ops.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

COLUMNS = ("op", "m", "n", "k", "dtype_bytes", "time_ms", "num_heads", "tensor_parallel_size", "device")
DEFAULT_TOKENS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
DEFAULT_CONTEXTS = (128, 512, 1024, 2048, 4096)


def gemm_shapes(model, tp: int = 1) -> dict[str, tuple[int, int]]:
    """(n, k) of each weight on one of ``tp`` ranks (column-parallel splits n, row-parallel k)."""
    hd, h = model.head_dim, model.hidden_size
    q, kv = model.num_attention_heads // tp, max(1, model.num_key_value_heads // tp)
    inter = -(-model.intermediate_size // tp)
    gated = model.architecture != "opt"
    return {
        "qkv": ((q + 2 * kv) * hd, h),
        "o": (h, q * hd),
        "gate_up": ((2 if gated else 1) * inter, h),
        "down": (h, inter),
        "lm_head": (-(-model.vocab_size // tp), h),
    }


class _Timer:
    def __init__(self, torch, device: str) -> None:
        self.torch, self.cuda = torch, device.startswith("cuda")

    def __call__(self, fn, warmup: int, iters: int) -> float:
        """Median time of ``fn()`` in ms."""
        torch = self.torch
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        return times[len(times) // 2]


def profile(model, *, tp: int = 1, device: str = "cuda", dtype: str = "float16",
            token_counts=DEFAULT_TOKENS, contexts=DEFAULT_CONTEXTS, decode_batches=(1, 16, 64, 256),
            warmup: int = 5, iters: int = 20) -> list[dict]:
    import torch

    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    nbytes = torch.tensor([], dtype=dt).element_size()
    timer = _Timer(torch, device)
    rows = []
    with torch.inference_mode():
        for op, (n, k) in gemm_shapes(model, tp).items():
            w = torch.randn(n, k, dtype=dt, device=device)
            for m in token_counts:
                x = torch.randn(m, k, dtype=dt, device=device)
                ms = timer(lambda: torch.nn.functional.linear(x, w), warmup, iters)
                rows.append(dict(op=op, m=m, n=n, k=k, dtype_bytes=nbytes, time_ms=ms, num_heads="",
                                 tensor_parallel_size=tp, device=device))
            del w
        heads, hd = model.num_attention_heads // tp, model.head_dim
        sdpa = torch.nn.functional.scaled_dot_product_attention
        for ctx in contexts:
            q = torch.randn(1, heads, ctx, hd, dtype=dt, device=device)
            ms = timer(lambda: sdpa(q, q, q, is_causal=True), warmup, iters)
            rows.append(dict(op="attn_prefill", m=1, n=ctx, k=hd, dtype_bytes=nbytes, time_ms=ms,
                             num_heads=heads, tensor_parallel_size=tp, device=device))
            for b in decode_batches:
                q1 = torch.randn(b, heads, 1, hd, dtype=dt, device=device)
                kv = torch.randn(b, heads, ctx, hd, dtype=dt, device=device)
                ms = timer(lambda: sdpa(q1, kv, kv), warmup, iters)
                rows.append(dict(op="attn_decode", m=b, n=ctx, k=hd, dtype_bytes=nbytes, time_ms=ms,
                                 num_heads=heads, tensor_parallel_size=tp, device=device))
    return rows


def provenance(model_name: str, tp: int, device: str, dtype: str) -> dict:
    import platform

    import torch

    info = {"model": model_name, "tensor_parallel_size": tp, "device": device, "dtype": dtype,
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def write_csv(path: str, rows: list[dict], info: dict) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "time_ms": f"{r['time_ms']:.6g}"})
    p.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m lab.calibrate.profiler", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a catalog model or a path to a config.json")
    ap.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    ap.add_argument("--tokens", default=",".join(map(str, DEFAULT_TOKENS)))
    ap.add_argument("--contexts", default=",".join(map(str, DEFAULT_CONTEXTS)))
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--output", "-o", default="operators.csv")
    args = ap.parse_args(argv)
    try:
        import torch
    except ModuleNotFoundError:
        print("error: the profiler needs PyTorch (pip install torch)", file=sys.stderr)
        return 2
    from sim.catalog import get_model
    from sim.errors import ServeLabError

    try:
        model = get_model(args.model)
        tokens = tuple(int(t) for t in args.tokens.split(","))
        contexts = tuple(int(t) for t in args.contexts.split(","))
    except (ServeLabError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = profile(model, tp=args.tensor_parallel_size, device=device, dtype=args.dtype, token_counts=tokens,
                   contexts=contexts, warmup=args.warmup, iters=args.iters)
    write_csv(args.output, rows, provenance(model.name, args.tensor_parallel_size, device, args.dtype))
    print(f"Wrote {args.output} ({len(rows)} timings) and {Path(args.output).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
