"""End to end on real tiny runs: memorisation is detected, exchangeable data is not, shadows are cached."""

import json

import numpy as np
import pytest

import fedmist.audit.audit_dir
from fedmist.attacks import ATTACKS
from fedmist.audit.audit_dir import list_attacks, run_audit
from fedmist.errors import AuditError
from fedmist.audit.metrics import vulnerable_subset_size
from fedmist.audit.pipeline import audit_run

FAST = ["loss", "mentr", "lira_online", "lira_offline", "lira_online_fixed", "rmia"]


@pytest.fixture(scope="module")
def first_audit(memorizing_run, kit):
    trainer = kit.ShadowTrainer()
    with kit.one_thread():
        report = audit_run(memorizing_run, FAST, 8, trainer, seed=0, n_bootstrap=20, progress=False)
    return report, trainer


def _auc(report, attack):
    return report["attacks"][attack]["full"]["auc"]


def test_memorizing_model_is_caught(first_audit, memorizing_run):
    report, trainer = first_audit
    assert sorted(trainer.calls) == list(range(8))
    assert _auc(report, "loss") > 0.7
    assert _auc(report, "lira_online") > 0.6
    assert report["n_members"] == report["n_nonmembers"] == 200
    assert report["vulnerable_subset"]["size"] == vulnerable_subset_size(200) == 10
    # LiRA ranks the vulnerable members first, so it does better on them than on the whole set
    assert report["attacks"]["lira_online"]["vulnerable"]["auc"] >= _auc(report, "lira_online")
    run_dir = memorizing_run.path
    saved = json.loads((run_dir / "audit.json").read_text())
    assert saved["headline"]["attack"] in FAST and saved["audit"]["n_shadows"] == 8
    assert saved["audit"]["shadow_train_size"] == 200 and saved["audit"]["target_train_size"] == 200
    acc = saved["audit"]["shadow_accuracy"]  # memorising shadows: right on their own rows, none diverged
    assert len(acc["in"]) == len(acc["out"]) == 8 and min(acc["in"]) > max(acc["out"]) and acc["diverged"] == []
    assert "warnings" not in saved
    for name in ("audit.csv", "scores.npz", "roc.png", "roc_linear.png"):
        assert (run_dir / name).is_file()


def test_shadow_layout_on_disk(first_audit, memorizing_run):
    shadows = memorizing_run.path / "shadows"
    keep = np.load(shadows / "keep.npy")
    indices = np.load(shadows / "indices.npy")
    assert keep.shape == (8, 400) and (keep.sum(axis=0) == 4).all()
    assert np.load(shadows / "scores.npy").shape == (8, 400, 1)
    assert np.load(shadows / "target_scores.npy").shape == (1, 400, 1)
    assert np.load(shadows / "logits.npy").shape == (8, 400, 20)
    assert len(list((shadows / "models").glob("*.pt"))) == 8
    # the audited order says nothing about membership: members are spread through it
    with np.load(memorizing_run.path / "scores.npz") as z:
        assert np.array_equal(z["indices"], indices)
        is_member = z["is_member"]
    assert 0.3 < is_member[:200].mean() < 0.7
    members = set(memorizing_run.split["members"].tolist())
    assert np.array_equal(is_member, np.array([r in members for r in indices]))


def test_every_attack_runs_and_beats_chance_on_a_memorizing_model(first_audit, memorizing_run):
    _, trainer = first_audit
    before = len(trainer.calls)
    report = audit_run(memorizing_run, list(ATTACKS), 8, trainer, seed=0, n_bootstrap=5, progress=False)
    assert len(trainer.calls) == before  # all shadows came from the cache
    assert report["audit"]["shadows_trained_now"] == 0
    for name in ATTACKS:
        assert _auc(report, name) > 0.6, name


def test_cached_audit_is_reproducible(first_audit, memorizing_run):
    report, trainer = first_audit
    again = audit_run(memorizing_run, FAST, 8, trainer, seed=0, n_bootstrap=20, progress=False)
    assert again["attacks"] == report["attacks"]
    # the vulnerable subset can be fixed from another audit's rows (the paper fixes X_vul across defenses)
    with np.load(memorizing_run.path / "scores.npz") as z:
        rows = z["vulnerable"]
    fixed = audit_run(memorizing_run, ["loss"], 8, trainer, seed=0, n_bootstrap=0, progress=False,
                      vulnerable_rows=rows)
    assert fixed["vulnerable_subset"]["source"] == "given dataset rows"
    got, want = fixed["attacks"]["loss"]["vulnerable"], report["attacks"]["loss"]["vulnerable"]
    assert got["n_members"] == want["n_members"] == 10 and got["auc"] == want["auc"]


