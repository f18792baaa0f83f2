"""A real deployment against the simulation, side by side in one run, and the cost of a dropout.

1. The same MIST run (default: the Location recipe, 3 epochs, C=4, real data) through
   ``fedmist simulate`` (Flower's simulation engine) and through ``fedmist deploy run`` on a real
   ``flower-superlink`` with TLS and SuperNode authentication plus 4 real ``flower-supernode``
   processes on 127.0.0.1. Printed: each command's wall time, the training time and the per-epoch
   times in ``metrics.json`` (start-up excluded), and the deploy / simulate ratio of the median
   epoch. The first epoch of a deployment also pays each SuperNode's one-time start-up (imports,
   dataset), so the median of 3+ epochs is the steady-state figure.
2. Optionally (``--dropout``) the same deployment for 3 epochs with SuperNode 3 killed (SIGKILL)
   once epoch 1 is checkpointed: how long the server takes to notice (``round_timeout``) and
   finish the run.

    python experiments/bench_deploy.py                         # location, 3 epochs (a few minutes)
    python experiments/bench_deploy.py --epochs 5 --dataset location
    python experiments/bench_deploy.py --dataset synthetic:240x12x3 --set model=mlp-small --set train_size=120
    python experiments/bench_deploy.py --dropout --round-timeout 30

The machine's other load makes single runs noisy: compare ratios from one side-by-side run.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.deploy.cluster import FEDMIST, deploy_run, make_cluster  # noqa: E402  (real processes on 127.0.0.1)

RECIPE = ROOT / "experiments" / "recipes" / "location-mist.toml"
KEEP_LOGS: Path | None = None  # --keep-logs


def run_sets(dataset: str, epochs: int, extra: list[str]) -> list[str]:
    """The --set list both sides get (the recipe is passed separately)."""
    return [f"dataset={dataset}", f"epochs={epochs}", "clients=4", *extra]


def _metrics(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    epochs = [float(h["epoch_time"]) for h in m["history"]]
    # Epoch 1 also pays one-time start-up (Ray workers in the simulation, the ClientApp processes'
    # imports and dataset in a deployment): the steady state is the median of the later epochs.
    return {"train": float(m["summary"]["wall_time"]), "epochs": epochs, "median": statistics.median(epochs),
            "steady": statistics.median(epochs[1:] or epochs)}


def simulate(out: Path, recipe: Path, sets: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*FEDMIST, "simulate", "--recipe", str(recipe), "--out", str(out),
                           *[a for s in sets for a in ("--set", s)]], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"simulate failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def deploy(tmp: Path, out: Path, recipe: Path, sets: list[str]) -> tuple[float, float]:
    """(seconds to start SuperLink + SuperNodes, wall time of ``fedmist deploy run``)."""
    t0 = time.perf_counter()
    cluster = make_cluster(tmp, nodes=4)
    up = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        proc = deploy_run(cluster, out, sets, "--recipe", str(recipe), timeout=3600)
        wall = time.perf_counter() - t0
        starts = sum(n.text().count("Start `flwr-clientapp` process") for n in cluster.nodes.values())
        warm = sum(n.text().count("fedmist-clientapp: served") for n in cluster.nodes.values())
        if KEEP_LOGS is not None:
            KEEP_LOGS.mkdir(parents=True, exist_ok=True)
            for i, n in cluster.nodes.items():
                (KEEP_LOGS / f"supernode-{i}.log").write_text(n.text())
            (KEEP_LOGS / "deploy-run.log").write_text(proc.stdout)
    finally:
        cluster.stop()
    if proc.returncode != 0:
        raise SystemExit(f"deploy run failed:\n{proc.stdout[-3000:]}")
    print(f"(deployment: {starts} `flwr-clientapp` process starts, {warm} messages served by long-lived ClientApp "
          f"processes)")
    return up, wall


def dropout(tmp: Path, out: Path, recipe: Path, sets: list[str], round_timeout: float) -> dict:
    sets = [s for s in sets if not s.startswith("epochs=")] + ["epochs=3", f"round_timeout={round_timeout:g}"]
    cluster = make_cluster(tmp, nodes=4)
    args = [*FEDMIST, "deploy", "run", "--superlink", cluster.address, "--certs", str(cluster.certs), "--out",
            str(out), "--recipe", str(recipe), "--min-clients", "3", *[a for s in sets for a in ("--set", s)]]
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
    ap.add_argument("--recipe", type=Path, default=RECIPE, help="TOML recipe both sides run (default: Location MIST)")
    ap.add_argument("--dataset", default="location", help="dataset (real data from the data directory, or synthetic:...)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (median epoch time is compared)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="more config overrides for both sides (repeatable)")
    ap.add_argument("--dropout", action="store_true", help="also measure a SuperNode killed mid-run")
    ap.add_argument("--round-timeout", type=float, default=30.0, help="round timeout of the --dropout run")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy the SuperNode and `deploy run` logs here")
    args = ap.parse_args()
    global KEEP_LOGS
    KEEP_LOGS = args.keep_logs
    sets = run_sets(args.dataset, args.epochs, args.sets)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        sim_wall = simulate(tmp / "sim", args.recipe, sets)
        (tmp / "deploy").mkdir()
        up, dep_wall = deploy(tmp / "deploy", tmp / "dep", args.recipe, sets)
        sim, dep = _metrics(tmp / "sim"), _metrics(tmp / "dep")
        print(f"\n{args.epochs}-epoch MIST, {args.recipe.name} with {' '.join(sets)}, CPU, "
              f"bench took {time.perf_counter() - t0:.0f} s")
        print("| | simulate | deploy (TLS + node auth, 4 SuperNodes on 127.0.0.1) | deploy / simulate |")
        print("|---|---|---|---|")
        print(f"| command wall time s | {sim_wall:.1f} | {dep_wall:.1f} (+{up:.1f} s to start SuperLink/SuperNodes) | "
              f"{dep_wall / sim_wall:.2f} |")
        print(f"| training time s (metrics.json) | {sim['train']:.2f} | {dep['train']:.2f} | "
              f"{dep['train'] / sim['train']:.2f} |")
        print(f"| epoch times s | {', '.join(f'{e:.2f}' for e in sim['epochs'])} | "
              f"{', '.join(f'{e:.2f}' for e in dep['epochs'])} | |")
        print(f"| median epoch s | {sim['median']:.2f} | {dep['median']:.2f} | {dep['median'] / sim['median']:.2f} |")
        print(f"| median epoch s, epoch 1 left out | {sim['steady']:.2f} | {dep['steady']:.2f} | "
              f"**{dep['steady'] / sim['steady']:.2f}** |")
        print("(one side-by-side run on a shared machine: noisy)")
        if args.dropout:
            (tmp / "drop").mkdir()
            r = dropout(tmp / "drop", tmp / "dropout-run", args.recipe, sets, args.round_timeout)
            print(f"\nSuperNode 3 SIGKILLed after epoch 1 (round_timeout {args.round_timeout:g} s, min_clients 3): "
                  f"exit {r['returncode']}, run finished {r['after_kill_s']:.1f} s after the kill; epoch times "
                  f"{r['epoch_s']} s; dropped per epoch {r['dropped']}")
            for line in r["logged"]:
                print(f"  log: {line.strip()}")


if __name__ == "__main__":
    main()
