"""Registry rules: one name per attack, declared needs checked before anything runs."""

import dataclasses

import numpy as np
import pytest
import torch

from fedmist.attacks import ATTACKS, NEEDS, AttackContext, AttackSpec, register_attack, run_attacks
from fedmist.errors import AuditError
from fedmist.errors import FedmistError


def _ctx(**kw) -> AttackContext:
    rng = np.random.default_rng(0)
    return AttackContext(logits=rng.normal(size=(6, 3)), labels=np.array([0, 1, 2, 0, 1, 2]), **kw)


@pytest.fixture
def scratch_attack():
    """Register attacks for one test and remove them afterwards."""
    added = []

    def add(spec: AttackSpec) -> AttackSpec:
        added.append(spec.name)
        return register_attack(spec)
    yield add
    for name in added:
        ATTACKS.pop(name, None)


def test_every_attack_is_registered_with_a_one_line_description():
    expected = {"loss", "confidence", "entropy", "mentr", "class_nn", "lira_online", "lira_offline",
                "lira_online_fixed", "lira_offline_fixed", "rmia", "rmia_offline", "canary",
                "random_perturbation", "label_only", "whitebox"}
    assert expected <= set(ATTACKS)
    for spec in ATTACKS.values():
        assert spec.needs <= NEEDS and spec.description and "\n" not in spec.description


def test_duplicate_names_are_refused(scratch_attack):
    spec = AttackSpec("scratch_dup", "test", frozenset({"outputs"}), lambda ctx: np.zeros(ctx.n))
    scratch_attack(spec)
    with pytest.raises(ValueError, match="already registered"):
        register_attack(spec)
    with pytest.raises(ValueError, match="already registered"):
        register_attack(dataclasses.replace(ATTACKS["loss"]))


def test_unknown_need_is_refused():
    with pytest.raises(ValueError, match="unknown needs"):
        AttackSpec("x", "x", frozenset({"telepathy"}), lambda ctx: np.zeros(ctx.n))


def test_membership_is_not_part_of_the_context():
    names = {f.name for f in dataclasses.fields(AttackContext)}
    assert not any("member" in n for n in names)


def test_missing_inputs_name_the_attack_and_the_input():
    ctx = _ctx()
    with pytest.raises(AuditError, match=r"attack 'lira_online' needs shadow models \(audit with --shadows"):
        run_attacks(["loss", "lira_online"], ctx)
    with pytest.raises(AuditError, match="attack 'label_only' needs query access to the target model"):
        run_attacks(["label_only"], ctx)
    keep = np.tile(np.array([[True], [False]]), (1, 6))
    with_shadow_scores = _ctx(keep=keep, shadow_scores=np.zeros((2, 6, 1)))
    with pytest.raises(AuditError, match="attack 'class_nn' needs shadow-model logits"):
        run_attacks(["class_nn"], with_shadow_scores)
    full = _ctx(keep=keep, shadow_logits=np.zeros((2, 6, 3)), model=torch.nn.Linear(3, 3), x=torch.zeros(6, 3))
    with pytest.raises(AuditError, match="attack 'canary' needs the shadow models themselves"):
        run_attacks(["canary"], full)
    assert issubclass(AuditError, FedmistError)


def test_unknown_attack_lists_the_known_ones():
    with pytest.raises(AuditError, match="unknown attack 'nope'; known: .*lira_online"):
        run_attacks(["nope"], _ctx())


def test_scores_are_checked(scratch_attack):
    scratch_attack(AttackSpec("scratch_nan", "t", frozenset({"outputs"}), lambda ctx: np.full(ctx.n, np.nan)))
    scratch_attack(AttackSpec("scratch_shape", "t", frozenset({"outputs"}), lambda ctx: np.zeros(ctx.n + 1)))
    with pytest.raises(AuditError, match="scratch_nan.*6 non-finite"):
        run_attacks(["scratch_nan"], _ctx())
    with pytest.raises(RuntimeError, match="scratch_shape"):
        run_attacks(["scratch_shape"], _ctx())


def test_run_attacks_reports_each_attack():
    seen = []
    out = run_attacks(["loss", "entropy"], _ctx(), on_done=lambda name, sec: seen.append(name))
    assert list(out) == ["loss", "entropy"] == seen
    assert all(v.shape == (6,) and v.dtype == np.float64 for v in out.values())


def test_context_validates_shapes():
    with pytest.raises(AuditError, match="labels must have shape"):
        AttackContext(logits=np.zeros((3, 2)), labels=np.zeros(4, dtype=np.int64))
    with pytest.raises(AuditError, match="without keep"):
        AttackContext(logits=np.zeros((3, 2)), labels=np.zeros(3, dtype=np.int64), shadow_logits=np.zeros((2, 3, 2)))
    with pytest.raises(AuditError, match="shadow_logits must have shape"):
        AttackContext(logits=np.zeros((3, 2)), labels=np.zeros(3, dtype=np.int64),
                      keep=np.ones((4, 3), dtype=bool), shadow_logits=np.zeros((2, 3, 2)))
    with pytest.raises(AuditError, match="keep must be a bool"):
        AttackContext(logits=np.zeros((3, 2)), labels=np.zeros(3, dtype=np.int64), keep=np.ones((4, 3)))
