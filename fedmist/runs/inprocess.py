"""A federation without Flower: every job runs in this process, one after another.

The reference for tests (Flower must give the same weights) and for the overhead benchmark. Like
the ClientApp, it looks the defense up and hands it to the engine's client steps.
"""

from __future__ import annotations

from fedmist.config import RunConfig
from fedmist.defenses import get_defense
from fedmist.engine.client_steps import run_local, run_predict, run_xdiff
from fedmist.training.jobs import LocalJob, LocalResult, PredictJob, PredictResult, XdiffJob, XdiffResult
from fedmist.training.workspace import get_workspace


class InProcessFederation:
    def local(self, cfg: RunConfig, jobs: list[LocalJob]) -> list[LocalResult]:
        ws = get_workspace(cfg)
        spec = get_defense(cfg.defense)  # looked up here, as the ClientApp does
        return [run_local(ws, cfg, job, spec) for job in jobs]

    def xdiff(self, cfg: RunConfig, jobs: list[XdiffJob]) -> list[XdiffResult]:
        ws = get_workspace(cfg)
        return [run_xdiff(ws, cfg, job) for job in jobs]

    def predict(self, cfg: RunConfig, jobs: list[PredictJob]) -> list[PredictResult]:
        ws = get_workspace(cfg)
        return [run_predict(ws, cfg, job) for job in jobs]
