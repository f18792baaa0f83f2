"""A real deployment against the simulation, side by side in one run, and the cost of a dropout.

1. The same 2-epoch MIST run (``synthetic``, C=4) through ``fedmist simulate`` (Flower's
   simulation engine) and through ``fedmist deploy run`` on a real ``flower-superlink`` with TLS
   and SuperNode authentication plus 4 real ``flower-supernode`` processes on 127.0.0.1.
   Printed: each command's wall time, the training time in ``metrics.json`` (start-up excluded),
   and deploy / simulate ratios of both.
2. The same deployment for 3 epochs with SuperNode 3 killed (SIGKILL) once epoch 1 is
   checkpointed: how long the server takes to notice (``round_timeout``) and finish the run.

    python experiments/bench_deploy.py --round-timeout 30
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.deploy.cluster import FEDMIST, deploy_run, make_cluster  # noqa: E402  (real processes on 127.0.0.1)

SETS = ["dataset=synthetic:240x12x3", "model=mlp-small", "train_size=120", "batch_size=20", "epochs=2",
        "clients=4", "lambda=5.0", "seed=3"]


def _train_seconds(out: Path) -> float:
    return float(json.loads((out / "metrics.json").read_text())["summary"]["wall_time"])


def simulate(out: Path, sets: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*FEDMIST, "simulate", "--out", str(out), *[a for s in sets for a in ("--set", s)]],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"simulate failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def deploy(tmp: Path, out: Path, sets: list[str]) -> float:
    cluster = make_cluster(tmp, nodes=4)
    try:
        t0 = time.perf_counter()
        proc = deploy_run(cluster, out, sets)
        wall = time.perf_counter() - t0
    finally:
        cluster.stop()
    if proc.returncode != 0:
        raise SystemExit(f"deploy run failed:\n{proc.stdout[-3000:]}")
    return wall


def dropout(tmp: Path, out: Path, round_timeout: float) -> dict:
    sets = [s for s in SETS if not s.startswith("epochs=")] + ["epochs=3", f"round_timeout={round_timeout:g}"]
    cluster = make_cluster(tmp, nodes=4)
    args = [*FEDMIST, "deploy", "run", "--superlink", cluster.address, "--certs", str(cluster.certs), "--out",
            str(out), "--min-clients", "3", *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.Popen(args, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        while not (out / "checkpoint.pt").exists():
            if proc.poll() is not None:
                raise SystemExit(f"deploy run ended before epoch 1:\n{proc.communicate()[0][-3000:]}")
            time.sleep(0.2)
        killed = time.perf_counter()
        cluster.nodes[3].kill(signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=900)
        finished = time.perf_counter()
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.stop()
    history = json.loads((out / "metrics.json").read_text())["history"]
    return {"returncode": proc.returncode, "after_kill_s": finished - killed,
            "epoch_s": [round(h["epoch_time"], 1) for h in history], "dropped": [h["dropped"] for h in history],
            "logged": [line for line in stdout.splitlines() if "dropout: client" in line][:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round-timeout", type=float, default=30.0)
    ap.add_argument("--skip-dropout", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sim_wall = simulate(tmp / "sim", SETS)
        (tmp / "deploy").mkdir()
        dep_wall = deploy(tmp / "deploy", tmp / "dep", SETS)
        sim_train, dep_train = _train_seconds(tmp / "sim"), _train_seconds(tmp / "dep")
        print("2-epoch MIST, synthetic:240x12x3, C=4, seed 3, CPU")
        print("| | simulate | deploy (TLS + node auth, 4 SuperNodes) | deploy / simulate |")
        print("|---|---|---|---|")
        print(f"| command wall time s | {sim_wall:.1f} | {dep_wall:.1f} (SuperLink/SuperNodes already up) | "
              f"{dep_wall / sim_wall:.2f} |")
        print(f"| training time s (metrics.json) | {sim_train:.2f} | {dep_train:.2f} | {dep_train / sim_train:.2f} |")
        if not args.skip_dropout:
            (tmp / "drop").mkdir()
            r = dropout(tmp / "drop", tmp / "dropout-run", args.round_timeout)
            print(f"\nSuperNode 3 SIGKILLed after epoch 1 (round_timeout {args.round_timeout:g} s, min_clients 3): "
                  f"exit {r['returncode']}, run finished {r['after_kill_s']:.1f} s after the kill; epoch times "
                  f"{r['epoch_s']} s; dropped per epoch {r['dropped']}")
            for line in r["logged"]:
                print(f"  log: {line.strip()}")


if __name__ == "__main__":
    main()
