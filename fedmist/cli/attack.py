"""``fedmist attack``: audit a run directory and write audit.json / audit.csv / roc.png into it."""

from __future__ import annotations

import re
from pathlib import Path

from fedmist.attacks.registry import check_attacks, expand_attack_names
from fedmist.audit.audit_dir import list_attacks, run_audit
from fedmist.audit.pipeline import check_enough_shadows
from fedmist.audit.report import format_report
from fedmist.audit.threats import threat_audit
from fedmist.errors import AuditError, ConfigError
from fedmist.flower.simulation import shadow_trainer_factory
from fedmist.report import write_report
from fedmist.runs.console import console
from fedmist.runs.shadows import ENGINES


def attack_command(run_dir: Path | None, attacks: str, shadows: int, seed: int, shadow_engine: str,
                   rebuild: bool, bootstrap: int, list_only: bool) -> dict | None:
    if list_only:
        console.print(list_attacks())
        return None
    if run_dir is None:
        raise ConfigError("give a run directory (fedmist attack runs/NAME) or --list")
    names = expand_attack_names(a.strip() for a in attacks.split(",") if a.strip())
    check_options(names, shadows, shadow_engine, bootstrap)  # before the run is loaded
    console.print(f"[bold]fedmist attack[/] {run_dir}: {', '.join(names)} with {shadows} shadow models "
                  f"({shadow_engine} engine)")

    def on_attack(name: str, seconds: float) -> None:
        console.print(f"  {name} done in {seconds:.1f} s")

    report = run_audit(Path(run_dir), names, shadows, shadow_trainer_factory(shadow_engine), rebuild=rebuild,
                       seed=seed, n_bootstrap=bootstrap, on_attack=on_attack)
    console.print(format_report(report))
    console.print(f"wrote audit.json, audit.csv, scores.npz, roc.png, roc_linear.png into {run_dir}")
    announce_report(Path(run_dir))
    return report


def check_options(names: list[str], shadows: int, shadow_engine: str, bootstrap: int) -> None:
    """The audit options, checked before anything is loaded or trained (AuditError / ConfigError)."""
    if not names:
        raise AuditError("--attacks is empty; see fedmist attack --list")
    check_attacks(names)
    if shadows < 0 or shadows % 2:
        raise AuditError(f"--shadows must be 0 or an even number (each example IN for half), got {shadows}")
    check_enough_shadows(names, shadows)
    if shadow_engine not in ENGINES:
        raise ConfigError(f"--shadow-engine must be one of {', '.join(ENGINES)} (shadow engine), got {shadow_engine!r}")
    if bootstrap < 0:
        raise AuditError(f"--bootstrap must be >= 0 (0: no confidence intervals), got {bootstrap}")


def threat_command(run_dir: Path | None, threat: str, seed: int, bootstrap: int) -> list[dict]:
    """``fedmist attack RUN --threat server|client:K``: the insider audits of a recorded FL run."""
    if not re.fullmatch(r"server|outsider|client:\s*-?\d+", threat.strip()):
        raise ConfigError(f"--threat must be outsider, server or client:K (K = a client number), got {threat!r}")
    if bootstrap < 0:
        raise AuditError(f"--bootstrap must be >= 0 (0: no confidence intervals), got {bootstrap}")
    reports = threat_audit(run_dir, threat, seed, bootstrap)
    for rep in reports:
        info = rep["threat"]
        console.print(f"[bold]threat {info['threat']}[/]: victims = {info.get('victims')}")
        console.print(format_report(rep))
        if "peer" in info:
            best = rep["attacks"]
            auc = max(v["full"]["auc"] for v in best.values())
            console.print(f"MIST private-data mode leaks: from client {info['peer']}'s forwarded phase-1 weights a "
                          f"curious client infers membership in client {info['peer']}'s partition with AUC {auc:.3f} "
                          f"(best attack; 0.5 = chance)")
    suffixes = [r["threat"]["threat"] for r in reports]
    console.print(f"wrote audit-*.json/.csv, scores-*.npz, roc-*.png for {', '.join(suffixes)} into {run_dir}")
    announce_report(Path(run_dir))
    return reports


def download_for(run_dir: Path) -> None:
    """``fedmist attack RUN --download``: the run's dataset, when it is missing here."""
    import json

    from fedmist.data.download import ensure_dataset

    cfg_file = Path(run_dir) / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        ensure_dataset(cfg.get("dataset", ""), Path(cfg["data_dir"]) if cfg.get("data_dir") else None, True)


def announce_report(path: Path, out: Path | None = None) -> Path:
    """Write the HTML report of ``path`` and say where it is (every command that writes one does)."""
    written = write_report(path, out)
    console.print(f"report: {written} ({written.stat().st_size:,} bytes; open it in a browser)")
    return written
