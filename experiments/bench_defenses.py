"""Cost of every defense relative to SGD, measured side by side in one run (paper Table 1).

Each defense trains its recipe for ``--epochs`` epochs in a fresh subprocess (so its peak resident
memory is its own) through the in-process engine (the same training code as the Flower clients,
without the simulation's start-up), then answers the test set through its query-time model
(MemGuard's cost is there). Printed: training seconds, query seconds, peak RSS, and each as a ratio
to SGD, next to the paper's Table 1 (CIFAR-100 / AlexNet on a GPU: time ratios; memory as the
number of models trained).

    python experiments/bench_defenses.py --dataset location --epochs 5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from _cli import name_list, nonnegative_int, positive_int, run_main  # same folder

DEFAULT = "sgd,mist,dpsgd,mixup_mmd,hamp,advreg,dmp,memguard,selena"


def config_for(dataset: str, defense: str, epochs: int, seed: int):
    """The defense's recipe for ``epochs`` epochs, checked (ConfigError names the first problem)."""
    from fedmist import RunConfig, default_recipe, prepare_config

    recipe = default_recipe(dataset, defense)
    cfg = RunConfig.from_toml(recipe) if recipe else RunConfig()
    return prepare_config(RunConfig.from_dict({"dataset": dataset, "defense": defense, "epochs": epochs,
                                               "seed": seed, "eval_every": 10**6}, base=cfg))


def worker(dataset: str, defense: str, epochs: int, seed: int) -> dict:
    """Train one defense in this process; report seconds and peak RSS (MB)."""
    from fedmist import get_workspace, open_run, predict_logits, query_model, train_runs

    cfg = config_for(dataset, defense, epochs, seed)
    run = open_run(cfg, None)
    ws = get_workspace(cfg)
    t0 = time.perf_counter()
    train_runs([run], cfg.clients, "inprocess")
    train_s = time.perf_counter() - t0
    model = query_model(cfg, run.state, ws.dataset)
    t0 = time.perf_counter()
    logits = predict_logits(model, ws.x, run.split.test)
    query_s = time.perf_counter() - t0
    acc = float((logits.argmax(1).numpy() == ws.dataset.y[run.split.test]).mean())
    return {"defense": defense, "clients": cfg.clients, "train_s": train_s, "query_s": query_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "test_acc": acc,
            "n_test": int(len(run.split.test))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="location")
    ap.add_argument("--defenses", type=name_list, default=DEFAULT, help="sgd (the baseline) is added when missing")
    ap.add_argument("--epochs", type=positive_int, default=5)
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.dataset, args.worker, args.epochs, args.seed)))
        return
    from fedmist import PAPER_MEMORY_FACTOR, PAPER_TIME_RATIO, get_workspace

    defenses = list(args.defenses)
    if "sgd" not in defenses:
        defenses.insert(0, "sgd")  # every ratio is to SGD
    configs = [config_for(args.dataset, d, args.epochs, args.seed) for d in defenses]  # refused before training
    get_workspace(configs[0])  # an unknown dataset or missing data files, before any worker starts
    rows = []
    for defense in defenses:
        proc = subprocess.run([sys.executable, __file__, "--dataset", args.dataset, "--epochs", str(args.epochs),
                               "--seed", str(args.seed), "--worker", defense], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{defense}: failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {defense}: train {r['train_s']:.1f} s, query {r['query_s']:.3f} s, peak RSS {r['peak_rss_mb']:.0f} MB",
              flush=True)
    base = next((r for r in rows if r["defense"] == "sgd"), None)
    if base is None:
        print("no SGD row: ratios need the baseline")
        return
    print(f"\n{args.dataset}, {args.epochs} epochs per recipe (SELENA: per sub-model and for distillation), "
          f"seed {args.seed}, CPU, in-process engine")
    print("| defense | clients | train s | ×SGD | paper ×SGD | query s (test set) | ×SGD | peak RSS MB | ×SGD | "
          "paper models |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['defense']} | {r['clients']} | {r['train_s']:.1f} | {r['train_s'] / base['train_s']:.2f} | "
              f"{PAPER_TIME_RATIO.get(r['defense'], float('nan')):.2f} | {r['query_s']:.3f} | "
              f"{r['query_s'] / base['query_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f} | {PAPER_MEMORY_FACTOR.get(r['defense'], '–')} |")


if __name__ == "__main__":
    run_main(main)
