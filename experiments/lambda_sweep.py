"""λ sweep for MIST (the paper's protocol: the strongest λ whose test-accuracy drop vs SGD is < 1 %).

Each λ trains a full run directory with the recipe, through the chosen engine (``inprocess`` runs
the same fedmist functions as the Flower federation without it — a test shows both give the same
weights — and is ~2x faster on this 2-core CPU). ``--lambdas 0`` means phase 1 only (``subspace``).

    python experiments/lambda_sweep.py --dataset location --lambdas 0,0.5,1,2,4,14 --sgd-run runs/location-sgd-s0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from _cli import float_list, nonnegative_int, require_files, run_main  # same folder

from fedmist import (
    FedmistError,
    RunConfig,
    default_recipe,
    get_workspace,
    open_run,
    prepare_config,
    train_runs,
)


def train_run(cfg: RunConfig, out: Path, engine: str) -> dict:
    if (out / "metrics.json").is_file() and (out / "model.pt").is_file():
        return json.loads((out / "metrics.json").read_text())["summary"]  # cached
    run = open_run(cfg, out, resume=out.exists(), force=False)
    train_runs([run], cfg.clients, engine)
    return json.loads((out / "metrics.json").read_text())["summary"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="location")
    ap.add_argument("--lambdas", type=float_list, default="0,0.5,1,2,4,14")
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--epochs", type=nonnegative_int, default=0, help="0 = recipe")
    ap.add_argument("--repartition", default="epoch")
    ap.add_argument("--clients", type=nonnegative_int, default=0, help="0 = recipe")
    ap.add_argument("--engine", choices=("inprocess", "flower"), default="inprocess")
    ap.add_argument("--sgd-run", type=Path, required=True, help="finished SGD run directory (the baseline)")
    ap.add_argument("--out-root", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--report", type=Path, default=None)
    args = ap.parse_args()
    if any(lam < 0 for lam in args.lambdas):
        ap.error(f"argument --lambdas: every λ must be >= 0 (0 = phase 1 only), got {args.lambdas}")
    recipe = default_recipe(args.dataset, "mist")
    if recipe is None:
        raise FedmistError(f"no MIST recipe for dataset {args.dataset!r} (experiments/recipes/<dataset>-mist.toml)")
    require_files(ap, args.sgd_run, ("metrics.json",), "--sgd-run needs a finished SGD run directory")
    torch.set_num_threads(2)
    sgd = json.loads((args.sgd_run / "metrics.json").read_text())["summary"]
    base = RunConfig.from_toml(recipe)
    base = dataclasses.replace(base, seed=args.seed, repartition=args.repartition, eval_every=10)
    if args.epochs:
        base.epochs = args.epochs
    if args.clients:
        base.clients = args.clients
    plan = []  # every config is checked before the first one trains
    for lam in args.lambdas:
        cfg = dataclasses.replace(base, defense="subspace" if lam == 0 else "mist", lam=lam or base.lam)
        plan.append((lam, prepare_config(cfg)))
    get_workspace(plan[0][1])  # missing data files
    rows = []
    for lam, cfg in plan:
        name = (f"{args.dataset}-{'subspace' if lam == 0 else f'mist-l{lam:g}'}-c{base.clients}-"
                f"{args.repartition}-s{args.seed}")
        s = train_run(cfg, args.out_root / name, args.engine)
        drop = sgd["test_acc"] - s["test_acc"]
        rows.append((lam, s, drop))
        print(f"lambda={lam:g}: train {100 * s['train_acc']:.2f}%  test {100 * s['test_acc']:.2f}%  "
              f"gap {100 * s['gap']:.2f}  drop vs SGD {100 * drop:.2f} points", flush=True)
    ok = [lam for lam, _, drop in rows if lam > 0 and drop < 0.01]
    lines = [f"# λ sweep: {args.dataset}, C={base.clients}, repartition={args.repartition}, seed {args.seed}, "
             f"{base.epochs} epochs, engine {args.engine}, CPU",
             "", f"SGD baseline ({args.sgd_run}): train {100 * sgd['train_acc']:.2f} %, test {100 * sgd['test_acc']:.2f} %",
             "", "| λ | train acc | test acc | gap | drop vs SGD (points) |", "|---|---|---|---|---|"]
    for lam, s, drop in rows:
        label = "0 (phase 1 only)" if lam == 0 else f"{lam:g}"
        lines.append(f"| {label} | {100 * s['train_acc']:.2f} | {100 * s['test_acc']:.2f} | {100 * s['gap']:.2f} | {100 * drop:.2f} |")
    lines += ["", f"largest λ with drop < 1 point: {max(ok):g}" if ok else "no λ > 0 keeps the drop under 1 point"]
    report = args.report or (Path("experiments/results")
                             / f"{args.dataset}-lambda-sweep-c{base.clients}-{args.repartition}-s{args.seed}.md")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    print(f"wrote {report}")


if __name__ == "__main__":
    run_main(main)
