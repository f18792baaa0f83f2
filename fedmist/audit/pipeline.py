"""One audit of a loaded run: audit set, target outputs, shadows, attacks, report files."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedmist.attacks import ATTACKS, AttackContext, check_attacks, run_attacks
from fedmist.attacks.lira import lira_gaussians
from fedmist.attacks.queries import model_device, predict_logits
from fedmist.attacks.signals import lira_phi
from fedmist.audit.audit_set import AuditSet, build_audit_set, split_arrays
from fedmist.audit.metrics import most_vulnerable_subset, vulnerable_subset_size
from fedmist.audit.report import build_report, write_report
from fedmist.audit.shadows import (
    ShadowLayout,
    TrainFn,
    balanced_keep,
    cache_keys,
    check_shadow_count,
    clear_cache,
    load_layout,
    load_shadow_state,
    save_layout,
    train_shadows,
)
from fedmist.errors import AuditError

# (loaded run, audit seed) -> train_fn(shadow_index, member_rows) -> state_dict
TrainFnFactory = Callable[[Any, int], TrainFn]

SHADOW_PROTOCOL = ("each shadow trains with the target's recipe on a random half of the pool (all members and "
                   "non-members of the split); every audited example is IN for exactly half of the shadows "
                   "(Carlini et al.)")


def _recipe(config: Any) -> dict:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise AuditError(f"cannot read the run's config ({type(config).__name__}) as a recipe")


def shadow_loader(template: nn.Module, cache_dir: Path,
                  from_state: Callable[[dict], nn.Module] | None = None) -> Callable[[int], nn.Module]:
    """``i -> shadow model i``: the target's architecture with the cached weights (through the
    run's ``model_from_state`` when it has one, so a defense's output modification applies too)."""
    device = model_device(template)

    def load(i: int) -> nn.Module:
        state = load_shadow_state(cache_dir, i)
        if from_state is not None:
            return from_state(state).to(device).eval()
        model = copy.deepcopy(template)
        model.load_state_dict(state)
        return model.to(device).eval()
    return load


def prepare_shadows(run: Any, aset: AuditSet, x: torch.Tensor, labels: np.ndarray, target_logits: np.ndarray,
                    n_shadows: int, train_fn_factory: TrainFnFactory, rebuild: bool, seed: int,
                    progress: bool = True) -> tuple[ShadowLayout, Callable[[int], nn.Module], int]:
    """Train the missing shadows, then load or compute their LiRA arrays.

    Returns the layout, a loader of the shadow models and how many shadows were trained now.
    """
    cache_dir = Path(run.path) / "shadows"
    pool_keep = balanced_keep(n_shadows, len(aset.pool), seed)
    key = cache_keys(_recipe(run.config), seed, n_shadows, aset.rows, pool=aset.pool)
    if rebuild:
        clear_cache(cache_dir)
    trained = train_shadows(pool_keep, aset.pool, _LazyTrainFn(train_fn_factory, run, seed), cache_dir, key,
                            progress=progress)
    loader = shadow_loader(run.model, cache_dir, getattr(run, "model_from_state", None))
    target_scores = lira_phi(target_logits, labels)[None, :, None]
    layout = None if trained else load_layout(cache_dir, key)
    if layout is None or not np.array_equal(layout.indices, aset.rows):
        logits = np.stack([predict_logits(loader(i), x) for i in range(n_shadows)])
        layout = ShadowLayout(indices=aset.rows, keep=pool_keep[:, aset.pool_pos],
                              scores=lira_phi(logits, labels)[..., None], target_scores=target_scores,
                              logits=logits.astype(np.float32))
        save_layout(cache_dir, layout, key)
    elif not np.array_equal(layout.target_scores, target_scores):  # the shadows still fit a retrained target
        layout = dataclasses.replace(layout, target_scores=target_scores)
        save_layout(cache_dir, layout, key)
    return layout, loader, len(trained)


class _LazyTrainFn:
    """Build the engine's train_fn only when a shadow actually has to be trained."""

    def __init__(self, factory: TrainFnFactory, run: Any, seed: int) -> None:
        self._factory, self._run, self._seed = factory, run, seed
        self._fn: TrainFn | None = None

    def _get(self) -> TrainFn:
        if self._fn is None:
            self._fn = self._factory(self._run, self._seed)
        return self._fn

    def __call__(self, i: int, rows: np.ndarray):
        return self._get()(i, rows)

    def train_all(self, jobs: list, done: Callable) -> None:
        fn = self._get()
        if hasattr(fn, "train_all"):
            fn.train_all(jobs, done)
        else:
            for i, rows in jobs:
                done(i, fn(i, rows))


