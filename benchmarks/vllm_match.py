"""How closely ServeLab's scheduler follows vLLM's own, decision for decision.

Generates seeded random traces (sim/reference_trace.py), runs them all through vLLM 0.33's
real Scheduler in one subprocess of .venv-vllm (tools/vllm_reference/driver.py), replays them
in ServeLab (sim/reference_replay.py) and compares every step. Prints the match rate and, for
each differing trace, the first step that differs with both sides' decisions around it.

    bash scripts/setup-vllm-reference            # once: makes .venv-vllm
    python3 benchmarks/vllm_match.py             # 240 traces, seed 20261126 (what the test runs)
    python3 benchmarks/vllm_match.py --traces 1000 --seed 7 --fast-forward
    python3 benchmarks/vllm_match.py --only seed20261126-80 --context 3 --dump /tmp/t80.json

--dump writes the traces that differ (the whole trace, as JSON) so that one can be run by hand:
    .venv-vllm/bin/python tools/vllm_reference/driver.py /tmp/t80.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.reference_replay import replay_result  # noqa: E402
from sim.reference_trace import random_trace  # noqa: E402

# By file path: a top-level package named "tools" installed elsewhere would shadow ours.
_spec = importlib.util.spec_from_file_location(
    "servelab_vllm_reference_harness", ROOT / "tools" / "vllm_reference" / "harness.py"
)
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness  # dataclasses look their module up here
_spec.loader.exec_module(harness)


def _fmt_step(s: dict | None) -> str:
    if s is None:
        return "(no step)"
    parts = [f"step {s['step']}:"]
    parts.append(" ".join(f"{rid}+{n}" for rid, n in s["scheduled"]) or "-")
    for key in ("new", "resumed", "preempted", "finished", "aborted"):
        if s.get(key):
            parts.append(f"{key}={','.join(s[key])}")
    if s.get("cached_tokens"):
        parts.append("hits=" + ",".join(f"{k}:{v}" for k, v in s["cached_tokens"].items()))
    parts.append(f"free={s['kv_free_blocks_after_schedule']}->{s['kv_free_blocks']}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--traces", type=int, default=240)
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--only", action="append", default=[], help="trace name(s) to run")
    p.add_argument("--context", type=int, default=2, help="steps shown before a mismatch")
    p.add_argument("--show", type=int, default=20, help="differing traces shown in detail")
    p.add_argument("--dump", type=Path, help="write the differing traces here (JSON batch)")
    p.add_argument("--fast-forward", action="store_true",
                   help="replay with LazyDecodeScheduler, as run_engine does by default")
    args = p.parse_args(argv)

    if not harness.reference_venv_ready():
        print("error: .venv-vllm is missing or incomplete; run: bash scripts/setup-vllm-reference",
              file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    traces = [random_trace(rng, name=f"seed{args.seed}-{i}") for i in range(args.traces)]
    if args.only:
        traces = [t for t in traces if t["name"] in args.only]
    t0 = time.monotonic()
    doc = harness.run_vllm(traces)
    t_vllm = time.monotonic() - t0
    t0 = time.monotonic()
    ours = [replay_result(t, fast_forward=args.fast_forward) for t in traces]
    t_ours = time.monotonic() - t0
    summary = harness.compare_all(traces, doc, ours)

    mode = "fast-forward (LazyDecodeScheduler)" if args.fast_forward else "reference Scheduler"
    print(f"vLLM {doc['vllm_version']} (torch {doc['torch_version']}) against ServeLab's {mode}, "
          f"{len(traces)} traces, seed {args.seed}")
    print(f"  vLLM driver: {t_vllm:.1f} s (one subprocess, imports included); "
          f"ServeLab replay: {t_ours:.2f} s")
    print(summary.line())
    differing = [(i, c) for i, c in enumerate(summary.comparisons) if not c.identical]
    for i, c in differing[: args.show]:
        print(f"\n{c.name}: {c.num_equal_steps}/{c.num_steps} steps equal; engine {traces[i]['engine']}")
        for note in c.notes:
            print(f"  {note}")
        if c.first_mismatch is None:
            continue
        fm = c.first_mismatch
        v_steps, s_steps = doc["results"][i]["steps"], ours[i]["steps"]
        for j in range(max(fm["index"] - args.context, 0), fm["index"] + 1):
            mark = ">>" if j == fm["index"] else "  "
            print(f"  {mark} vLLM     {_fmt_step(v_steps[j] if j < len(v_steps) else None)}")
            print(f"  {mark} ServeLab {_fmt_step(s_steps[j] if j < len(s_steps) else None)}")
        print("  differing fields:")
        for key, (v, s) in fm["fields"].items():
            print(f"    {key}: vLLM {v!r}  ServeLab {s!r}")
    if args.dump and differing:
        args.dump.write_text(json.dumps({"traces": [traces[i] for i, _ in differing]}, indent=1))
        print(f"\nwrote {len(differing)} differing trace(s) to {args.dump}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
