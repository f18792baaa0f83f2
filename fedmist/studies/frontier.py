"""``fedmist frontier``: each defense swept over its strength knob, the privacy–utility frontier
(the MIST paper's Figure 1 as curves), and verdicts at matched utility.

Every point is a compare cell (a ``fedmist simulate`` run, audited with ``fedmist attack``), cached
and resumable the same way (``fedmist.studies.cells``):

1. SGD, and for each defense that holds rows out of the training budget (MMD's validation set,
   AdvReg's and MemGuard's reference, DMP's student data) SGD on exactly the members that defense
   keeps (``sgd-matched-<defense>``: same seed, same ``reference_size``), so the hold-out's cost and
   the defense's own cost show apart;
2. every defense at ``points`` values of its knob (``DefenseSpec.tune_knob``; MIST at each C of
   ``--mist-clients``), each audited by the shadow-free attacks;
3. points whose accuracy drop against SGD (mean over seeds) is within the widest band get the
   shadow-based attacks with ``shadows`` shadows (16 by default: LiRA and RMIA);
4. ``frontier.csv`` / ``frontier.md`` / ``frontier.png`` (highest PLR@0.1 % with its bootstrap CI on
   a log axis, against test accuracy, one curve per defense) and ``matched.md``: per band
   (≤ 1, 3, 5 points), each defense's lowest highest-PLR@0.1 % that fits, its AUC, and the winner.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fedmist.config import RunConfig, display_name
from fedmist.defenses import DEFENSES
from fedmist.defenses.registry import Knob
from fedmist.errors import ConfigError
from fedmist.runs.recipes import default_recipe
from fedmist.runs.rundir import split_for
from fedmist.studies.cells import check_reuse
from fedmist.studies.compare import (
    Cell,
    CompareSettings,
    cell_row,
    make_cell,
    run_cells,
)

SHADOW_FREE = ["loss", "mentr", "confidence", "entropy"]
SHADOWED = ["lira_online", "lira_offline", "lira_online_fixed", "lira_offline_fixed", "rmia"]


@dataclass
class Point:
    """One setting of one defense: a curve's point once its cells (one per seed) have run."""

    defense: str  # the curve: "mist-c2", "dpsgd", "advreg-artefact", "sgd", "sgd-matched-mixup_mmd", ...
    knob: str  # config key of the strength ("" for baselines)
    value: float
    overrides: dict[str, str]
    base: str = "sgd"  # the fedmist defense that trains it
    recipe: Path | None = None  # None: the dataset's default recipe for ``base``


def plan_points(dataset: str, defenses: Sequence[str], points: int, mist_clients: Sequence[int],
                overrides: dict[str, str], recipes: Mapping[str, Path] | None = None,
                values: Mapping[str, Sequence[float]] | None = None,
                knobs: Mapping[str, str] | None = None) -> list[Point]:
    """SGD, the matched-member SGD baselines, then every defense's sweep; refuses unknown defenses
    and defenses without a knob before anything trains.

    ``recipes`` sweeps a defense around another recipe than its default (an authors'-settings
    preset): the curve is named after it (``location-advreg-artefact`` -> ``advreg-artefact``) and,
    unless ``values`` gives the knob's values, the grid spans 1/4 to 4 times the preset's own value.
    ``knobs`` sweeps another of the defense's strengths (one of ``DefenseSpec.tune_more``, e.g.
    HAMP's entropy_percentile); the curve's name then ends in that knob's name.
    A defense whose recipe holds rows out of the training budget gets SGD on exactly the members it
    keeps (``sgd-matched-<curve>``)."""
    recipes, values, knobs = dict(recipes or {}), dict(values or {}), dict(knobs or {})
    unknown = [d for d in [*defenses, *recipes, *values, *knobs] if d not in DEFENSES]
    if unknown:
        raise ConfigError(f"unknown defense(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFENSES))}")
    stray = [d for d in [*recipes, *values, *knobs] if d not in defenses]
    if stray:
        raise ConfigError(f"--recipe-for/--values-for/--knob-for name {', '.join(stray)}, "
                          f"not in --defenses {', '.join(defenses)}")
    no_knob = [d for d in defenses if DEFENSES[d].tune_knob is None]
    if no_knob:
        raise ConfigError(f"{', '.join(no_knob)} have no strength knob to sweep (DefenseSpec.tune_knob)")
    plan = [Point("sgd", "", math.nan, dict(overrides))]
    for d in defenses:
        spec, recipe = DEFENSES[d], recipes.get(d)
        name = d if recipe is None else _curve_name(dataset, recipe)
        probe = make_cell(dataset, d, 0, Path("."), recipe or default_recipe(dataset, d), overrides)
        if "reference_size" not in overrides and _held_out(probe):
            plan.append(Point(f"sgd-matched-{name}", "reference_size", math.nan,
                              {**overrides, "reference_size": f"matched:{d}"}, recipe=recipe))
        knob = _knob_of(d, knobs.get(d))
        if knob is not spec.tune_knob:
            name = f"{name}-{knob.key.removeprefix('params.')}"
        grid = list(values[d]) if d in values else knob.grid(points) if recipe is None else \
            _grid_around(knob, _knob_value(probe.config, d, knob), points)
        for clients in (mist_clients if spec.tune_clients else [None]):
            curve = name if clients is None else f"{name}-c{clients}"
            extra = {} if clients is None else {"clients": str(clients)}
            plan += [Point(curve, knob.key, v, {**overrides, **extra, knob.key: f"{v:g}"}, d, recipe) for v in grid]
    return plan


