"""The report's sections, one function each: files of a run, an audit or a study in, HTML out.

Everything is read from the files the commands wrote (``config.json``, ``metrics.json``,
``audit*.json``, ``scores*.npz``, ``compare.csv``, ``compare-fl.csv``, ``logs/*.log``), never from
the code that wrote them, so a report can be made of any finished directory. Numbers in the audit
tables are audit.json's own: each cell carries the exact value in ``data-value`` (``repr`` of the
float, which parses back to the same float) and shows it rounded.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from fedmist.config import RunConfig, display_name
from fedmist.errors import RunDirError
from fedmist.report import svg
from fedmist.studies.compare import PAPER_HIGHEST_PLR

# The MIST paper's headline (§5, "Effect of MIST+Mixup"): highest PLR @ 0.1 % FPR over all attacks,
# as experiments/reproduce.py quotes it. Table 1's time and memory ratios come with compare.csv
# (columns paper_time_x_sgd, paper_mem_factor).
HEADLINE_FPR = "0.001"
AUDIT_FILE = re.compile(r"^audit(?P<suffix>-[A-Za-z0-9_.-]+)?\.json$")


@dataclasses.dataclass(frozen=True)
class Section:
    id: str
    title: str
    body: str


# --- small helpers ---------------------------------------------------------------------------------
def esc(v: Any) -> str:
    return escape(str(v), quote=True)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunDirError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} does not hold a JSON object")
    return data


def read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError as err:
        raise RunDirError(f"cannot read {path}: {err}") from None


def as_float(v: Any) -> float:
    """A CSV / JSON cell as a float; '' and None are NaN."""
    if v is None or v == "":
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fmt(v: Any, spec: str = ".4f") -> str:
    """``v`` formatted, NaN / missing as an en dash, infinity as ∞."""
    f = as_float(v)
    if math.isnan(f):
        return "–"
    if math.isinf(f):
        return "∞" if f > 0 else "−∞"
    return format(f, spec)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", caption: str = "",
          key: str = "") -> str:
    """An HTML table; ``headers`` are escaped here, row cells are HTML already (``td`` or ``th``)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    data = f' data-table="{esc(key)}"' if key else ""
    return (f'<div class="tw"><table class="{esc(cls)}"{data}>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def td(text: Any, cls: str = "") -> str:
    return f'<td class="{esc(cls)}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>"


def num(value: Any, key: str, spec: str, ci: Sequence[float] | None = None) -> str:
    """A numeric cell: the exact value in ``data-value``, rounded text, the CI (if any) after it."""
    v = as_float(value)
    ci_html = ""
    if ci is not None:
        lo, hi = (as_float(c) for c in ci)
        ci_html = (f' <span class="ci" data-key="{esc(key)}/ci" data-lo="{esc(repr(lo))}" data-hi="{esc(repr(hi))}">'
                   f"[{esc(fmt(lo, spec))}, {esc(fmt(hi, spec))}]</span>")
    return (f'<td class="num"><span class="v" data-key="{esc(key)}" data-value="{esc(repr(v))}">'
            f"{esc(fmt(v, spec))}</span>{ci_html}</td>")


def kv_table(items: Iterable[tuple[str, Any]], key: str = "") -> str:
    return table(["", ""], ([f"<th>{esc(k)}</th>", td(v)] for k, v in items), cls="kv", key=key)


def pre(lines: Iterable[str], cls: str = "cmd") -> str:
    return f'<pre class="{cls}">' + "\n".join(esc(line) for line in lines) + "</pre>"


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it, else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(p)


# --- provenance ------------------------------------------------------------------------------------
def git_commit(path: Path) -> str:
    """``git rev-parse HEAD`` of the checkout holding ``path`` (5 s timeout), or "unknown"."""
    try:
        proc = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=False, capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    out = proc.stdout.strip()
    if proc.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40,64}", out):
        return "unknown"
    try:
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               check=False, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return out
    return out + (" (with uncommitted changes)" if dirty else "")


def package_version(name: str) -> str:
    """An installed package's version from its metadata (without importing it, e.g. torch)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_items() -> list[tuple[str, str]]:
    return [("platform", platform.platform()), ("machine", platform.machine() or "unknown"),
            ("CPU count", str(os.cpu_count() or "unknown")), ("python", platform.python_version()),
            ("torch (installed)", package_version("torch")), ("flwr (installed)", package_version("flwr"))]


def set_value(value: Any) -> str:
    """A config value as ``--set KEY=VALUE`` text (as ``fedmist compare`` writes it)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _recipe_family(dataset: str) -> str:
    rest = dataset.split(":", 1)[1] if dataset.startswith("synthetic:") else ""
    if dataset == "synthetic" or re.fullmatch(r"\d+x\d+x\d+", rest):
        return "synthetic"
    return rest or dataset


