"""``fedmist simulate``: open (or resume) a run directory and train it in the Flower simulation."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedmist.cli.options import build_config
from fedmist.config import RunConfig, training_differences
from fedmist.data.download import ensure_dataset
from fedmist.data.paths import display_path
from fedmist.engine.fl import fl_algorithm, n_floats, recording_estimate
from fedmist.errors import RunDirError
from fedmist.flower.simulation import simulate_runs
from fedmist.runs.console import console, epoch_line, progress, summary_table
from fedmist.runs.rundir import Run, default_out, open_run, prepare_config, read_config
from fedmist.training.workspace import get_workspace


def simulate_command(explicit: dict[str, Any], sets: list[str], recipe: Path | None, out: Path | None, *,
                     resume: bool, force: bool, download: bool = False) -> dict:
    if resume and out is None and not explicit and not sets and recipe is None:
        raise RunDirError("--resume needs the run directory: fedmist simulate --out DIR --resume")
    cfg, source = build_config(explicit, sets, recipe, resume_from=out if resume else None)
    ensure_dataset(cfg.dataset, Path(cfg.data_dir) if cfg.data_dir else None, download)
    cfg = prepare_config(cfg)
    automatic, out = out is None, out or tagged_out(cfg, source)
    if automatic and not (resume or force):  # the same command again finds its own directory
        saved = read_config(out)
        if saved is not None and not training_differences(saved, cfg):
            if (out / "model.pt").is_file() and (out / "metrics.json").is_file():
                console.print(f"{out} already holds this run, finished (same training config): its summary "
                              "below; --force trains it again")
                summary = json.loads((out / "metrics.json").read_text())["summary"]
                console.print(summary_table(str(out), summary))
                return summary
            console.print(f"{out} holds an unfinished run of this config: resuming it (--force starts over)")
            resume = True
    run = open_run(cfg, out, resume=resume, force=force)
    src = display_path(source) if source else ("its saved config.json" if resume else "built-in defaults")
    console.print(f"[bold]fedmist simulate[/] {cfg.defense} on {cfg.dataset} "
                  f"({'SYNTHETIC data' if run_is_synthetic(run) else 'real data'}), C={cfg.clients}, "
                  f"{len(run.split.members)} members, recipe: {src}, run dir: {out}")
    if cfg.mode == "fl":
        console.print(_fl_line(run))
    if run.start_epoch > 1:
        console.print(f"resuming at epoch {run.start_epoch} of {run.last_epoch}")
    with progress() as bar, exit_on_interrupt(out):
        task = bar.add_task(f"{cfg.defense} epochs", total=run.last_epoch, completed=run.start_epoch - 1)

        def report(r: Run, row: dict) -> None:
            bar.update(task, completed=row["epoch"])
            if "train_acc" in row:
                bar.console.print(epoch_line(cfg.defense, row))

        run.on_report = report
        if run.start_epoch <= run.last_epoch:
            simulate_runs([run], cfg.clients)
        else:
            run.finish()
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    console.print(summary_table(str(out), summary))
    console.print(f"run directory: {out}  (load with fedmist.load_run({str(out)!r}))")
    return summary


def tagged_out(cfg: RunConfig, recipe: Path | None) -> Path:
    """``runs/<dataset>-<defense>-c<C>-s<seed>``, plus a short tag of the training fields that differ
    from the recipe, so two variants of one recipe (``--repartition fixed``, ``--mode private``)
    never share a directory; deterministic, so a rerun finds the same one."""
    base = default_out(cfg)
    if recipe is None:
        return base
    recipe_cfg = prepare_config(RunConfig.from_dict({"seed": cfg.seed, "data_dir": cfg.data_dir},
                                                    base=RunConfig.from_toml(recipe)))
    differ = training_differences(recipe_cfg.to_dict(), cfg)
    if not differ:
        return base
    tag = hashlib.sha256("|".join(differ).encode()).hexdigest()[:6]
    return base.with_name(f"{base.name}-{tag}")


@contextlib.contextmanager
def exit_on_interrupt(out: Path) -> Iterator[None]:
    """Ctrl-C (SIGINT) ends the command within a moment, without a traceback from Flower or Ray.

    Checkpoints are written atomically after every epoch, so stopping at any instant leaves the last
    finished epoch on disk: say so, end the simulation's worker processes, and exit with 130."""
    def stop(signum: int, frame: Any) -> None:
        ckpt = out / "checkpoint.pt"
        where = f"finished epochs are checkpointed in {out}" if ckpt.is_file() else f"no epoch finished in {out}"
        sys.stderr.write(f"\ninterrupted; {where}; continue with: fedmist simulate --out {out} --resume\n")
        sys.stderr.flush()
        _kill_children()
        os._exit(130)

    before = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _kill_children() -> None:
    import psutil

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()


def run_is_synthetic(run: Run) -> bool:
    return get_workspace(run.cfg).dataset.synthetic


def _fl_line(run: Run) -> str:
    cfg = run.cfg
    line = (f"federated learning: {fl_algorithm(cfg, run.spec)}, {cfg.clients} clients each training only on its own "
            f"{cfg.partition} partition, {cfg.epochs} rounds x {cfg.local_epochs} local epoch(s)")
    if cfg.record_updates:
        line += (f"; recording every round's global model and every client's update "
                 f"(~{recording_estimate(cfg, run.spec, run.state) / 1e6:.1f} MB before compression, "
                 f"{n_floats(run.state):,} weights)")
    if cfg.active_attack:
        line += f"; [bold red]ACTIVE ATTACK by {cfg.active_attack}[/] (gradient ascent on target rows)"
    return line
