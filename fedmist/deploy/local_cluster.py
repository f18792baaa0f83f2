"""A whole deployment on one machine: a SuperLink and N SuperNodes on 127.0.0.1, TLS and node
authentication on, for trying ``fedmist deploy`` (and for the tests and ``bench_deploy.py``).

    from fedmist import start_local_cluster

    with start_local_cluster("tmp/cluster", nodes=4) as cluster:     # certificates, SuperLink, 4 SuperNodes
        proc = cluster.deploy_run("runs/location-deployed", ["dataset=location", "epochs=3"],
                                  "--recipe", "experiments/recipes/location-mist.toml")
        print(proc.stdout)                                           # the `fedmist deploy run` log

Each process is what the documented commands start (docs/deploy.md): ``fedmist deploy certs``,
``fedmist deploy superlink --host 127.0.0.1`` and ``fedmist deploy supernode --partition i``, each
in its own process group, with its output in ``<workdir>/superlink.log`` / ``supernode-<i>.log``.
The Flower state (``FLWR_HOME``) lives in ``<workdir>/flwr-home``, so ``~/.flwr`` is not touched.
Leaving the ``with`` block (or ``cluster.stop()``) stops every process the cluster started,
including the ones Flower detaches from their parents.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import psutil

FEDMIST = [sys.executable, "-m", "fedmist"]  # the fedmist command of this environment


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """One started command, its log file and every descendant seen (detached ones included)."""

    popen: subprocess.Popen
    log: Path
    family: set[int] = field(default_factory=set)

    def text(self) -> str:
        """The process's output so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def remember_children(self) -> None:
        try:
            self.family |= {c.pid for c in psutil.Process(self.popen.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def kill(self, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
        """Signal the process group and every remembered descendant; escalate to SIGKILL."""
        self.remember_children()
        _signal_all(self.popen.pid, self.family, sig)
        try:
            self.popen.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
        _signal_all(self.popen.pid, self.family, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(timeout=10)
        for pid in self.family:  # detached grandchildren (flower-superexec) exit with their parents
            _wait_gone(pid, 10)


def _signal_all(pgid: int, pids: set[int], sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and psutil.pid_exists(pid):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)


def start(args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    """Start ``args`` in its own process group, output to ``log``."""
    fh = log.open("w")
    popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    fh.close()
    return Proc(popen, log)


def wait_for(proc: Proc, text: str, timeout: float) -> None:
    """Block until ``text`` is in the process's output; AssertionError (with the log's tail) if it
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.remember_children()
        if text in proc.text():
            return
        if proc.popen.poll() is not None:
            raise AssertionError(f"process exited ({proc.popen.returncode}) before {text!r}:\n{proc.text()[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"{text!r} not seen within {timeout:.0f} s:\n{proc.text()[-3000:]}")


@dataclass
class LocalCluster:
    """A SuperLink and its SuperNodes on 127.0.0.1 with TLS and node authentication."""

    tmp: Path  # certificates, logs and FLWR_HOME
    certs: Path
    port: int
    env: dict[str, str]  # the environment every process (and ``flwr``) gets
    cwd: Path | None = None  # working directory of every process (None: this process's)
    data_dir: Path | None = None  # the SuperNodes' --data-dir (None: their default)
    superlink: Proc | None = None
    nodes: dict[int, Proc] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_superlink(self, timeout: float = 180) -> None:
        self.superlink = start([*FEDMIST, "deploy", "superlink", "--certs", str(self.certs), "--host", "127.0.0.1",
                                "--port", str(self.port)], self.tmp / "superlink.log", self.env, self.cwd)
        wait_for(self.superlink, "SuperLink ready", timeout)

    def start_node(self, i: int, n: int, key: Path | None = None, extra_env: dict[str, str] | None = None,
                   wait_registered: float = 60) -> Proc:
        """Start SuperNode ``i`` of ``n`` (``key``: another private key, e.g. an unregistered one;
        such a node is not added to ``nodes``)."""
        args = [*FEDMIST, "deploy", "supernode", "--superlink", self.address, "--partition", str(i),
                "--num-partitions", str(n), "--certs", str(self.certs), "--port", str(free_port()),
                "--wait-registered", str(wait_registered)]
        if self.data_dir is not None:
            args += ["--data-dir", str(self.data_dir)]
        if key is not None:
            args += ["--key", str(key)]
        proc = start(args, self.tmp / f"supernode-{i}{'-extra' if key else ''}.log",
                     {**self.env, **(extra_env or {})}, self.cwd)
        if key is None:
            self.nodes[i] = proc
        return proc

    def wait_nodes(self, timeout: float = 180) -> None:
        """Block until every SuperNode is connected to the SuperLink."""
        for proc in self.nodes.values():
            wait_for(proc, "SuperNode ID", timeout)

    def deploy_command(self, out: Path | str, sets: list[str], *extra: str) -> list[str]:
        """The ``fedmist deploy run`` command line for this cluster (``sets``: ``KEY=VALUE`` overrides)."""
        return [*FEDMIST, "deploy", "run", "--superlink", self.address, "--certs", str(self.certs),
                "--out", str(out), *[a for s in sets for a in ("--set", s)], *extra]

    def deploy_run(self, out: Path | str, sets: list[str], *extra: str,
                   timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``fedmist deploy run`` against this cluster to completion (killed after ``timeout``
        seconds); returns its exit code and its output (stdout and stderr together)."""
        args = self.deploy_command(out, sets, *extra)
        proc = subprocess.Popen(args, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return subprocess.CompletedProcess(args, proc.returncode, stdout, "")

    def stop(self) -> None:
        """Stop every SuperNode, then the SuperLink (and all their descendants)."""
        for proc in self.nodes.values():
            proc.kill()
        if self.superlink is not None:
            self.superlink.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_cluster(workdir: Path | str, nodes: int = 4, *, fault: str = "", data_dir: Path | str | None = None,
                        cwd: Path | str | None = None, env: dict[str, str] | None = None) -> LocalCluster:
    """Certificates for ``nodes`` SuperNodes, a running SuperLink and the SuperNodes, connected.

    ``workdir``: an empty or new directory for the certificates, the logs and ``FLWR_HOME``.
    ``fault``: ``FEDMIST_FAULT`` for the SuperNodes (``fedmist.flower.faults``; tests only).
    ``data_dir``: the SuperNodes' dataset directory (default: ``$FEDMIST_DATA`` or ``shared/data``
    as seen from ``cwd``). ``cwd``: working directory of every process (relative ``--out`` paths
    of ``deploy_run`` are resolved against it). ``env``: base environment (default: this process's).
    Use the result as a context manager, or call ``stop()``: the processes outlive this call.
    """
    tmp = Path(workdir).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    run_dir = Path(cwd).resolve() if cwd is not None else None
    certs = tmp / "certs"
    subprocess.run([*FEDMIST, "deploy", "certs", "--out", str(certs), "--hosts", "localhost", "--nodes", str(nodes)],
                   cwd=run_dir, check=True, capture_output=True)
    home = tmp / "flwr-home"
    home.mkdir(exist_ok=True)
    base = dict(os.environ if env is None else env)
    base.update({"FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"})
    base.pop("FEDMIST_FAULT", None)
    cluster = LocalCluster(tmp, certs, free_port(), base, run_dir,
                           Path(data_dir).resolve() if data_dir is not None else None)
    try:
        cluster.start_superlink()
        for i in range(nodes):
            cluster.start_node(i, nodes, extra_env={"FEDMIST_FAULT": fault} if fault else None)
        cluster.wait_nodes()
    except BaseException:
        cluster.stop()
        raise
    return cluster
