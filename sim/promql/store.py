"""An in-memory time-series store with Prometheus's data model.

A series is a metric name plus a set of labels, and a run of (time, value) samples in strictly
increasing time order. The simulated fleet appends to it as it scrapes; the PromQL evaluator in
:mod:`sim.promql.evaluate` reads it; :meth:`SeriesStore.to_openmetrics` writes it in the text
format that ``promtool tsdb create-blocks-from openmetrics`` backfills into a real Prometheus,
which is how the tests prove that the evaluator agrees with Prometheus.

Times are kept at millisecond resolution, as Prometheus keeps them (``int64`` milliseconds):
``t_s`` is rounded to the nearest millisecond on the way in. Appends are buffered and joined
into numpy arrays only when a reader asks, so scraping one sample at a time stays cheap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sim.errors import ServeLabError

LabelSet = tuple[tuple[str, str], ...]
MetricType = Literal["counter", "gauge", "histogram", "summary", "unknown"]
METRIC_TYPES = ("counter", "gauge", "histogram", "summary", "unknown")

# Prometheus's name grammar (model/metric.go); a colon is allowed in metric names only, which
# is how vLLM's own series (`vllm:num_requests_running`) are spelled.
METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# The suffixes by which a sample's name belongs to a declared family (OpenMetrics 1.0).
_FAMILY_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created", ""),
    "gauge": ("",),
    "unknown": ("",),
}


_MAX_TIME_S = 9.2e12  # int64 milliseconds overflow beyond about 9.22e15 ms


class SeriesStoreError(ServeLabError, ValueError):
    """A bad append or declaration: a bad name, unordered times, mismatched lengths."""


@dataclass(frozen=True)
class Series:
    """One series as read back: its arrays are read-only views of the store's data."""

    name: str
    labels: LabelSet  # sorted by label name, without __name__
    t_s: np.ndarray  # float64 seconds, strictly increasing
    values: np.ndarray  # float64

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