def _curve_name(dataset: str, recipe: Path) -> str:
    """``location-advreg-artefact.toml`` -> ``advreg-artefact``."""
    return recipe.stem.removeprefix(f"{dataset.split(':')[0]}-")


def _knob_of(defense: str, name: str | None) -> Knob:
    """The defense's main knob, or the one of its further strengths called ``name``."""
    spec = DEFENSES[defense]
    assert spec.tune_knob is not None
    if name is None:
        return spec.tune_knob
    knobs = [spec.tune_knob, *spec.tune_more]
    for knob in knobs:
        if name in (knob.key, knob.key.removeprefix("params.")):
            return knob
    raise ConfigError(f"--knob-for {defense}={name}: {defense}'s knobs are "
                      f"{', '.join(k.key.removeprefix('params.') for k in knobs)}")


def _knob_value(cfg: RunConfig, defense: str, knob: Knob) -> float:
    """The knob's value in a prepared config (its [params], else the defense's default)."""
    if not knob.key.startswith("params."):
        return float(getattr(cfg, knob.key))
    return float(getattr(DEFENSES[defense].parse_params(cfg.params), knob.key.split(".", 1)[1]))


def _grid_around(knob: Knob, center: float, points: int) -> list[float]:
    """``points`` values from center/4 to 4 x center (the knob's own range when center is 0 or
    the knob is not searched on a log scale, e.g. a fraction).

    >>> _grid_around(Knob("params.alpha", 0.25, 8.0), 10.0, 5)
    [2.5, 5.0, 10.0, 20.0, 40.0]
    >>> _grid_around(Knob("params.p", 0.1, 0.9, log=False), 0.5, 3)
    [0.1, 0.5, 0.9]
    """
    if not center > 0 or not knob.log:
        return knob.grid(points)
    return replace(knob, lo=center / 4, hi=center * 4).grid(points)


def point_cells(point: Point, dataset: str, seeds: Sequence[int], out: Path) -> list[Cell]:
    """The point's cells, one per seed, in ``out/runs``; a matched-member baseline takes the
    reference size its defense would hold out (``matched:<defense>``)."""
    overrides = dict(point.overrides)
    if overrides.get("reference_size", "").startswith("matched:"):
        holder = overrides["reference_size"].split(":", 1)[1]
        ref = make_cell(dataset, holder, seeds[0], out, point.recipe or default_recipe(dataset, holder),
                        {k: v for k, v in overrides.items() if k != "reference_size"})
        overrides["reference_size"] = str(_held_out(ref))
    label = point.defense if not point.knob or point.knob == "reference_size" else \
        f"{point.defense}-{display_name(point.knob).replace('params.', '')}{point.value:g}"
    recipe = point.recipe if point.base != "sgd" else None
    return [make_cell(dataset, point.base, seed, out, recipe or default_recipe(dataset, point.base), overrides,
                      label=label) for seed in seeds]


def _held_out(cell: Cell) -> int:
    """Rows the cell's defense holds out of the training budget (its split's reference set)."""
    return int(len(split_for(cell.config).reference))


