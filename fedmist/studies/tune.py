"""``fedmist tune``: pick a defense's strength at matched utility, the paper's protocol (§5).

MIST: C first (highest validation accuracy), then the largest λ whose validation accuracy stays
within ``max_acc_drop`` points of SGD's; every other defense: the same bisection on its main knob
(``DefenseSpec.tune_knob``), then on each of ``DefenseSpec.tune_more`` with the values chosen so far
fixed (HAMP: the entropy reward's weight, then the soft label's entropy). Trials train on the training pool minus a held-out validation share
(``validation_fraction``) and are scored on it, never on the audit or test rows. Each trial is a
run directory, so an interrupted tune resumes and a repeated one costs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fedmist.config import RunConfig, config_fields, display_name
from fedmist.defenses import DEFENSES, Knob


def tuned_recipe_dir(out: Path, max_acc_drop: float) -> Path:
    return out / f"tuned-drop{max_acc_drop:g}"


def bisect_strongest(knob: Knob, ok: Callable[[float], bool], iterations: int) -> tuple[float, bool]:
    """The largest knob value in [lo, hi] with ``ok(value)`` (accuracy within budget), assuming
    accuracy falls as the knob grows; ``(value, found)``, found False when even ``lo`` fails.

    >>> bisect_strongest(Knob("x", 1, 64), lambda v: v <= 10, iterations=8)[0] <= 10
    True
    >>> v, found = bisect_strongest(Knob("x", 1, 64, log=False), lambda v: v <= 10, iterations=12)
    >>> found and 10 - 63 / 2**12 < v <= 10  # within one final interval of the true boundary
    True
    >>> bisect_strongest(Knob("x", 1, 64), lambda v: True, 3), bisect_strongest(Knob("x", 1, 64), lambda v: False, 3)
    ((64.0, True), (1.0, False))
    """
    if ok(knob.hi):
        return float(knob.hi), True
    if not ok(knob.lo):
        return float(knob.lo), False
    good, bad = float(knob.lo), float(knob.hi)
    for _ in range(iterations):
        mid = knob.mid(good, bad)
        if mid in (good, bad):
            break
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good, True


def write_recipe(cfg: RunConfig, path: Path, comment: str) -> None:
    """A flat TOML recipe (plus a ``[params]`` table) that ``RunConfig.from_toml`` reads back."""
    skip = {f.name for f in config_fields(type(cfg), recipe=False)}  # machine- or trial-specific fields
    lines = [f"# {line}" for line in comment.splitlines()]
    for key, value in cfg.to_dict().items():
        if key not in skip:
            lines.append(f"{display_name(key)} = {_toml(value)}")
    if cfg.params:
        typed = DEFENSES[cfg.defense].parse_params(cfg.params)  # "0.5" from the CLI -> 0.5
        lines.append("\n[params]")
        lines += [f"{k} = {_toml(getattr(typed, k))}" for k in sorted(cfg.params)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def plot_trials(trials: list[dict], baseline: float, max_drop: float, knob: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted((t["value"], 100 * t["val_acc"]) for t in trials if t.get("knob") == knob)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="defense")
    ax.axhline(100 * baseline, color="k", lw=1, label="SGD")
    ax.axhline(100 * baseline - max_drop, color="r", ls="--", lw=1, label=f"SGD − {max_drop:g} points")
    ax.set_xscale("log")
    ax.set_xlabel(knob)
    ax.set_ylabel("validation accuracy (%)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