class _SeriesData:
    """The samples of one series: joined arrays plus not yet joined appends.

    Appends are buffered (arrays as chunks, scalars in plain lists, the fast path for one
    scrape at a time) and joined into numpy arrays only when a reader asks.
    """

    __slots__ = ("name", "labels", "_t_ms", "_v", "_chunks", "_scalar_t", "_scalar_v", "last_ms")

    def __init__(self, name: str, labels: LabelSet) -> None:
        self.name = name
        self.labels = labels
        self._t_ms = np.empty(0, dtype=np.int64)
        self._v = np.empty(0, dtype=np.float64)
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []
        self._scalar_t: list[int] = []
        self._scalar_v: list[float] = []
        self.last_ms: int | None = None

    def add(self, t_ms: np.ndarray, v: np.ndarray) -> None:
        self._flush_scalars()
        self._chunks.append((t_ms, v))
        self.last_ms = int(t_ms[-1])

    def add_scalar(self, t_ms: int, v: float) -> None:
        self._scalar_t.append(t_ms)
        self._scalar_v.append(v)
        self.last_ms = t_ms

    def _flush_scalars(self) -> None:
        if self._scalar_t:
            self._chunks.append((np.array(self._scalar_t, dtype=np.int64), np.array(self._scalar_v, dtype=np.float64)))
            self._scalar_t = []
            self._scalar_v = []

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(t_ms int64, values float64), joining any pending appends first."""
        if self._scalar_t or self._chunks:
            self._flush_scalars()
            self._t_ms = np.concatenate([self._t_ms, *(c[0] for c in self._chunks)])
            self._v = np.concatenate([self._v, *(c[1] for c in self._chunks)])
            self._t_ms.setflags(write=False)
            self._v.setflags(write=False)
            self._chunks.clear()
        return self._t_ms, self._v


class SeriesStore:
    """In-memory time series. A series is (metric name, labels) -> samples sorted by time."""

    def __init__(self) -> None:
        self._by_name: dict[str, dict[LabelSet, _SeriesData]] = {}
        self._types: dict[str, tuple[MetricType, str]] = {}
        # Bumped whenever a series is created, so that selection caches know when to refresh.
        self.generation = 0
        self._select_cache: dict[object, list] = {}
        self._scalar_cache: dict[tuple[str, tuple], _SeriesData] = {}

    # -- writing -------------------------------------------------------------------------------

    def append(self, name: str, labels: Mapping[str, str], t_s, values) -> None:
        """Append samples to the series (name, labels), creating it if new.

        ``t_s`` and ``values`` are both scalars or equal-length 1-D arrays. Times must be
        strictly increasing within the call and after the series' last sample, at millisecond
        resolution; otherwise :class:`SeriesStoreError` (a ``ValueError``) names the series.
        """
        if (
            isinstance(t_s, (int, float))
            and isinstance(values, (int, float))
            and math.isfinite(t_s)
            and abs(t_s) < _MAX_TIME_S
        ):
            # Fast path for one sample (a scrape): a cache of already checked series.
            try:
                data = self._scalar_cache.get((name, tuple(labels.items())))
            except TypeError:  # an unhashable label value: the slow path explains
                data = None
            t_ms = round(t_s * 1000.0)
            if data is not None and (data.last_ms is None or t_ms > data.last_ms):
                data.add_scalar(t_ms, float(values))
                return
        key = _label_key(name, labels)
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        v = np.atleast_1d(np.asarray(values, dtype=np.float64))
        where = f"series {format_series(name, key)}"
        if t.ndim != 1 or v.ndim != 1 or t.shape != v.shape:
            raise SeriesStoreError(
                f"{where}: t_s and values must be scalars or equal-length 1-D arrays, "
                f"got shapes {t.shape} and {v.shape}"
            )
        if t.size == 0:
            return
        if not np.all(np.isfinite(t) & (np.abs(t) < _MAX_TIME_S)):
            bad = t[~(np.isfinite(t) & (np.abs(t) < _MAX_TIME_S))][0]
            raise SeriesStoreError(
                f"{where}: times must be finite seconds within ±{_MAX_TIME_S:.0e} "
                f"(Prometheus keeps int64 milliseconds), got {bad}"
            )
        t_ms = np.rint(t * 1000.0).astype(np.int64)
        if t_ms.size > 1 and not np.all(np.diff(t_ms) > 0):
            i = int(np.argmin(np.diff(t_ms) > 0))
            raise SeriesStoreError(
                f"{where}: times must be strictly increasing (at millisecond resolution), "
                f"got {t[i]!r} then {t[i + 1]!r}"
            )
        family = self._by_name.setdefault(name, {})
        data = family.get(key)
        if data is None:
            data = family[key] = _SeriesData(name, key)
            self.generation += 1
            self._select_cache.clear()
        elif data.last_ms is not None and t_ms[0] <= data.last_ms:
            raise SeriesStoreError(
                f"{where}: times must be strictly increasing, got {t[0]!r} after the last "
                f"sample at {data.last_ms / 1000!r}; append samples in time order"
            )
        data.add(t_ms, v)
        try:
            self._scalar_cache[(name, tuple(labels.items()))] = data
        except TypeError:
            pass

    def declare(self, name: str, type: MetricType, help: str = "") -> None:  # noqa: A002
        """Give a metric family its type and help text, for :meth:`to_openmetrics`.

        ``name`` is the family name (``http_request_duration_seconds`` for a histogram); a
        counter may be declared with or without its ``_total`` suffix.
        """
        if type not in METRIC_TYPES:
            raise SeriesStoreError(f"metric {name!r}: type must be one of {', '.join(METRIC_TYPES)}, got {type!r}")
        if not METRIC_NAME_RE.fullmatch(name):
            raise SeriesStoreError(f"metric name {name!r} does not match {METRIC_NAME_RE.pattern}")
        if type == "counter" and name.endswith("_total"):
            name = name[: -len("_total")]
        self._types[name] = (type, help)

    # -- reading -------------------------------------------------------------------------------

    def series(self, name: str | None = None) -> Iterator[Series]:
        """The series of one metric name (or all), ordered by name, then labels."""
        names = [name] if name is not None else sorted(self._by_name)
        for n in names:
            family = self._by_name.get(n, {})
            for key in sorted(family):
                t_ms, v = family[key].arrays()
                t_s = t_ms / 1000.0
                t_s.setflags(write=False)
                yield Series(n, key, t_s, v)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def raw(self, name: str) -> list[_SeriesData]:
        """The stored series of one name, in label order (for the evaluator)."""
        family = self._by_name.get(name, {})
        return [family[k] for k in sorted(family)]

    def all_raw(self) -> list[_SeriesData]:
        return [s for n in sorted(self._by_name) for s in self.raw(n)]

    def cached_select(self, key: object, compute) -> list:
        """Memoise a selection (a list of series) until a new series appears."""
        hit = self._select_cache.get(key)
        if hit is None:
            hit = self._select_cache[key] = compute()
        return hit

    # -- export --------------------------------------------------------------------------------

    def to_openmetrics(self) -> str:
        """All samples as OpenMetrics text with millisecond timestamps, ending with ``# EOF``.

        Series are grouped by metric family (a declared name, or the sample name itself as
        ``unknown``), each family's samples contiguous and each series' samples in time order,
        as ``promtool tsdb create-blocks-from openmetrics`` needs them.
        """
        families: dict[str, list[str]] = {}
        for name in sorted(self._by_name):
            families.setdefault(self._family_of(name), []).append(name)
        out: list[str] = []
        for family in sorted(families):
            mtype, help_text = self._types.get(family, ("unknown", ""))
            if help_text:
                out.append(f"# HELP {family} {_escape_help(help_text)}")
            out.append(f"# TYPE {family} {mtype}")
            for name in families[family]:
                for data in self.raw(name):
                    t_ms, v = data.arrays()
                    prefix = name + _format_labels(data.labels) + " "
                    out.extend(
                        prefix + _format_value(x) + " " + _format_ms(t)
                        for t, x in zip(t_ms.tolist(), v.tolist())
                    )
        out.append("# EOF")
        return "\n".join(out) + "\n"

    def _family_of(self, name: str) -> str:
        """The declared family a sample name belongs to, or the name itself."""
        for family, (mtype, _) in self._types.items():
            for suffix in _FAMILY_SUFFIXES[mtype]:
                if name == family + suffix:
                    return family
        return name


def _label_key(name: str, labels: Mapping[str, str]) -> LabelSet:
    if not isinstance(name, str) or not METRIC_NAME_RE.fullmatch(name):
        raise SeriesStoreError(f"metric name {name!r} does not match {METRIC_NAME_RE.pattern}")
    for k, val in labels.items():
        if not isinstance(k, str) or not LABEL_NAME_RE.fullmatch(k) or k.startswith("__"):
            raise SeriesStoreError(
                f"metric {name}: label name {k!r} must match {LABEL_NAME_RE.pattern} and not start with '__'"
            )
        if not isinstance(val, str) or val == "":
            # Prometheus treats a label with an empty value as absent; refusing it keeps two
            # spellings of one series from becoming two series here.
            raise SeriesStoreError(f"metric {name}: label {k} must have a non-empty string value, got {val!r}")
    return tuple(sorted(labels.items()))


def format_series(name: str | None, labels: LabelSet) -> str:
    return (name or "") + _format_labels(labels)


def _escape_label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _format_labels(labels: LabelSet) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels) + "}"


def _format_value(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


def _format_ms(t_ms: int) -> str:
    # Exact decimal seconds; whole seconds are written without a fraction.
    sign, t_ms = ("-", -t_ms) if t_ms < 0 else ("", t_ms)
    sec, ms = divmod(t_ms, 1000)
    return sign + (str(sec) if ms == 0 else f"{sec}.{ms:03d}")
