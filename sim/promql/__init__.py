"""A Prometheus-compatible series store and a PromQL evaluator for the simulated fleet.

- :class:`SeriesStore` holds the series the fleet scrapes and exports them as OpenMetrics;
- :func:`instant_query` / :func:`range_query` evaluate the AnalysisTemplates' PromQL with
  Prometheus 2.42's semantics (docs/promql.md lists the subset and how agreement is proven);
- :class:`PromQLError` is the one error a query can raise.
"""

from sim.promql.evaluate import QueryResult, instant_query, range_query
from sim.promql.parse import PromQLError, parse_query
from sim.promql.store import Series, SeriesStore, SeriesStoreError

__all__ = [
    "PromQLError",
    "QueryResult",
    "Series",
    "SeriesStore",
    "SeriesStoreError",
    "instant_query",
    "parse_query",
    "range_query",
]
