"""Recorded updates: what is stored comes back exactly; the size is estimated and capped."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from fedmist.runs.inprocess import InProcessFederation
from fedmist.errors import ConfigError
from fedmist.engine.recording import Recorder, estimate_bytes, load_round, recorded_rounds
from fedmist.runs.rundir import open_run, prepare_config, train_run


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(7, 5, generator=g), "b": torch.randn(5, generator=g), "n": torch.tensor(3)}


def test_round_trip_is_exact(tmp_path) -> None:
    rec = Recorder(tmp_path / "updates")
    start, end = _state(0), _state(9)
    ups = {0: _state(1), 2: _state(2)}
    ph1 = {0: _state(3), 2: _state(4)}
    rec.save_round(1, start, ups, {0: 0.25, 2: 0.75}, ph1)
    rec.save_final(end)
    assert recorded_rounds(tmp_path / "updates") == [1]
    got = load_round(tmp_path / "updates", 1)
    for k in ("w", "b"):
        assert got.start[k].dtype == np.float32 and np.array_equal(got.start[k], start[k].numpy())
        assert np.array_equal(got.end[k], end[k].numpy())
        for c in (0, 2):
            stored = (ups[c][k].double() - start[k].double()).numpy().astype(np.float16)
            assert got.uploads[c][k].dtype == np.float16 and np.array_equal(got.uploads[c][k], stored)
            assert np.array_equal(got.phase1[c][k], (ph1[c][k].double() - start[k].double()).numpy().astype(np.float16))
            # the reconstruction start + delta is the upload up to float16 rounding of the delta
            recon = got.start[k] + got.uploads[c][k].astype(np.float32)
            np.testing.assert_allclose(recon, ups[c][k].numpy(), atol=4e-3, rtol=0)
    assert got.uploads[0]["n"] == 3 and got.weights == {0: 0.25, 2: 0.75}
    assert json.loads((tmp_path / "updates" / "index.json").read_text())["rounds"] == [1]


def test_a_run_records_every_round_and_says_the_size(fl_cfg, tmp_path) -> None:
    cfg = prepare_config(dataclasses.replace(fl_cfg, record_updates=True))
    run = open_run(cfg, tmp_path / "run")
    train_run(run, InProcessFederation())
    upd = tmp_path / "run" / "updates"
    assert recorded_rounds(upd) == [1, 2]
    r1, r2 = load_round(upd, 1), load_round(upd, 2)
    for k in r1.end:  # round 1's end is round 2's start; round 2's end is the final model
        assert np.array_equal(r1.end[k], r2.start[k])
    final = torch.load(tmp_path / "run" / "model.pt")
    for k, v in final.items():
        assert np.array_equal(r2.end[k], v.numpy())
    # FedAvg: the new global model is the weighted mean of the uploads (float16 deltas: ~1e-3)
    for k in r1.start:
        avg = r1.start[k] + sum(w * r1.uploads[c][k].astype(np.float64) for c, w in r1.weights.items())
        np.testing.assert_allclose(avg, r1.end[k], atol=2e-3)
    fl = json.loads((tmp_path / "run" / "metrics.json").read_text())["summary"]["fl"]
    assert fl["recording"]["bytes"] > 0 and fl["recording"]["bytes"] == sum(p.stat().st_size for p in upd.glob("*.npz"))
    assert fl["recording"]["estimated_uncompressed_bytes"] == estimate_bytes(
        sum(v.numel() for v in final.values()), 3, 2, phase1=False)


def test_refuses_to_start_when_the_recording_would_be_too_big(fl_cfg, tmp_path) -> None:
    cfg = dataclasses.replace(fl_cfg, record_updates=True, max_record_gb=1e-6)
    with pytest.raises(ConfigError, match="max-record-gb"):
        prepare_config(cfg)


def test_runs_saved_before_the_fl_fields_existed_still_resume(tmp_path) -> None:
    from fedmist.config import RunConfig
    from fedmist.engine.loop import run_epoch

    cfg = prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", clients=3, epochs=2,
                                   batch_size=20, lam=5.0, train_size=120, seed=7))
    run = open_run(cfg, tmp_path / "old")
    state, rep = run_epoch(cfg, run.spec, InProcessFederation(), run.state, run.split.members, 1)
    run.on_epoch(state, rep)
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    fl_fields = ("partition", "rounds", "local_epochs", "record_updates", "max_record_gb", "fl_dp_noise",
                 "fl_dp_clip", "fl_dp_delta", "active_attack", "active_targets", "active_lr", "active_steps")
    (tmp_path / "old" / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in fl_fields}))
    again = open_run(cfg, tmp_path / "old", resume=True)
    assert again.start_epoch == 2
