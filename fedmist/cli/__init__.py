"""``fedmist`` command line: a thin layer over the library. User errors -> one line, exit code 2.

Every command group lives in this package: ``simulate``, ``attack``, ``compare``, ``tune``, ``report``,
``data`` and ``deploy``. The training options of ``simulate``, ``compare``, ``tune`` and ``deploy run`` are
generated from ``RunConfig``'s field declarations (``fedmist.cli.options``), so they are the same
everywhere and a new config field becomes an option without editing this file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from fedmist.cli.options import with_config_options
from fedmist.errors import FedmistError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train membership-inference-resistant models with MIST on Flower, and audit them.")

OUT_HELP = "run directory (default runs/<dataset>-<defense>-c<C>-s<seed>, plus a tag when options change the recipe)"
COMPARE_DEFENSES = "sgd,mist,dpsgd,mixup_mmd,hamp,selena,advreg,dmp,memguard"
# Options that compare and frontier share (one definition, one help text).
JOBS = typer.Option(1, help="cells trained and audited concurrently")
STUDY_SHADOW_ENGINE = typer.Option("parallel", help="parallel, flower, inprocess or stacked (see fedmist attack)")
STUDY_AUDIT_SEED = typer.Option(0, "--audit-seed", help="audit seed (as fedmist attack --audit-seed)")
BOOTSTRAP = typer.Option(200, help="bootstrap resamples for the 95% intervals")
SHADOWS_FOR = typer.Option([], "--shadows-for", help="DEFENSE=N: another shadow count for one defense (e.g. selena=8)")
STUDY_SET = typer.Option([], "--set", help="config override for every cell, KEY=VALUE (e.g. epochs=20)")
STUDY_FORCE = typer.Option(False, help="replace runs, audits and tables made with another config")


def _dataset_and_out(explicit: dict[str, Any], out: Path | None, root: str) -> tuple[str, Path]:
    """The study's dataset (default location) and output directory (default ROOT/DATASET)."""
    dataset = str(explicit.get("dataset", "location"))
    return dataset, out or Path(root) / dataset.replace(":", "-")


@app.callback()
def _root() -> None:
    """fedmist: MIST training, membership-inference audits and defense comparisons on Flower."""


def _attach_subcommands() -> None:
    from fedmist.cli.data import data_app
    from fedmist.cli.deploy import deploy_app
    app.add_typer(data_app, name="data")
    app.add_typer(deploy_app, name="deploy")


def _defense_help() -> str:
    from fedmist.defenses import DEFENSES
    return "; ".join(f"{name}: {spec.description}" for name, spec in sorted(DEFENSES.items()))


@app.command()
@with_config_options()
def simulate(
    recipe: Optional[Path] = typer.Option(None, help="TOML recipe; default: the shipped <dataset>-<defense>.toml"),
    set_: list[str] = typer.Option([], "--set", help="any config field, KEY=VALUE (params.NAME=V for a defense's knob)"),
    out: Optional[Path] = typer.Option(None, help=OUT_HELP),
    resume: bool = typer.Option(False, help="continue an interrupted run from its last checkpoint (needs only --out)"),
    force: bool = typer.Option(False, help="overwrite an existing run directory"),
    download: bool = typer.Option(False, help="download the dataset first when it is missing (as fedmist data download)"),
    explicit: dict[str, Any] | None = None,
) -> None:
    """Train a model with MIST or another defense in Flower's simulation engine (fedmist defenses: see --defense).

    Precedence: explicit option > --set > --recipe > built-in defaults.
    """
    from fedmist.cli.simulate import simulate_command

    simulate_command(explicit or {}, set_, recipe, out, resume=resume, force=force, download=download)


