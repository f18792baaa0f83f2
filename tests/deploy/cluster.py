"""Real Flower processes on 127.0.0.1 for the deployment tests: the package's own loopback
launcher (``fedmist.deploy.local_cluster``, public as ``fedmist.start_local_cluster``) with the
test checkout as every process's working directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fedmist.deploy.local_cluster import (
    FEDMIST,
    LocalCluster,
    Proc,
    free_port,
    start,
    start_local_cluster,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
Cluster = LocalCluster

__all__ = ["FEDMIST", "ROOT", "Cluster", "LocalCluster", "Proc", "deploy_run", "free_port", "make_cluster", "start",
           "wait_for"]


def make_cluster(tmp: Path, nodes: int, fault: str = "") -> LocalCluster:
    """Certificates for ``nodes`` SuperNodes, a running SuperLink and the SuperNodes (connected).
    ``fault``: FEDMIST_FAULT for the SuperNodes (fedmist.flower.faults)."""
    return start_local_cluster(tmp, nodes, fault=fault, cwd=ROOT)


def deploy_run(cluster: LocalCluster, out: Path, sets: list[str], *extra: str,
               timeout: float = 600) -> subprocess.CompletedProcess:
    return cluster.deploy_run(out, sets, *extra, timeout=timeout)