def vulnerable_members(layout: ShadowLayout, is_member: np.ndarray) -> np.ndarray:
    """Audit-set indices of the most vulnerable members by LiRA Gaussian non-overlap (MIST §4.6)."""
    g = lira_gaussians(layout.scores, layout.keep)
    mem = np.flatnonzero(is_member)
    k = vulnerable_subset_size(len(mem))
    return mem[most_vulnerable_subset(g.mu_in[mem], g.sd_in[mem], g.mu_out[mem], g.sd_out[mem], k)]


def shadow_accuracy(logits: np.ndarray, keep: np.ndarray, labels: np.ndarray) -> dict:
    """Each shadow's accuracy on its own training rows (IN) and on the others (OUT) of the audit
    set, and the shadows that diverged: IN accuracy under half the shadows' median. A diverged
    shadow (e.g. plain SGD at a high learning rate ending near chance) puts its logits into
    LiRA's Gaussians and drags every example's score; the audit names it instead of hiding it.

    >>> logits = np.zeros((3, 4, 2)); logits[:2, :, 1] = 1.0  # shadows 0, 1 predict class 1; 2 predicts 0
    >>> keep = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]], dtype=bool)
    >>> shadow_accuracy(logits, keep, np.ones(4, dtype=int))
    {'in': [1.0, 1.0, 0.0], 'out': [1.0, 1.0, 0.0], 'median_in': 1.0, 'diverged': [2]}
    """
    hits = logits.argmax(-1) == labels[None, :]
    mean = lambda m: [float(h[k].mean()) if k.any() else float("nan") for h, k in zip(hits, m)]  # noqa: E731
    acc_in, acc_out = mean(keep), mean(~keep)
    median = float(np.nanmedian(acc_in))
    return {"in": acc_in, "out": acc_out, "median_in": median,
            "diverged": [i for i, a in enumerate(acc_in) if a < 0.5 * median]}


def check_enough_shadows(attacks: Sequence[str], n_shadows: int) -> None:
    """AuditError unless every attack can run with ``n_shadows`` (0: shadow-free attacks only);
    commands that train first (compare, frontier) call it before anything trains."""
    specs = check_attacks(list(attacks))
    if n_shadows < 0:
        raise AuditError(f"the number of shadows must be >= 0, got {n_shadows}")
    if n_shadows:
        check_shadow_count(n_shadows)
        short = [s for s in specs if n_shadows < s.min_shadows]
        if short:
            raise AuditError(f"{', '.join(s.name for s in short)} need >= {max(s.min_shadows for s in short)} "
                             f"shadows (2 IN and 2 OUT per example to estimate a variance), got {n_shadows}")


