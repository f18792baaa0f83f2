"""Command lines of ``flower-superlink`` / ``flower-supernode`` as fedmist runs them, secure by default.

Flower 1.42 serves the Fleet API (SuperNodes), the Control API (``flwr run``) and the Runtime API
(the ServerApp process) on *one* HTTPS port of the SuperLink (``--port``), so SuperNodes and
``fedmist deploy run`` use the same ``HOST:PORT``.

A SuperNode is two long-lived processes (``fedmist.deploy.runtime``): ``flower-supernode
--isolation process`` and one ClientApp process that runs every message of that SuperNode, so the
imports and the dataset are loaded once per SuperNode instead of once per message.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedmist.deploy.certs import CertPaths
from fedmist.deploy.connection import flwr_exe
from fedmist.errors import ConfigError

DEFAULT_PORT = 9092
SUPERNODE_BASE_PORT = 9094  # each SuperNode's local Runtime API port: base + partition id
RUNTIME_MODULE = "fedmist.deploy.runtime"  # runs flower-supernode and the long-lived ClientApp process

# flower-supernode exits with status 1 on every error; a refused key reads "Exit Code: 305 ...
# [code: 2004] Failed to activate SuperNode" in its output.
REFUSED_MARK = "Failed to activate SuperNode"

INSECURE_WARNING = ("WARNING: --insecure: traffic is NOT encrypted and SuperNodes are NOT authenticated; "
                    "anyone who can reach the port can join the federation or read the weights. "
                    "Use only on a trusted network for debugging.")


@dataclass(frozen=True)
class SuperLinkSpec:
    certs: CertPaths | None  # None = insecure
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    database: str = ":flwr-in-memory:"

    def command(self) -> list[str]:
        cmd = [flwr_exe("flower-superlink"), "--host", self.host, "--port", str(self.port),
               "--disable-runtime-dependency-installation"]  # the app runs in this environment
        if self.database != ":flwr-in-memory:":
            cmd += ["--database", self.database]
        if self.certs is None:
            return cmd + ["--insecure"]
        self.certs.check_server()
        return cmd + ["--ssl-ca-certfile", str(self.certs.ca_cert), "--ssl-certfile", str(self.certs.server_cert),
                      "--ssl-keyfile", str(self.certs.server_key), "--enable-supernode-auth"]


@dataclass(frozen=True)
class SuperNodeSpec:
    superlink: str  # host:port
    partition: int
    num_partitions: int
    data_dir: Path | None
    certs: CertPaths | None  # None = insecure
    key: Path | None = None  # default certs/supernodes/node-<partition>.key
    port: int | None = None  # local Runtime API port; default SUPERNODE_BASE_PORT + partition

    def node_config(self) -> str:
        if not 0 <= self.partition < self.num_partitions:
            raise ConfigError(f"--partition must be in 0..{self.num_partitions - 1}, got {self.partition}")
        parts = [f"partition-id={self.partition}", f"num-partitions={self.num_partitions}"]
        if self.data_dir is not None:
            if not self.data_dir.is_dir():
                raise ConfigError(f"data directory {self.data_dir} not found")
            parts.append(f'data-dir="{self.data_dir.resolve()}"')
        return " ".join(parts)

    @property
    def runtime_port(self) -> int:
        return self.port if self.port is not None else SUPERNODE_BASE_PORT + self.partition

    def command(self) -> list[str]:
        """``flower-supernode`` (its polling shortened, fedmist.deploy.runtime) with ``--isolation
        process``: it starts no ClientApp process itself; ``clientapp_command`` is the one that serves it."""
        flwr_exe("flower-supernode")  # a clear error when Flower is missing
        cmd = [sys.executable, "-m", RUNTIME_MODULE, "supernode", "--superlink", self.superlink,
               "--node-config", self.node_config(), "--port", str(self.runtime_port), "--isolation", "process"]
        if self.certs is None:
            return cmd + ["--insecure"]
        key = self.key or self.certs.node_key(self.partition)
        for p in (self.certs.ca_cert, key):
            if not p.is_file():
                raise ConfigError(f"{p} not found; copy it from the machine that ran `fedmist deploy certs`")
        return cmd + ["--root-certificates", str(self.certs.ca_cert), "--auth-supernode-private-key", str(key)]


    def clientapp_command(self, parent_pid: int) -> list[str]:
        """The long-lived ClientApp process for this SuperNode's local Runtime API (plain HTTP on
        127.0.0.1, as between flower-supernode and the flwr-clientapp processes it starts by default)."""
        return [sys.executable, "-m", RUNTIME_MODULE, "clientapp", "--runtime-api-address",
                f"127.0.0.1:{self.runtime_port}", "--parent-pid", str(parent_pid)]


def shown(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM (Flower's processes shut down cleanly on it), SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_port(host: str, port: int, timeout: float, alive: callable = lambda: True) -> None:  # type: ignore[valid-type]
    """Block until something accepts TCP connections on host:port (or raise ConfigError)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ConfigError("flower-superlink exited during start-up (see its log above)")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise ConfigError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def _relay(proc: subprocess.Popen, seen: list[bool]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if REFUSED_MARK in line:
            seen.append(True)


def run_supernode(spec: SuperNodeSpec, wait_registered: float, echo: Callable[[str], None] = print) -> int:
    """Run flower-supernode until it exits; start it again while the SuperLink refuses its key
    within ``wait_registered`` seconds (SuperNodes may start before the SuperLink registered them).
    The long-lived ClientApp process runs beside it from the start (it imports torch while the
    SuperNode connects, and waits through restarts). Returns the SuperNode's exit code; both
    children are stopped when it exits or this process is interrupted."""
    cmd = spec.command()
    app_cmd = spec.clientapp_command(os.getpid())
    echo(f"starting: {shown(app_cmd)}")
    app = subprocess.Popen(app_cmd)  # its log lines go straight to this process's output
    try:
        return _supernode_until_accepted(cmd, wait_registered, echo)
    finally:
        stop_process(app, grace=5.0)


def _supernode_until_accepted(cmd: list[str], wait_registered: float, echo: Callable[[str], None]) -> int:
    deadline = time.monotonic() + wait_registered
    while True:
        echo(f"starting: {shown(cmd)}")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen: list[bool] = []
        # Pass its output through, watching for a refusal. A thread, because its detached children
        # may keep the pipe open after it exited.
        threading.Thread(target=_relay, args=(proc, seen), daemon=True).start()
        try:
            code = proc.wait()
            time.sleep(0.5)  # let the relay print the last lines
            refused = bool(seen)
        finally:
            stop_process(proc)
        if not refused:
            return code
        if time.monotonic() > deadline:
            echo(f"the SuperLink refused this SuperNode (exit code {code}): is its public key registered?")
            return code
        echo("refused by the SuperLink (key not registered yet?); retrying in 3 s")
        time.sleep(3)
