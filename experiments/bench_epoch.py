"""MIST epoch time / SGD epoch time, same model and data, measured side by side in one run.

Both through the Flower simulation (MIST: C clients; SGD: the 1-client federation) and through the
plain in-process loop (2 torch threads). Epoch 1 (start-up) is excluded; no per-epoch evaluation.
The compute-bound floor is about (2 + (C-1)/3)x SGD: one phase-1 pass, one phase-2 pass and C-1
forward predictions per example.

    python experiments/bench_epoch.py --dataset location --epochs 8
    python experiments/bench_epoch.py --dataset synthetic:texas --epochs 3     # Texas100's shapes
    python experiments/bench_epoch.py --dataset synthetic:cifar100 --model resnet18 --train-size 200 --epochs 2

``--train-size`` trims the members (the ratio is per example, so a CIFAR ResNet-18 epoch on the CPU
can be measured on a slice); the default is the paper's size for the dataset.

``--device cuda``: the C MIST clients share the GPU concurrently (1/C of it each, Flower's fractional
``num_gpus``), the 1-client SGD federation holds all of it, and every measurement prints the GPU
utilization and peak device memory that ``nvidia-smi`` saw while it ran.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from _authors import check_authors, print_against_authors  # same folder
from _cli import nonnegative_int, positive_int, run_main  # same folder
from bench_overhead import EPOCHS, flower, plain_loop  # noqa: E402  (same folder)
from gpu_monitor import GpuMonitor  # noqa: E402

from fedmist import (
    RunConfig,
    default_train_size,
    get_workspace,
    model_name_for,
    prepare_config,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="location")
    ap.add_argument("--clients", type=positive_int, default=4)
    ap.add_argument("--epochs", type=EPOCHS, default=8)
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--model", default="", help="default: the dataset's (mlp; alexnet for CIFAR)")
    ap.add_argument("--train-size", type=nonnegative_int, default=0, help="members; 0 = the paper's size for the dataset")
    ap.add_argument("--batch-size", type=positive_int, default=100)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--authors", type=Path, default=None,
                    help="a runnable copy of the MIST authors' code (../shared/anchors/mist-authors/setup.sh): "
                         "also time their Location MIST, same epochs, in this run")
    args = ap.parse_args()
    check_authors(args.authors, args.dataset)
    med = statistics.median
    gpu = args.device != "cpu"
    if gpu and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device on this machine")
    common = dict(dataset=args.dataset, epochs=args.epochs, seed=args.seed, eval_every=args.epochs + 1,
                  train_size=args.train_size, batch_size=args.batch_size, device=args.device,
                  **({"model": args.model} if args.model else {}))
    mist = prepare_config(RunConfig(defense="mist", clients=args.clients, lam=14.0,
                                    gpus_per_client=1.0 / args.clients if gpu else 0.0, **common))
    sgd = prepare_config(RunConfig(defense="sgd", gpus_per_client=1.0 if gpu else 0.0, **common))
    get_workspace(sgd)  # an unknown dataset or model, or missing data files, before anything trains
    gpu_lines: list[str] = []

    def measured(name: str, fn):
        with GpuMonitor() as mon:
            out = fn()
        if gpu:
            gpu_lines.append(f"  {name}: {mon.summary()}")
        return out

    sgd_flower_1cpu = med(measured("SGD flower 1 CPU", lambda: flower(sgd)[0]))
    sgd_flower = med(measured("SGD flower 2 CPUs", lambda: flower(RunConfig(**{**sgd.to_dict(), "cpus_per_client": 2.0}))[0]))
    mist_flower = med(measured("MIST flower", lambda: flower(mist)[0]))
    threads = max(torch.get_num_threads(), 2)
    sgd_plain = med(measured("SGD plain", lambda: plain_loop(sgd, threads)))
    mist_plain = med(measured("MIST plain", lambda: plain_loop(mist, threads)))
    floor = 2 + (args.clients - 1) / 3
    members = default_train_size(mist, 0) or "half the rows as"
    print(f"{args.dataset}: model {model_name_for(mist)}, {members} members, batch {mist.batch_size}, "
          f"C={args.clients}, {args.epochs} epochs, seed {args.seed}, "
          f"{torch.cuda.get_device_name() if gpu else 'CPU'} "
          f"(compute-bound floor {floor:.2f}x)")
    print(f"SGD  flower (1 client, 1 CPU) : {sgd_flower_1cpu:.3f} s/epoch")
    print(f"SGD  flower (1 client, 2 CPUs): {sgd_flower:.3f} s/epoch")
    print(f"MIST flower (C clients, 1 CPU each): {mist_flower:.3f} s/epoch")
    print(f"SGD  plain loop ({threads} threads): {sgd_plain:.3f} s/epoch")
    print(f"MIST plain loop ({threads} threads): {mist_plain:.3f} s/epoch")
    best_sgd = min(sgd_flower_1cpu, sgd_flower)
    print(f"ratio MIST/SGD through flower = {mist_flower / best_sgd:.2f}x (vs the faster SGD setting)")
    print(f"ratio MIST/SGD plain loop     = {mist_plain / sgd_plain:.2f}x")
    if args.authors is not None:
        print_against_authors(args.authors, args.epochs, {"MIST flower": mist_flower, "MIST plain loop": mist_plain})
    if gpu_lines:
        print("while each measurement ran (MIST through Flower: its clients share the GPU, 1/C each):")
        print("\n".join(gpu_lines))


if __name__ == "__main__":
    run_main(main)
