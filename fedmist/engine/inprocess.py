"""A federation without Flower: every job runs in this process, one after another.

The reference for tests (Flower must give the same weights) and for the overhead benchmark.
"""

from __future__ import annotations

from fedmist.config import RunConfig
from fedmist.engine.client_steps import run_local, run_predict, run_xdiff
from fedmist.engine.jobs import LocalJob, LocalResult, PredictJob, PredictResult, XdiffJob, XdiffResult
from fedmist.engine.workspace import get_workspace


class InProcessFederation:
    def local(self, cfg: RunConfig, jobs: list[LocalJob]) -> list[LocalResult]:
        ws = get_workspace(cfg)
        return [run_local(ws, cfg, job) for job in jobs]

    def xdiff(self, cfg: RunConfig, jobs: list[XdiffJob]) -> list[XdiffResult]:
        ws = get_workspace(cfg)
        return [run_xdiff(ws, cfg, job) for job in jobs]

    def predict(self, cfg: RunConfig, jobs: list[PredictJob]) -> list[PredictResult]:
        ws = get_workspace(cfg)
        return [run_predict(ws, cfg, job) for job in jobs]