def shipped_recipe(config: Mapping[str, Any]) -> Path | None:
    """The recipe shipped with fedmist for this dataset / model / defense, as ``fedmist simulate`` finds it."""
    import fedmist

    root = Path(fedmist.__file__).resolve().parent / "recipes"
    family = _recipe_family(str(config.get("dataset", "")))
    for name in (f"{family}-{config.get('model', '')}-{config.get('defense', '')}.toml",
                 f"{family}-{config.get('defense', '')}.toml"):
        if (root / name).is_file():
            return root / name
    return None


def simulate_command(config: Mapping[str, Any], run_dir: Path) -> list[str]:
    """``fedmist simulate [--recipe R] --set K=V ... --out RUN`` that rebuilds ``config``: the fields
    that differ from the recipe (or the defaults), plus dataset, defense and seed always; data_dir
    (a machine's path) is left out."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    base, recipe = RunConfig().to_dict(), shipped_recipe(config)
    if recipe is not None:
        try:
            base = RunConfig.from_toml(recipe).to_dict()
        except Exception:  # noqa: BLE001 - an unreadable recipe: rebuild from the defaults instead
            recipe = None
    sets: list[str] = []
    for key, value in config.items():
        if key not in fields or key == "data_dir":
            continue
        if key == "params":
            sets += [f"params.{k}={set_value(v)}" for k, v in sorted(dict(value).items())
                     if dict(base.get("params", {})).get(k) != v]
            continue
        if value != base.get(key) or key in ("dataset", "defense", "seed"):
            sets.append(f"{display_name(key)}={set_value(value)}")
    args = ["fedmist", "simulate", *(["--recipe", shown_path(recipe)] if recipe else [])]
    for item in sets:
        args += ["--set", item]
    return args + ["--out", shown_path(run_dir)]


def attack_command(report: Mapping[str, Any], run_dir: Path) -> list[str]:
    """``fedmist attack RUN ...`` that redoes the audit ``report`` (an audit*.json)."""
    audit = report.get("audit", {})
    seed, boot = audit.get("seed", 0), report.get("n_bootstrap", audit.get("bootstrap", 200))
    threat = report.get("threat")
    args = ["fedmist", "attack", shown_path(run_dir)]
    if threat:
        args += ["--threat", str(threat.get("threat", "")).split(" ")[0]]
    else:
        args += ["--attacks", ",".join(audit.get("attacks", list(report.get("attacks", {})))),
                 "--shadows", str(audit.get("n_shadows", 0))]
    return args + ["--audit-seed", str(seed), "--bootstrap", str(boot)]


def join(args: Sequence[str]) -> str:
    return shlex.join(args)


def provenance(path: Path, kind: str, config: Mapping[str, Any] | None, audits: Mapping[str, dict],
               commands: Sequence[str], commit: str | None = None) -> Section:
    import fedmist

    seeds: list[tuple[str, str]] = []
    if config:
        seeds.append(("training seed", str(config.get("seed"))))
        ds = config.get("data_seed", -1)
        seeds.append(("data seed", f"{ds}" if ds is not None and int(ds) >= 0 else f"{config.get('seed')} (= seed)"))
    for name, rep in audits.items():
        if "seed" in rep.get("audit", {}):
            seeds.append((f"audit seed ({name})", str(rep["audit"]["seed"])))
    items = [("report of", f"{kind}: {shown_path(path)}"), ("fedmist version", fedmist.__version__),
             ("git commit (of the checkout holding it, when this report was written)", commit or git_commit(path)),
             ("written", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")),
             *seeds]
    body = [kv_table(items, key="provenance"),
            "<h3>Machine that wrote this report</h3>",
            "<p class=note>Run directories do not record the machine that trained them; the device below is the run's "
            "config, the rest is where this report was made.</p>",
            kv_table([*([("device (config)", str(config.get("device")))] if config else []), *machine_items()],
                     key="machine")]
    if commands:
        body += ["<h3>Commands to rerun</h3>", pre(commands)]
    if config:
        defaults = RunConfig().to_dict()
        changed = [(display_name(k), json.dumps(v) if isinstance(v, (dict, list)) else set_value(v))
                   for k, v in sorted(config.items()) if k not in defaults or v != defaults[k]]
        body += ["<h3>Config (fields that differ from the defaults)</h3>", kv_table(changed, key="config-changed"),
                 "<details><summary>every field of config.json</summary>", config_table(config), "</details>"]
    return Section("provenance", "Provenance", "".join(body))


def config_table(config: Mapping[str, Any]) -> str:
    """Every config.json field; those that differ from the defaults in bold."""
    defaults = RunConfig().to_dict()
    rows = []
    for key in sorted(config):
        value = config[key]
        changed = key in defaults and value != defaults[key]
        shown = json.dumps(value) if isinstance(value, (dict, list)) else set_value(value)
        rows.append([f"<th>{esc(display_name(key))}</th>",
                     f'<td class="{"changed" if changed else ""}">{esc(shown)}</td>',
                     td("" if key not in defaults else set_value(defaults[key]) if not isinstance(defaults[key], (dict, list))
                        else json.dumps(defaults[key]), "muted")])
    return table(["field", "value (bold: not the default)", "default"], rows, cls="config", key="config")


# --- training --------------------------------------------------------------------------------------
def training(metrics: Mapping[str, Any]) -> Section:
    history = [h for h in metrics.get("history", []) if isinstance(h, dict) and "epoch" in h]
    summary = metrics.get("summary", {})
    body = []
    items = [(k, summary[k]) for k in ("train_acc", "test_acc", "gap") if k in summary]
    shown = [(k.replace("_", " "), f"{100 * as_float(v):.2f} %") for k, v in items]
    for k, label in (("epochs", "epochs"), ("members", "members"), ("nonmembers", "non-members"), ("test", "test rows"),
                     ("synthetic", "synthetic data"), ("wall_time", "training wall time (s)"),
                     ("startup_time", "start-up (s)"), ("median_epoch_time", "median epoch (s)")):
        if k in summary:
            v = summary[k]
            shown.append((label, f"{v:.3g}" if isinstance(v, float) else str(v)))
    for group in ("defense", "fl"):
        if isinstance(summary.get(group), dict):
            for k, v in summary[group].items():
                shown.append((f"{group}: {k}", json.dumps(v) if isinstance(v, (dict, list)) else str(v)))
    body.append(kv_table(shown, key="summary"))
    figs: list[str] = []
    if history:
        epochs = [float(h["epoch"]) for h in history]
        x = svg.Axis("epoch", min(epochs) - 0.5 if len(epochs) == 1 else min(epochs),
                     max(epochs) + 0.5 if len(epochs) == 1 else max(epochs), integer=True)
        markers = len(epochs) <= 40
        acc = [svg.Series(name, [float(h["epoch"]) for h in history if _finite(h.get(key))],
                          [100 * float(h[key]) for h in history if _finite(h.get(key))], markers=markers)
               for key, name in (("train_acc", "train accuracy"), ("test_acc", "test accuracy"))]
        acc = [s for s in acc if s.x]
        if acc:
            figs.append(svg.line_chart(acc, x, svg.Axis("accuracy (%)", 0, 100), "accuracy per epoch",
                                       kind="accuracy", width=440, height=340, legend_width=130))
        loss_keys = sorted({k for h in history for k, v in h.items() if k.endswith("loss") and _finite(v)})
        losses = [svg.Series(k.replace("_", " "), [float(h["epoch"]) for h in history if _finite(h.get(k))],
                             [float(h[k]) for h in history if _finite(h.get(k))], markers=markers) for k in loss_keys]
        if losses:
            top = max(max(s.y) for s in losses)
            low = min(min(s.y) for s in losses)
            y = svg.Axis("loss", min(0.0, low), top * 1.05 if top > 0 else 1.0)
            figs.append(svg.line_chart(losses, x, y, "training loss per epoch", kind="loss",
                                       width=440, height=340, legend_width=130))
        body.append('<div class="figs">' + "".join(figs) + "</div>")
        body.append("<p class=note>Accuracy is evaluated on the members (train) and the test rows every "
                    "<code>eval_every</code> epochs and at the last; the losses are the training losses the "
                    "run recorded (local = phase 1, xdiff = MIST's cross-difference phase). Held-out loss is "
                    "not recorded.</p>")
    return Section("training", "Training", "".join(body))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --- audits ----------------------------------------------------------------------------------------
def audit_files(run_dir: Path) -> dict[str, Path]:
    """{suffix: audit file}: '' for audit.json, '-server' for audit-server.json ..."""
    found = {}
    for p in sorted(Path(run_dir).glob("audit*.json")):
        m = AUDIT_FILE.match(p.name)
        if m:
            found[m.group("suffix") or ""] = p
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != "", kv[0])))


def load_scores(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise RunDirError(f"cannot read {path}: {err}") from None


def roc_points(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1); higher score = member.

    Equal to sklearn's ``roc_curve(..., drop_intermediate=False)`` (what audit.json's TPRs come from).

    >>> f, t = roc_points(np.array([3., 2., 1., 0.]), np.array([True, False, True, False]))
    >>> f.tolist(), t.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member, dtype=bool)
    order = np.argsort(-s, kind="mergesort")
    s, m = s[order], m[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp, fp = np.cumsum(m)[last], np.cumsum(~m)[last]
    return np.r_[0.0, fp / max(1, (~m).sum())], np.r_[0.0, tp / max(1, m.sum())]


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Largest TPR among thresholds whose FPR is <= ``target`` (audit.json's rule)."""
    return float(tpr[fpr <= target + 1e-12].max())


