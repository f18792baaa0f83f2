"""Shadow-training throughput: shadows per hour and the achieved FLOP rate as a fraction of a bare
matmul benchmark of the same shapes, measured side by side in one run on this machine.

FLOPs are counted analytically for the MLP (a linear layer of m MACs per example costs 2m forward
and 4m backward, the first layer 2m backward: no gradient is taken for the input): training passes
(phase 1, and phase 2 for MIST), the peer predictions of the virtual federation, and the final
evaluation. The bare benchmark runs exactly those GEMMs (batch size, layer shapes, forward and the
backward products) in a tight loop, twice: one process with all the threads, and one 1-thread
process per core at once; the machine's rate is the faster of the two.

    python experiments/bench_shadows.py --dataset location --defense sgd --shadows 2 --epochs 20
    python experiments/bench_shadows.py --device cuda --shadows 16 --engines stacked,inprocess

On ``--device cuda`` the reference is the same GEMMs on the GPU, and each engine's line adds the GPU
utilization ``nvidia-smi`` saw while it trained (does a stack of shadows keep the device busy?).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from _cli import name_list, positive_int, run_main  # same folder
from gpu_monitor import GpuMonitor  # noqa: E402  (same folder)
from torch import nn

from fedmist import (
    RunConfig,
    ShadowTrainer,
    available_cores,
    default_recipe,
    get_workspace,
    prepare_config,
    simulate_runs,
)


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def train_macs(shapes: list[tuple[int, int]]) -> int:
    """MACs of one training step per example: forward, plus dW for every layer and dx for all but
    the first (the input needs no gradient)."""
    return sum(3 * i * o for i, o in shapes) - shapes[0][0] * shapes[0][1]


def shadow_flops(cfg: RunConfig, n_train: int, n_eval: int, shapes: list[tuple[int, int]]) -> float:
    """FLOPs to train one shadow with ``cfg`` on ``n_train`` rows (+ its final evaluation)."""
    macs = sum(i * o for i, o in shapes)
    per_epoch = 2 * train_macs(shapes) * n_train  # phase 1 (or SGD)
    if cfg.defense == "mist":
        per_epoch += 2 * train_macs(shapes) * n_train  # phase 2
        per_epoch += 2 * macs * n_train * (cfg.clients - 1)  # peers' true-class predictions
    return cfg.epochs * per_epoch + 2 * macs * n_eval


def bare_gemm_rate(shapes: list[tuple[int, int]], batch: int, seconds: float = 3.0, threads: int = 0,
                   device: str = "cpu") -> float:
    """FLOP/s of the training GEMMs alone: y = x W^T, dW = dy^T x for every layer, dx = dy W for
    all but the first."""
    if threads:
        torch.set_num_threads(threads)
    xs = [torch.randn(batch, i, device=device) for i, _ in shapes]
    ws = [torch.randn(o, i, device=device) for i, o in shapes]
    dys = [torch.randn(batch, o, device=device) for _, o in shapes]
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    flops_per_iter = 2 * batch * train_macs(shapes)

    def step() -> None:
        for k, (x, w, dy) in enumerate(zip(xs, ws, dys)):
            x @ w.T, dy.T @ x
            if k:
                dy @ w

    for _ in range(20):  # warm-up
        step()
    sync()
    iters, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):  # queue a few steps between clock reads (GPU kernels run asynchronously)
            step()
        iters += 10
        sync()
    return iters * flops_per_iter / (time.perf_counter() - t0)


def bare_gemm_rate_per_core(shapes: list[tuple[int, int]], batch: int, cores: int) -> float:
    """Summed rate of ``cores`` 1-thread processes running :func:`bare_gemm_rate` at once."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(cores, mp_context=ctx) as pool:
        return sum(pool.map(bare_gemm_rate, [shapes] * cores, [batch] * cores, [3.0] * cores, [1] * cores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="location")
    ap.add_argument("--defense", default="sgd")
    ap.add_argument("--shadows", type=positive_int, default=2)
    ap.add_argument("--epochs", type=positive_int, default=20, help="epochs per shadow (the recipe's 100 takes 5x longer)")
    ap.add_argument("--engines", type=name_list, default=None,
                    help="default: parallel,inprocess,flower (+ stacked for SGD recipes)")
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gpu = args.device != "cpu"
    if gpu and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device on this machine")
    path = default_recipe(args.dataset, args.defense)
    recipe = RunConfig.from_toml(path) if path else RunConfig(dataset=args.dataset, defense=args.defense)
    # On a GPU the recipe's C clients share it (the flower engine): 1/C of the device each.
    cfg = prepare_config(dataclasses.replace(recipe, epochs=args.epochs, device=args.device,
                                             gpus_per_client=1.0 / recipe.clients if gpu else 0.0))
    ws = get_workspace(cfg)  # an unknown dataset or missing data files, before any benchmark
    engines = args.engines or (["parallel", "inprocess", "flower", "stacked"] if cfg.defense == "sgd"
                               else ["parallel", "inprocess", "flower"])
    trainers = {engine: ShadowTrainer(cfg, audit_seed=0, engine=engine, simulate=simulate_runs)
                for engine in engines}  # an unknown engine, before the benchmarks
    pool = np.arange(len(ws.dataset))
    rng = np.random.default_rng(0)
    jobs = [(i, np.sort(rng.choice(pool, len(pool) // 2, replace=False))) for i in range(args.shadows)]
    shapes = linear_shapes(ws.model)
    macs = sum(i * o for i, o in shapes)
    n_train = len(pool) // 2
    flops = shadow_flops(cfg, n_train, n_train + 1010, shapes)
    cores = available_cores()
    where = torch.cuda.get_device_name() if gpu else "CPU"
    print(f"{args.dataset} {args.defense} C={cfg.clients} epochs={cfg.epochs} shadows={args.shadows} "
          f"rows/shadow={n_train} model {' -> '.join(str(i) for i, _ in shapes)} -> {shapes[-1][1]} "
          f"({macs / 1e6:.2f} M MACs/example), torch threads={args.threads}, {where}")
    if gpu:
        bare = bare_gemm_rate(shapes, cfg.batch_size, device=args.device)
        print(f"bare GEMM benchmark on the GPU (same shapes, batch {cfg.batch_size}): {bare / 1e9:.1f} GFLOP/s")
    else:
        bare_threads = bare_gemm_rate(shapes, cfg.batch_size)
        bare_cores = bare_gemm_rate_per_core(shapes, cfg.batch_size, cores)
        bare = max(bare_threads, bare_cores)
        print(f"bare GEMM benchmark (same shapes, batch {cfg.batch_size}): {bare_threads / 1e9:.1f} GFLOP/s in one "
              f"{args.threads}-thread process, {bare_cores / 1e9:.1f} GFLOP/s as {cores} 1-thread processes; "
              f"reference {bare / 1e9:.1f}")
    for engine, trainer in trainers.items():
        t0 = time.perf_counter()
        with GpuMonitor() as mon:
            trainer.train_all(jobs, lambda i, state: None)
        wall = time.perf_counter() - t0
        rate = args.shadows * flops / wall
        per_hour_recipe = 3600 / (wall / args.shadows * 100 / cfg.epochs)
        print(f"{engine:9s}: {wall / args.shadows:.1f} s/shadow ({cfg.epochs} epochs), "
              f"{per_hour_recipe:.1f} shadows/hour at the recipe's 100 epochs, "
              f"{rate / 1e9:.1f} GFLOP/s = {100 * rate / bare:.0f} % of the bare GEMM rate"
              + (f"; {mon.summary()}" if gpu else ""))


if __name__ == "__main__":
    run_main(main)
