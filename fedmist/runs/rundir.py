"""Run directories: create or resume, evaluate and checkpoint every epoch, write the results.

A run directory (DESIGN.md) holds ``config.json``, ``split.npz``, ``metrics.json``, ``model.pt``
and, while training, ``checkpoint.pt`` (written atomically after every epoch, so an interrupted
run loses at most one epoch and ``--resume`` continues it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedmist.config import RunConfig, training_differences
from fedmist.data.paths import resolve_data_dir
from fedmist.data.registry import PAPER_TRAIN_SIZE, base_name
from fedmist.data.split import Split, make_split
from fedmist.defenses import DefenseSpec, get_defense
from fedmist.engine.fl import n_floats, train_fl
from fedmist.engine.loop import train
from fedmist.engine.recording import check_budget
from fedmist.errors import RunDirError
from fedmist.runs.checks import check_config
from fedmist.training.best_epoch import best_validation_wanted, keep_best_epoch
from fedmist.training.evaluate import accuracy
from fedmist.training.jobs import EpochReport, Federation, State, aux_part, model_part
from fedmist.training.workspace import get_workspace, initial_weights

PHASES = ("local", "xdiff", "aggregate", "eval")


def prepare_config(cfg: RunConfig) -> RunConfig:
    """Apply what the defense fixes, make the data directory absolute (simulation workers may run
    elsewhere) and validate; raises ConfigError naming the first problem."""
    spec = get_defense(cfg.defense)
    if cfg.mode != "fl":  # in FL mode sgd is FedAvg over --clients clients
        spec.prepare(cfg)
    if cfg.mode == "fl" and cfg.rounds > 0:
        cfg.epochs = cfg.rounds  # one epoch report per FL round
    if not cfg.dataset.startswith("synthetic"):
        cfg.data_dir = str(resolve_data_dir(cfg.data_dir or None))
    check_config(cfg, spec)
    if cfg.mode == "fl" and cfg.record_updates:  # refuse before anything is trained or written
        check_budget(n_floats(initial_weights(cfg)), cfg.clients, cfg.epochs, spec.xdiff, cfg.max_record_gb)
    return cfg


def default_out(cfg: RunConfig) -> Path:
    """``runs/<dataset>-<defense>-c<C>-s<seed>``: deterministic, so a rerun finds (and refuses to
    overwrite, or resumes) the same directory."""
    return Path("runs") / f"{cfg.dataset.replace(':', '-')}-{cfg.defense}-c{cfg.clients}-s{cfg.seed}"


def default_train_size(cfg: RunConfig, n_rows: int) -> int:
    """The paper's target-set size, or half the data for datasets it does not cover."""
    if cfg.train_size:
        return cfg.train_size
    return PAPER_TRAIN_SIZE.get(base_name(cfg.dataset), n_rows // 2)


@dataclass
class Run:
    """One training run in progress: where it writes and what it has done so far."""

    cfg: RunConfig
    spec: DefenseSpec  # the defense, looked up once here and handed to the engine
    path: Path | None  # None: in-memory only (e.g. a shadow model whose weights a callback keeps)
    split: Split
    state: State
    start_epoch: int = 1
    history: list[dict] = field(default_factory=list)
    phase_time: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    wall_before: float = 0.0  # seconds spent in earlier (interrupted) sessions of this run
    on_report: Callable[["Run", dict], None] | None = None
    on_finish: Callable[["Run"], None] | None = None  # e.g. save a shadow model's weights
    started: float = field(default_factory=time.perf_counter)
    startup_time: float = 0.0  # engine start-up (Ray, client processes) before the first epoch
    extra_summary: dict = field(default_factory=dict)  # merged into metrics.json's summary (FL mode: "fl")
    _epoch_start: float = field(default_factory=time.perf_counter)

    def begin(self) -> None:
        """Call when the clients are connected: start-up cost is reported apart from training."""
        now = time.perf_counter()
        self.startup_time += now - self.started
        self.started = self._epoch_start = now

    # --- per epoch ------------------------------------------------------------------------------
    def on_epoch(self, state: State, rep: EpochReport) -> None:
        self.phase_time["local"] += rep.time_local
        self.phase_time["xdiff"] += rep.time_xdiff
        self.phase_time["aggregate"] += rep.time_aggregate
        row = {"epoch": rep.epoch, "lr": rep.lr, "local_loss": rep.local_loss, "xdiff_loss": rep.xdiff_loss,
               "time_local": rep.time_local, "time_xdiff": rep.time_xdiff, **rep.extra}
        # epoch_time is the epoch's training rounds only: the evaluation and the checkpoint are
        # timed apart, so an evaluated epoch (always the last) does not look slower than the rest.
        t0 = time.perf_counter()
        row["epoch_time"] = t0 - self._epoch_start
        if rep.epoch % self.cfg.eval_every == 0 or rep.epoch == self.last_epoch:
            row.update(self.evaluate(state))
            row["eval_time"] = time.perf_counter() - t0
            self.phase_time["eval"] += row["eval_time"]
        row["wall_time"] = self.wall_time()
        self.history.append(row)
        self.state = state
        if self.path is not None:
            self.checkpoint(rep.epoch)
        if self.on_report is not None:
            self.on_report(self, row)
        self._epoch_start = time.perf_counter()

    @property
    def last_epoch(self) -> int:
        """The last epoch's number: ``cfg.epochs``, or more for a defense with phases of its own."""
        return self.spec.last_epoch(self.cfg)

    def evaluate(self, state: State) -> dict[str, float]:
        ws = get_workspace(self.cfg)
        ws.model.load_state_dict(model_part(state))
        return {"train_acc": accuracy(ws.model, ws.x, ws.y, self.split.members, ws.device),
                "test_acc": accuracy(ws.model, ws.x, ws.y, self.split.test, ws.device)}

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.started

    def checkpoint(self, epoch: int) -> None:
        assert self.path is not None
        tmp = self.path / "checkpoint.pt.tmp"
        torch.save({"epoch": epoch, "state": self.state, "history": self.history,
                    "phase_time": self.phase_time, "wall_time": self.wall_time()}, tmp)
        os.replace(tmp, self.path / "checkpoint.pt")

    # --- end ------------------------------------------------------------------------------------
    def summary(self) -> dict:
        last = next((h for h in reversed(self.history) if "test_acc" in h), {})
        train_acc, test_acc = last.get("train_acc", float("nan")), last.get("test_acc", float("nan"))
        return {"train_acc": train_acc, "test_acc": test_acc, "gap": train_acc - test_acc,
                "epochs": self.cfg.epochs, "wall_time": self.wall_time(),
                "median_epoch_time": float(np.median([h["epoch_time"] for h in self.history])) if self.history else 0.0,
                "startup_time": self.startup_time,
                "phase_time": self.phase_time, "synthetic": get_workspace(self.cfg).dataset.synthetic,
                "members": int(len(self.split.members)), "nonmembers": int(len(self.split.nonmembers)),
                "test": int(len(self.split.test)), "test_is_nonmembers": self.split.test_is_nonmembers,
                **self.extra_summary}

    def finish(self) -> dict:
        spec = self.spec
        extras = spec.after_training(self) if spec.after_training is not None else {}
        summary = self.summary()
        if extras:
            summary["defense"] = extras
        if self.path is not None:
            torch.save(model_part(self.state), self.path / "model.pt")
            aux = aux_part(self.state)
            if aux:
                torch.save(aux, self.path / "defense.pt")
            write_json(self.path / "metrics.json", {"summary": summary, "history": self.history})
            (self.path / "checkpoint.pt").unlink(missing_ok=True)
        if self.on_finish is not None:
            self.on_finish(self)
        return summary


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))
    os.replace(tmp, path)


