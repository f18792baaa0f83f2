"""Every verb of ``python -m fedmist`` and every ``experiments/*.py`` script, run as a real
subprocess with a bad argument: exit code 2, one error line (``error: ...``, or argparse's
``X.py: error: ...`` / click's ``Error: ...`` after the usage), and never a traceback.

Nothing here trains: each bad input must be refused before any data is split, any model built or
any Flower/Ray engine started (every command has a 120 s limit; the whole table runs concurrently,
a few processes at a time, once per session). ``N_BAD_INPUTS`` counts the command lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.sessions import run_in_session

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"
FEDMIST = [sys.executable, "-m", "fedmist"]
SYN = ["--dataset", "synthetic:240x12x3", "--model", "mlp-small", "--train-size", "120"]
LIMIT_S = 120
PREFIXES = ("error:", "Error:")  # ours / click's; argparse's is "PROG: error:"


class Case(NamedTuple):
    id: str
    argv: list[str]  # "{tmp}" is replaced by the per-session scratch directory
    expect: str  # substring of the last stderr line


def script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXP / name), *args]


def fm(*args: str) -> list[str]:
    return [*FEDMIST, *args]


MISSING = "{tmp}/no-such-run"
CASES = [
    # ---------------------------------------------------------------- simulate
    Case("simulate-dataset", fm("simulate", "--dataset", "mnist"), "unknown dataset 'mnist'"),
    Case("simulate-defense", fm("simulate", *SYN, "--defense", "magic"), "unknown defense 'magic'"),
    Case("simulate-lambda", fm("simulate", *SYN, "--lambda", "-1"), "--lambda"),
    Case("simulate-epochs", fm("simulate", *SYN, "--epochs", "0"), "epochs must be >= 1"),
    Case("simulate-set-key", fm("simulate", *SYN, "--set", "nokey=1"), "unknown config key 'nokey'"),
    Case("simulate-set-conflict", fm("simulate", *SYN, "--set", "epochs=2", "--epochs", "1"),
         "--epochs 1 conflicts with --set epochs=2"),
    Case("simulate-set-form", fm("simulate", *SYN, "--set", "epochs"), "--set expects KEY=VALUE"),
    Case("simulate-type", fm("simulate", "--epochs", "many"), "Invalid value"),
    Case("simulate-option", fm("simulate", "--no-such-option"), "No such option"),
    Case("simulate-recipe", fm("simulate", "--recipe", "{tmp}/none.toml"), "recipe file not found"),
    Case("simulate-resume", fm("simulate", "--resume"), "--resume needs the run directory"),
    Case("simulate-clients", fm("simulate", *SYN, "--defense", "mist", "--clients", "1"), "clients"),
    # ---------------------------------------------------------------- attack
    Case("attack-missing-run", fm("attack", MISSING), "no-such-run"),
    Case("attack-no-run", fm("attack"), "give a run directory"),
    Case("attack-shadows-odd", fm("attack", MISSING, "--shadows", "3"), "--shadows"),
    Case("attack-shadows-negative", fm("attack", MISSING, "--shadows", "-2"), "--shadows"),
    Case("attack-attacks", fm("attack", MISSING, "--attacks", "nope"), "unknown attack 'nope'"),
    Case("attack-engine", fm("attack", MISSING, "--shadow-engine", "nope"), "shadow engine"),
    Case("attack-bootstrap", fm("attack", MISSING, "--bootstrap", "-1"), "--bootstrap"),
    Case("attack-threat-client", fm("attack", MISSING, "--threat", "client:x"), "--threat"),
    Case("attack-threat", fm("attack", MISSING, "--threat", "god"), "--threat"),
    Case("attack-list-type", fm("attack", MISSING, "--shadows", "many"), "Invalid value"),
    # ---------------------------------------------------------------- compare
    Case("compare-seeds", fm("compare", *SYN, "--seeds", "a,b", "--out", "{out}"), "--seeds"),
    Case("compare-defenses", fm("compare", *SYN, "--defenses", "magic", "--out", "{out}"),
         "unknown defense(s) magic"),
    Case("compare-shadows-for", fm("compare", *SYN, "--shadows-for", "selena", "--out", "{out}"),
         "--shadows-for expects DEFENSE=N"),
    Case("compare-shadows-for-defense", fm("compare", *SYN, "--defenses", "sgd,mist", "--shadows-for", "selena=4",
                                           "--out", "{out}"), "not among the compared defenses"),
    Case("compare-attacks", fm("compare", *SYN, "--attacks", "nope", "--out", "{out}"), "unknown attack 'nope'"),
    Case("compare-bootstrap", fm("compare", *SYN, "--bootstrap", "-1", "--out", "{out}"), "--bootstrap"),
    Case("compare-jobs", fm("compare", *SYN, "--jobs", "0", "--out", "{out}"), "--jobs"),
    Case("compare-shadows", fm("compare", *SYN, "--shadows", "3", "--out", "{out}"), "--shadows"),
    Case("compare-engine", fm("compare", *SYN, "--shadow-engine", "nope", "--out", "{out}"), "shadow engine"),
    Case("compare-too-few-shadows", fm("compare", *SYN, "--attacks", "loss,lira_online", "--shadows", "2",
                                       "--out", "{out}"), "lira_online need >= 4 shadows"),
    Case("frontier-too-few-shadows", fm("frontier", *SYN, "--defenses", "hamp", "--shadows", "2", "--out", "{out}"),
         "need >= 4 shadows"),
    Case("frontier-recipe-for", fm("frontier", *SYN, "--defenses", "hamp", "--recipe-for", "hamp=no-such-preset",
                                   "--out", "{out}"), "no recipe 'no-such-preset'"),
    Case("frontier-values-for", fm("frontier", *SYN, "--defenses", "hamp", "--values-for", "hamp",
                                   "--out", "{out}"), "--values-for expects DEFENSE=V1,V2,..."),
    Case("frontier-knob-for", fm("frontier", *SYN, "--defenses", "hamp", "--knob-for", "hamp=gamma",
                                 "--out", "{out}"), "hamp's knobs are entropy_weight, entropy_percentile"),
    Case("frontier-values-stray", fm("frontier", *SYN, "--defenses", "hamp", "--values-for", "mist=1,2",
                                     "--out", "{out}"), "not in --defenses hamp"),
    Case("compare-epochs", fm("compare", *SYN, "--epochs", "0", "--out", "{out}"), "epochs must be >= 1"),
    Case("compare-set-key", fm("compare", *SYN, "--set", "nokey=1", "--out", "{out}"), "unknown config key"),
    Case("compare-dataset", fm("compare", "--dataset", "mnist", "--defenses", "sgd", "--out", "{out}"),
         "unknown dataset 'mnist'"),
    Case("compare-tuned", fm("compare", *SYN, "--max-acc-drop", "1", "--out", "{out}"), "no tuned recipes"),
    # ---------------------------------------------------------------- tune
    Case("tune-max-acc-drop", fm("tune", "mist", *SYN, "--max-acc-drop", "-1", "--out", "{out}"),
         "--max-acc-drop"),
    Case("tune-defense", fm("tune", "nodefense", "--out", "{out}"), "unknown defense 'nodefense'"),
    Case("tune-no-knob", fm("tune", "sgd", "--out", "{out}"), "no strength knob"),
    Case("tune-iterations", fm("tune", "mist", *SYN, "--iterations", "0", "--out", "{out}"), "--iterations"),
    Case("tune-validation", fm("tune", "mist", *SYN, "--validation-fraction", "0.9", "--out", "{out}"),
         "--validation-fraction"),
    Case("tune-dataset", fm("tune", "mist", "--dataset", "mnist", "--out", "{out}"), "unknown dataset 'mnist'"),
    Case("tune-verb", fm("tunes", "mist"), "No such command"),
    Case("tune-epochs", fm("tune", "mist", *SYN, "--epochs", "0", "--out", "{out}"), "epochs must be >= 1"),
    # ---------------------------------------------------------------- data
    Case("data-import-missing", fm("data", "import", "texas", "/nonexistent", "--data-dir", "{tmp}/data"),
         "does not exist"),
    Case("data-import-junk", fm("data", "import", "texas", "{tmp}/junk.txt", "--data-dir", "{tmp}/data"),
         "not a recognised"),
    Case("data-import-junk-labels", fm("data", "import", "texas", "{tmp}/junk.txt", "--data-dir", "{tmp}/labelled"),
         "not a recognised"),
    Case("data-import-junk-location", fm("data", "import", "location", "{tmp}/junk.txt", "--data-dir", "{tmp}/data"),
         "not a recognised"),
    Case("data-import-name", fm("data", "import", "nope", "{tmp}/junk.txt", "--data-dir", "{tmp}/data"),
         "cannot import dataset 'nope'"),
    Case("data-download", fm("data", "download", "nope", "--data-dir", "{tmp}/data"), "nope"),
    Case("data-list", fm("data", "list", "--data-dir", "/nonexistent"), "/nonexistent"),
    Case("data-verb", fm("data", "remove", "texas"), "No such command"),
    Case("data-import-csv-columns", fm("data", "import", "texas", "{tmp}/narrow.csv", "--data-dir", "{tmp}/data"),
         "not a recognised Texas100 file"),
    # ---------------------------------------------------------------- deploy
    Case("deploy-run-certs", fm("deploy", "run", "--superlink", "127.0.0.1:1"), "--certs"),
    Case("deploy-run-certs-missing", fm("deploy", "run", "--superlink", "127.0.0.1:1", "--certs", "{tmp}/nocerts"),
         "nocerts"),
    Case("deploy-run-set", fm("deploy", "run", "--superlink", "127.0.0.1:1", "--insecure", "--set", "nokey=1"),
         "unknown config key 'nokey'"),
    Case("deploy-run-superlink", fm("deploy", "run", "--superlink", "nowhere", "--insecure"), "HOST:PORT"),
    Case("deploy-run-defense", fm("deploy", "run", "--superlink", "127.0.0.1:1", "--insecure", "--set", "defense=magic"),
         "unknown defense 'magic'"),
    Case("deploy-run-epochs", fm("deploy", "run", "--superlink", "127.0.0.1:1", "--insecure", "--set", "epochs=0"),
         "epochs must be >= 1"),
    Case("deploy-supernode-partition", fm("deploy", "supernode", "--superlink", "127.0.0.1:1", "--partition", "5",
                                          "--num-partitions", "4", "--insecure"), "partition"),
    Case("deploy-supernode-port", fm("deploy", "supernode", "--superlink", "127.0.0.1:1", "--partition", "0",
                                     "--num-partitions", "4", "--port", "70000", "--insecure"), "--port"),
    Case("deploy-supernode-certs", fm("deploy", "supernode", "--superlink", "127.0.0.1:1", "--partition", "0",
                                      "--num-partitions", "4"), "--certs"),
    Case("deploy-certs-nodes", fm("deploy", "certs", "--nodes", "0", "--out", "{tmp}/certs"), "--nodes"),
    Case("deploy-superlink-certs", fm("deploy", "superlink", "--certs", "{tmp}/nocerts"), "nocerts"),
    Case("deploy-superlink-port", fm("deploy", "superlink", "--insecure", "--port", "0"), "--port"),
    # ---------------------------------------------------------------- experiments/
    Case("audit_table-missing", script("audit_table.py", MISSING, "--out", "{tmp}/t.md"), "no-such-run"),
    Case("audit_table-out", script("audit_table.py", MISSING), "--out"),
    Case("bench_defenses-dataset", script("bench_defenses.py", "--dataset", "nope"), "unknown dataset 'nope'"),
    Case("bench_defenses-defenses", script("bench_defenses.py", "--defenses", "sgd,magic"), "unknown defense 'magic'"),
    Case("bench_defenses-epochs", script("bench_defenses.py", "--epochs", "0"), "--epochs"),
    Case("bench_deploy-timeout", script("bench_deploy.py", "--round-timeout", "soon"), "--round-timeout"),
    Case("bench_epoch-dataset", script("bench_epoch.py", "--dataset", "nope"), "unknown dataset 'nope'"),
    Case("bench_epoch-authors", script("bench_epoch.py", "--authors", "{tmp}"), "no run.sh there"),
    Case("bench_overhead-authors", script("bench_overhead.py", "--dataset", "texas", "--authors", "{tmp}"),
         "authors' Location recipe"),
    Case("bench_epoch-epochs", script("bench_epoch.py", "--epochs", "1"), "--epochs"),
    Case("bench_epoch-clients", script("bench_epoch.py", "--clients", "1"), "--clients"),
    Case("bench_epoch-device", script("bench_epoch.py", "--device", "tpu"), "--device"),
    Case("bench_memory-dataset", script("bench_memory.py", "--dataset", "nope"), "unknown dataset 'nope'"),
    Case("bench_memory-defenses", script("bench_memory.py", "--defenses", "magic"), "unknown defense 'magic'"),
    Case("bench_memory-epochs", script("bench_memory.py", "--epochs", "0"), "--epochs"),
    Case("bench_overhead-dataset", script("bench_overhead.py", "--dataset", "nope"), "unknown dataset 'nope'"),
    Case("bench_overhead-defense", script("bench_overhead.py", "--defense", "magic"), "unknown defense 'magic'"),
    Case("bench_overhead-epochs", script("bench_overhead.py", "--epochs", "1"), "--epochs"),
    Case("bench_shadows-dataset", script("bench_shadows.py", "--dataset", "nope"), "nope"),
    Case("bench_shadows-shadows", script("bench_shadows.py", "--shadows", "0"), "--shadows"),
    Case("bench_shadows-engines", script("bench_shadows.py", "--engines", "nope"), "nope"),
    Case("bench_shadows-epochs", script("bench_shadows.py", "--epochs", "0"), "--epochs"),
    Case("fl_table-missing", script("fl_table.py", MISSING, "--out", "{tmp}/fl.md"), "no-such-run"),
    Case("fl_table-client", script("fl_table.py", MISSING, "--client", "-1", "--out", "{tmp}/fl.md"), "--client"),
    Case("gpu_monitor-seconds", script("gpu_monitor.py", "--seconds", "0"), "--seconds"),
    Case("lambda_sweep-missing", script("lambda_sweep.py", "--sgd-run", MISSING), "no-such-run"),
    Case("lambda_sweep-lambdas", script("lambda_sweep.py", "--sgd-run", MISSING, "--lambdas", "a,b"), "--lambdas"),
    Case("lambda_sweep-dataset", script("lambda_sweep.py", "--sgd-run", MISSING, "--dataset", "nope"), "nope"),
    Case("lambda_sweep-epochs", script("lambda_sweep.py", "--sgd-run", MISSING, "--epochs", "-1"), "--epochs"),
    Case("reproduce-experiment", script("reproduce.py", "nope"), "invalid choice"),
    Case("reproduce-dataset", script("reproduce.py", "defenses", "--dataset", "nope", "--out", "{out}"),
         "unknown dataset 'nope'"),
    Case("reproduce-defenses", script("reproduce.py", "defenses", "--defenses", "magic", "--out", "{out}"),
         "unknown defense 'magic'"),
    Case("reproduce-seeds", script("reproduce.py", "lambda", "--seeds", "a", "--out", "{out}"), "--seeds"),
    Case("reproduce-attacks", script("reproduce.py", "defenses", "--attacks", "nope", "--out", "{out}"),
         "unknown attack 'nope'"),
    Case("reproduce-shadows-for", script("reproduce.py", "defenses", "--shadows-for", "selena", "--out", "{out}"),
         "--shadows-for"),
    Case("reproduce-shadows-for-row", script("reproduce.py", "defenses", "--defenses", "sgd,mist", "--shadows-for",
                                             "selena=4", "--out", "{out}"), "not a row"),
    Case("reproduce-engine", script("reproduce.py", "lambda", "--shadow-engine", "nope", "--out", "{out}"),
         "shadow engine"),
    Case("reproduce-shadows", script("reproduce.py", "defenses", "--shadows", "3", "--out", "{out}"), "--shadows"),
    Case("shadow_stability-missing", script("shadow_stability.py", MISSING, "--out", "{tmp}/s.md"), "no-such-run"),
    Case("shadow_stability-ks", script("shadow_stability.py", MISSING, "--ks", "a", "--out", "{tmp}/s.md"), "--ks"),
    Case("shadow_stability-draws", script("shadow_stability.py", MISSING, "--draws", "0", "--out", "{tmp}/s.md"),
         "--draws"),
]
N_BAD_INPUTS = len(CASES)


def _run(case: Case, tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """One command line in its own process group (killed whole if it outlives the limit)."""
    argv = [a.replace("{tmp}", str(tmp)).replace("{out}", str(tmp / "out" / case.id)) for a in case.argv]
    return run_in_session(argv, tmp, env, LIMIT_S, f"TIMEOUT: still running after {LIMIT_S} s (did it start training?)")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("bad-input")
    (tmp / "junk.txt").write_text("this is not a dataset\n1,2,3\n")
    (tmp / "narrow.csv").write_text("0,1,0\n1,1,0\n")
    (tmp / "labelled" / "texas" / "100").mkdir(parents=True)
    (tmp / "labelled" / "texas" / "100" / "labels").write_text("1\n2\n")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("FEDMIST_DATA", None)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case.id: pool.submit(_run, case, tmp, env) for case in CASES}
        return {name: f.result() for name, f in futures.items()}


def test_count() -> None:
    assert N_BAD_INPUTS == len({c.id for c in CASES}) >= 80


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line(case: Case, outcomes: dict[str, subprocess.CompletedProcess]) -> None:
    proc = outcomes[case.id]
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    assert proc.returncode == 2, shown
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, shown
    last = lines[-1]
    argparse_prefix = f"{Path(case.argv[1]).name}: error:" if case.argv[1] != "-m" else None
    assert last.startswith(PREFIXES) or (argparse_prefix and last.startswith(argparse_prefix)), shown
    assert case.expect in last, shown
    assert sum(line.startswith(PREFIXES) or ": error:" in line for line in lines) == 1, shown