@app.command()
def attack(
    run_dir: Optional[Path] = typer.Argument(None, help="run directory written by fedmist simulate"),
    attacks: str = typer.Option("loss,mentr,lira_online,lira_offline,rmia", help="comma-separated attack names (see --list)"),
    shadows: int = typer.Option(16, help="number of shadow models (even; each trains on half the audit pool)"),
    audit_seed: int = typer.Option(0, "--audit-seed", "--seed", help="audit seed: audit set draw, shadow halves, bootstrap"),
    shadow_engine: str = typer.Option("flower", help="flower (same engine as the target), inprocess (same math, no Flower), parallel (inprocess in one 1-thread worker process per core; fastest on CPU) or stacked (SGD recipes: all shadows in batched matmuls, for GPUs)"),
    rebuild_shadows: bool = typer.Option(False, help="discard cached shadow models and train them again"),
    bootstrap: int = typer.Option(200, help="bootstrap resamples for the 95% intervals"),
    list_: bool = typer.Option(False, "--list", help="list every attack with what it needs, and exit"),
    threat: str = typer.Option("outsider", help="who attacks: outsider (final model: the audit above), server (every client's recorded updates) or client:K (participant K: global models each round; --mode fl runs recorded with --record-updates)"),
    download: bool = typer.Option(False, help="download the dataset first when it is missing (as fedmist data download)"),
) -> None:
    """Audit a trained run with membership-inference attacks (AUC, TPR/PLR at 0.1% and 1% FPR)."""
    from fedmist.cli.attack import attack_command, threat_command

    if download and run_dir is not None:
        from fedmist.cli.attack import download_for
        download_for(run_dir)
    if threat.strip() != "outsider":
        threat_command(run_dir, threat, audit_seed, bootstrap)
        return
    attack_command(run_dir, attacks, shadows, audit_seed, shadow_engine, rebuild_shadows, bootstrap, list_)


@app.command()
@with_config_options(exclude=("defense", "seed"))
def compare(
    defenses: Optional[str] = typer.Option(None, help=f"comma-separated defenses [default: {COMPARE_DEFENSES}; --mode fl: fedavg,mist,dpfedavg; sgd = fedavg]"),
    attacks: Optional[str] = typer.Option(None, help="comma-separated attacks (lira = its four variants) [default: loss,mentr,lira,rmia; --mode fl: loss,mentr,confidence,entropy]"),
    shadows: Optional[int] = typer.Option(None, help="shadow models per target (default 16; --mode fl: 0)"),
    seeds: str = typer.Option("0", help="comma-separated training seeds (mean ± std over them)"),
    out: Optional[Path] = typer.Option(None, help="output directory: runs/, logs/, compare.csv, compare.md, tradeoff.png [default: compare/DATASET]"),
    jobs: int = JOBS,
    ray_address: Optional[str] = typer.Option(None, help="existing Ray cluster HOST:PORT for every simulation"),
    shadow_engine: str = STUDY_SHADOW_ENGINE,
    audit_seed: int = STUDY_AUDIT_SEED,
    bootstrap: int = BOOTSTRAP,
    max_acc_drop: Optional[float] = typer.Option(None, help="use the recipes fedmist tune chose for this accuracy drop (points)"),
    set_: list[str] = STUDY_SET,
    shadows_for: list[str] = SHADOWS_FOR,
    force: bool = STUDY_FORCE,
    download: bool = typer.Option(False, help="download the dataset first when it is missing (as fedmist data download)"),
    explicit: dict[str, Any] | None = None,
) -> None:
    """Train, audit and compare defenses: compare.csv, compare.md and tradeoff.png (paper Figure 1).

    --mode fl compares FedAvg, MIST-in-FL and DP-FedAvg in real FL, each audited as server,
    participant and outsider (compare-fl.csv/.md/.png).
    """
    from fedmist.cli.compare import compare_command

    explicit = explicit or {}
    dataset, out = _dataset_and_out(explicit, out, "compare")
    if download:
        from fedmist.data.download import ensure_dataset
        ensure_dataset(dataset, explicit.get("data_dir"), True)
    compare_command(explicit, defenses, attacks, shadows, seeds, out, jobs, ray_address, shadow_engine, audit_seed,
                    bootstrap, max_acc_drop, set_, shadows_for, force)


