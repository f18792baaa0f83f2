"""``fedmist attack RUN --threat server|client:K``: insider audits of a recorded FL run.

Threats (Hu et al.'s survey §5.2; the outsider is the ordinary ``fedmist attack`` audit):

- ``server`` (passive, honest-but-curious): sees every client's upload each round. Victims: the
  union of all clients' partitions, each member attacked with *its owner's* updates; every
  held-out non-member of class y is attacked with the updates of a client drawn in proportion to
  the audited members of class y it owns (``assign_clients``), so members and non-members are
  scored the same way and label skew alone does not separate them.
- ``client:K`` (passive participant): sees the global model θ_R of every round and its own
  upload θ_K. With FedAvg weights w, the others' aggregate is (θ_R − w_K θ_K) / (1 − w_K)
  (the issue's m·θ − θ_own for equal weights; we assume K knows its weight n_K / n). Victims:
  the union of the *other* clients' partitions vs the held-out non-members.
  Two more reports when they apply:
  * MIST-in-FL (private-data mode) forwards every peer's phase-1 weights to K: attacking peer
    (K+1) mod C's partition with them, exactly like the server attacks one client, against
    held-out non-members of the same classes (``-client<K>-peerleak``);
  * when K was the run's active attacker (``active_attack=client:K``): its target rows, scored by
    how much the others' training pulled their loss back down after K's gradient ascent
    (``-client<K>-active``).

Each report has the outsider audit's format (AUC, TPR / PLR at 0.1 % and 1 % FPR with bootstrap
intervals) and goes to ``audit-<threat>.json`` / ``.csv``, ``scores-<threat>.npz``, ``roc-<threat>.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fedmist.attacks.insider import insider_scores, snapshot_signals
from fedmist.audit.audit_set import AuditSet, build_audit_set
from fedmist.audit.report import build_report, write_report
from fedmist.config import parse_client
from fedmist.engine.fl import PARTITION_FILE, TARGETS_FILE
from fedmist.engine.recording import RoundRecord, load_round, recorded_rounds
from fedmist.errors import ConfigError, RunDirError
from fedmist.runs.load import load_run

FPRS = (0.001, 0.01)


def parse_threat(threat: str, clients: int) -> tuple[str, int]:
    t = threat.strip()
    if t in ("server", "outsider"):
        return t, -1
    if t.startswith("client"):
        return "client", parse_client(t, clients, "--threat")
    raise ConfigError(f"--threat must be outsider, server or client:K, got {threat!r}")


def load_partition(run_dir: Path, clients: int) -> list[np.ndarray]:
    path = Path(run_dir) / PARTITION_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir} has no {PARTITION_FILE}: not a finished --mode fl run")
    with np.load(path) as z:
        owner, rows = z["owner"], z["rows"]
    return [np.sort(rows[owner == k]) for k in range(clients)]


def _signals(model, snapshots: list[tuple[dict, dict]], x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(R, n) loss deltas and gradient cosines of ``x`` for each (base θ, update Δ) snapshot."""
    everyone = {0: np.arange(len(y))}
    pairs = [snapshot_signals(model, b, {0: u}, x, y, everyone) for b, u in snapshots]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def others_update(rec: RoundRecord, k: int) -> dict[str, np.ndarray]:
    """What participant k infers about the others' aggregate update in round ``rec``:
    (θ_R − w_k θ_k) / (1 − w_k) − θ_{R-1}, from its own upload θ_k and the new global θ_R."""
    w = rec.weights[k]
    out = {}
    for name, start in rec.start.items():
        if start.dtype.kind != "f":
            continue
        s = start.astype(np.float64)
        own = s + rec.uploads[k][name].astype(np.float64)
        out[name] = ((rec.end[name].astype(np.float64) - w * own) / (1.0 - w) - s).astype(np.float32)
    return out


