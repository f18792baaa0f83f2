"""``fedmist deploy`` (being written)."""

import typer

deploy_app = typer.Typer(no_args_is_help=True, help="Deploy fedmist over gRPC with Flower SuperLink / SuperNodes.")