@app.command()
@with_config_options(exclude=("defense", "seed"))
def frontier(
    defenses: str = typer.Option("mist,dpsgd,mixup_mmd,hamp,advreg,dmp,memguard,selena", help="comma-separated defenses with a strength knob"),
    points: int = typer.Option(5, help="knob values per defense (MIST: per C)"),
    mist_clients: str = typer.Option("2,4", help="MIST's C values, each a curve of its own"),
    seeds: str = typer.Option("0", help="comma-separated training seeds (verdicts use their mean)"),
    shadows: int = typer.Option(16, help="shadows for the points within the widest band (0: shadow-free attacks only)"),
    bands: str = typer.Option("1,3,5", help="accuracy-drop bands (points) for the verdicts at matched utility"),
    out: Optional[Path] = typer.Option(None, help="output directory [default: frontier/DATASET]"),
    jobs: int = JOBS,
    shadow_engine: str = STUDY_SHADOW_ENGINE,
    audit_seed: int = STUDY_AUDIT_SEED,
    bootstrap: int = BOOTSTRAP,
    shadows_for: list[str] = SHADOWS_FOR,
    recipe_for: list[str] = typer.Option([], "--recipe-for", help="DEFENSE=RECIPE: sweep that defense around another recipe (a path or a preset name, e.g. advreg=location-advreg-artefact); the grid spans 1/4 to 4 times the recipe's knob value"),
    values_for: list[str] = typer.Option([], "--values-for", help="DEFENSE=V1,V2,...: that defense's knob values instead of the grid"),
    tables_only: bool = typer.Option(False, "--tables-only", help="train and audit nothing: write the tables from the points already trained and audited in OUT (a sweep still running or stopped)"),
    knob_for: list[str] = typer.Option([], "--knob-for", help="DEFENSE=KNOB: sweep another of its strengths (e.g. hamp=entropy_percentile); the curve's name ends in it"),
    set_: list[str] = STUDY_SET,
    force: bool = STUDY_FORCE,
    explicit: dict[str, Any] | None = None,
) -> None:
    """Sweep each defense's strength knob: the privacy–utility frontier (frontier.csv/.md/.png) and
    the verdicts at matched utility (matched.md), with matched-member SGD baselines; cached and
    resumable like compare."""
    from fedmist.cli.compare import frontier_command

    explicit = explicit or {}
    _, out = _dataset_and_out(explicit, out, "frontier")
    frontier_command(explicit, defenses, points, mist_clients, seeds, shadows, bands, out, jobs, shadow_engine,
                     audit_seed, bootstrap, shadows_for, set_, force, recipe_for, values_for, knob_for,
                     tables_only)


@app.command()
@with_config_options(exclude=("defense", "seed", "validation_fraction", "validation_fold"))
def tune(
    defense: str = typer.Argument(..., help="defense whose main knob to tune (mist: C then λ)"),
    max_acc_drop: float = typer.Option(1.0, help="largest allowed validation-accuracy drop vs SGD, in points (> 0)"),
    out: Optional[Path] = typer.Option(None, help="directory shared with fedmist compare [default: compare/DATASET]"),
    iterations: int = typer.Option(5, help="bisection steps on the knob"),
    validation_fraction: float = typer.Option(0.25, help="share of the training pool held out for validation (Location: 1,000 rows)"),
    folds: int = typer.Option(1, help="disjoint validation shares per trial (k-fold; the trial averages them)"),
    seeds: str = typer.Option("0,1,2", help="training seeds per trial (the trial averages them)"),
    min_validation_rows: int = typer.Option(1000, help="refuse a validation smaller than this (rows × folds): 1 point must be >= 10 rows"),
    set_: list[str] = typer.Option([], "--set", help="config override for every trial, KEY=VALUE"),
    explicit: dict[str, Any] | None = None,
) -> None:
    """Choose a defense's strength at matched utility (paper protocol) on a validation split."""
    from fedmist.cli.tune import tune_command

    explicit = explicit or {}
    _, out = _dataset_and_out(explicit, out, "compare")
    tune_command(defense, explicit, max_acc_drop, out, iterations, validation_fraction, set_, seeds, folds,
                 min_validation_rows)


@app.command()
def report(
    path: Path = typer.Argument(..., help="a run directory (audited or not), a compare --out, or a compare --mode fl --out"),
    out: Optional[Path] = typer.Option(None, help="where to write the page [default: PATH/report.html]"),
) -> None:
    """One self-contained HTML page (figures as inline SVG, no external files) for a run, an audit,
    a comparison or an FL threat study: provenance, curves, ROC on log-log axes, tables with CIs."""
    from fedmist.cli.attack import announce_report

    announce_report(path, out)


def main() -> None:
    """Entry point: one line and exit code 2 for user errors, 130 with the resume hint on Ctrl-C."""
    _attach_subcommands()
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code here instead of exiting
    except FedmistError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished epochs are checkpointed: rerun with --resume (fedmist simulate --out DIR "
                   "--resume) to continue", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors keep their own formatting
        import click
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            typer.echo("interrupted", err=True)
            sys.exit(130)
        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(2)
        raise
    if isinstance(code, int) and code != 0:  # a command's typer.Exit(N); success returns normally
        sys.exit(code)


if __name__ == "__main__":
    main()