def roc_figure(scores: Mapping[str, np.ndarray], is_member: np.ndarray, report: Mapping[str, Any], title: str,
               subset: str = "full", mask: np.ndarray | None = None, kind: str = "roc") -> str:
    m = np.asarray(is_member, dtype=bool) if mask is None else np.asarray(is_member, dtype=bool)[mask]
    n_mem, n_non = int(m.sum()), int((~m).sum())
    lo = min(svg.decade_floor(1.0 / max(1, n_non)), svg.decade_floor(1.0 / max(1, n_mem)))
    series = []
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64) if mask is None else np.asarray(s, dtype=np.float64)[mask]
        if len(s) != len(m) or not np.isfinite(s).all():
            continue
        f, t = roc_points(s, m)
        metrics = (report.get("attacks", {}).get(name) or {}).get(subset) or {}
        note = f"AUC {fmt(metrics.get('auc'), '.3f')}" if metrics else ""
        series.append(svg.Series(name, f.tolist(), t.tolist(), note=note))
    fig = svg.line_chart(series, svg.Axis("false positive rate (log)", lo, 1.0, log=True),
                         svg.Axis("true positive rate (log)", lo, 1.0, log=True),
                         f"{title}: {n_mem} members / {n_non} non-members", kind=kind, diagonal=True,
                         width=520, height=460, legend_width=190)
    return fig


