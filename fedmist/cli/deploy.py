"""``fedmist deploy``: certificates, SuperLink, SuperNodes and run submission over the network.

Secure by default: TLS everywhere and SuperNode authentication on; ``--insecure`` turns both off
and prints a warning. See docs/deploy.md for a walk-through on several machines.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from fedmist.errors import ConfigError

deploy_app = typer.Typer(no_args_is_help=True, help="Deploy fedmist over the network with Flower SuperLink / SuperNodes.")


def _certs_or_insecure(certs: Optional[Path], insecure: bool):
    from fedmist.deploy.certs import CertPaths
    from fedmist.deploy.processes import INSECURE_WARNING

    if insecure:
        typer.secho(INSECURE_WARNING, fg=typer.colors.YELLOW, err=True)
        return None
    if certs is None:
        raise ConfigError("pass --certs DIR (made by `fedmist deploy certs`), or --insecure to run without TLS")
    if not certs.is_dir():
        raise ConfigError(f"certificate directory {certs} not found")
    return CertPaths(certs)


@deploy_app.command()
def certs(
    out: Path = typer.Option(Path("certs"), help="directory to write the CA, SuperLink certificate and node keys"),
    hosts: str = typer.Option("localhost", help="comma-separated names/IPs SuperNodes use to reach the SuperLink"),
    nodes: int = typer.Option(4, help="number of SuperNode key pairs (one per partition)"),
    force: bool = typer.Option(False, help="replace an existing set"),
) -> None:
    """Create a CA, the SuperLink's TLS certificate and SuperNode authentication key pairs."""
    from fedmist.deploy.certs import make_certs

    paths = make_certs(out, hosts.split(","), nodes, force=force)
    typer.echo(f"wrote {paths.ca_cert} (give to every machine), {paths.server_cert} + .key (SuperLink only), "
               f"{nodes} SuperNode key pairs in {paths.nodes} (node-<i>.key to SuperNode i only); "
               f"keep {paths.ca_key} offline")


@deploy_app.command()
def superlink(
    certs: Optional[Path] = typer.Option(None, help="directory made by `fedmist deploy certs`"),
    host: str = typer.Option("0.0.0.0", help="interface to listen on"),
    port: int = typer.Option(9092, help="the one HTTPS port for SuperNodes, `deploy run` and the ServerApp"),
    database: str = typer.Option(":flwr-in-memory:", help="SuperLink state file (default: in memory)"),
    insecure: bool = typer.Option(False, "--insecure", help="no TLS, no SuperNode authentication (prints a warning)"),
) -> None:
    """Start flower-superlink with TLS and SuperNode authentication, and register the node keys."""
    from fedmist.deploy.connection import Link, register_nodes
    from fedmist.deploy.processes import (
        SuperLinkSpec,
        shown,
        stop_process,
        wait_for_port,
    )

    _check_port("--port", port)
    paths = _certs_or_insecure(certs, insecure)
    spec = SuperLinkSpec(paths, host, port, database)
    cmd = spec.command()
    typer.echo(f"starting: {shown(cmd)}")
    proc = subprocess.Popen(cmd)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        wait_for_port(host, port, 120, alive=lambda: proc.poll() is None)
        if paths is not None:
            keys = paths.public_keys()
            if not keys:
                typer.secho(f"no SuperNode public keys in {paths.nodes}: every SuperNode will be refused",
                            fg=typer.colors.YELLOW, err=True)
            link = Link(f"127.0.0.1:{port}", paths.ca_cert)
            for line in register_nodes(link, keys):
                typer.echo(line)
        typer.echo(f"SuperLink ready on {host}:{port}", err=True)
        sys.exit(proc.wait())
    finally:
        stop_process(proc)