def split_for(cfg: RunConfig) -> Split:
    """The seeded split of a config: members, reference (if the defense wants one), non-members, test."""
    n = len(get_workspace(cfg).dataset)
    train_size = default_train_size(cfg, n)
    split = make_split(n, train_size, cfg.seed, reference=get_defense(cfg.defense).reference_size(cfg, train_size))
    if cfg.validation_fraction > 0:  # tuning: evaluate on held-out members, never on audit or test rows
        k = max(1, int(round(cfg.validation_fraction * len(split.members))))
        end = len(split.members) - cfg.validation_fold * k  # fold 0: the last k members, fold 1 the k before, ...
        held = np.zeros(len(split.members), bool)
        held[max(0, end - k):end] = True
        split = Split(split.members[~held], split.nonmembers, split.members[held], False, split.reference)
    return split


def _override(split: Split, members: np.ndarray | None, reference: np.ndarray | None) -> Split:
    if members is None and reference is None:
        return split
    return Split(split.members if members is None else np.asarray(members, dtype=np.int64), split.nonmembers,
                 split.test, split.test_is_nonmembers,
                 split.reference if reference is None else np.asarray(reference, dtype=np.int64))


def open_run(cfg: RunConfig, path: Path | None, *, resume: bool = False, force: bool = False,
             members: np.ndarray | None = None, reference: np.ndarray | None = None) -> Run:
    """Create a run directory (or an in-memory run when ``path`` is None), or reopen one to resume.

    ``members`` overrides the seeded split's training rows (shadow models train on given halves of
    the audit pool); ``reference`` its reference rows (shadows use the target's, outside the pool).
    """
    spec = get_defense(cfg.defense)
    if path is None:
        return Run(cfg, spec, None, _override(split_for(cfg), members, reference), spec.initial_state(cfg))
    if path.exists() and resume:
        return _resume(cfg, path)
    # A directory holding only a shadow cache (kept while the target is retrained) is not a run.
    if path.exists() and any(p.name != "shadows" for p in path.iterdir()):
        if not force:
            raise RunDirError(f"run directory {path} already exists; use --resume to continue it or --force to overwrite")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    split = _override(split_for(cfg), members, reference)
    split.save(path / "split.npz")
    (path / "config.json").write_text(cfg.to_json())
    return Run(cfg, spec, path, split, spec.initial_state(cfg))


