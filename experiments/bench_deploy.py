"""A real deployment against the simulation, side by side in one run, and the cost of a dropout.

1. The same MIST run (default: the Location recipe, 3 epochs, C=4, real data) through
   ``fedmist simulate`` (Flower's simulation engine) and through ``fedmist deploy run`` on a real
   ``flower-superlink`` with TLS and SuperNode authentication plus 4 real ``flower-supernode``
   processes on 127.0.0.1. Printed: each command's wall time, the training time and the per-epoch
   times in ``metrics.json`` (start-up excluded), and the deploy / simulate ratio of the median
   epoch. The first epoch of a deployment also pays each SuperNode's one-time start-up (imports,
   dataset), so the median of 3+ epochs is the steady-state figure.
2. Optionally (``--compare-env KEY=VALUE``, repeatable) a second deployment in the same run with
   those environment variables set on every process, e.g. ``FEDMIST_GRID_PULL_RETRY=0`` to measure
   the deployment with Flower's own 1 s retries for reply objects beside fedmist's (before / after).
   ``FEDMIST_ROUND_TIMING=1`` there (or in this process's environment) logs each round's push,
   reply arrivals and time inside ``pull_messages`` to the ``--keep-logs`` copy of the run's log.
3. Optionally (``--floor``) the relay floor, in the same run: one more simulation and deployment
   of the same model on a synthetic dataset of the same shape with 4 rows per client, so an
   epoch moves exactly the bytes and messages of the real one and computes next to nothing. The
   deployed floor epoch is what Flower's relay (ServerApp -> SuperLink -> SuperNode -> ClientApp
   and back, TLS, node authentication) costs on this machine whatever fedmist does; printed
   against the simulated real epoch, it says how close the deploy / simulate target can get.
4. Optionally (``--dropout``) the same deployment for 3 epochs with SuperNode 3 killed (SIGKILL)
   once epoch 1 is checkpointed: how long the server takes to notice (``round_timeout``) and
   finish the run.

    python experiments/bench_deploy.py                         # location, 3 epochs (a few minutes)
    python experiments/bench_deploy.py --epochs 5 --dataset location
    python experiments/bench_deploy.py --dataset synthetic:240x12x3 --set model=mlp-small --set train_size=120
    python experiments/bench_deploy.py --dropout --round-timeout 30
    python experiments/bench_deploy.py --epochs 3 --compare-env FEDMIST_GRID_PULL_RETRY=0
    python experiments/bench_deploy.py --epochs 4 --floor       # + the relay floor (no compute)

The machine's other load makes single runs noisy: compare ratios from one side-by-side run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _authors import check_authors, print_against_authors  # same folder

from fedmist import (
    start_local_cluster,  # a SuperLink + SuperNodes on 127.0.0.1, TLS and node auth on
)

ROOT = Path(__file__).resolve().parents[1]
FEDMIST = [sys.executable, "-m", "fedmist"]
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


def floor_sets(dataset: str, sets: list[str]) -> list[str]:
    """``sets`` for the relay floor: the dataset's model on synthetic rows of its shape, 4 per client."""
    from fedmist import RunConfig, get_workspace, prepare_config

    ws = get_workspace(prepare_config(RunConfig(dataset=dataset)))
    shape = ws.dataset.feature_shape
    if len(shape) != 1:
        raise SystemExit(f"--floor needs a dataset of feature vectors; {dataset} has feature shape {shape}")
    kept = [s for s in sets if not s.startswith(("dataset=", "train_size=", "model="))]
    rows = 4 * 4  # 4 clients, 4 rows each
    return [f"dataset=synthetic:{4 * rows}x{shape[0]}x{ws.dataset.num_classes}", f"model={ws.model_name}",
            f"train_size={rows}", *kept]


def simulate(out: Path, recipe: Path, sets: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*FEDMIST, "simulate", "--recipe", str(recipe), "--out", str(out),
                           *[a for s in sets for a in ("--set", s)]], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"simulate failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def deploy(tmp: Path, out: Path, recipe: Path, sets: list[str], env: dict[str, str] | None = None,
           name: str = "") -> tuple[float, float]:
    """(seconds to start SuperLink + SuperNodes, wall time of ``fedmist deploy run``); ``env``:
    extra environment variables for every process of this deployment."""
    t0 = time.perf_counter()
    cluster = start_local_cluster(tmp, nodes=4, cwd=ROOT, env={**os.environ, **(env or {})})
    up = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        proc = cluster.deploy_run(out, sets, "--recipe", str(recipe), timeout=3600)
        wall = time.perf_counter() - t0
        starts = sum(n.text().count("Start `flwr-clientapp` process") for n in cluster.nodes.values())
        warm = sum(n.text().count("fedmist-clientapp: served") for n in cluster.nodes.values())
        if KEEP_LOGS is not None:
            logs = KEEP_LOGS / name if name else KEEP_LOGS
            logs.mkdir(parents=True, exist_ok=True)
            for i, n in cluster.nodes.items():
                (logs / f"supernode-{i}.log").write_text(n.text())
            (logs / "deploy-run.log").write_text(proc.stdout)
    finally:
        cluster.stop()
    if proc.returncode != 0:
        raise SystemExit(f"deploy run failed:\n{proc.stdout[-3000:]}")
    print(f"(deployment: {starts} `flwr-clientapp` process starts, {warm} messages served by long-lived ClientApp "
          f"processes)")
    return up, wall


