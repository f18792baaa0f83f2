"""A study's runs and audits as ``fedmist`` subprocesses, each done once and reused only when it
was made with the config the study asks for now.

``fedmist compare``, ``compare --mode fl`` and ``fedmist tune`` all train through ``train_once`` and
audit through ``audit_is_current``: every number in their tables can be reproduced by hand from its
log line, an interrupted run resumes, and a directory made with another config is never read as
if it answered the new question (the command refuses, naming the fields, unless ``--force``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedmist.config import RunConfig, display_name, training_differences
from fedmist.errors import FedmistError, RunDirError
from fedmist.runs.rundir import read_config


class CompareError(FedmistError):
    """A cell of a study failed; its log says why."""


def as_set_value(value: Any) -> str:
    """A config value as ``--set KEY=VALUE`` text that ``RunConfig.from_dict`` reads back.

    >>> as_set_value([200, 250]), as_set_value(True), as_set_value(0.5)
    ('200,250', 'true', '0.5')
    """
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def simulate_args(sets: Mapping[str, Any], recipe: Path | None, run_dir: Path) -> list[str]:
    args = ["simulate", *(["--recipe", str(recipe)] if recipe is not None else [])]
    for k, v in sets.items():
        args += ["--set", f"{display_name(k)}={as_set_value(v)}"]
    return args + ["--out", str(run_dir)]


def train_once(cfg: RunConfig, sets: Mapping[str, Any], recipe: Path | None, run_dir: Path, log: Path,
               ray_address: str | None = None, force: bool = False) -> dict | None:
    """Train ``run_dir`` as ``fedmist simulate --recipe RECIPE --set ...`` (which must build ``cfg``),
    unless it already holds that run: finished -> reused (None), unfinished -> resumed. A run of
    another config is a RunDirError naming the differing fields, or is replaced when ``force``.
    Returns the cost of the training it did: peak memory (MB) and process seconds."""
    differ = check_reuse(cfg, run_dir, force)
    args = simulate_args(sets, recipe, run_dir)
    if (run_dir / "config.json").is_file():  # check_reuse has compared it with cfg
        if differ:
            args.append("--force")
        elif (run_dir / "model.pt").is_file():
            return None
        else:
            args = ["simulate", "--out", str(run_dir), "--resume"]
    t0 = time.perf_counter()
    peak = run_fedmist(args, log, ray_address)
    return {"peak_rss_mb": peak, "process_seconds": time.perf_counter() - t0}


def check_reuse(cfg: RunConfig, run_dir: Path, force: bool = False) -> list[str]:
    """The training fields where ``run_dir``'s saved run differs from ``cfg`` (empty: none, or no run
    there); a difference is a RunDirError unless ``force``. Studies call this for every cell before
    training any, so a stale directory stops them at once."""
    saved = read_config(run_dir)
    differ = [] if saved is None else training_differences(saved, cfg)
    if differ and not force:
        raise RunDirError(f"{run_dir} holds a run of another config ({', '.join(differ)}); "
                          "rerun with --force to replace it, or use another --out")
    return differ


def audit_is_current(audit_file: Path, model_file: Path, wanted: Mapping[str, Any], attacks: Sequence[str],
                     force: bool = False) -> bool:
    """True when ``audit_file`` audits the current ``model_file`` with the ``wanted`` settings
    (``n_shadows``, ``seed``, ``bootstrap``) and at least ``attacks``; False when it must be made
    (none yet, an older model, missing attacks). An audit made with other settings is an error
    naming them, unless ``force``."""
    if not audit_file.is_file():
        return False
    if model_file.is_file() and audit_file.stat().st_mtime < model_file.stat().st_mtime:
        return False  # the model was retrained since
    audit = json.loads(audit_file.read_text()).get("audit", {})
    differ = [f"{k}: saved {audit.get(k)!r} vs now {v!r}" for k, v in wanted.items()
              if k in audit and audit[k] != v]
    if differ and not force:
        raise RunDirError(f"{audit_file} was made with other audit settings ({', '.join(differ)}); "
                          "rerun with --force to audit again, or use another --out")
    return not differ and set(attacks) <= set(audit.get("attacks", []))


def run_fedmist(args: Sequence[str], log: Path, ray_address: str | None = None,
                shadow_workers: int | None = None) -> float:
    """Run ``python -m fedmist ARGS`` with its output appended to ``log``; return the peak resident
    memory (MB) of its whole process tree (Ray's workers included) sampled every 0.2 s."""
    import psutil

    env = dict(os.environ)
    if shadow_workers is not None:
        env.setdefault("FEDMIST_SHADOW_WORKERS", str(shadow_workers))
    if ray_address:
        env["FEDMIST_RAY_ADDRESS"] = ray_address
    env.setdefault("COLUMNS", "120")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ fedmist {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.Popen([sys.executable, "-m", "fedmist", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env=env)
        peak = 0.0
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            peak = max(peak, _tree_rss_mb(root))
            time.sleep(0.2)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise CompareError(f"`fedmist {' '.join(args[:1])}` failed (exit {proc.returncode}); see {log}: "
                           + " | ".join(tail))
    return peak


def _tree_rss_mb(root: Any) -> float:
    import psutil

    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20
