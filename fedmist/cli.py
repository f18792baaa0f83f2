"""``fedmist`` command line: a thin layer over the library. User errors -> one line, exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from fedmist.errors import FedmistError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train membership-inference-resistant models with MIST on Flower, and audit them.")


@app.callback()
def _root() -> None:
    """fedmist: MIST training, membership-inference audits and defense comparisons on Flower."""


def _attach_subcommands() -> None:
    from fedmist.data.cli import data_app
    from fedmist.deploy.cli import deploy_app
    app.add_typer(data_app, name="data")
    app.add_typer(deploy_app, name="deploy")


@app.command()
def simulate(
    dataset: str = typer.Option("location", help="location, texas, purchase, cifar10, cifar100, synthetic[:texas|:purchase|:cifar10|:cifar100|:RxFxK]"),
    defense: str = typer.Option("mist", help="mist, subspace (phase 1 only) or sgd (1-client baseline)"),
    clients: Optional[int] = typer.Option(None, help="number of sub-models / virtual SuperNodes (C)"),
    recipe: Optional[Path] = typer.Option(None, help="TOML recipe; default experiments/recipes/<dataset>-<defense>.toml"),
    epochs: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    lam: Optional[float] = typer.Option(None, "--lambda", help="weight of the cross-difference loss"),
    batch_size: Optional[int] = typer.Option(None),
    xdiff_loss: Optional[str] = typer.Option(None, help="l1 (paper), l2 or kl"),
    mixup_alpha: Optional[float] = typer.Option(None, help="> 0 enables mixup in phase 1 (MIST+Mixup)"),
    momentum: Optional[float] = typer.Option(None),
    repartition: Optional[str] = typer.Option(None, help="epoch (paper) or fixed (authors' code on Location)"),
    mode: Optional[str] = typer.Option(None, help="virtual (server computes targets), private (peers' weights forwarded) or fl (real federated learning: each client trains only on its own partition; --defense sgd = FedAvg, mist = MIST-in-FL)"),
    partition: Optional[str] = typer.Option(None, help="--mode fl: each client's data, iid or dirichlet:ALPHA"),
    rounds: Optional[int] = typer.Option(None, help="--mode fl: number of FL rounds"),
    local_epochs: Optional[int] = typer.Option(None, help="--mode fl: local passes per round"),
    record_updates: Optional[bool] = typer.Option(None, "--record-updates/--no-record-updates", help="--mode fl: record every round's global model and every client's update (for fedmist attack --threat server|client:K)"),
    max_record_gb: Optional[float] = typer.Option(None, help="--mode fl: refuse to start when the recording would exceed this (default 4)"),
    model: Optional[str] = typer.Option(None),
    train_size: Optional[int] = typer.Option(None, help="target training-set size (default: the paper's)"),
    seed: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help="cpu or cuda"),
    data_dir: Optional[Path] = typer.Option(None, help="data directory (default $FEDMIST_DATA or ../shared/data)"),
    cpus_per_client: Optional[float] = typer.Option(None, help="Ray CPUs per client (2 cores / 1.0 = 2 concurrent clients)"),
    gpus_per_client: Optional[float] = typer.Option(None, help="fraction of a GPU per client, e.g. 0.25"),
    set_: list[str] = typer.Option([], "--set", help="any other config field, KEY=VALUE"),
    out: Optional[Path] = typer.Option(None, help="run directory (default runs/<dataset>-<defense>-c<C>-s<seed>)"),
    resume: bool = typer.Option(False, help="continue an interrupted run from its last checkpoint"),
    force: bool = typer.Option(False, help="overwrite an existing run directory"),
) -> None:
    """Train a model with MIST (or a baseline) in Flower's simulation engine."""
    from fedmist.config import RunConfig, parse_sets
    from fedmist.recipes import default_recipe

    overrides = {k: v for k, v in {
        "dataset": dataset, "defense": defense, "clients": clients, "epochs": epochs, "lr": lr, "lam": lam,
        "batch_size": batch_size, "xdiff_loss": xdiff_loss, "mixup_alpha": mixup_alpha, "momentum": momentum,
        "repartition": repartition, "mode": mode, "model": model, "train_size": train_size, "seed": seed,
        "device": device, "data_dir": str(data_dir) if data_dir else None, "cpus_per_client": cpus_per_client,
        "gpus_per_client": gpus_per_client, "partition": partition, "rounds": rounds, "local_epochs": local_epochs,
        "record_updates": record_updates, "max_record_gb": max_record_gb}.items() if v is not None}
    overrides.update(parse_sets(set_))
    recipe = recipe or default_recipe(dataset, defense, model or "")
    cfg = RunConfig.from_toml(recipe) if recipe else RunConfig()
    cfg = RunConfig.from_dict(overrides, base=cfg)
    if clients is None and recipe is None and defense != "sgd":
        cfg.clients = 4
    from fedmist.commands.simulate import simulate_command
    simulate_command(cfg, out, resume=resume, force=force, recipe=recipe)


