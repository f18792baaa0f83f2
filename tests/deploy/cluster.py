"""Real Flower processes on 127.0.0.1 for the deployment tests: a SuperLink started with
``fedmist deploy superlink`` and SuperNodes with ``fedmist deploy supernode``, each in its own
process group, every descendant stopped at the end (Flower detaches some of its children)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

FEDMIST = [sys.executable, "-m", "fedmist"]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    popen: subprocess.Popen
    log: Path
    family: set[int] = field(default_factory=set)  # pids seen below it (detached ones included)

    def text(self) -> str:
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


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    fh = log.open("w")
    popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    fh.close()
    return Proc(popen, log)


def wait_for(proc: Proc, text: str, timeout: float) -> None:
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
class Cluster:
    """A SuperLink and its SuperNodes on 127.0.0.1 with TLS and node authentication."""

    tmp: Path
    certs: Path
    port: int
    env: dict[str, str]
    superlink: Proc | None = None
    nodes: dict[int, Proc] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_superlink(self) -> None:
        self.superlink = start([*FEDMIST, "deploy", "superlink", "--certs", str(self.certs), "--host", "127.0.0.1",
                                "--port", str(self.port)], self.tmp / "superlink.log", self.env)
        wait_for(self.superlink, "SuperLink ready", 180)

    def start_node(self, i: int, n: int, key: Path | None = None, extra_env: dict[str, str] | None = None,
                   wait_registered: float = 60) -> Proc:
        args = [*FEDMIST, "deploy", "supernode", "--superlink", self.address, "--partition", str(i),
                "--num-partitions", str(n), "--certs", str(self.certs), "--port", str(free_port()),
                "--wait-registered", str(wait_registered)]
        if key is not None:
            args += ["--key", str(key)]
        proc = start(args, self.tmp / f"supernode-{i}{'-extra' if key else ''}.log", {**self.env, **(extra_env or {})})
        if key is None:
            self.nodes[i] = proc
        return proc

    def wait_nodes(self, timeout: float = 180) -> None:
        for proc in self.nodes.values():
            wait_for(proc, "SuperNode ID", timeout)

    def stop(self) -> None:
        for proc in self.nodes.values():
            proc.kill()
        if self.superlink is not None:
            self.superlink.kill()


def make_cluster(tmp: Path, nodes: int, fault: str = "") -> Cluster:
    """Certificates for ``nodes`` SuperNodes, a running SuperLink and the SuperNodes (connected).
    ``fault``: FEDMIST_FAULT for the SuperNodes (fedmist.flower.faults)."""
    certs = tmp / "certs"
    subprocess.run([*FEDMIST, "deploy", "certs", "--out", str(certs), "--hosts", "localhost", "--nodes", str(nodes)],
                   cwd=ROOT, check=True, capture_output=True)
    home = tmp / "flwr-home"
    home.mkdir()
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    env.pop("FEDMIST_FAULT", None)
    cluster = Cluster(tmp, certs, free_port(), env)
    try:
        cluster.start_superlink()
        for i in range(nodes):
            cluster.start_node(i, nodes, extra_env={"FEDMIST_FAULT": fault} if fault else None)
        cluster.wait_nodes()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def deploy_run(cluster: Cluster, out: Path, sets: list[str], *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    args = [*FEDMIST, "deploy", "run", "--superlink", cluster.address, "--certs", str(cluster.certs),
            "--out", str(out), *[a for s in sets for a in ("--set", s)], *extra]
    proc = subprocess.Popen(args, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, stdout, "")
