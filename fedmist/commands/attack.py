"""``fedmist attack``: audit a run directory and write audit.json / audit.csv / roc.png into it."""

from __future__ import annotations

from pathlib import Path

from fedmist.console import console
from fedmist.errors import ConfigError


def attack_command(run_dir: Path | None, attacks: str, shadows: int, seed: int, shadow_engine: str,
                   rebuild: bool, bootstrap: int, list_only: bool) -> dict | None:
    from fedmist.audit.cli import list_attacks, run_audit
    from fedmist.audit.report import format_report
    from fedmist.shadow_training import shadow_trainer_factory

    if list_only:
        console.print(list_attacks())
        return None
    if run_dir is None:
        raise ConfigError("give a run directory (fedmist attack runs/NAME) or --list")
    from fedmist.attacks.registry import expand_attack_names

    names = expand_attack_names(a.strip() for a in attacks.split(",") if a.strip())
    console.print(f"[bold]fedmist attack[/] {run_dir}: {', '.join(names)} with {shadows} shadow models "
                  f"({shadow_engine} engine)")

    def on_attack(name: str, seconds: float) -> None:
        console.print(f"  {name} done in {seconds:.1f} s")

    report = run_audit(Path(run_dir), names, shadows, shadow_trainer_factory(shadow_engine), rebuild=rebuild,
                       seed=seed, n_bootstrap=bootstrap, on_attack=on_attack)
    console.print(format_report(report))
    console.print(f"wrote audit.json, audit.csv, scores.npz, roc.png, roc_linear.png into {run_dir}")
    return report
