"""What Flower costs: the same MIST training through the Flower simulation vs a plain loop.

Both run the same fedmist functions with the same config and seed, one after the other in this
process, and the script prints per-epoch medians and their ratio (machines here are noisy, so
only ratios from one run are compared). Epoch 1 (Ray start-up, actors importing torch) is excluded.

    python experiments/bench_overhead.py --dataset location --epochs 8 [--authors ../mist-authors]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import torch
from _authors import check_authors, print_against_authors  # same folder
from _cli import (  # same folder
    at_least,
    nonnegative_int,
    positive_float,
    positive_int,
    run_main,
)

from fedmist import (
    InProcessFederation,
    RunConfig,
    get_workspace,
    open_run,
    prepare_config,
    run_epoch,
    simulate_runs,
)

#: Epoch 1 (start-up) is never timed, so a median needs at least one more.
EPOCHS = at_least(2, " (epoch 1, the start-up, is not timed)")


def plain_loop(cfg: RunConfig, threads: int) -> list[float]:
    torch.set_num_threads(threads)
    run = open_run(cfg, None)
    state, times = run.state, []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        state, _ = run_epoch(cfg, run.spec, InProcessFederation(), state, run.split.members, epoch)
        times.append(time.perf_counter() - t0)
    return times[1:]


def flower(cfg: RunConfig) -> tuple[list[float], list[dict]]:
    run = open_run(cfg, None)
    run.cfg.eval_every = cfg.epochs + 1  # no per-epoch evaluation: time training only
    # ... and none after the last epoch either: on CIFAR's 58,000 test images a ResNet-18 evaluation
    # on the CPU takes minutes (epoch_time excludes it anyway; this saves the wait).
    run.evaluate = lambda state: {}
    simulate_runs([run], cfg.clients)
    return [h["epoch_time"] for h in run.history[1:]], run.history[1:]


def flower_with_env(cfg: RunConfig, env: dict[str, str]) -> list[float]:
    """``flower`` with ``env`` set in this process (and so in the Ray workers it starts), then restored."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return flower(cfg)[0]
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="location")
    ap.add_argument("--defense", default="mist")
    ap.add_argument("--clients", type=positive_int, default=4)
    ap.add_argument("--epochs", type=EPOCHS, default=8)
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--cpus-per-client", type=positive_float, default=1.0,
                    help="Ray CPUs per client: 2 cores / 1.0 = 2 actors, two waves of a 4-client phase")
    ap.add_argument("--also-cpus-per-client", type=positive_float, action="append", default=[],
                    help="also time the Flower simulation with this actor size, in the same run (repeatable; "
                         "e.g. 0.5: 4 one-thread actors, one wave)")
    ap.add_argument("--also-env", action="append", default=[], metavar="KEY=VALUE",
                    help="also time the Flower simulation with these environment variables set (all of "
                         "them at once; its Ray workers inherit them), e.g. FEDMIST_BUNDLE=npz for the "
                         "message format before")
    ap.add_argument("--authors", type=Path, default=None,
                    help="a runnable copy of the MIST authors' code (../shared/anchors/mist-authors/setup.sh): "
                         "also time their Location MIST, same epochs, in this run")
    args = ap.parse_args()
    bad = [e for e in args.also_env if "=" not in e]
    if bad:
        ap.error(f"--also-env takes KEY=VALUE, got {bad[0]!r}")
    check_authors(args.authors, args.dataset)
    cfg = prepare_config(RunConfig(dataset=args.dataset, defense=args.defense, clients=args.clients,
                                   epochs=args.epochs, seed=args.seed, lam=14.0, eval_every=args.epochs + 1,
                                   cpus_per_client=args.cpus_per_client))
    get_workspace(cfg)  # an unknown dataset or missing data files, before anything trains
    fl, hist = flower(cfg)
    others = {c: flower(dataclasses.replace(cfg, cpus_per_client=c))[0] for c in args.also_cpus_per_client}
    with_env = flower_with_env(cfg, dict(e.split("=", 1) for e in args.also_env)) if args.also_env else None
    seq1 = plain_loop(cfg, threads=1)
    seq2 = plain_loop(cfg, threads=torch.get_num_threads() if torch.get_num_threads() > 1 else 2)
    med = statistics.median
    client_local = med(h["client_seconds_local"] for h in hist)
    client_xdiff = med(h["client_seconds_xdiff"] for h in hist)
    print(f"dataset={cfg.dataset} defense={cfg.defense} C={cfg.clients} epochs={cfg.epochs} seed={cfg.seed} "
          f"cpus_per_client={cfg.cpus_per_client}")
    print(f"plain loop, 1 thread  : {med(seq1):.3f} s/epoch")
    print(f"plain loop, 2 threads : {med(seq2):.3f} s/epoch")
    print(f"flower simulation     : {med(fl):.3f} s/epoch  (phase 1 {med(h['time_local'] for h in hist):.3f} s, "
          f"xdiff {med(h['time_xdiff'] for h in hist):.3f} s)")
    print(f"  client compute summed over clients: phase 1 {client_local:.3f} s, xdiff {client_xdiff:.3f} s")
    print(f"ratio flower / plain(1 thread)  = {med(fl) / med(seq1):.2f}")
    print(f"ratio flower / plain(2 threads) = {med(fl) / med(seq2):.2f}")
    if with_env is not None:
        print(f"flower simulation with {' '.join(args.also_env)}: {med(with_env):.3f} s/epoch; / plain(2 threads) = "
              f"{med(with_env) / med(seq2):.2f}; flower / this = {med(fl) / med(with_env):.2f}")
    for c, times in others.items():
        print(f"flower simulation, cpus_per_client={c:g}: {med(times):.3f} s/epoch; / plain(2 threads) = "
              f"{med(times) / med(seq2):.2f}; / cpus_per_client={cfg.cpus_per_client:g} = {med(times) / med(fl):.2f}")
    if args.authors is not None:
        print_against_authors(args.authors, cfg.epochs, {"flower simulation": med(fl),
                                                         "plain loop (2 threads)": med(seq2)})


if __name__ == "__main__":
    run_main(main)
