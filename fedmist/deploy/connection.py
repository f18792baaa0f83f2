"""How the ``flwr`` CLI reaches a SuperLink: a private ``FLWR_HOME`` with one connection.

``flwr`` (1.42) reads SuperLink connections from ``$FLWR_HOME/config.toml``; writing our own
keeps the user's ``~/.flwr`` untouched and makes TLS the default (``insecure`` only on request).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedmist.errors import ConfigError

CONNECTION = "fedmist"


def flwr_exe(name: str = "flwr") -> str:
    """A Flower executable next to this Python (the venv), else on PATH."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"`{name}` not found; install Flower (pip install 'flwr>=1.42') in this environment")
    return found


@dataclass(frozen=True)
class Link:
    """Address of a SuperLink and how to trust it."""

    address: str  # host:port
    root_cert: Path | None  # CA certificate; None only when insecure
    insecure: bool = False

    def __post_init__(self) -> None:
        if ":" not in self.address:
            raise ConfigError(f"SuperLink address must be HOST:PORT, got {self.address!r}")
        if not self.insecure and (self.root_cert is None or not self.root_cert.is_file()):
            raise ConfigError(f"CA certificate {self.root_cert} not found (pass --certs DIR, or --insecure)")

    def toml(self) -> str:
        lines = [f'[superlink]\ndefault = "{CONNECTION}"\n', f"[superlink.{CONNECTION}]",
                 f"address = {json.dumps(self.address)}"]
        if self.insecure:
            lines.append("insecure = true")
        else:
            lines.append(f"root-certificates = {json.dumps(str(self.root_cert.resolve()))}")  # type: ignore[union-attr]
        return "\n".join(lines) + "\n"


@contextmanager
def flwr_home(link: Link) -> Iterator[dict[str, str]]:
    """Environment for ``flwr`` commands talking to ``link`` (a temporary FLWR_HOME)."""
    with tempfile.TemporaryDirectory(prefix="fedmist-flwr-") as tmp:
        (Path(tmp) / "config.toml").write_text(link.toml())
        yield {**os.environ, "FLWR_HOME": tmp}


def register_nodes(link: Link, public_keys: list[Path]) -> list[str]:
    """Register SuperNode public keys with the SuperLink (what ``flwr supernode register`` does,
    in this process: one CLI start-up per key cost ~5 s each on a loaded 2-core machine).
    Returns one line per key; a key registered before is reported, not an error."""
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.cli.typing import SuperLinkConnection
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=no-name-in-module

    out = []
    with flwr_home(link) as env:
        old = os.environ.get("FLWR_HOME")
        os.environ["FLWR_HOME"] = env["FLWR_HOME"]
        try:
            conn = SuperLinkConnection(CONNECTION, link.address, None if link.insecure else str(link.root_cert.resolve()),
                                       link.insecure)
            client = init_http_client_from_connection(conn)
            try:
                for key in public_keys:
                    try:
                        res = client.RegisterNode(request=RegisterNodeRequest(public_key=try_load_public_key(key)))
                        out.append(f"registered {key.name} as SuperNode {res.node_id}")
                    except Exception as err:  # noqa: BLE001 - Flower raises its own HTTP error types
                        if "already" not in str(err).lower():
                            raise ConfigError(f"could not register {key}: {err}") from None
                        out.append(f"{key.name} was already registered")
            finally:
                client.close()
        finally:
            if old is None:
                os.environ.pop("FLWR_HOME", None)
            else:
                os.environ["FLWR_HOME"] = old
    return out