def metrics_table(report: Mapping[str, Any], subset: str, key: str) -> str:
    """AUC, then TPR and PLR at each FPR (95 % bootstrap CI), per attack; numbers are audit.json's."""
    fprs = [f"{float(f):g}" for f in report.get("fprs", [])]
    headers = ["attack", "AUC [95 % CI]"]
    for f in fprs:
        headers += [f"TPR@{100 * float(f):g}% FPR", f"PLR@{100 * float(f):g}% FPR", f"max FP @{100 * float(f):g}%"]
    rows = []
    head = (report.get("headline" if subset == "full" else "headline_vulnerable") or {}).get("attack")
    for name, res in report.get("attacks", {}).items():
        m = (res or {}).get(subset)
        if m is None:
            continue
        cls = ' class="best"' if name == head else ""
        cells = [f"<th{cls}>{esc(name)}</th>", num(m.get("auc"), f"{key}/{name}/auc", ".4f", m.get("auc_ci"))]
        for f in fprs:
            p = m.get("at_fpr", {}).get(f, {})
            cells += [num(p.get("tpr"), f"{key}/{name}/{f}/tpr", ".4f", p.get("tpr_ci")),
                      num(p.get("plr"), f"{key}/{name}/{f}/plr", ".2f", p.get("plr_ci")),
                      td(p.get("max_false_positives", "–"), "num")]
        rows.append(cells)
    return table(headers, rows, cls="metrics", key=key)


def headline_text(report: Mapping[str, Any], which: str = "headline") -> str:
    h = report.get(which)
    if not h:
        return ""
    fp = h.get("max_false_positives")
    return (f"Highest PLR at {100 * float(h.get('fpr', 0.001)):g} % FPR: {fmt(h.get('plr'), '.2f')} "
            f"[{fmt((h.get('plr_ci') or [math.nan])[0], '.2f')}, {fmt((h.get('plr_ci') or [0, math.nan])[1], '.2f')}] "
            f"({h.get('attack')}, TPR {fmt(h.get('tpr'), '.4f')}); that FPR allows {fp} false positive"
            f"{'' if fp == 1 else 's'} (resolution 1/{round(1 / as_float(h.get('fpr_resolution')))} = "
            f"{fmt(h.get('fpr_resolution'), '.2g')}).")


