"""Cluster backends: the simulated cluster (``sim``, the default) and a local kind cluster.

Both implement :class:`lab.cluster.base.ClusterBackend`; ``servelab cluster`` picks one with
``--backend``. See lab/cluster/simbackend.py and lab/cluster/kind.py.
"""

from lab.cluster.base import Check, ClusterBackend, ClusterError, ClusterStatus

BACKENDS = ("sim", "kind")

__all__ = ["BACKENDS", "Check", "ClusterBackend", "ClusterError", "ClusterStatus"]