class _Data:
    def __init__(self, run) -> None:
        self.x = torch.as_tensor(np.asarray(run.dataset.x), dtype=torch.float32)
        self.y = torch.as_tensor(np.asarray(run.dataset.y), dtype=torch.int64)

    def at(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        return self.x[idx], self.y[idx]


def _report(run, name: str, scores: dict, is_member: np.ndarray, rows: np.ndarray, seed: int, n_bootstrap: int,
            info: dict) -> dict:
    report = build_report(scores, is_member, None, FPRS, n_bootstrap, seed)
    report["threat"] = info
    report["audit"] = {"run": Path(run.path).name, "seed": seed, "attacks": list(scores), "n_shadows": 0}
    report["_files"] = (f"-{name}", scores, is_member, rows)  # written by threat_audit, then dropped
    return report


def server_audit(run, parts, rounds, data: _Data, seed: int, n_bootstrap: int) -> dict:
    members = np.concatenate(parts)
    aset = build_audit_set(members, run.split["nonmembers"], seed)
    owner = {int(r): k for k, p in enumerate(parts) for r in p}
    assigned = assign_clients(aset.rows, aset.is_member, owner, np.asarray(run.dataset.y), seed)
    R, n = len(rounds), len(aset.rows)
    ld, cs = np.full((R, n), np.nan), np.full((R, n), np.nan)
    x, y = data.at(aset.rows)
    groups = {k: np.flatnonzero(assigned == k) for k in range(len(parts))}
    for i, r in enumerate(rounds):
        rec = load_round(run.path / "updates", r)
        a, b = snapshot_signals(run.model, rec.start, rec.uploads, x, y, groups)
        for pos in groups.values():  # one standardisation per (round, client): each update has its own scale
            ok = pos[np.isfinite(a[pos])]
            ld[i, ok] = _z(a[ok])
            cs[i, ok] = _z(b[ok])
    scores = insider_scores(ld, cs, aset.is_member, seed)
    per_client = {}
    from sklearn.metrics import roc_auc_score
    for k in range(len(parts)):
        m = assigned == k
        if aset.is_member[m].any() and (~aset.is_member[m]).any():
            per_client[str(k)] = float(roc_auc_score(aset.is_member[m], scores["update_loss_delta_mean"][m]))
    info = {"threat": "server", "rounds": rounds, "victims": "union of all clients' partitions, each attacked "
            "with its owner's updates", "nonmembers": "held out; each assigned to a client in proportion to the "
            "audited members of its class (label-matched)", "per_client_auc_loss_delta": per_client,
            "stacked_lr": "5-fold cross-fitted logistic regression: assumes the attacker knows the membership "
            "of the other folds' candidates"}
    return _report(run, "server", scores, aset.is_member, aset.rows, seed, n_bootstrap, info)


def assign_clients(rows: np.ndarray, is_member: np.ndarray, owner: dict[int, int], labels: np.ndarray,
                   seed: int) -> np.ndarray:
    """The client whose updates score each audited example: a member's owner; for a non-member of
    class y, a client drawn in proportion to how many audited members of class y it owns (any
    owner when no audited member has class y). Label-matched, so that under label skew the attack
    must tell members from non-members *of the same class*, not the client's classes from others."""
    rng = np.random.default_rng([seed, 0x5E4])
    assigned = np.empty(len(rows), dtype=np.int64)
    mem_rows = rows[is_member]
    mem_owner = np.array([owner[int(r)] for r in mem_rows], dtype=np.int64)
    assigned[is_member] = mem_owner
    mem_label = labels[mem_rows]
    for i in np.flatnonzero(~is_member):
        same = mem_owner[mem_label == labels[rows[i]]]
        assigned[i] = rng.choice(same if len(same) else mem_owner)
    return assigned


def label_matched_audit_set(members: np.ndarray, nonmembers: np.ndarray, labels: np.ndarray, seed: int):
    """A balanced audit set with, for every class, as many members as non-members (the smaller
    count of the two, drawn seeded): one client's partition under label skew vs held-out rows."""

    rng = np.random.default_rng([seed, 0x1AB])
    members, nonmembers = np.asarray(members, np.int64), np.asarray(nonmembers, np.int64)
    mem, non = [], []
    for c in np.unique(labels[members]):
        mc, nc = members[labels[members] == c], nonmembers[labels[nonmembers] == c]
        n = min(len(mc), len(nc))
        mem.append(rng.choice(mc, n, replace=False))
        non.append(rng.choice(nc, n, replace=False))
    mem_a, non_a = np.concatenate(mem), np.concatenate(non)
    if len(mem_a) == 0:
        raise RunDirError("no class has both members of this partition and held-out non-members")
    order = rng.permutation(2 * len(mem_a))
    rows = np.concatenate([mem_a, non_a])[order]
    is_member = np.r_[np.ones(len(mem_a), bool), np.zeros(len(non_a), bool)][order]
    pool = np.union1d(members, nonmembers)
    return AuditSet(rows, is_member, pool, np.searchsorted(pool, rows))


def _z(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def client_audit(run, parts, rounds, data: _Data, k: int, seed: int, n_bootstrap: int) -> list[dict]:
    cfg = run.config
    others = np.concatenate([p for i, p in enumerate(parts) if i != k])
    aset = build_audit_set(others, run.split["nonmembers"], seed)
    x, y = data.at(aset.rows)
    recs = [load_round(run.path / "updates", r) for r in rounds]
    recs = [rec for rec in recs if k in rec.uploads]
    if not recs:
        raise RunDirError(f"client {k} took part in no recorded round")
    snaps = [(rec.start, others_update(rec, k)) for rec in recs]
    ld, cs = _signals(run.model, snaps, x, y)
    scores = insider_scores(ld, cs, aset.is_member, seed, prefix="global")
    info = {"threat": f"client:{k}", "rounds": [rec.round for rec in recs],
            "victims": f"union of the partitions of clients other than {k}",
            "observes": "the global model of every round and its own upload",
            "others_update": "(θ_R − w_k θ_k)/(1 − w_k) − θ_{R−1}; assumes client k knows its weight n_k/n",
            "weight": recs[0].weights[k]}
    reports = [_report(run, f"client{k}", scores, aset.is_member, aset.rows, seed, n_bootstrap, info)]

    if all(rec.phase1 for rec in recs):  # MIST private-data mode: the peers' phase-1 weights reach k
        peer = (k + 1) % cfg.clients
        pset = label_matched_audit_set(parts[peer], run.split["nonmembers"], np.asarray(run.dataset.y), seed)
        px, py = data.at(pset.rows)
        pld, pcs = _signals(run.model, [(rec.start, rec.phase1[peer]) for rec in recs if peer in rec.phase1], px, py)
        pscores = insider_scores(pld, pcs, pset.is_member, seed, prefix="peer")
        pinfo = {"threat": f"client:{k} (MIST peer-weights leak)", "peer": peer,
                 "victims": f"client {peer}'s partition vs held-out non-members of the same classes "
                            "(per class as many of each), so the peer's label skew alone does not separate them",
                 "observes": f"client {peer}'s phase-1 weights, forwarded to client {k} every round by private-data MIST"}
        reports.append(_report(run, f"client{k}-peerleak", pscores, pset.is_member, pset.rows, seed, n_bootstrap, pinfo))

    if cfg.active_attack.strip() == f"client:{k}":
        with np.load(Path(run.path) / TARGETS_FILE) as z:
            trows, tmem = z["rows"], z["is_member"].astype(bool)
        tx, ty = data.at(trows)
        # round 1 starts from an un-attacked model: the pull-back is seen from round 2 on
        tsnaps = [(rec.start, others_update(rec, k)) for rec in recs if rec.round >= 2] or snaps
        tld, tcs = _signals(run.model, tsnaps, tx, ty)
        tscores = {"active_pullback_mean": _mean_rows(tld), "active_cosine_mean": _mean_rows(tcs),
                   "active_last_round": tld[-1]}
        tinfo = {"threat": f"client:{k} (active, Nasr et al. gradient ascent)", "targets": int(len(trows)),
                 "signal": "loss of the target under θ_{R−1} (after k's ascent) minus under the others' aggregate"}
        reports.append(_report(run, f"client{k}-active", tscores, tmem, trows, seed, n_bootstrap, tinfo))
    return reports


def _mean_rows(a: np.ndarray) -> np.ndarray:
    return np.mean([_z(r) for r in a], axis=0)


def threat_audit(run_dir: Path, threat: str, seed: int = 0, n_bootstrap: int = 200) -> list[dict]:
    """Run the attacks of ``threat`` on a recorded FL run; returns the report(s) written."""

    if run_dir is None:
        raise ConfigError("give a run directory (fedmist attack runs/NAME --threat ...)")
    run = load_run(Path(run_dir))
    cfg = run.config
    if cfg.mode != "fl":
        raise ConfigError(f"--threat {threat} needs a run trained with --mode fl; {run_dir} has mode {cfg.mode!r}")
    kind, k = parse_threat(threat, cfg.clients)
    if kind == "outsider":
        raise ConfigError("--threat outsider is the ordinary audit: fedmist attack RUN")
    rounds = recorded_rounds(Path(run_dir) / "updates")
    if not rounds:
        raise RunDirError(f"{run_dir} was trained without --record-updates: the {kind} attacks need the recorded "
                          "global models and client updates; retrain with --record-updates")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    parts = load_partition(Path(run_dir), cfg.clients)
    data = _Data(run)
    t0 = time.perf_counter()
    if kind == "server":
        reports = [server_audit(run, parts, rounds, data, seed, n_bootstrap)]
    else:
        reports = client_audit(run, parts, rounds, data, k, seed, n_bootstrap)
    for rep in reports:
        rep["audit"]["seconds"] = round(time.perf_counter() - t0, 3)
        rep["threat"]["fl"] = run.metrics.get("summary", {}).get("fl")
        suffix, scores, is_member, rows = rep.pop("_files")
        write_report(Path(run.path), rep, scores, is_member, {"indices": rows}, suffix=suffix)
    return reports