def train_run(run: Run, federation: Federation) -> None:
    """Train an opened run to completion over ``federation``: FL rounds, the defense's own procedure
    (handed the engine's round loop), or the engine's MIST loop."""
    run.begin()
    cfg, spec = run.cfg, run.spec
    if cfg.mode == "fl":
        run.state = train_fl(run, spec, federation)
    elif spec.train_loop is not None:
        def rounds(fed: Federation, state: State, members: np.ndarray, start: int, on_epoch) -> State:
            return train(cfg, spec, fed, state, members, start, on_epoch)
        run.state = spec.train_loop(run, federation, rounds)
    else:
        def rounds_with_reference(fed: Federation, state: State, members: np.ndarray, start: int, on_epoch) -> State:
            return train(cfg, spec, fed, state, members, start, on_epoch, run.split.reference)
        if best_validation_wanted(cfg, spec.parse_params(cfg.params)):
            run.state = keep_best_epoch(run, federation, rounds_with_reference)
        else:
            run.state = rounds_with_reference(federation, run.state, run.split.members, run.start_epoch, run.on_epoch)
    run.finish()


def read_config(path: Path) -> dict | None:
    """A run directory's ``config.json`` as a dict, or None when there is none."""
    cfg_file = path / "config.json"
    return json.loads(cfg_file.read_text()) if cfg_file.is_file() else None


def _resume(cfg: RunConfig, path: Path) -> Run:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise RunDirError(f"cannot resume {path}: no config.json")
    differ = training_differences(json.loads(cfg_file.read_text()), cfg)
    if differ:
        raise RunDirError(f"cannot resume {path}: its config differs ({', '.join(differ)})")
    split = Split.load(path / "split.npz")
    ckpt_file = path / "checkpoint.pt"
    if not ckpt_file.is_file():
        if (path / "model.pt").is_file():
            raise RunDirError(f"run {path} is already complete (model.pt exists); nothing to resume")
        return Run(cfg, get_defense(cfg.defense), path, split, get_defense(cfg.defense).initial_state(cfg))
    ckpt = torch.load(ckpt_file, weights_only=False)
    return Run(cfg, get_defense(cfg.defense), path, split, ckpt["state"], start_epoch=ckpt["epoch"] + 1, history=ckpt["history"],
               phase_time=ckpt["phase_time"], wall_before=ckpt["wall_time"])
