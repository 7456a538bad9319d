"""A :class:`sim.tune.TuneResult` as rows, JSON and text: what the CLI prints and the page shows."""

from __future__ import annotations

import math

from lab.tune_export import deployment_manifest, rollout_manifest, serve_command
from sim.tune.prune import group_pruned
from sim.tune.rank import Deployment
from sim.tune.space import layout_of


def _num(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def config_fields(d: Deployment) -> dict:
    c = d.config
    out = {"gpu": c.gpu, "tensor_parallel_size": c.tensor_parallel_size,
           "data_parallel_size": getattr(c, "data_parallel_size", 1),
           "enable_expert_parallel": getattr(c, "enable_expert_parallel", False), "layout": layout_of(c),
           "max_num_seqs": c.max_num_seqs,
           "max_num_batched_tokens": c.max_num_batched_tokens, "enable_prefix_caching": c.enable_prefix_caching,
           "max_model_len": c.max_model_len, "gpu_memory_utilization": c.gpu_memory_utilization}
    if hasattr(c, "quantization"):
        out["quantization"] = getattr(c, "quantization")
        out["kv_cache_dtype"] = getattr(c, "kv_cache_dtype", "auto")
    return out


def deployment_dict(d: Deployment, mode: str) -> dict:
    """One deployment. ``output_throughput``, ``output_throughput_per_gpu`` and
    ``cost_per_million_output_tokens_usd`` are at the row's ``request_rate`` (``concurrency``), which
    ``throughput_and_cost_at`` names: the target load, or the replicas' highest load meeting the SLA;
    the ``*_at_max_load`` keys, ``output_throughput_per_user`` and ``sla_margins`` are one replica at
    ``request_rate_per_replica``, its highest load meeting the SLA."""
    unit = "request_rate" if mode == "rate" else "concurrency"
    return {
        **config_fields(d),
        "replicas": d.replicas, "num_gpus": d.num_gpus, "meets_sla": d.meets,
        f"{unit}_per_replica": _num(d.load_per_replica), unit: _num(d.load),
        "throughput_and_cost_at": ("target_load" if d.at_target else "max_load_meeting_sla") if d.meets else None,
        "output_throughput": _num(d.output_tokens_per_s),
        "output_throughput_per_gpu": _num(d.tokens_per_s_per_gpu),
        "output_throughput_per_gpu_at_max_load": _num(d.tokens_per_s_per_gpu_at_max_load),
        "output_throughput_per_user": _num(d.tokens_per_s_per_user),
        "cost_per_hour_usd": _num(d.cost_per_hour),
        "cost_per_million_output_tokens_usd": _num(d.cost_per_million_tokens),
        "cost_per_million_output_tokens_usd_at_max_load": _num(d.cost_per_million_tokens_at_max_load),
        "sla_margins": {k: _num(v) for k, v in d.margins.items()},
        "sla_misses": [{k: _num(v) for k, v in m.items()} for m in d.misses],
        "at_top_of_bracket": d.capped,
    }


def result_dict(result, *, wall_s: float | None = None, executor: str = "", workers: int = 0) -> dict:
    req, counts = result.request, result.counts
    out = {
        "model": req.space.model,
        "sla": result.request.sla.describe(),
        "sla_headroom": result.request.sla.headroom,
        "load_mode": req.mode,
        "target_load": req.target_load,
        "counts": {"candidates": counts.candidates, "engine_configs": counts.engine_configs,
                   "replica_counts": counts.replica_counts, "pruned_configs": counts.pruned_configs,
                   "pruned_candidates": counts.pruned, "unsimulatable_configs": counts.unsimulatable_configs,
                   "simulated_configs": counts.simulated_configs,
                   "simulations": counts.simulations, "stopped_early": counts.stopped_early,
                   "cpu_time_s": counts.cpu_s},
        "executor": executor, "workers": workers, "wall_time_s": wall_s,
        "prices": {g: {"usd_per_gpu_hour": p.usd_per_gpu_hour, "source": p.source, "date": p.date}
                   for g, p in req.prices.items() if g in req.space.gpus},
        "ranked": [deployment_dict(d, req.mode) for d in result.ranked],
        "pareto": [deployment_dict(d, req.mode) for d in result.pareto],
        "closest": [deployment_dict(d, req.mode) for d in result.closest],
        "pruned": [_struck_dict(p) for p in result.pruned],
        "pruned_by_kind": _by_kind(result.pruned),
        # kept by pruning, but the simulator cannot run their step time on that GPU (not SLA misses)
        "unsimulatable": [_struck_dict(p) for p in getattr(result, "unsimulatable", [])],
        "unsimulatable_by_kind": _by_kind(getattr(result, "unsimulatable", [])),
        "winner": None,
    }
    if result.winner is not None:
        w = result.winner
        out["winner"] = {**deployment_dict(w, req.mode), "vllm_serve_command": serve_command(w.config),
                         "deployment_yaml": deployment_manifest(w.config, w.replicas),
                         "rollout_yaml": rollout_manifest(w.config, w.replicas)}
    return out


def _struck_dict(p) -> dict:
    """A configuration pruned, or found not simulatable, with the reason."""
    return {"gpu": p.config.gpu, "tensor_parallel_size": p.config.tensor_parallel_size,
            "data_parallel_size": getattr(p.config, "data_parallel_size", 1),
            "enable_expert_parallel": getattr(p.config, "enable_expert_parallel", False),
            "layout": layout_of(p.config), "max_num_seqs": p.config.max_num_seqs,
            "max_num_batched_tokens": p.config.max_num_batched_tokens,
            "quantization": getattr(p.config, "quantization", None),
            "kv_cache_dtype": getattr(p.config, "kv_cache_dtype", "auto"),
            "kind": p.kind, "reason": p.reason}


def _by_kind(struck) -> list[dict]:
    return [{"kind": g.kind, "configs": g.count, "where": list(g.where), "example_reason": g.example}
            for g in group_pruned(struck)]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 engine configuration``, ``3 engine configurations`` (``many``: an irregular plural)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def nothing_simulated_text(counts) -> str:
    """Why a search simulated nothing (an input problem, not an SLA miss), in one clause."""
    n, pruned, unsim = counts.engine_configs, counts.pruned_configs, getattr(counts, "unsimulatable_configs", 0)
    if not unsim:
        return f"nothing to simulate: all {plural(n, 'engine configuration')} were pruned" if n != 1 else \
            "nothing to simulate: the one engine configuration was pruned"
    if not pruned:
        return (f"nothing could be simulated: the simulator cannot model "
                f"{'the one engine configuration on its' if n == 1 else f'any of the {n:,} engine configurations on their'} "
                f"GPU")
    return (f"nothing could be simulated: of {plural(n, 'engine configuration')}, {pruned:,} {'was' if pruned == 1 else 'were'} pruned and "
            f"the simulator cannot model the other {plural(unsim, 'one')} on {'its' if unsim == 1 else 'their'} GPU")


def counts_line(counts) -> str:
    """What the search did, in one sentence (without the time it took): candidates, how many
    engine configurations were pruned, not simulatable, and simulated."""
    parts = [f"{plural(counts.candidates, 'candidate')} ({plural(counts.engine_configs, 'engine configuration')} x "
             f"{plural(counts.replica_counts, 'replica count')})"]
    done = []
    if counts.pruned_configs:
        done.append(f"{counts.pruned_configs:,} pruned (vLLM would refuse them, or they cannot hold the longest request)")
    if getattr(counts, "unsimulatable_configs", 0):
        done.append(f"{counts.unsimulatable_configs:,} not simulatable on their GPU")
    done.append(f"{counts.simulated_configs:,} simulated in {plural(counts.simulations, 'run')} "
                f"({counts.stopped_early:,} stopped early once the SLA verdict was certain)")
    return parts[0] + ": " + ", ".join(done)


# Display digits per column of table_rows (by the header's start): dollars to the cent ($/hour)
# or a tenth of a cent ($/Mtok), tokens/s whole (per GPU) or to a tenth (per user).
DISPLAY_DIGITS = (("$/hour", 2), ("$/Mtok", 3), ("tok/s/GPU", 0), ("tok/s/user", 1))


def display_rows(rows: list[dict]) -> list[dict]:
    """table_rows rounded for a screen (see DISPLAY_DIGITS; NaN as None); --json keeps full precision."""
    def show(key, v):
        if not isinstance(v, float):
            return v
        if not math.isfinite(v):
            return None
        digits = next((d for prefix, d in DISPLAY_DIGITS if key.startswith(prefix)), 2)
        return round(v) if digits == 0 else round(v, digits)

    return [{k: show(k, v) for k, v in r.items()} for r in rows]


def drop_empty_columns(rows: list[dict]) -> list[dict]:
    """The rows without the columns that are None or NaN in every row (the closest table's
    replicas, cost and throughput, which a configuration that misses everywhere never has)."""
    empty = lambda v: v is None or (isinstance(v, float) and not math.isfinite(v))
    keep = [k for k in dict.fromkeys(k for r in rows for k in r) if not all(empty(r.get(k)) for r in rows)]
    return [{k: r[k] for k in keep if k in r} for r in rows]


def shows_layout(configs) -> bool:
    """Whether a table needs the layout column: some configuration uses expert or data parallelism."""
    return any(getattr(c, "enable_expert_parallel", False) or getattr(c, "data_parallel_size", 1) > 1 for c in configs)


def _at(deployments: list[Deployment], mode: str) -> str:
    """Where a table's $/Mtok and tok/s/GPU are measured: "@5 req/s" (the target), "@max", or ""."""
    measured = [d for d in deployments if math.isfinite(d.tokens_per_s_per_gpu)]  # a run that missed has none
    if not measured:
        return ""
    if measured[0].at_target:
        return f"@{measured[0].load:g} {'req/s' if mode == 'rate' else 'clients'}"
    return "@max"


def table_legend(deployments: list[Deployment], mode: str) -> str:
    """One line under a table: what its $/Mtok, tok/s/GPU, tok/s/user and margin are measured at."""
    at, per = _at(deployments, mode), "req/s/replica" if mode == "rate" else "clients/replica"
    if not at:
        return ""
    # Rows that miss (the closest ones) show neither a margin nor a load per replica.
    if any(d.meets for d in deployments):
        where, also = f"one replica at {per}, the highest load found to meet the SLA", "tok/s/user and the margin"
    else:
        where, also = "one replica at the highest load found to meet the latency terms", "tok/s/user"
    if at == "@max":
        return f"@max: {where} ({also} measured there too)"
    return f"{at}: at the offered load, spread over each row's replicas; {also}: {where}"


def table_rows(deployments: list[Deployment], mode: str, *, show_layout: bool | None = None) -> list[dict]:
    """One short row per deployment, for a text table or a dataframe.

    ``show_layout``: a "layout" column (``tp2 ep2``) instead of "TP", for a search with expert or
    data parallelism (default: when one of these rows has it). The $/Mtok and tok/s/GPU headers
    say where they are measured (see :func:`table_legend`)."""
    rows = []
    show_prefix = any(not d.config.enable_prefix_caching for d in deployments)
    if show_layout is None:
        show_layout = shows_layout(d.config for d in deployments)
    at = _at(deployments, mode)
    tag = f" {at}" if at else ""
    for i, d in enumerate(deployments, start=1):
        c = d.config
        row = {"#": i, "GPU": c.gpu}
        if show_layout:
            row["layout"] = layout_of(c)
        else:
            row["TP"] = c.tensor_parallel_size
        row.update({"max-num-seqs": c.max_num_seqs, "max-num-batched-tokens": c.max_num_batched_tokens})
        if hasattr(c, "quantization"):
            row["quantization"] = getattr(c, "quantization") or "-"
            row["kv-cache-dtype"] = getattr(c, "kv_cache_dtype", "auto")
        if show_prefix:
            row["prefix-caching"] = "on" if c.enable_prefix_caching else "off"
        row.update({
            "replicas": d.replicas if d.meets or d.replicas else None, "GPUs": d.num_gpus or None,
            "$/hour": d.cost_per_hour, f"$/Mtok{tag}": d.cost_per_million_tokens,
            # ">=": met at the top of the bracket (the burst capacity, or max-num-seqs clients)
            ("req/s/replica" if mode == "rate" else "clients/replica"):
                f"{'>=' if d.capped else ''}{d.load_per_replica:.2f}" if d.meets else None,
            f"tok/s/GPU{tag}": d.tokens_per_s_per_gpu, "tok/s/user": d.tokens_per_s_per_user,
        })
        if d.meets:
            row["tightest margin"] = f"{min(d.margins, key=d.margins.get)} {100 * d.min_margin:+.0f}%" if d.margins else ""
        else:
            row["misses"] = "; ".join(_miss_text(m) for m in d.misses)
        rows.append(row)
    return rows


def _miss_text(m: dict) -> str:
    measured, limit = m["measured"], m["limit"]
    if m["key"] in ("replicas", "error"):
        return f"{m['term']}: {measured}" if m["key"] == "error" else f"needs {measured} replicas > {limit}"
    if m["key"] == "output_throughput":
        return f"{m['term']}: {measured:.0f} tok/s"
    over = m["over_pct"]
    return f"{m['term']} by {over:+.0f}% ({measured:.0f} ms)" if math.isfinite(over) else f"{m['term']} (nothing measured)"


def format_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            if not math.isfinite(v):
                return "-"
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if i < len(cols) - 1 else v for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def pruned_lines(pruned, *, examples: bool = False, max_where: int = 6) -> list[str]:
    """The pruned configurations by kind, one line each ("48: the weights do not fit in GPU memory
    (h100-80gb tp8)"), with the first one's full reason under it when ``examples``."""
    lines = []
    for g in group_pruned(pruned):
        more = len(g.where) - max_where
        where = ", ".join(g.where[:max_where]) + (f" and {more} more" if more > 0 else "")
        lines.append(f"  {g.count}: {g.kind} ({where})")
        if examples and g.example != g.kind:
            lines.append(f"      e.g. {g.example}")
    return lines