def run_frontier(dataset: str, defenses: Sequence[str], seeds: Sequence[int], out: Path, *, points: int = 5,
                 mist_clients: Sequence[int] = (2, 4), shadows: int = 16, bands: Sequence[float] = (1, 3, 5),
                 overrides: dict[str, str] | None = None, settings: CompareSettings | None = None,
                 recipes: Mapping[str, Path] | None = None, values: Mapping[str, Sequence[float]] | None = None,
                 knobs: Mapping[str, str] | None = None, on_done=None,
                 tables_only: bool = False) -> tuple[list[dict], list[dict]]:
    """Train and audit every point; returns (one row per point, the verdict rows).

    ``tables_only``: train and audit nothing; the rows are the points whose every cell is already
    trained and audited in ``out`` (with whatever shadows its audit had), for a look at a sweep
    still running or stopped; the others are named through ``on_done(cell, None)``."""
    plan = plan_points(dataset, defenses, points, mist_clients, dict(overrides or {}), recipes, values, knobs)
    cells = [(p, point_cells(p, dataset, seeds, out)) for p in plan]
    if tables_only:
        return _tables_from_cache(cells, bands, on_done)
    base = settings or CompareSettings(SHADOW_FREE, 0)
    free = replace(base, attacks=SHADOW_FREE, shadows=0, shadows_for={})
    everything = [c for _, cs in cells for c in cs]
    results = run_cells(everything, free, out / "logs", on_done=on_done)
    _raise_if_failed(results, everything, out)
    rows = [point_row(p, cs) for p, cs in cells]
    sgd = next(r for r in rows if r["defense"] == "sgd")
    widest = max(bands)
    chosen = [c for p, cs in cells for c in cs
              if _drop(sgd, point_row(p, cs)) <= widest and shadows > 0]
    if chosen:  # the shadow-based audit replaces the shadow-free one (a superset of its attacks)
        strong = replace(base, attacks=SHADOW_FREE + SHADOWED, shadows=shadows, force=True)
        results = run_cells(chosen, strong, out / "logs", on_done=on_done)
        _raise_if_failed(results, chosen, out)
        rows = [point_row(p, cs) for p, cs in cells]
        sgd = next(r for r in rows if r["defense"] == "sgd")
    for r in rows:
        r["acc_drop"] = _drop(sgd, r)
    return rows, verdicts(rows, bands)


def _tables_from_cache(cells: Sequence[tuple[Point, list[Cell]]], bands: Sequence[float],
                       on_done=None) -> tuple[list[dict], list[dict]]:
    ready = []
    for point, cs in cells:
        for c in cs:
            check_reuse(c.config, c.run_dir)  # a directory of another config is never read as this one
        if all((c.run_dir / "model.pt").is_file() and (c.run_dir / "audit.json").is_file() for c in cs):
            ready.append((point, cs))
        elif on_done is not None:
            on_done(cs[0], None)
    rows = [point_row(p, cs) for p, cs in ready]
    sgd = next((r for r in rows if r["defense"] == "sgd"), None)
    if sgd is None:
        raise ConfigError("--tables-only: SGD's cells are not trained and audited yet, so no drop can be measured")
    for r in rows:
        r["acc_drop"] = _drop(sgd, r)
    return rows, verdicts(rows, bands)


def _raise_if_failed(results: dict, cells: Sequence[Cell], out: Path) -> None:
    failed = [c.name for c in cells if isinstance(results.get(c.name), Exception)]
    if failed:
        raise ConfigError(f"{len(failed)} point(s) failed ({', '.join(failed)}); see the logs in {out / 'logs'}; "
                          "rerun the same command to resume")


def _drop(sgd: dict, row: dict) -> float:
    return 100 * (sgd["test_acc"] - row["test_acc"])