@deploy_app.command()
def supernode(
    superlink: str = typer.Option(..., help="SuperLink HOST:PORT"),
    partition: int = typer.Option(..., help="this node's partition id (0-based)"),
    num_partitions: int = typer.Option(..., help="number of partitions (= clients C)"),
    data_dir: Optional[Path] = typer.Option(None, help="where this machine keeps the dataset files"),
    certs: Optional[Path] = typer.Option(None, help="directory with ca.crt and supernodes/node-<partition>.key"),
    key: Optional[Path] = typer.Option(None, help="authentication private key (default certs/supernodes/node-<partition>.key)"),
    port: Optional[int] = typer.Option(None, help="local port for the ClientApp runtime (default 9094 + partition)"),
    wait_registered: float = typer.Option(60.0, help="seconds to keep retrying while the SuperLink refuses this "
                                          "node's key (it may not have registered it yet); 0 = give up at once"),
    insecure: bool = typer.Option(False, "--insecure", help="no TLS, no authentication (prints a warning)"),
) -> None:
    """Start flower-supernode for one partition; retried while the SuperLink refuses its key."""
    from fedmist.deploy.processes import SuperNodeSpec, run_supernode

    if not 0 <= partition < num_partitions:
        raise ConfigError(f"--partition must be in 0..{num_partitions - 1} (--num-partitions {num_partitions}), "
                          f"got {partition}")
    if port is not None:
        _check_port("--port", port)
    spec = SuperNodeSpec(superlink, partition, num_partitions, data_dir, _certs_or_insecure(certs, insecure), key, port)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    sys.exit(run_supernode(spec, wait_registered, echo=lambda m: typer.echo(m, err=True)))


def _check_port(option: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{option} must be a TCP port in 1..65535, got {port}")


def _exit_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM -> SystemExit, so ``finally`` blocks stop the Flower child processes."""
    raise SystemExit(128 + signum)


@deploy_app.command()
def run(
    superlink: str = typer.Option(..., help="SuperLink HOST:PORT"),
    recipe: Optional[Path] = typer.Option(None, help="TOML recipe (read here; need not exist on the SuperLink)"),
    certs: Optional[Path] = typer.Option(None, help="directory with ca.crt (or use --root-cert)"),
    root_cert: Optional[Path] = typer.Option(None, help="CA certificate that signed the SuperLink's certificate"),
    set_: list[str] = typer.Option([], "--set", help="any config field, KEY=VALUE (e.g. min_clients=3)"),
    min_clients: Optional[int] = typer.Option(None, help="replies a round needs to go on after a dropout (0 = all)"),
    round_timeout: Optional[float] = typer.Option(None, help="seconds to wait for the replies of one round"),
    out: Optional[str] = typer.Option(None, help="run directory on the SuperLink machine (default runs/<name>)"),
    resume: bool = typer.Option(False, help="continue the run in OUT from its last checkpoint"),
    force: bool = typer.Option(False, help="overwrite an existing run directory"),
    insecure: bool = typer.Option(False, "--insecure", help="connect without TLS (prints a warning)"),
) -> None:
    """Submit a training run to a deployed SuperLink, stream its progress, print the summary."""
    from fedmist.config import RunConfig, parse_sets
    from fedmist.runs.console import console, summary_table
    from fedmist.deploy.connection import Link
    from fedmist.deploy.submit import submit
    from fedmist.runs.rundir import default_out

    cfg = RunConfig.from_toml(recipe) if recipe else RunConfig()
    overrides: dict[str, object] = dict(parse_sets(set_))
    if min_clients is not None:
        overrides["min_clients"] = min_clients
    if round_timeout is not None:
        overrides["round_timeout"] = round_timeout
    cfg = RunConfig.from_dict(overrides, base=cfg)
    from fedmist.runs.rundir import prepare_config
    prepare_config(RunConfig.from_dict(cfg.to_dict()))  # every check now, on a copy: data_dir is the SuperLink's
    if insecure:
        from fedmist.deploy.processes import INSECURE_WARNING
        typer.secho(INSECURE_WARNING, fg=typer.colors.YELLOW, err=True)
        link = Link(superlink, None, insecure=True)
    else:
        ca = root_cert or (certs / "ca.crt" if certs else None)
        if ca is None:
            raise ConfigError("pass --certs DIR or --root-cert FILE to verify the SuperLink, or --insecure")
        link = Link(superlink, ca)
    out = out or str(default_out(cfg))
    result = submit(link, cfg, out, resume=resume, force=force, echo=lambda line: console.print(line, markup=False,
                                                                                              highlight=False))
    console.print(summary_table(result["run_dir"], result["summary"]))
    console.print(f"run directory (on the SuperLink machine): {result['run_dir']}")
