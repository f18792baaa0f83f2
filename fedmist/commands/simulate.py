"""``fedmist simulate``: open (or resume) a run directory and train it in the Flower simulation."""

from __future__ import annotations

from pathlib import Path

from fedmist.config import RunConfig
from fedmist.console import console, epoch_line, progress, summary_table
from fedmist.runner import Run, default_out, open_run, prepare_config


def simulate_command(cfg: RunConfig, out: Path | None, *, resume: bool, force: bool, recipe: Path | None) -> dict:
    from fedmist.data.paths import display_path
    from fedmist.simulation import simulate_runs

    cfg = prepare_config(cfg)
    out = out or default_out(cfg)
    run = open_run(cfg, out, resume=resume, force=force)
    src = display_path(recipe) if recipe else "built-in defaults"
    console.print(f"[bold]fedmist simulate[/] {cfg.defense} on {cfg.dataset} "
                  f"({'SYNTHETIC data' if run_is_synthetic(run) else 'real data'}), C={cfg.clients}, "
                  f"{len(run.split.members)} members, recipe: {src}, run dir: {out}")
    if cfg.mode == "fl":
        console.print(_fl_line(run))
    if run.start_epoch > 1:
        console.print(f"resuming at epoch {run.start_epoch} of {run.last_epoch}")
    with progress() as bar:
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
    summary = _summary_of(run)
    console.print(summary_table(str(out), summary))
    console.print(f"run directory: {out}  (load with fedmist.load_run({str(out)!r}))")
    return summary


def run_is_synthetic(run: Run) -> bool:
    from fedmist.engine.workspace import get_workspace
    return get_workspace(run.cfg).dataset.synthetic


def _summary_of(run: Run) -> dict:
    import json
    assert run.path is not None
    return json.loads((run.path / "metrics.json").read_text())["summary"]


def _fl_line(run: Run) -> str:
    from fedmist.fl.loop import n_floats, recording_estimate

    cfg = run.cfg
    algo = ("DP-FedAvg" if cfg.fl_dp_noise > 0 else "FedAvg") if cfg.defense == "sgd" else "MIST-in-FL (private-data mode)"
    line = (f"federated learning: {algo}, {cfg.clients} clients each training only on its own {cfg.partition} "
            f"partition, {cfg.epochs} rounds x {cfg.local_epochs} local epoch(s)")
    if cfg.record_updates:
        line += (f"; recording every round's global model and every client's update "
                 f"(~{recording_estimate(cfg, run.state) / 1e6:.1f} MB before compression, "
                 f"{n_floats(run.state):,} weights)")
    if cfg.active_attack:
        line += f"; [bold red]ACTIVE ATTACK by {cfg.active_attack}[/] (gradient ascent on target rows)"
    return line
