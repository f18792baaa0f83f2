"""``fedmist data``: see which benchmark datasets are usable, and install missing files."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedmist.data.download import MIRROR_ENV, SOURCES, dataset_present, download_dataset
from fedmist.data.paths import DATA_ENV, display_path, resolve_data_dir
from fedmist.data.store import import_dataset, list_datasets
from fedmist.errors import DataError, FedmistError

data_app = typer.Typer(
    help="List the benchmark datasets; download or import their files into the data directory.",
    no_args_is_help=True,
)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help=f"Data directory. Default: ${DATA_ENV}, else ./shared/data or ../shared/data.",
        show_default=False,
    ),
]

_STYLE = {"present": "green", "incomplete": "yellow", "missing": "red"}


def _fail(error: FedmistError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(2)


def _under(path: Path, root: Path) -> str:
    """``path`` relative to the data directory (named in the table title) when inside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return display_path(path)


@data_app.command("list")
def list_cmd(data_dir: DataDirOption = None) -> None:
    """Show each dataset's status, file and shape."""
    try:
        root = resolve_data_dir(data_dir)
        if not root.is_dir() and (data_dir is not None or os.environ.get(DATA_ENV)):
            source = "--data-dir" if data_dir is not None else f"${DATA_ENV}"
            raise DataError(f"data directory {display_path(root)} ({source}) does not exist; `fedmist data "
                            "download NAME` or `fedmist data import NAME FILE` creates it")
        rows = list_datasets(root)
    except FedmistError as e:
        raise _fail(e) from e
    table = Table(title=f"datasets in {display_path(root)}")
    for column in ("dataset", "status", "path", "rows", "features"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r.name,
            f"[{_STYLE[r.status]}]{r.status}[/]",
            _under(r.path, root),
            f"{r.rows:,}" if r.rows is not None else "",
            "×".join(f"{s:,}" for s in r.feature_shape) if r.feature_shape else "",
        )
    console = Console()
    console.print(table)
    for r in rows:  # notes are long sentences: below the table, so it fits a terminal
        if r.note:
            console.print(f"[bold]{r.name}[/]: {r.note}")


@data_app.command("import")
def import_cmd(
    name: Annotated[str, typer.Argument(help="location, texas or purchase.")],
    file: Annotated[Path, typer.Argument(help="The .npz, .tgz or CSV file to install.")],
    data_dir: DataDirOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a different existing file.")] = False,
) -> None:
    """Check FILE fully (format, shape, checksum) and copy it to its place in the data directory.

    NAME is location, texas or purchase; FILE is a published .npz, .tgz or CSV form of it.
    """
    try:
        root = resolve_data_dir(data_dir)
        with warnings.catch_warnings(record=True) as caught:  # shown as plain lines below
            warnings.simplefilter("always")
            dest = import_dataset(name, file, root, force=force)
        used = next(s.path for s in list_datasets(root) if s.name == name)
    except FedmistError as e:
        raise _fail(e) from e
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    typer.echo(f"{name}: installed {display_path(dest)}")
    if used != dest:
        typer.echo(f"note: {display_path(used)} takes precedence when loading {name}; "
                   f"remove it to use the imported file")


@data_app.command("download")
def download_cmd(
    name: Annotated[str, typer.Argument(help=f"{', '.join(SOURCES)}.")],
    data_dir: DataDirOption = None,
    mirror: Annotated[str | None, typer.Option(
        "--mirror", help=f"Base address holding the same file names. Default: ${MIRROR_ENV}, "
                         f"else the published addresses.", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Download even if present; replace a different existing file.")] = False,
) -> None:
    """Download NAME from where it is published, check its pinned checksum, and install it.

    NAME is location, texas, purchase, cifar10 or cifar100. The file then passes the same
    checks as `fedmist data import`. Run the command again to resume a partial download.
    """
    try:
        root = resolve_data_dir(data_dir)
        if name in SOURCES and not force and dataset_present(name, root):
            used = next(s.path for s in list_datasets(root) if s.name == name)
            typer.echo(f"{name}: already present at {display_path(used)} "
                       f"(--force downloads it again)")
            return
        with warnings.catch_warnings(record=True) as caught:  # shown as plain lines below
            warnings.simplefilter("always")
            dest = download_dataset(name, root, mirror=mirror, force=force)
    except FedmistError as e:
        raise _fail(e) from e
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    typer.echo(f"{name}: installed {display_path(dest)}")
    used = next(s.path for s in list_datasets(root) if s.name == name)
    if used != dest:
        typer.echo(f"note: {display_path(used)} takes precedence when loading {name}; "
                   f"remove it to use the downloaded file")