def test_exchangeable_members_give_chance(exchangeable_run, kit):
    report = audit_run(exchangeable_run, FAST, 8, kit.ShadowTrainer(), seed=0, n_bootstrap=0, progress=False)
    for name in FAST:
        assert abs(_auc(report, name) - 0.5) < 0.1, name


@pytest.fixture
def small_run(tmp_path, kit):
    return kit.make_run_dir(tmp_path / "small", kit.TinyConfig(n_rows=120, n_features=20, num_classes=4, train_size=60,
                                                                  epochs=50))


def test_run_audit_loads_the_run(small_run, kit, monkeypatch):
    monkeypatch.setattr(fedmist.audit.audit_dir, "load_run", kit.load_tiny_run)
    trainer = kit.ShadowTrainer()
    report = run_audit(small_run.path, ["loss", "entropy"], 0, trainer, seed=0, n_bootstrap=0, progress=False)
    assert trainer.calls == [] and not (small_run.path / "shadows").exists()
    assert report["vulnerable_subset"] is None and report["audit"]["n_shadows"] == 0
    assert json.loads((small_run.path / "audit.json").read_text())["audit"]["attacks"] == ["loss", "entropy"]


def test_stale_cache_and_rebuild(small_run, kit, monkeypatch):
    monkeypatch.setattr(fedmist.audit.audit_dir, "load_run", kit.load_tiny_run)
    trainer = kit.ShadowTrainer()
    run_audit(small_run.path, ["lira_online_fixed"], 4, trainer, seed=0, n_bootstrap=0, progress=False)
    assert sorted(trainer.calls) == [0, 1, 2, 3]
    with pytest.raises(AuditError, match="another recipe.*--rebuild-shadows"):
        run_audit(small_run.path, ["lira_online_fixed"], 4, trainer, seed=1, n_bootstrap=0, progress=False)
    cfg = json.loads((small_run.path / "config.json").read_text())
    (small_run.path / "config.json").write_text(json.dumps(dict(cfg, epochs=51)))  # an edited recipe
    with pytest.raises(AuditError, match="another recipe"):
        run_audit(small_run.path, ["lira_online_fixed"], 4, trainer, seed=0, n_bootstrap=0, progress=False)
    run_audit(small_run.path, ["lira_online_fixed"], 4, trainer, rebuild=True, seed=0, n_bootstrap=0,
              progress=False)
    assert len(trainer.calls) == 8


def test_user_errors(small_run, kit):
    trainer = kit.ShadowTrainer()
    with pytest.raises(AuditError, match="attack 'lira_online' needs shadow models"):
        audit_run(small_run, ["lira_online"], 0, trainer, n_bootstrap=0, progress=False)
    with pytest.raises(AuditError, match="even and >= 2"):
        audit_run(small_run, ["loss"], 3, trainer, n_bootstrap=0, progress=False)
    with pytest.raises(AuditError, match="lira_offline_fixed need >= 4 shadows"):
        audit_run(small_run, ["loss", "lira_offline_fixed"], 2, trainer, n_bootstrap=0, progress=False)
    with pytest.raises(AuditError, match="unknown attack"):
        audit_run(small_run, ["lossy"], 0, trainer, n_bootstrap=0, progress=False)
    assert trainer.calls == []


def test_list_attacks():
    table = list_attacks()
    assert table.row_count == len(ATTACKS)


def test_a_diverged_shadow_is_named_in_the_printed_report() -> None:
    from rich.console import Console

    from fedmist.audit.report import format_report

    report = {"fprs": [0.001], "n_members": 2, "n_nonmembers": 2, "attacks": {},
              "warnings": ["shadow(s) [3] diverged (accuracy on their own training rows 3.2% vs the shadows' median 99.0%)"]}
    console = Console(width=200, record=True)
    console.print(format_report(report))
    assert "WARNING: shadow(s) [3] diverged" in console.export_text()
