"""Who scores whom in the server threat."""

from __future__ import annotations

import numpy as np

from fedmist.audit.threats import assign_clients, parse_threat


def test_non_members_are_scored_by_clients_holding_their_class() -> None:
    labels = np.array([0, 0, 1, 1, 2, 0, 1, 2, 2])
    rows = np.arange(9)
    is_member = np.array([True, True, True, True, False, False, False, False, True])
    owner = {0: 0, 1: 0, 2: 1, 3: 1, 8: 2}  # client 0 holds class 0, client 1 class 1, client 2 class 2
    got = assign_clients(rows, is_member, owner, labels, seed=0)
    assert list(got[is_member]) == [0, 0, 1, 1, 2]
    assert got[5] == 0 and got[6] == 1 and got[4] == 2 and got[7] == 2


def test_parse_threat() -> None:
    assert parse_threat("server", 3) == ("server", -1)
    assert parse_threat(" client:2 ", 3) == ("client", 2)


def test_label_matched_audit_set_balances_every_class() -> None:
    from fedmist.audit.threats import label_matched_audit_set

    labels = np.array([0] * 10 + [1] * 10 + [2] * 10)
    members = np.array([0, 1, 2, 3, 4, 10])  # a skewed partition: five of class 0, one of class 1
    nonmembers = np.array([5, 6, 11, 12, 20, 21])
    a = label_matched_audit_set(members, nonmembers, labels, seed=0)
    for c in (0, 1, 2):
        m = labels[a.rows] == c
        assert (a.is_member & m).sum() == (~a.is_member & m).sum()
    assert a.is_member.sum() == 3 and set(a.rows[a.is_member]) <= set(members)