def dropout(tmp: Path, out: Path, recipe: Path, sets: list[str], round_timeout: float) -> dict:
    sets = [s for s in sets if not s.startswith("epochs=")] + ["epochs=3", f"round_timeout={round_timeout:g}"]
    cluster = start_local_cluster(tmp, nodes=4, cwd=ROOT)
    args = cluster.deploy_command(out, sets, "--recipe", str(recipe), "--min-clients", "3")
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
    ap.add_argument("--floor", action="store_true",
                    help="also measure the relay floor: the same model and messages with ~no compute")
    ap.add_argument("--dropout", action="store_true", help="also measure a SuperNode killed mid-run")
    ap.add_argument("--round-timeout", type=float, default=30.0, help="round timeout of the --dropout run")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy the SuperNode and `deploy run` logs here")
    ap.add_argument("--compare-env", action="append", default=[], metavar="KEY=VALUE",
                    help="also run a second deployment with these environment variables (repeatable)")
    ap.add_argument("--authors", type=Path, default=None,
                    help="a runnable copy of the MIST authors' code (../shared/anchors/mist-authors/setup.sh): "
                         "also time their Location MIST, same epochs, in this run")
    args = ap.parse_args()
    check_authors(args.authors, args.dataset)
    bad = [e for e in args.compare_env if "=" not in e]
    if bad:
        ap.error(f"--compare-env takes KEY=VALUE, got {bad[0]!r}")
    compare_env = dict(e.split("=", 1) for e in args.compare_env)
    global KEEP_LOGS
    KEEP_LOGS = args.keep_logs
    sets = run_sets(args.dataset, args.epochs, args.sets)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        sim_wall = simulate(tmp / "sim", args.recipe, sets)
        (tmp / "deploy").mkdir()
        up, dep_wall = deploy(tmp / "deploy", tmp / "dep", args.recipe, sets, name="deploy" if compare_env else "")
        sim, dep = _metrics(tmp / "sim"), _metrics(tmp / "dep")
        if compare_env:
            (tmp / "deploy2").mkdir()
            up2, dep2_wall = deploy(tmp / "deploy2", tmp / "dep2", args.recipe, sets, compare_env, name="compare")
            dep2 = _metrics(tmp / "dep2")
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
        if compare_env:
            shown = " ".join(f"{k}={v}" for k, v in compare_env.items())
            print(f"| deploy with {shown}: command wall s | | {dep2_wall:.1f} (+{up2:.1f} s to start) | "
                  f"{dep2_wall / sim_wall:.2f} |")
            print(f"| deploy with {shown}: epoch times s | | {', '.join(f'{e:.2f}' for e in dep2['epochs'])} | |")
            print(f"| deploy with {shown}: median epoch s, epoch 1 left out | | {dep2['steady']:.2f} | "
                  f"**{dep2['steady'] / sim['steady']:.2f}** |")
        if args.floor:
            fsets = floor_sets(args.dataset, sets)
            fsim_wall = simulate(tmp / "floor-sim", args.recipe, fsets)
            (tmp / "floor").mkdir()
            _, fdep_wall = deploy(tmp / "floor", tmp / "floor-dep", args.recipe, fsets, name="floor")
            fsim, fdep = _metrics(tmp / "floor-sim"), _metrics(tmp / "floor-dep")
            print(f"| relay floor ({' '.join(fsets[:3])}): epoch times s | {', '.join(f'{e:.2f}' for e in fsim['epochs'])} | "
                  f"{', '.join(f'{e:.2f}' for e in fdep['epochs'])} | |")
            print(f"| relay floor: median epoch s, epoch 1 left out | {fsim['steady']:.2f} | {fdep['steady']:.2f} | "
                  f"{fdep['steady'] / fsim['steady']:.2f} |")
            print(f"| relay floor deployed / real simulated epoch | | | **{fdep['steady'] / sim['steady']:.2f}** "
                  f"(the deploy / simulate target cannot go below this with Flower's relay on this machine) |")
        print("(one side-by-side run on a shared machine: noisy)")
        if args.authors is not None:
            print_against_authors(args.authors, args.epochs, {"simulate": sim["steady"], "deploy": dep["steady"]})
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
