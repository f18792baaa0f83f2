"""``fedmist deploy run``: submit a run to a SuperLink with ``flwr run`` and follow its log.

The whole RunConfig travels as JSON (run-config key ``config-json``), so the recipe is read here
and need not exist on the SuperLink machine. The ServerApp prints one line per epoch and, at the
end, a ``FEDMIST-SUMMARY {json}`` line that becomes the same summary table ``fedmist simulate``
prints. The run directory is written by the ServerApp, i.e. on the SuperLink machine (``out``
relative to the directory ``fedmist deploy superlink`` was started in).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from fedmist.config import RunConfig
from fedmist.deploy.connection import CONNECTION, Link, flwr_exe, flwr_home
from fedmist.errors import ConfigError, FederationError

SUMMARY_MARK = "FEDMIST-SUMMARY "  # kept equal to server.app.SUMMARY_MARK (no Flower import here)


def app_dir() -> Path:
    """The Flower App to submit: this checkout's root (pyproject.toml with [tool.flwr.app])."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app]" not in pyproject.read_text():
        raise ConfigError(f"no Flower App at {root}; run fedmist deploy run from a source checkout of fedmist")
    return root


def run_config_toml(cfg: RunConfig, out: str, resume: bool, force: bool) -> str:
    return (f"config-json = {json.dumps(cfg.to_json())}\nout = {json.dumps(out)}\n"
            f"resume = {str(resume).lower()}\nforce = {str(force).lower()}\n")


def submit(link: Link, cfg: RunConfig, out: str, *, resume: bool = False, force: bool = False,
           echo=print) -> dict:
    """Run ``cfg`` on the SuperLink's federation, echo its log, return ``{"run_dir", "summary"}``."""
    cfg.validate()
    root = app_dir()
    result: dict | None = None
    tail: list[str] = []
    with flwr_home(link) as env, tempfile.TemporaryDirectory(prefix="fedmist-run-") as tmp:
        rc = Path(tmp) / "run-config.toml"
        rc.write_text(run_config_toml(cfg, out, resume, force))
        env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
        cmd = [flwr_exe(), "run", str(root), CONNECTION, "--run-config", str(rc), "--stream"]
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                if SUMMARY_MARK in line:
                    result = json.loads(line.split(SUMMARY_MARK, 1)[1])
                    continue
                tail = (tail + [line])[-20:]
                echo(line)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
    if result is None:
        last = next((t for t in reversed(tail) if t.strip(" \t│╭╰─╮╯")), "no output")
        raise FederationError(f"the deployed run did not finish (flwr run exit code {proc.returncode}): {last.strip()}")
    return result
