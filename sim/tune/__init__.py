"""The capacity planner: which GPUs, how many, which TP and which `vllm serve` flags meet an SLA
at the lowest cost, found by simulation.

``tune(TuneRequest, executor) -> TuneResult`` (:mod:`sim.tune.search`) enumerates the
:class:`SearchSpace` (:mod:`sim.tune.space`), drops what vLLM could not start
(:mod:`sim.tune.prune`), bisects each remaining engine configuration's highest load meeting the
:class:`SLA` (:mod:`sim.tune.evaluate`, :mod:`sim.tune.bisect`, :mod:`sim.tune.sla`), through an
executor (:mod:`sim.tune.executors`: local processes or Ray), and ranks the deployments by cost
(:mod:`sim.tune.rank`, prices from :mod:`sim.tune.prices`).
"""

from sim.tune.search import TuneRequest, TuneResult, tune  # noqa: F401
from sim.tune.sla import SLA, SLATerm, parse_sla  # noqa: F401
from sim.tune.space import SearchSpace  # noqa: F401