def audit_section(run_dir: Path, suffix: str, report: Mapping[str, Any]) -> list[Section]:
    """The audit in ``audit{suffix}.json``: ROC (log-log, from scores{suffix}.npz), the TPR / PLR table,
    the most vulnerable subset (when the audit ranked one)."""
    name = report.get("threat", {}).get("threat") if report.get("threat") else "outsider (final model)"
    sid = "audit" + (suffix or "")
    scores_file = Path(run_dir) / f"scores{suffix}.npz"
    z = load_scores(scores_file)
    body = [f"<p>{esc(report.get('n_members'))} members / {esc(report.get('n_nonmembers'))} non-members audited; "
            f"{esc(report.get('n_bootstrap'))} bootstrap resamples (95 % percentile intervals). "
            f"PLR = TPR / target FPR. File: <code>{esc(f'audit{suffix}.json')}</code>.</p>",
            f"<p class=headline>{esc(headline_text(report))}</p>"]
    scores: dict[str, np.ndarray] = {}
    is_member = None
    if z is not None and "is_member" in z:
        is_member = z["is_member"].astype(bool)
        names = [str(a) for a in z.get("attacks", [])] or [k[len("score_"):] for k in z if k.startswith("score_")]
        scores = {a: z[f"score_{a}"] for a in names if f"score_{a}" in z}
        body.append(roc_figure(scores, is_member, report, "ROC", kind=f"roc{suffix}"))
    else:
        body.append(f"<p class=warn>No {esc(scores_file.name)}: the ROC curves cannot be drawn.</p>")
    body.append(metrics_table(report, "full", f"{sid}/full"))
    if report.get("threat"):
        info = {k: v for k, v in report["threat"].items() if k != "fl"}
        body += ["<h3>Threat model</h3>",
                 kv_table([(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for k, v in info.items()])]
    audit = report.get("audit", {})
    if audit:
        secs = audit.get("seconds")
        items = [(k, str(audit[k])) for k in ("run", "attacks", "n_shadows", "shadow_protocol", "pool_size",
                                              "shadow_train_size", "target_train_size", "shadows_trained_now")
                 if audit.get(k) is not None]
        if isinstance(secs, dict):
            items.append(("seconds", ", ".join(f"{k}: {json.dumps(v)}" for k, v in secs.items())))
        elif secs is not None:
            items.append(("seconds", str(secs)))
        body += ["<details><summary>audit settings</summary>", kv_table(items), "</details>"]
    out = [Section(sid, f"Audit: {name}", "".join(body))]
    sub = report.get("vulnerable_subset")
    if sub:
        vb = [f"<p>{esc(sub.get('rule', ''))}. {esc(sub.get('size'))} members ranked by "
              f"{esc(sub.get('source', 'the audit'))}, against all {esc(sub.get('n_nonmembers'))} non-members.</p>",
              f"<p class=headline>{esc(headline_text(report, 'headline_vulnerable'))}</p>"]
        if is_member is not None and z is not None and "vulnerable" in z and "indices" in z:
            mask = np.isin(z["indices"], z["vulnerable"]) | ~is_member
            vb.append(roc_figure(scores, is_member, report, "ROC, most vulnerable members", subset="vulnerable",
                                 mask=mask, kind=f"roc-vulnerable{suffix}"))
            rows = [int(r) for r in np.asarray(z["vulnerable"]).ravel()]
            vb.append(f"<details><summary>the {len(rows)} dataset rows of the subset</summary>"
                      f"<p class=rows>{esc(', '.join(map(str, rows)))}</p></details>")
        vb.append(metrics_table(report, "vulnerable", f"{sid}/vulnerable"))
        out.append(Section(f"vulnerable{suffix}", f"Most vulnerable subset{' (' + name + ')' if suffix else ''}",
                           "".join(vb)))
    return out


# --- a comparison (fedmist compare) -----------------------------------------------------------------
def _cells(cmp_dir: Path) -> dict[str, dict]:
    """{run dir name: {"config", "audit", "dir"}} for the finished cells under ``runs/``."""
    cells = {}
    runs = Path(cmp_dir) / "runs"
    for d in sorted(runs.iterdir()) if runs.is_dir() else []:
        if (d / "config.json").is_file():
            cells[d.name] = {"dir": d, "config": read_json(d / "config.json"),
                             "audit": read_json(d / "audit.json") if (d / "audit.json").is_file() else None}
    return cells


def logged_commands(cmp_dir: Path) -> list[str]:
    """Every ``$ fedmist ...`` line of ``logs/*.log``: the exact commands each cell ran."""
    out = []
    logs = Path(cmp_dir) / "logs"
    for log in sorted(logs.glob("*.log")) if logs.is_dir() else []:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("$ fedmist "):
                out.append(line[2:])
    return out


def study_dataset(cells: Mapping[str, dict], md: str) -> str:
    for c in cells.values():
        return str(c["config"].get("dataset", ""))
    m = re.match(r"#\s*([^\s:]+(?::\S+)?):", md)
    return m.group(1) if m else ""


def comparison(cmp_dir: Path) -> tuple[list[Section], list[str], str]:
    """Sections of a ``fedmist compare`` directory, the commands to rerun it and its dataset."""
    rows = read_csv(Path(cmp_dir) / "compare.csv")
    md_file = Path(cmp_dir) / "compare.md"
    md = md_file.read_text(errors="replace") if md_file.is_file() else ""
    cells = _cells(cmp_dir)
    dataset = study_dataset(cells, md)
    paper = PAPER_HIGHEST_PLR.get(dataset.split(":")[0], {})
    intro = [line for line in md.split("\n|", 1)[0].splitlines() if line.strip() and not line.startswith("#")]
    body = ["".join(f"<p>{esc(line)}</p>" for line in intro)]

    pts = [svg.Point(r["defense"], 100 * as_float(r["test_acc"]), as_float(r["plr_0.1"]),
                     note=f"({r.get('plr_0.1_attack', '')})") for r in rows
           if _finite(as_float(r["test_acc"])) and _finite(as_float(r["plr_0.1"]))]
    if pts:
        ys = [p.y for p in pts if p.y > 0] or [1.0]
        lo = svg.decade_floor(min(min(ys), 1.0)) / (10 if any(p.y <= 0 for p in pts) else 1)
        hi = svg.decade_ceil(max(max(ys) * 1.01, lo * 10))
        xs = [p.x for p in pts]
        x = svg.Axis("test accuracy (%)", max(0.0, math.floor(min(xs) / 5) * 5 - 5), min(100.0, math.ceil(max(xs) / 5) * 5 + 5))
        body.append(svg.scatter_chart(pts, x, svg.Axis("highest PLR @ 0.1 % FPR (log)", lo, hi, log=True),
                                      "privacy–utility trade-off (lower right is better)", kind="tradeoff",
                                      caption="PLR 0 is drawn at the bottom edge" if any(p.y <= 0 for p in pts) else ""))
    headers = ["defense", "test acc %", "drop vs SGD (pts)", "highest PLR@0.1% (attack)", "paper highest PLR@0.1%",
               "PLR@1%", "AUC", "ε", "train s", "time ×SGD", "paper time ×SGD", "mem ×SGD", "paper models",
               "shadows × seeds"]
    trs = []
    for r in rows:
        d = r["defense"]
        seeds = int(as_float(r.get("seeds")) or 1) if _finite(as_float(r.get("seeds"))) else 1
        std = f" ± {100 * as_float(r.get('test_acc_std')):.2f}" if seeds > 1 and r.get("test_acc_std") else ""
        pstd = f" ± {as_float(r.get('plr_0.1_std')):.2f}" if seeds > 1 and r.get("plr_0.1_std") else ""
        trs.append([f"<th>{esc(d)}</th>",
                    f'<td class="num">{esc(fmt(100 * as_float(r["test_acc"]), ".2f") + std)}</td>',
                    td(fmt(100 * as_float(r.get("acc_drop")), "+.2f"), "num"),
                    f'<td class="num"><span class="v" data-key="compare/{esc(d)}/plr_0.1" '
                    f'data-value="{esc(repr(as_float(r["plr_0.1"])))}">{esc(fmt(r["plr_0.1"], ".2f"))}</span>'
                    f'{esc(pstd)} ({esc(r.get("plr_0.1_attack", ""))})</td>',
                    td(fmt(paper.get(d), ".2f"), "num paper"),
                    td(fmt(r.get("plr_1"), ".2f"), "num"), td(fmt(r.get("auc"), ".3f"), "num"),
                    td(fmt(r.get("epsilon"), ".3g"), "num"), td(fmt(r.get("train_seconds"), ".0f"), "num"),
                    td(fmt(r.get("time_x_sgd"), ".2f"), "num"), td(fmt(r.get("paper_time_x_sgd"), ".2f"), "num paper"),
                    td(fmt(r.get("mem_x_sgd"), ".2f"), "num"), td(fmt(r.get("paper_mem_factor"), ".0f"), "num paper"),
                    td(f"{r.get('n_shadows', '–')} × {r.get('seeds', '–')}", "num")])
    body.append(table(headers, trs, cls="compare", key="compare"))
    body.append("<p class=note>Paper columns (shaded): the MIST paper's highest PLR @ 0.1 % FPR over all attacks "
                "(§5, for SGD and MIST on Location, Purchase and Texas; – where it gives none) and its Table 1 cost "
                "ratios (CIFAR-100 / AlexNet on a GPU: training time relative to SGD; memory as the number of models "
                "trained). Ours: this machine, this dataset. Means over seeds; ± is the population std.</p>")
    sections = [Section("comparison", f"Comparison{': ' + dataset if dataset else ''}", "".join(body))]

    best = []  # the attack that reached each cell's highest PLR@0.1 %, its ROC from the cell's scores
    for name, c in cells.items():
        rep = c["audit"]
        if not rep or not rep.get("headline"):
            continue
        attack = rep["headline"]["attack"]
        z = load_scores(c["dir"] / "scores.npz")
        if z is None or f"score_{attack}" not in z:
            continue
        f, t = roc_points(z[f"score_{attack}"], z["is_member"].astype(bool))
        best.append((name, attack, f, t, int((~z["is_member"].astype(bool)).sum())))
    if best:
        lo = svg.decade_floor(1.0 / max(n for *_, n in best))
        series = [svg.Series(f"{n} ({a})", f.tolist(), t.tolist()) for n, a, f, t, _ in best]
        fig = svg.line_chart(series, svg.Axis("false positive rate (log)", lo, 1.0, log=True),
                             svg.Axis("true positive rate (log)", lo, 1.0, log=True),
                             "ROC of each cell's strongest attack", kind="roc-cells", diagonal=True,
                             width=520, height=460, legend_width=290)
        cell_rows = []
        for name, c in cells.items():
            rep = c["audit"] or {}
            h = rep.get("headline") or {}
            cell_rows.append([f"<th>{esc(name)}</th>", td(c["config"].get("defense")), td(c["config"].get("seed")),
                              num(h.get("plr"), f"cell/{name}/plr_0.1", ".2f", h.get("plr_ci")), td(h.get("attack", "–")),
                              td((rep.get("audit") or {}).get("n_shadows", "–"), "num")])
        sections.append(Section("cells", "Cells", fig + table(
            ["run", "defense", "seed", "highest PLR@0.1% [95 % CI]", "attack", "shadows"], cell_rows, key="cells")
            + "<p class=note>Each cell's own report: <code>fedmist report runs/NAME</code>.</p>"))

    commands = logged_commands(cmp_dir)
    if not commands:  # no logs: rebuild each cell's commands from its files
        for c in cells.values():
            commands.append(join(simulate_command(c["config"], c["dir"])))
            if c["audit"]:
                commands.append(join(attack_command(c["audit"], c["dir"])))
    if cells:
        first = next(iter(cells.values()))
        seeds = sorted({int(c["config"].get("seed", 0)) for c in cells.values()})
        audit = (first["audit"] or {}).get("audit", {})
        head = ["fedmist", "compare", "--dataset", dataset, "--defenses", ",".join(dict.fromkeys(r["defense"] for r in rows)),
                "--seeds", ",".join(map(str, seeds))]
        if audit:
            head += ["--attacks", ",".join(audit.get("attacks", [])), "--shadows", str(audit.get("n_shadows", 0)),
                     "--audit-seed", str(audit.get("seed", 0)), "--bootstrap", str(audit.get("bootstrap", 200))]
        commands.insert(0, join(head + ["--out", shown_path(cmp_dir)]) + "   # reconstructed; the cells' own "
                        "commands (with any --set) follow")
    return sections, commands, dataset


# --- an FL threat study (fedmist compare --mode fl) -------------------------------------------------
THREATS = (("server", "server (updates)"), ("client", "participant (global models)"), ("outsider", "outsider (final model)"))


def fl_comparison(cmp_dir: Path) -> tuple[list[Section], list[str]]:
    rows = read_csv(Path(cmp_dir) / "compare-fl.csv")
    md_file = Path(cmp_dir) / "compare-fl.md"
    md = md_file.read_text(errors="replace") if md_file.is_file() else ""
    intro = [line for line in md.split("\n|", 1)[0].splitlines() if line.strip() and not line.startswith("#")]
    body = ["".join(f"<p>{esc(line)}</p>" for line in intro)]
    vals = [as_float(r.get(f"{t}_plr_0.1")) for r in rows for t, _ in THREATS]
    pos = [v for v in vals if _finite(v) and v > 0]
    lo = svg.decade_floor(min(pos + [1.0])) / 10
    hi = svg.decade_ceil(max(pos + [lo * 100]) * 1.01)
    series = [(r["row"], [as_float(r.get(f"{t}_plr_0.1")) for t, _ in THREATS]) for r in rows]
    body.append(svg.bar_chart([label for _, label in THREATS], series, svg.Axis("highest PLR @ 0.1 % FPR (log)", lo, hi, log=True),
                              "membership inference in FL, per threat", kind="fl-threats", reference=1.0))
    headers = ["row", "partition", "rounds", "test acc %", "ε"]
    for t, _ in THREATS:
        headers += [f"{t} AUC", f"{t} TPR@0.1%", f"{t} PLR@0.1%"]
    headers += ["peer leak AUC", "train s", "record MB"]
    trs = []
    for r in rows:
        cells = [f"<th>{esc(r['row'])}</th>", td(r.get("partition", "")), td(r.get("rounds", ""), "num"),
                 td(fmt(100 * as_float(r.get("test_acc")), ".2f"), "num"), td(fmt(r.get("epsilon"), ".3g"), "num")]
        for t, _ in THREATS:
            cells += [num(r.get(f"{t}_auc"), f"fl/{r['row']}/{t}/auc", ".3f"),
                      num(r.get(f"{t}_tpr_0.1"), f"fl/{r['row']}/{t}/tpr_0.1", ".4f"),
                      num(r.get(f"{t}_plr_0.1"), f"fl/{r['row']}/{t}/plr_0.1", ".2f")]
        cells += [td(fmt(r.get("peerleak_auc"), ".3f"), "num"), td(fmt(r.get("train_s"), ".1f"), "num"),
                  td(fmt(r.get("record_mb"), ".1f"), "num")]
        trs.append(cells)
    body.append(table(headers, trs, cls="compare", key="compare-fl"))
    body.append("<p class=note>Per threat: the highest AUC, TPR and PLR at 0.1 % FPR over its attacks. PLR 0 is "
                "drawn at the axis's lower edge; the dashed line is PLR = 1 (chance).</p>")
    sections = [Section("fl-comparison", "FL threat study", "".join(body))]
    runs = Path(cmp_dir) / "runs"
    per_run = []
    for d in sorted(runs.iterdir()) if runs.is_dir() else []:
        files = audit_files(d)
        if not files:
            continue
        trs = []
        for suffix, f in files.items():
            rep = read_json(f)
            h = rep.get("headline") or {}
            threat = (rep.get("threat") or {}).get("threat", "outsider")
            trs.append([f"<th>{esc(f.name)}</th>", td(threat), num(h.get("plr"), f"fl-run/{d.name}{suffix}/plr_0.1",
                                                                 ".2f", h.get("plr_ci")), td(h.get("attack", "–"))])
        per_run.append(f"<h3>{esc(d.name)}</h3>" + table(["file", "threat", "highest PLR@0.1% [95 % CI]", "attack"],
                                                         trs, key=f"fl-run/{d.name}"))
    if per_run:
        sections.append(Section("fl-runs", "Audits of each FL run", "".join(per_run)
                                + "<p class=note>ROC curves and full tables: <code>fedmist report runs/NAME</code>.</p>"))
    commands = logged_commands(cmp_dir)
    configs = [read_json(d / "config.json") for d in sorted(runs.iterdir())
               if (d / "config.json").is_file()] if runs.is_dir() else []
    if configs:
        names = [d.name for d in sorted(runs.iterdir()) if (d / "config.json").is_file()]
        commands.insert(0, join(["fedmist", "compare", "--mode", "fl", "--dataset", str(configs[0].get("dataset", "")),
                                 "--defenses", ",".join(names), "--out", shown_path(cmp_dir)])
                        + "   # reconstructed; the rows' own commands (with any --set) follow")
    return sections, commands


def rerun_commands(run_dir: Path, config: Mapping[str, Any] | None, audits: Mapping[str, dict]) -> list[str]:
    out = [join(simulate_command(config, run_dir))] if config else []
    out += [join(attack_command(rep, run_dir)) for rep in audits.values()]
    seen: list[str] = []
    for c in out:  # a client threat writes several files (peerleak, active) from one command
        if c not in seen:
            seen.append(c)
    return seen


__all__ = ["Section", "audit_files", "audit_section", "comparison", "fl_comparison", "provenance", "read_json",
           "rerun_commands", "roc_points", "training"]