def point_row(point: Point, cells: Sequence[Cell]) -> dict:
    """Mean over the point's seeds (the PLR's CI is the bootstrap interval of the first seed's
    strongest attack when there is one seed, else the spread of the seeds' values)."""
    rs = [cell_row(c) for c in cells]
    mean = lambda k: float(np.mean([r[k] for r in rs]))  # noqa: E731
    row = {"defense": point.defense, "knob": point.knob, "value": point.value, "seeds": len(rs),
           "test_acc": mean("test_acc"), "test_acc_std": float(np.std([r["test_acc"] for r in rs])),
           "plr_0.1": mean("plr_0.1"), "plr_0.1_attack": max(rs, key=lambda r: r["plr_0.1"])["plr_0.1_attack"],
           "auc": mean("auc"), "n_shadows": min(r["n_shadows"] for r in rs), "label": cells[0].label,
           "run_dirs": ";".join(r["run_dir"] for r in rs)}
    if len(rs) == 1:
        row["plr_0.1_lo"], row["plr_0.1_hi"] = rs[0]["plr_0.1_lo"], rs[0]["plr_0.1_hi"]
        row["auc_lo"], row["auc_hi"] = rs[0]["auc_lo"], rs[0]["auc_hi"]
    else:
        row["plr_0.1_lo"], row["plr_0.1_hi"] = min(r["plr_0.1"] for r in rs), max(r["plr_0.1"] for r in rs)
        row["auc_lo"], row["auc_hi"] = min(r["auc"] for r in rs), max(r["auc"] for r in rs)
    return row


def verdicts(rows: Sequence[dict], bands: Sequence[float]) -> list[dict]:
    """Per band and defense curve: the fitting point with the lowest highest-PLR@0.1 % (ties: the
    lower AUC), or None; ``winner`` marks the lowest in each band (baselines excluded), the same
    way.

    >>> rows = [{"defense": "sgd", "acc_drop": 0.0, "plr_0.1": 50.0, "auc": 0.8},
    ...         {"defense": "a", "acc_drop": 0.5, "plr_0.1": 9.0, "auc": 0.6},
    ...         {"defense": "a", "acc_drop": 4.0, "plr_0.1": 2.0, "auc": 0.55},
    ...         {"defense": "b", "acc_drop": 2.0, "plr_0.1": 5.0, "auc": 0.58},
    ...         {"defense": "c", "acc_drop": 2.5, "plr_0.1": 5.0, "auc": 0.52}]
    >>> [(v["band"], v["defense"], v["plr_0.1"], v["winner"]) for v in verdicts(rows, [1, 3])]
    [(1, 'a', 9.0, True), (1, 'b', None, False), (1, 'c', None, False), (3, 'a', 9.0, False), (3, 'b', 5.0, False), (3, 'c', 5.0, True)]

    Points with fewer shadows than the band's best-audited are not ranked (weaker attacks):

    >>> rows[1]["n_shadows"] = 16
    >>> [(v["defense"], v["plr_0.1"], v["winner"], v["unaudited"]) for v in verdicts(rows, [3])]
    [('a', 9.0, True, 0), ('b', None, False, 1), ('c', None, False, 1)]
    """
    rank = lambda r: (r["plr_0.1"], r["auc"])  # noqa: E731
    curves = sorted({r["defense"] for r in rows if not r["defense"].startswith("sgd")})
    out = []
    for band in bands:
        band_rows = []
        in_band = [r for r in rows if r["defense"] in curves and r["acc_drop"] <= band]
        # Like with like: a point audited by fewer shadows saw weaker attacks, so its lower PLR is no
        # win; only the points with the band's most shadows are ranked (a partial --tables-only).
        need = max((r.get("n_shadows", 0) for r in in_band), default=0)
        for curve in curves:
            fits = [r for r in in_band if r["defense"] == curve]
            audited = [r for r in fits if r.get("n_shadows", 0) >= need]
            best = min(audited, key=rank) if audited else None
            band_rows.append({"band": band, "defense": curve, "plr_0.1": best["plr_0.1"] if best else None,
                              "auc": best["auc"] if best else None, "point": best, "winner": False,
                              "unaudited": len(fits) - len(audited), "shadows": need})
        fitting = [v for v in band_rows if v["point"] is not None]
        if fitting:
            min(fitting, key=lambda v: rank(v["point"]))["winner"] = True
        out += band_rows
    return out


