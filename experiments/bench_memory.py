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
import dataclasses
import multiprocessing
import threading
import time

from fedmist import PAPER_MEMORY_FACTOR


def _rss_bytes() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def measure(dataset: str, defense: str, epochs: int, device: str, seed: int) -> dict:
    """In a fresh process: bytes the training adds on top of the loaded dataset and model."""
    import gc

    import torch

    from fedmist import RunConfig
    from fedmist import InProcessFederation
    from fedmist import default_recipe
    from fedmist import open_run, prepare_config, train_run

    torch.set_num_threads(1)
    recipe = RunConfig.from_toml(default_recipe(dataset, defense))
    cfg = prepare_config(dataclasses.replace(recipe, epochs=epochs, eval_every=epochs + 1, device=device, seed=seed))
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
    ap.add_argument("--defenses", default="sgd,mist,dmp,selena")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    defenses = args.defenses.split(",")
    if "sgd" not in defenses:
        defenses.insert(0, "sgd")
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
    main()