@app.command()
def attack(
    run_dir: Optional[Path] = typer.Argument(None, help="run directory written by fedmist simulate"),
    attacks: str = typer.Option("loss,mentr,lira_online,lira_offline,rmia", help="comma-separated attack names (see --list)"),
    shadows: int = typer.Option(16, help="number of shadow models (even; each trains on half the audit pool)"),
    seed: int = typer.Option(0, help="audit seed: audit set draw, shadow halves, bootstrap"),
    shadow_engine: str = typer.Option("flower", help="flower (same engine as the target), inprocess (same math, no Flower), parallel (inprocess in one 1-thread worker process per core; fastest on CPU) or stacked (SGD recipes: all shadows in batched matmuls, for GPUs)"),
    rebuild_shadows: bool = typer.Option(False, help="discard cached shadow models and train them again"),
    bootstrap: int = typer.Option(200, help="bootstrap resamples for the 95% intervals"),
    list_: bool = typer.Option(False, "--list", help="list every attack with what it needs, and exit"),
    threat: str = typer.Option("outsider", help="who attacks: outsider (final model: the audit above), server (every client's recorded updates) or client:K (participant K: global models each round; --mode fl runs recorded with --record-updates)"),
) -> None:
    """Audit a trained run with membership-inference attacks (AUC, TPR/PLR at 0.1% and 1% FPR)."""
    if threat.strip() != "outsider":
        from fedmist.fl.threats import threat_command
        threat_command(run_dir, threat, seed, bootstrap)
        return
    from fedmist.commands.attack import attack_command
    attack_command(run_dir, attacks, shadows, seed, shadow_engine, rebuild_shadows, bootstrap, list_)


@app.command()
def compare(
    dataset: str = typer.Option("location", help="dataset every defense trains on"),
    defenses: str = typer.Option("sgd,mist,dpsgd,mixup_mmd,hamp,selena,advreg,dmp,memguard", help="comma-separated defenses"),
    attacks: str = typer.Option("loss,mentr,lira,rmia", help="comma-separated attacks (lira = its four variants)"),
    shadows: Optional[int] = typer.Option(None, help="shadow models per target (default 16; --mode fl: 0)"),
    seeds: str = typer.Option("0", help="comma-separated training seeds (mean ± std over them)"),
    out: Optional[Path] = typer.Option(None, help="output directory: runs/, logs/, compare.csv, compare.md, tradeoff.png [default: compare/DATASET]"),
    jobs: int = typer.Option(1, help="cells trained and audited concurrently"),
    ray_address: Optional[str] = typer.Option(None, help="existing Ray cluster HOST:PORT for every simulation"),
    shadow_engine: str = typer.Option("parallel", help="parallel, flower, inprocess or stacked (see fedmist attack)"),
    audit_seed: int = typer.Option(0),
    bootstrap: int = typer.Option(200),
    max_acc_drop: Optional[float] = typer.Option(None, help="use the recipes fedmist tune chose for this accuracy drop (points)"),
    set_: list[str] = typer.Option([], "--set", help="config override for every cell, KEY=VALUE (e.g. epochs=20)"),
    shadows_for: list[str] = typer.Option([], "--shadows-for", help="DEFENSE=N: another shadow count for one defense (e.g. selena=4)"),
    mode: str = typer.Option("virtual", help="virtual: defenses of one model (above); fl: FedAvg, MIST-in-FL and DP-FedAvg in real FL, each audited as server, participant and outsider (compare-fl.csv/.md/.png; --defenses fedavg,mist,dpfedavg; --set clients=10 --set partition=dirichlet:0.5 --set rounds=20)"),
) -> None:
    """Train, audit and compare defenses: compare.csv, compare.md and tradeoff.png (paper Figure 1)."""
    from fedmist.commands.compare import compare_command
    out = out or Path("compare") / dataset.replace(":", "-")
    compare_command(dataset, defenses, attacks, shadows, seeds, out, jobs, ray_address, shadow_engine, audit_seed,
                    bootstrap, max_acc_drop, set_, shadows_for, mode)


@app.command()
def tune(
    defense: str = typer.Argument(..., help="defense whose main knob to tune (mist: C then λ)"),
    dataset: str = typer.Option("location"),
    max_acc_drop: float = typer.Option(1.0, help="largest allowed validation-accuracy drop vs SGD, in points"),
    out: Optional[Path] = typer.Option(None, help="directory shared with fedmist compare [default: compare/DATASET]"),
    iterations: int = typer.Option(5, help="bisection steps on the knob"),
    validation_fraction: float = typer.Option(0.1, help="share of the training pool held out for validation"),
    seed: int = typer.Option(0),
    set_: list[str] = typer.Option([], "--set", help="config override for every trial, KEY=VALUE"),
) -> None:
    """Choose a defense's strength at matched utility (paper protocol) on a validation split."""
    from fedmist.commands.tune import tune_command
    out = out or Path("compare") / dataset.replace(":", "-")
    tune_command(defense, dataset, max_acc_drop, out, iterations, validation_fraction, seed, set_)


def main() -> None:
    _attach_subcommands()
    try:
        app(standalone_mode=False)
    except FedmistError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as err:
        sys.exit(getattr(err, "exit_code", getattr(err, "code", 0)))
    except KeyboardInterrupt:
        typer.echo("interrupted; rerun the same command with --resume to continue", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors keep their own formatting
        import click
        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
