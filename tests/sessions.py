"""Run a command line in its own process session, so whatever it starts (Ray workers, Flower
processes) can be killed with it: on time-out, and once it has returned."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def run_in_session(argv: list[str], cwd: Path, env: dict[str, str], limit_s: float,
                   timeout_note: str) -> subprocess.CompletedProcess:
    """``argv`` to completion or ``limit_s`` seconds; on time-out the whole session is killed and
    ``timeout_note`` is appended to stderr. Anything left in the session afterwards is killed too."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n{timeout_note}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