def audit_run(run: Any, attacks: Sequence[str], n_shadows: int, train_fn_factory: TrainFnFactory,
              rebuild: bool = False, seed: int = 0, fprs: Sequence[float] = (0.001, 0.01),
              n_bootstrap: int = 200, vulnerable_rows: np.ndarray | None = None, progress: bool = True,
              on_attack: Callable[[str, float], None] | None = None) -> dict:
    """Audit a loaded run (``.model``, ``.dataset``, ``.split``, ``.config``, ``.path``) and write
    the report files into its directory; returns the report (the content of audit.json).

    ``vulnerable_rows``: dataset rows that define the most vulnerable subset (e.g. those of an
    undefended run's audit, as the paper fixes X_vul across defenses); by default the subset is
    ranked with this run's own shadows.
    """
    attacks = list(attacks)
    if not attacks:
        raise AuditError(f"no attacks chosen; known: {', '.join(sorted(ATTACKS))}")
    check_enough_shadows(attacks, n_shadows)  # refuse before any shadow is trained
    t0 = time.perf_counter()
    split = split_arrays(run.split)
    aset = build_audit_set(split["members"], split["nonmembers"], seed)
    x = torch.as_tensor(np.asarray(run.dataset.x)[aset.rows], dtype=torch.float32)
    labels = np.asarray(run.dataset.y, dtype=np.int64)[aset.rows]
    run.model.eval()
    logits = predict_logits(run.model, x)
    layout, loader, n_trained = None, None, 0
    if n_shadows:
        layout, loader, n_trained = prepare_shadows(run, aset, x, labels, logits, n_shadows, train_fn_factory,
                                                    rebuild, seed, progress)
    t_shadows = time.perf_counter() - t0
    ctx = AttackContext(
        logits=logits, labels=labels, model=run.model, x=x, seed=seed,
        keep=None if layout is None else layout.keep,
        shadow_logits=None if layout is None else layout.logits.astype(np.float64),
        shadow_scores=None if layout is None else layout.scores,
        target_scores=None if layout is None else layout.target_scores[0],
        shadow_models=loader,
    )
    timings: dict[str, float] = {}

    def done(name: str, seconds: float) -> None:
        timings[name] = round(seconds, 3)
        if on_attack is not None:
            on_attack(name, seconds)
    scores = run_attacks(attacks, ctx, on_done=done)

    if vulnerable_rows is not None:
        vulnerable = np.flatnonzero(np.isin(aset.rows, np.asarray(vulnerable_rows)) & aset.is_member)
        if len(vulnerable) == 0:
            raise AuditError("none of the given vulnerable rows is an audited member of this run")
        source = "given dataset rows"
    elif layout is not None:
        vulnerable, source = vulnerable_members(layout, aset.is_member), "this run's shadows (LiRA Gaussians)"
    else:
        vulnerable, source = None, "none (needs shadows)"
    report = build_report(scores, aset.is_member, vulnerable, fprs, n_bootstrap, seed)
    accuracy = None if layout is None else shadow_accuracy(layout.logits, layout.keep, labels)
    if accuracy and accuracy["diverged"]:
        bad = ", ".join(f"{accuracy['in'][i]:.1%}" for i in accuracy["diverged"])
        report["warnings"] = [f"shadow(s) {accuracy['diverged']} diverged (accuracy on their own training rows "
                              f"{bad} vs the shadows' median {accuracy['median_in']:.1%}); they enter "
                              "LiRA's Gaussians and distort its scores: lower the learning rate, or set best_validation"]
    if report["vulnerable_subset"] is not None:
        report["vulnerable_subset"]["source"] = source
    report["audit"] = {
        "run": Path(run.path).name, "seed": seed, "attacks": attacks, "n_shadows": n_shadows, "bootstrap": n_bootstrap,
        "shadows_trained_now": n_trained, "shadow_protocol": SHADOW_PROTOCOL if n_shadows else None,
        "pool_size": int(len(aset.pool)), "shadow_train_size": int(len(aset.pool) // 2) if n_shadows else None,
        "target_train_size": int(len(split["members"])),
        "shadow_accuracy": accuracy,
        "seconds": {"setup_and_shadows": round(t_shadows, 3), "attacks": timings,
                    "total": round(time.perf_counter() - t0, 3)},
    }
    arrays = {"indices": aset.rows}
    if vulnerable is not None:
        arrays["vulnerable"] = aset.rows[vulnerable]
    write_report(Path(run.path), report, scores, aset.is_member, arrays)
    return report