def band_verdict(band_rows: Sequence[dict]) -> str:
    """One sentence per band: the winner, and whether its PLR@0.1 % interval clears every other
    fitting defense's (a win inside overlapping intervals is not a result to quote).

    >>> a = {"defense": "a", "winner": True, "point": {"plr_0.1": 1.0, "plr_0.1_lo": 0.0, "plr_0.1_hi": 3.0, "auc": 0.6}}
    >>> b = {"defense": "b", "winner": False, "point": {"plr_0.1": 9.0, "plr_0.1_lo": 5.0, "plr_0.1_hi": 12.0, "auc": 0.7}}
    >>> print(band_verdict([a, b]))
    Winner: a (its PLR@0.1 % interval lies below every other fitting defense's).
    >>> print(band_verdict([a, {**b, "point": {**b["point"], "plr_0.1_lo": 2.0}}]))
    Lowest: a, but not separable: its PLR@0.1 % interval overlaps b [2, 12]; AUC a 0.600 vs b 0.700.
    """
    fitting = [v for v in band_rows if v["point"] is not None]
    if not fitting:
        return "No defense has a setting in this band."
    win = next(v for v in fitting if v["winner"])
    if len(fitting) == 1:
        return f"Only {win['defense']} has a setting in this band."
    hi = _nan0(win["point"].get("plr_0.1_hi"))
    overlapping = [v for v in fitting if v is not win and _nan0(v["point"].get("plr_0.1_lo")) <= hi]
    if not overlapping:
        return f"Winner: {win['defense']} (its PLR@0.1 % interval lies below every other fitting defense's)."
    names = ", ".join(f"{v['defense']} [{_g(v['point'].get('plr_0.1_lo'))}, {_g(v['point'].get('plr_0.1_hi'))}]"
                      for v in overlapping)
    aucs = " vs ".join(f"{v['defense']} {v['point']['auc']:.3f}" for v in [win, *overlapping])
    return f"Lowest: {win['defense']}, but not separable: its PLR@0.1 % interval overlaps {names}; AUC {aucs}."


COLUMNS = ["defense", "knob", "value", "seeds", "test_acc", "test_acc_std", "acc_drop", "plr_0.1", "plr_0.1_lo",
           "plr_0.1_hi", "plr_0.1_attack", "auc", "auc_lo", "auc_hi", "n_shadows", "run_dirs"]


def write_frontier(rows: Sequence[dict], verdict_rows: Sequence[dict], out: Path, header: str) -> None:
    with open(out / "frontier.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [header, "", "| curve | knob | value | test acc | drop | highest PLR@0.1 % [CI] | attack | AUC | shadows |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['defense']} | {display_name(r['knob']) or '–'} | {_g(r['value'])} | "
                     f"{100 * r['test_acc']:.2f} % | {r['acc_drop']:.2f} | {r['plr_0.1']:.3g} "
                     f"[{_g(r['plr_0.1_lo'])}, {_g(r['plr_0.1_hi'])}] | {r['plr_0.1_attack']} | {r['auc']:.3f} | "
                     f"{r['n_shadows']} |")
    lines += inversion_lines(rows)
    (out / "frontier.md").write_text("\n".join(lines) + "\n")
    v_lines = [header.replace("frontier", "verdicts at matched utility", 1), "",
               "Lowest highest-PLR@0.1 % among a defense's points within the band of SGD's test accuracy "
               "(mean over seeds; ties: the lower AUC); **bold** = the band's lowest; – = no setting fits the "
               "band. The sentence under each table says whether the lowest is separable from the others.", ""]
    sgd = next((r for r in rows if r["defense"] == "sgd"), None)
    for band in sorted({v["band"] for v in verdict_rows}):
        v_lines += [f"## accuracy drop ≤ {band:g} points", "", "| defense | setting | test acc | PLR@0.1 % [CI] | AUC [CI] |",
                    "|---|---|---|---|---|"]
        if sgd is not None:  # what "no defense" leaks, for scale
            v_lines.append(f"| sgd (no defense) | – | {100 * sgd['test_acc']:.2f} % | {sgd['plr_0.1']:.3g} "
                           f"[{_g(sgd['plr_0.1_lo'])}, {_g(sgd['plr_0.1_hi'])}] | {sgd['auc']:.3f} "
                           f"[{_g(sgd['auc_lo'])}, {_g(sgd['auc_hi'])}] |")
        for v in (x for x in verdict_rows if x["band"] == band):
            p = v["point"]
            if p is None:
                why = (f"{v['unaudited']} setting(s) fit, none audited with {v['shadows']} shadows yet"
                       if v.get("unaudited") else f"no setting within {band:g} points")
                v_lines.append(f"| {v['defense']} | – ({why}) | – | – | – |")
                continue
            name = f"**{v['defense']}**" if v["winner"] else v["defense"]
            v_lines.append(f"| {name} | {display_name(p['knob'])} = {_g(p['value'])} | {100 * p['test_acc']:.2f} % | "
                           f"{p['plr_0.1']:.3g} [{_g(p['plr_0.1_lo'])}, {_g(p['plr_0.1_hi'])}] | "
                           f"{p['auc']:.3f} [{_g(p['auc_lo'])}, {_g(p['auc_hi'])}] |")
        v_lines += ["", band_verdict([x for x in verdict_rows if x["band"] == band]), ""]
    (out / "matched.md").write_text("\n".join(v_lines) + "\n")
    plot_frontier(rows, out / "frontier.png")


