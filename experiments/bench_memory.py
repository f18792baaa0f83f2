"""Peak training memory of each defense relative to SGD, measured side by side in one run.

The paper's memory factors (MIST 4x, SELENA 26x, DMP 2x) count the models a defense trains. A
simulation's whole-process RSS (``compare``'s column) is dominated by Ray and torch (~1.7 GB for any
defense on Location), so this script measures what the training itself adds: each defense trains in
a fresh process with the in-process engine (the same functions as the Flower clients, all C
sub-models in one process: the worst case of a virtual federation), and we report its peak memory
above the process's resident size once the dataset and the model are loaded. RSS is sampled every
2 ms (CPU); on ``--device cuda`` the figure is ``torch.cuda.max_memory_allocated``.

    python experiments/bench_memory.py --dataset location --defenses sgd,mist,dmp,selena --epochs 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time

from _cli import name_list, nonnegative_int, positive_int, run_main  # same folder

from fedmist import PAPER_MEMORY_FACTOR


def config_for(dataset: str, defense: str, epochs: int, device: str, seed: int):
    """The defense's recipe (built-in defaults where the dataset has none) for ``epochs`` epochs, checked."""
    from fedmist import RunConfig, default_recipe, prepare_config

    recipe = default_recipe(dataset, defense)
    base = RunConfig.from_toml(recipe) if recipe else RunConfig()
    return prepare_config(RunConfig.from_dict({"dataset": dataset, "defense": defense, "epochs": epochs,
                                               "eval_every": epochs + 1, "device": device, "seed": seed}, base=base))


def _rss_bytes() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def measure(dataset: str, defense: str, epochs: int, device: str, seed: int) -> dict:
    """In a fresh process: bytes the training adds on top of the loaded dataset and model."""
    import gc

    import torch

    from fedmist import InProcessFederation, open_run, train_run

    torch.set_num_threads(1)
    cfg = config_for(dataset, defense, epochs, device, seed)
    run = open_run(cfg, None)  # loads the dataset and builds the model (the baseline)
    run.evaluate = lambda state: {}  # time and memory of training only
    # One-time costs are not training memory: the first optimiser step imports torch._dynamo
    # (~100 MB of modules here), so take one on a scalar before the baseline.
    p = torch.zeros(1, requires_grad=True)
    p.grad = torch.zeros(1)
    torch.optim.SGD([p], lr=0.1, momentum=0.9).step()
    gc.collect()
    base, peak, stop = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    if device != "cpu":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_base = torch.cuda.memory_allocated()
    sampler.start()
    t0 = time.perf_counter()
    train_run(run, InProcessFederation())
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    added = (torch.cuda.max_memory_allocated() - gpu_base) if device != "cpu" else max(0, peak[0] - base)
    from fedmist import model_part
    n_params = sum(v.numel() for v in model_part(run.state).values())
    return {"defense": defense, "added_mb": added / 2**20, "base_mb": base / 2**20, "seconds": seconds,
            "model_mb": 4 * n_params / 2**20, "clients": cfg.clients}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="location")
    ap.add_argument("--defenses", type=name_list, default="sgd,mist,dmp,selena")
    ap.add_argument("--epochs", type=positive_int, default=2)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    args = ap.parse_args()
    defenses = list(args.defenses)
    if "sgd" not in defenses:
        defenses.insert(0, "sgd")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            ap.error("--device cuda: torch sees no CUDA device on this machine")
    from fedmist import get_workspace

    configs = [config_for(args.dataset, d, args.epochs, args.device, args.seed) for d in defenses]  # before training
    get_workspace(configs[0])  # an unknown dataset or missing data files (or no CUDA device)
    ctx = multiprocessing.get_context("spawn")  # a fresh process per defense: no allocator reuse between them
    rows = []
    for defense in defenses:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(measure, (args.dataset, defense, args.epochs, args.device, args.seed)))
    sgd = next(r for r in rows if r["defense"] == "sgd")
    where = "GPU (torch.cuda.max_memory_allocated)" if args.device != "cpu" else "CPU (peak RSS above the loaded process)"
    print(f"{args.dataset}, {args.epochs} epochs per defense, seed {args.seed}, in-process engine, {where}; "
          f"one model = {sgd['model_mb']:.1f} MB of float32 weights")
    print("| defense | training adds (MB) | × SGD | paper (models trained) | base RSS (MB) | train s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['defense']} | {r['added_mb']:.1f} | {r['added_mb'] / max(sgd['added_mb'], 1e-9):.2f} | "
              f"{PAPER_MEMORY_FACTOR.get(r['defense'], '–')} | {r['base_mb']:.0f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    run_main(main)
