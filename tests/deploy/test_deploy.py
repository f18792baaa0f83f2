"""A real deployment on 127.0.0.1: ``fedmist deploy superlink`` (TLS + SuperNode authentication),
four ``fedmist deploy supernode`` processes and ``fedmist deploy run``. It must compute what the
simulation computes (the in-process loop, which tests/test_simulate.py shows equals the Flower
simulation), refuse a SuperNode whose key is not registered, and reject a client's NaN reply.
Each SuperNode runs all its messages in one long-lived ClientApp process, stopped with it."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch

from fedmist.config import RunConfig
from fedmist.deploy.certs import write_node_keys
from fedmist.runs.inprocess import InProcessFederation
from fedmist.engine.loop import train
from fedmist.runs.rundir import open_run, prepare_config
from tests.deploy.cluster import Cluster, deploy_run, make_cluster, wait_for

NAN_SEED = 99  # the SuperNodes make client 1 return NaN weights in runs with this seed only
SETS = ["dataset=synthetic:240x12x3", "model=mlp-small", "train_size=120", "batch_size=20", "epochs=2",
        "clients=4", "lambda=5.0", "seed=3"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp("deploy"), nodes=4, fault=f"nan:1::{NAN_SEED}")
    try:
        yield c
    finally:
        c.stop()


def reference_state(sets: list[str]) -> dict[str, torch.Tensor]:
    cfg = prepare_config(RunConfig.from_dict(dict(s.split("=", 1) for s in sets)))
    run = open_run(cfg, None)
    return train(cfg, run.spec, InProcessFederation(), run.state, run.split.members)


def test_tls_authenticated_deployment_equals_the_simulation(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    t0 = time.perf_counter()
    proc = deploy_run(cluster, out, SETS)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "epoch 2/2" in proc.stdout and "summary" in proc.stdout and "SYNTHETIC" in proc.stdout
    # TLS on every API and authenticated SuperNodes.
    assert "Uvicorn running on https://" in cluster.superlink.text()
    assert "--enable-supernode-auth" in cluster.superlink.text()
    assert all("SuperNode ID" in n.text() for n in cluster.nodes.values())
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [(h["epoch"], h["dropped"]) for h in history] == [(1, []), (2, [])]
    # phase 2 found every client's held phase-1 weights (the digests agree across the network)
    assert "no longer holds its phase-1 weights" not in proc.stdout
    got = torch.load(out / "model.pt")
    expected = reference_state(SETS)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)
    print(f"deployment wall time (2 epochs, fedmist deploy run): {wall:.1f} s")


def test_a_supernode_with_an_unregistered_key_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    key, pub = tmp_path / "stranger.key", tmp_path / "stranger.pub"
    write_node_keys(key, pub)
    stranger = cluster.start_node(0, 4, key=key, wait_registered=0)
    try:
        stranger.popen.wait(timeout=180)
        assert stranger.popen.returncode != 0
        assert "refused this SuperNode" in stranger.text(), stranger.text()[-2000:]
        wait_for(cluster.superlink, "No SuperNode found with the given public key", 30)
    finally:
        stranger.kill()


def test_a_client_returning_nan_is_rejected_and_the_run_finishes(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    sets = [s for s in SETS if not s.startswith(("seed=", "epochs="))] + [f"seed={NAN_SEED}", "epochs=1"]
    proc = deploy_run(cluster, out, sets, "--min-clients", "3")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "dropout: client 1" in proc.stdout and "NaN" in proc.stdout, proc.stdout[-4000:]
    # The log names the machine too: the partition-id its SuperNode was started with.
    line = next(ln for ln in proc.stdout.splitlines() if "dropout: client 1" in ln)
    assert "SuperNode partition-id" in line and any(f"partition-id {i})" in line for i in range(4)), line
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[0]["dropped"] == [1] and "NaN" in history[0]["dropout_reasons"]["1"]
    state = torch.load(out / "model.pt")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


SERVED = re.compile(r"fedmist-clientapp: served \S+ message \d+ in process (\d+)")


def served_pids(log: str) -> list[int]:
    """The process that ran each message, in order, from a SuperNode's log."""
    return [int(m.group(1)) for m in SERVED.finditer(log)]


def test_each_supernode_runs_every_message_in_one_long_lived_process(cluster: Cluster, tmp_path: Path) -> None:
    def messages(log: str) -> int:  # served warm, or cold after new app code (see below)
        return len(served_pids(log)) + log.count("a new FAB (app code) arrived")

    before = {i: messages(n.text()) for i, n in cluster.nodes.items()}
    proc = deploy_run(cluster, tmp_path / "run", SETS)  # 2 epochs: >= 2 messages per node and epoch
    assert proc.returncode == 0, proc.stdout[-4000:]
    for i, node in cluster.nodes.items():
        deadline = time.monotonic() + 15  # the last "served" line follows the reply the server already has
        while messages(node.text()) - before[i] < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        log = node.text()
        pids = served_pids(log)
        assert messages(log) - before[i] >= 4, log[-3000:]  # 2 epochs x (train, train.xdiff)
        # One process for every message this SuperNode ever ran (this run and the module's earlier
        # ones), started once, still alive, and below this node's `fedmist deploy supernode`. It
        # re-executes itself (same pid) only when a run brings different app code (FAB): others
        # editing this checkout between two runs do that. Flower's per-message `flwr-clientapp`
        # process is then started for that one message only.
        assert len(set(pids)) == 1, pids
        restarts = log.count("a new FAB (app code) arrived")
        assert log.count("takes ClientApp tasks from the SuperNode") == 1 + restarts, log[-3000:]
        assert log.count("Start `flwr-clientapp` process") <= restarts, log[-3000:]
        # The FAB is unpacked once per app code and process, not for every message (Flower's
        # install_from_fab extracts and hash-checks every file each time it is called).
        assert 1 <= log.count("fedmist-clientapp: installed FAB") <= 1 + restarts, log[-3000:]
        children = {p.pid for p in psutil.Process(node.popen.pid).children(recursive=True)}
        assert pids[0] in children, (pids[0], children)
    # The FAB carries the apps' code only (pyproject's fab-include), not tests, docs or results.
    installed = sorted((cluster.tmp / "flwr-home" / "apps").glob("fedmist.fedmist.*"))
    assert installed
    for app in installed:
        assert {p.name for p in app.iterdir()} == {"clients", "fedmist", "pyproject.toml", "server"}, app


def test_terminating_a_supernode_stops_its_clientapp_process(cluster: Cluster) -> None:
    """Last in this module: it takes SuperNode 3 away. SIGTERM to `fedmist deploy supernode`
    only (as a service manager would send it), not to its process group."""
    node = cluster.nodes[3]
    children = psutil.Process(node.popen.pid).children(recursive=True)
    assert any("clientapp" in " ".join(c.cmdline()) for c in children), [c.cmdline() for c in children]
    node.popen.send_signal(signal.SIGTERM)
    node.popen.wait(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