def confidence_spread(run_dir: Path) -> dict | None:
    """Members' and non-members' released true-class probability p_y (the ``confidence`` attack's
    score in the audit's ``scores.npz``): 5th, 50th and 95th percentiles; None without it."""
    path = Path(run_dir) / "scores.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        if "score_confidence" not in z.files:
            return None
        p, member = z["score_confidence"], z["is_member"].astype(bool)
    q = lambda a: [float(v) for v in np.percentile(a, [5, 50, 95])]  # noqa: E731
    return {"members": q(p[member]), "nonmembers": q(p[~member])}


def inversion_lines(rows: Sequence[dict]) -> list[str]:
    """For every point whose AUC exceeds SGD's (a defense leaking more than no defense), the
    members' and non-members' p_y spread next to SGD's, so the table says why, not only that."""
    sgd = next((r for r in rows if r["defense"] == "sgd"), None)
    worse = [r for r in rows if sgd is not None and not r["defense"].startswith("sgd") and r["auc"] > sgd["auc"]]
    if not worse:
        return []
    fmt = lambda q: f"{q[0]:.3f}–{q[2]:.3f} ({q[1]:.3f})" if q else "–"  # noqa: E731
    out = ["", "## Points that leak more than SGD (AUC above SGD's), and why", "",
           "p_y: the released true-class probability of the audit's members and non-members, 5–95 % "
           "(median), first seed's run. A shadow-free attack thresholds p_y or the loss; where SGD puts "
           "members *and* most non-members near 1, a model that lowers non-members' p_y more than "
           "members' is easier to threshold without memorising more. The shadow-based attacks, which "
           "calibrate per example, are the check.", "",
           "| point | AUC (SGD) | PLR@0.1 % | members' p_y | non-members' p_y |", "|---|---|---|---|---|"]
    for r in [sgd, *worse]:
        spread = confidence_spread(Path(str(r["run_dirs"]).split(";")[0])) or {}
        name = r["defense"] if not r["knob"] else f"{r['defense']} {display_name(r['knob'])} = {_g(r['value'])}"
        out.append(f"| {name} | {r['auc']:.3f} ({sgd['auc']:.3f}) | {r['plr_0.1']:.3g} | "
                   f"{fmt(spread.get('members'))} | {fmt(spread.get('nonmembers'))} |")
    return out


def _g(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def plot_frontier(rows: Sequence[dict], path: Path) -> None:
    """Highest PLR@0.1 % (log y, bootstrap CI bars) against test accuracy: one curve per defense,
    SGD and the matched-member baselines as single points."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    floor = 0.1  # PLR 0 (no true positive at that FPR) is drawn here on the log axis
    for curve in dict.fromkeys(r["defense"] for r in rows):
        pts = sorted((r for r in rows if r["defense"] == curve), key=lambda r: r["test_acc"])
        x = [100 * r["test_acc"] for r in pts]
        y = [max(r["plr_0.1"], floor) for r in pts]
        lo = [max(y_ - max(_nan0(r["plr_0.1_lo"]), floor), 0) for y_, r in zip(y, pts)]
        hi = [max(max(_nan0(r["plr_0.1_hi"]), floor) - y_, 0) for y_, r in zip(y, pts)]
        style = dict(marker="s", ms=8, ls="none") if curve.startswith("sgd") else dict(marker="o", ms=4, ls="-")
        ax.errorbar(x, y, yerr=[lo, hi], label=curve, capsize=2, lw=1, **style)
    ax.set_yscale("log")
    ax.set_xlabel("test accuracy (%)")
    ax.set_ylabel(f"highest PLR @ 0.1 % FPR (log; 0 drawn at {floor})")
    ax.set_title("privacy–utility frontier (lower right is better)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _nan0(v: float) -> float:
    return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
