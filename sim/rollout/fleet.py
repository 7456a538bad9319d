"""The simulated fleet: stable and canary pods behind Istio, scraped every 15 s.

Per scrape interval and version, vectorised with numpy:

1. Arrivals: Poisson counts at the traffic rate (constant, or diurnal), split between the
   versions by Istio's weights: each request goes to the canary with probability w/100
   (a binomial draw), as Envoy's weighted clusters do.
2. Pods: with a traffic router Argo scales the canary to ceil(replicas * w / 100) pods and keeps
   stable at full size, so a pod's load is the version's rate over its pods.
3. Each request: prompt and output lengths from the :class:`TrafficMix`; TTFT and TPOT drawn
   from the engine surface at the pod's load, step-time multiplier (slow-gpu) and KV capacity
   (kv-leak); duration = (TTFT + TPOT x (output - 1)) x the latency fault. Errors: a small
   base rate, the error-rate fault, and pods down in a crash loop. Cost from tokens at the
   fleet's prices, times the price fault; a share of
   answers is scored by the LLM judge (Beta-distributed around the version's quality).
4. Series: cumulative counters and histogram buckets appended to the :class:`SeriesStore` at
   each scrape time, under the names the AnalysisTemplates query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sim.promql.store import SeriesStore
from sim.rollout.faults import Fault, effects
from sim.rollout.surface import Surface, sample_quantiles

# Quarter-second buckets around the 2-3 s where this API's p99 lives: histogram_quantile
# interpolates linearly inside a bucket, so a p99 sitting on a coarse bound (2 s, with
# 0.5 s buckets) would jump by hundreds of milliseconds on a tiny change in the tail.
DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0,
                      7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
VERSIONS = ("stable", "canary")


@dataclass(frozen=True)
class FleetConfig:
    rate_rps: float = 20.0  # requests per second into the VirtualService
    traffic: str = "poisson"  # or "diurnal": rate x (1 + amplitude x sin(2 pi t / 1 day))
    diurnal_amplitude: float = 0.5
    scrape_interval_s: float = 15.0
    base_error_rate: float = 1e-5  # 500s with no fault: one request in 100,000
    error_duration_s: float = 0.02  # a failing request answers fast
    judge_fraction: float = 0.1  # share of successful responses the LLM judge scores
    quality_mean: float = 0.90  # mean judge score of both versions without a fault
    quality_concentration: float = 25.0  # Beta(a, b) with a + b = 25: sd about 0.06
    input_price_per_mtok: float = 0.10  # dollars per million prompt tokens
    output_price_per_mtok: float = 0.30  # dollars per million output tokens
    restart_s: float = 90.0  # a crashed vLLM pod is back after this long (reload weights)
    model_name: str = "meta-llama/Llama-3.1-8B"

    def __post_init__(self) -> None:
        if not (self.rate_rps > 0 and math.isfinite(self.rate_rps)):
            raise ValueError(f"rate_rps: expected a positive number of requests per second, got {self.rate_rps}")
        if self.traffic not in ("poisson", "diurnal"):
            raise ValueError(f"traffic: expected poisson or diurnal, got {self.traffic!r}")
        if not 0 <= self.diurnal_amplitude < 1:
            raise ValueError(f"diurnal_amplitude: expected a fraction in [0, 1), got {self.diurnal_amplitude}")
        if self.scrape_interval_s <= 0:
            raise ValueError(f"scrape_interval_s: expected > 0, got {self.scrape_interval_s}")


@dataclass
class _Totals:
    """Cumulative counters of one version (what its /metrics would show)."""

    ok: float = 0.0
    failed: float = 0.0
    buckets: np.ndarray = field(default_factory=lambda: np.zeros(len(DURATION_BUCKETS_S) + 1))
    duration_sum: float = 0.0
    cost: float = 0.0
    judge_sum: float = 0.0
    judge_count: float = 0.0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    preemptions: float = 0.0
    down_until: np.ndarray = field(default_factory=lambda: np.zeros(0))


class Fleet:
    """Generates traffic and metrics up to a time; the controller moves weights in between."""

    def __init__(
        self,
        surface: Surface,
        config: FleetConfig,
        faults: tuple[Fault, ...],
        rng: np.random.Generator,
        services: dict[str, str],
        replicas: int,
        store: SeriesStore | None = None,
    ):
        self.surface = surface
        self.config = config
        self.faults = tuple(faults)
        # Common random numbers: every scrape interval draws from its own streams, keyed by
        # (run key, interval, version), so the traffic of interval k is the same whatever the
        # faults, weights or analysis schedule. A fault-free run and a faulty one then differ
        # only by the fault, and the threshold and Kayenta judges see the same requests.
        self._key = int(rng.integers(0, 2**63 - 1))
        self._interval = 0
        self.services = dict(services)  # version -> Service name
        self.replicas = replicas
        self.store = store if store is not None else SeriesStore()
        self.t_s = 0.0
        self.weight = 0  # canary share in percent, as the VirtualService says
        self.canary_pods = 0
        self.stable_is_new = False  # after full promotion the new version serves as stable
        self.totals = {v: _Totals() for v in VERSIONS}
        self.requests_total = 0
        self.requests_canary = 0
        self.canary_failed = 0
        self.weight_history: list[tuple[float, int]] = [(0.0, 0)]
        self._declare()
        self._scrape(np.array([0.0]), {v: None for v in VERSIONS})

    # -- control ---------------------------------------------------------------------------------

    def set_weight(self, weight: int, canary_pods: int | None = None) -> None:
        self.weight = int(weight)
        self.canary_pods = math.ceil(self.replicas * weight / 100) if canary_pods is None else canary_pods
        self.weight_history.append((self.t_s, self.weight))

    def promote_new_version(self) -> None:
        """Full promotion: the stable Service now reaches the new pods at full size."""
        self.stable_is_new = True
        self.set_weight(0, canary_pods=0)

    # -- traffic ---------------------------------------------------------------------------------

    def advance_to(self, t_end_s: float) -> None:
        """Generate every whole scrape interval that ends at or before t_end_s."""
        dt = self.config.scrape_interval_s
        n = int(math.floor((t_end_s - self.t_s) / dt + 1e-9))
        if n <= 0:
            return
        starts = self.t_s + dt * np.arange(n)
        rate = np.full(n, self.config.rate_rps)
        if self.config.traffic == "diurnal":
            mid = starts + dt / 2
            rate = rate * (1 + self.config.diurnal_amplitude * np.sin(2 * np.pi * mid / 86400.0))
        share = self.weight / 100.0
        counts = np.empty(n, dtype=np.int64)
        canary = np.zeros(n, dtype=np.int64)
        for i in range(n):
            g = self._stream(self._interval + i, 0)
            counts[i] = g.poisson(rate[i] * dt)
            if share > 0:
                canary[i] = g.binomial(counts[i], share)
        per_version = {"canary": canary, "stable": counts - canary}
        shares = {"canary": share, "stable": 1.0 - share}
        pods = {"canary": self.canary_pods, "stable": self.replicas}
        out = {}
        for v in VERSIONS:
            out[v] = self._serve(v, starts, per_version[v], rate * shares[v], pods[v])
        self.requests_total += int(counts.sum())
        self.requests_canary += int(canary.sum())
        self.canary_failed += int(out["canary"]["failed"].sum()) if out["canary"] is not None else 0
        self.t_s = self.t_s + dt * n
        self._interval += n
        self._scrape(starts + dt, out)

    def _stream(self, interval: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self._key, interval, purpose])

    def _fault_target(self, version: str) -> str:
        # After promotion, the stable Service's pods are the new version: the canary's faults.
        return "canary" if (version == "canary" or self.stable_is_new) else "stable"

    def _serve(self, version: str, starts: np.ndarray, counts: np.ndarray, rate: np.ndarray, pods: int):
        cfg = self.config
        n = len(starts)
        if pods <= 0:
            return None
        vid = 1 + VERSIONS.index(version)
        e = effects(self.faults, self._fault_target(version), starts)
        down = self._crash_downtime(version, starts, e.crash_mtbc_s, pods, vid)
        total = int(counts.sum())
        idx = np.repeat(np.arange(n), counts)
        k_conc = cfg.quality_concentration
        q_mean = np.clip(cfg.quality_mean + e.quality_delta, 0.01, 0.99)
        blocks = []
        for i in range(n):
            g = self._stream(self._interval + i, vid)
            c = int(counts[i])
            p, o = self.surface.mix.sample(g, c, e.cost_mult[i])
            blocks.append((p, o, g.random(c), g.random(c), g.random(c), g.random(c),
                           g.beta(q_mean[i] * k_conc, (1 - q_mean[i]) * k_conc, c), g.random()))
        cols = list(zip(*blocks)) if blocks else [[]] * 8
        prompt, output = np.concatenate(cols[0]).astype(np.int64), np.concatenate(cols[1]).astype(np.int64)
        u1, u2, u_fail, u_judge, scores_all = (np.concatenate(cols[j]) for j in range(2, 7))
        u_pre = np.array(cols[7])
        ttft = np.empty(total)
        tpot = np.empty(total)
        running = np.zeros(n)
        waiting = np.zeros(n)
        kv = np.zeros(n)
        pre_rate = np.zeros(n)
        per_pod = rate / pods
        # Intervals with the same surface point share one lookup (usually all of them).
        keys = np.stack([np.round(per_pod, 4), np.round(e.step_mult, 2), np.round(e.kv_lost_frac, 3)], axis=1)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        for k, (r, m, lost) in enumerate(uniq):
            cell = self.surface.point(float(r), float(m), float(lost))
            sel_i = inverse == k
            sel = sel_i[idx]
            ttft[sel] = sample_quantiles(cell.ttft_s, u1[sel])
            tpot[sel] = sample_quantiles(cell.tpot_s, u2[sel])
            running[sel_i] = cell.num_running * pods
            waiting[sel_i] = cell.num_waiting * pods
            kv[sel_i] = cell.kv_usage
            pre_rate[sel_i] = cell.preemptions_per_request
        dur = (ttft + tpot * np.maximum(output - 1, 0)) * e.latency_mult[idx]
        p_fail = 1 - (1 - cfg.base_error_rate) * (1 - e.error_rate) * (1 - down)
        failed = u_fail < p_fail[idx]
        dur = np.where(failed, cfg.error_duration_s, dur)
        ok = ~failed
        nb = len(DURATION_BUCKETS_S) + 1
        b = np.searchsorted(np.asarray(DURATION_BUCKETS_S), dur, side="left")  # le is inclusive
        bucket_counts = np.bincount(idx * nb + b, minlength=n * nb).reshape(n, nb)
        cost = (prompt * cfg.input_price_per_mtok + output * cfg.output_price_per_mtok) / 1e6 * e.price_mult[idx]
        judged = ok & (u_judge < cfg.judge_fraction)
        scores = scores_all[judged]
        n_ok = np.bincount(idx, weights=ok, minlength=n)
        # Preemptions: the surface's mean per request, rounded up or down at random.
        expected = pre_rate * n_ok
        preempt = np.floor(expected) + (u_pre < expected - np.floor(expected))
        return {
            "ok": n_ok,
            "failed": np.bincount(idx, weights=failed, minlength=n),
            "buckets": bucket_counts,
            "duration_sum": np.bincount(idx, weights=dur, minlength=n),
            "cost": np.bincount(idx, weights=np.where(ok, cost, 0.0), minlength=n),
            "judge_sum": np.bincount(idx[judged], weights=scores, minlength=n),
            "judge_count": np.bincount(idx[judged], minlength=n).astype(float),
            "prompt_tokens": np.bincount(idx, weights=np.where(ok, prompt, 0), minlength=n),
            "generation_tokens": np.bincount(idx, weights=np.where(ok, output, 0), minlength=n),
            "preemptions": preempt.astype(float),
            "running": running,
            "waiting": waiting,
            "kv": kv,
        }

    def _crash_downtime(self, version: str, starts: np.ndarray, mtbc: np.ndarray, pods: int, vid: int) -> np.ndarray:
        """Share of each interval's pod-time lost to crash-loop restarts."""
        tot = self.totals[version]
        if tot.down_until.size != pods:
            tot.down_until = np.resize(tot.down_until, pods) if tot.down_until.size else np.zeros(pods)
        down = np.zeros(len(starts))
        if not np.any(np.isfinite(mtbc)):
            return down
        dt = self.config.scrape_interval_s
        for i, t0 in enumerate(starts):
            t1 = t0 + dt
            if math.isfinite(mtbc[i]):
                rng = self._stream(self._interval + i, 10 + vid)
                up = tot.down_until <= t0
                crash = up & (rng.random(pods) < -np.expm1(-dt / mtbc[i]))
                at = t0 + rng.random(pods) * dt
                tot.down_until = np.where(crash, at + self.config.restart_s, tot.down_until)
                start_down = np.where(crash, at, t0)
            else:
                start_down = np.full(pods, t0)
            lost = np.clip(np.minimum(tot.down_until, t1) - np.maximum(start_down, t0), 0, dt)
            down[i] = float(lost.sum() / (pods * dt))
        return down

    # -- metrics ---------------------------------------------------------------------------------

    def _declare(self) -> None:
        s = self.store
        s.declare("http_requests_total", "counter", "HTTP requests by Service and status code")
        s.declare("http_request_duration_seconds", "histogram", "HTTP request duration in seconds")
        s.declare("llm_request_cost_dollars_total", "counter", "Token cost of the answered requests in dollars")
        s.declare("llm_judge_quality_score", "summary", "LLM-judge scores (0 to 1) of sampled responses")
        s.declare("vllm:num_requests_running", "gauge", "Number of requests in model execution batches")
        s.declare("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed")
        s.declare("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage")
        s.declare("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed")
        s.declare("vllm:generation_tokens_total", "counter", "Number of generation tokens processed")
        s.declare("vllm:num_preemptions_total", "counter", "Cumulative number of preemptions from the engine")

    def _scrape(self, times: np.ndarray, out: dict) -> None:
        st = self.store
        for v in VERSIONS:
            svc = self.services[v]
            tot = self.totals[v]
            o = out[v]
            n = len(times)

            def cum(key: str, attr: str) -> np.ndarray:
                prev = getattr(tot, attr)
                arr = prev + (np.cumsum(o[key]) if o is not None else np.zeros(n))
                setattr(tot, attr, float(arr[-1]))
                return arr

            ok = cum("ok", "ok")
            failed = cum("failed", "failed")
            st.append("http_requests_total", {"service": svc, "status": "200"}, times, ok)
            st.append("http_requests_total", {"service": svc, "status": "500"}, times, failed)
            per_bucket = o["buckets"] if o is not None else np.zeros((n, len(DURATION_BUCKETS_S) + 1))
            cum_time = tot.buckets + np.cumsum(per_bucket, axis=0)
            tot.buckets = cum_time[-1].copy()
            cum_le = np.cumsum(cum_time, axis=1)
            for j, le in enumerate((*DURATION_BUCKETS_S, math.inf)):
                st.append("http_request_duration_seconds_bucket", {"service": svc, "le": _le(le)}, times, cum_le[:, j])
            st.append("http_request_duration_seconds_count", {"service": svc}, times, cum_le[:, -1])
            st.append("http_request_duration_seconds_sum", {"service": svc}, times, cum("duration_sum", "duration_sum"))
            st.append("llm_request_cost_dollars_total", {"service": svc}, times, cum("cost", "cost"))
            st.append("llm_judge_quality_score_sum", {"service": svc}, times, cum("judge_sum", "judge_sum"))
            st.append("llm_judge_quality_score_count", {"service": svc}, times, cum("judge_count", "judge_count"))
            vl = {"service": svc, "model_name": self.config.model_name, "engine": "0"}
            st.append("vllm:prompt_tokens_total", vl, times, cum("prompt_tokens", "prompt_tokens"))
            st.append("vllm:generation_tokens_total", vl, times, cum("generation_tokens", "generation_tokens"))
            st.append("vllm:num_preemptions_total", vl, times, cum("preemptions", "preemptions"))
            zeros = np.zeros(n)
            st.append("vllm:num_requests_running", vl, times, o["running"] if o is not None else zeros)
            st.append("vllm:num_requests_waiting", vl, times, o["waiting"] if o is not None else zeros)
            st.append("vllm:kv_cache_usage_perc", vl, times, o["kv"] if o is not None else zeros)


def _le(x: float) -> str:
    """Prometheus spells bucket bounds like Go's strconv: 0.05, 1, 2.5, +Inf."""
    if math.isinf(x):
        return "+Inf"
    return repr(float(x)).removesuffix(".0") if x != int(x) else str(int(x))
