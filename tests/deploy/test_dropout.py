"""A SuperNode killed (SIGKILL, no goodbye) in the middle of a deployed run: the server waits
``round_timeout``, logs the dropout, goes on with ``min_clients`` and the run finishes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.cluster import FEDMIST, ROOT, make_cluster

SETS = ["dataset=synthetic:240x12x3", "model=mlp-small", "train_size=120", "batch_size=20", "epochs=3",
        "clients=4", "lambda=5.0", "seed=4", "round_timeout=90"]


@pytest.mark.slow  # ~6 min on a loaded 2-core machine: a deployment plus up to two 90 s timeouts
def test_a_supernode_killed_mid_run_is_a_logged_dropout(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, nodes=4)
    out = tmp_path / "run"
    args = [*FEDMIST, "deploy", "run", "--superlink", cluster.address, "--certs", str(cluster.certs),
            "--out", str(out), "--min-clients", "3", *[a for s in SETS for a in ("--set", s)]]
    proc = subprocess.Popen(args, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (out / "checkpoint.pt").exists():  # epoch 1 done
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"epoch 1 never finished:\n{proc.communicate()[0][-4000:]}")
            time.sleep(0.5)
        killed_at = time.monotonic()
        cluster.nodes[3].kill(signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=600)
        finished = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.stop()
    assert proc.returncode == 0, stdout[-4000:]
    assert "dropout: client" in stdout and "no reply within 90 s" in stdout, stdout[-4000:]
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[0]["dropped"] == [] and any(h["dropped"] for h in history[1:])
    lost = {c for h in history for c in h["dropped"]}
    assert len(lost) == 1
    print(f"\nkilled a SuperNode after epoch 1; run finished {finished - killed_at:.1f} s later; "
          f"epoch times {[round(h['epoch_time'], 1) for h in history]}, dropped {[h['dropped'] for h in history]}",
          file=sys.stderr)
