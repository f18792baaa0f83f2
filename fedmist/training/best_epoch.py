"""Best-validation model selection: release the epoch that scores best on held-out rows.

HAMP's artefact trains every Location model this way (it saves ``*_best`` whenever validation
accuracy improves, strict ``>``, and evaluates that checkpoint). fedmist scores each epoch on the
run's reference rows, a share of the training budget (``reference_size``), never on audit or test
rows, so the selection cannot peek at what the attacks or the test accuracy use.
"""

from __future__ import annotations

from typing import Any

from fedmist.training.evaluate import accuracy
from fedmist.training.jobs import EpochReport, Federation, Rounds, State, TrainingRun, model_part
from fedmist.training.workspace import get_workspace


def best_validation_wanted(cfg: Any, params: Any) -> bool:
    """The run-wide ``best_validation``, or a defense's own ``params.best_validation`` (HAMP)."""
    return bool(cfg.best_validation or getattr(params, "best_validation", False))


def keep_best_epoch(run: TrainingRun, federation: Federation, rounds: Rounds) -> State:
    """The engine's rounds over the members, each epoch's model scored on the reference rows; the
    best (the first of equals) is what the last epoch reports (``val_acc`` every epoch,
    ``best_epoch`` at the end) and what the run releases. A resumed run tracks the best from the
    resumed epoch on (the earlier best is not in the checkpoint)."""
    cfg, reference = run.cfg, run.split.reference
    best: dict = {"acc": -1.0, "epoch": 0, "state": None}

    def report(state: State, rep: EpochReport) -> None:
        ws = get_workspace(cfg)
        ws.model.load_state_dict(model_part(state))
        acc = accuracy(ws.model, ws.x, ws.y, reference, ws.device)
        if acc > best["acc"]:
            best.update(acc=acc, epoch=rep.epoch, state={k: v.detach().clone() for k, v in state.items()})
        rep.extra["val_acc"] = acc
        if rep.epoch == cfg.epochs:
            rep.extra["best_epoch"] = best["epoch"]
            state = best["state"]
        run.on_epoch(state, rep)

    final = rounds(federation, run.state, run.split.members, run.start_epoch, report)
    return best["state"] if best["state"] is not None else final
