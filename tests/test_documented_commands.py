"""Every command in README.md and docs/*.md runs, as typed or at the documented smaller size below.

Commands are read from the documents on every run, so a command added later is picked up: each
line of a shell code block that starts with ``fedmist``, ``python``, ``python3``, ``flwr`` or
``pip`` (``\\`` continuations joined, ``# comments`` stripped; ``fedmist VERB ... ARGS`` means the
previous ``fedmist VERB`` line of the same document with ARGS added), and each inline
``python experiments/...`` or ``flwr run ...`` span. A command is either run here or listed in
``NOT_RUN_HERE`` with the reason (and where it is run instead); anything else fails.

The commands of one document run in document order in one scratch directory holding a copy of
``experiments/`` (so ``experiments/recipes/...`` resolves, and reports the scripts write to
``experiments/results/`` land in the copy) and ``tests`` (``bench_deploy.py`` imports its
cluster); data comes from ``$FEDMIST_DATA`` or the project's ``../shared/data``. A ``runs/NAME``
that a smaller ``fedmist simulate`` wrote as ``runs/NAME-<tag>`` (its options changed the recipe's
training fields) is read there. A command on a real dataset that is not installed must refuse:
exit code 2 and one ``error:`` line that names a ``fedmist data`` command.

Documented smaller size (``SMALLER``, applied in this order to every command):

    fedmist frontier --defenses LIST -> --defenses mist; --points N -> --points 2;
                                       += --mist-clients 2 --shadows 0 (if absent)
    --defenses LIST (anything else) -> --defenses sgd,mist
    --shadows 16                    -> --shadows 4            (LiRA needs 2 IN + 2 OUT)
    --clients 10 / clients=10       -> --clients 4 / clients=4 (client:3 stays a participant)
    --rounds N / rounds=N           -> --rounds 1 / rounds=1
    fedmist simulate|compare|tune|frontier
                                    += --train-size 200, and --epochs 1 unless FL rounds are set
                                       (not with --resume: it takes only the run directory)
    fedmist attack RUN, fedmist compare (not --mode fl)
                                    += --shadows 4 (if absent)
    fedmist attack RUN              += --shadow-engine inprocess --bootstrap 20
    fedmist compare|frontier        += --shadow-engine inprocess --bootstrap 20
    fedmist tune                    += --iterations 1 --seeds 0 --min-validation-rows 50
    bench_defenses.py               += --defenses sgd,mist (if absent)
    bench_defenses.py, bench_memory.py += --epochs 1
    bench_epoch.py                  += --epochs 2 --train-size 200 --clients 2
    bench_overhead.py --dataset location --epochs 8
                                    -> --dataset synthetic:400x446x30 --epochs 2 --clients 2
    bench_shadows.py --dataset location
                                    -> --dataset synthetic:400x446x30 --shadows 2 --epochs 1 --engines inprocess
    bench_deploy.py                 += --dataset synthetic:240x12x3 --set model=mlp-small
                                       --set train_size=120 --epochs 1
    runs/A runs/B                   -> runs/location-mist-c4-s0 runs/compare-location/runs/location-sgd-s0
    shadow_stability.py             += --ks 2,4 --draws 2
    lambda_sweep.py                 += --lambdas 14 --epochs 1
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.sessions import run_in_session

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LIMIT_S = 420  # per command; a smaller command that takes longer is a regression in itself

SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
FIRST_WORDS = {"fedmist", "python", "python3", "flwr", "pip"}
INLINE_PREFIXES = ("python experiments/", "flwr run")

# (regex, replacement) applied in order with re.sub to every command (see the docstring).
SIM = r"^(fedmist (?:simulate|compare|tune|frontier)\b(?!.*--resume)"
SMALLER: list[tuple[str, str]] = [
    (r"^(fedmist frontier .*)--defenses \S+", r"\1--defenses mist"),
    (r"^(fedmist frontier .*)--points \d+", r"\1--points 2"),
    (r"^(fedmist frontier (?!.*--shadows).*)$", r"\1 --mist-clients 2 --shadows 0"),
    (r"^(?!fedmist frontier)(.*)--defenses \S+", r"\1--defenses sgd,mist"),
    (r"--shadows 16\b", "--shadows 4"),
    (r"--clients 10\b", "--clients 4"),
    (r"\bclients=10\b", "clients=4"),
    (r"--rounds \d+", "--rounds 1"),
    (r"\brounds=\d+", "rounds=1"),
    (SIM + r".*)$", r"\1 --train-size 200"),
    (SIM + r"(?!.*--rounds)(?!.*rounds=).*)$", r"\1 --epochs 1"),
    (r"^(fedmist (?:attack (?!--list)|compare (?!.*--mode fl))(?!.*--shadows).*)$", r"\1 --shadows 4"),
    (r"^(fedmist (?:attack (?!--list)|compare |frontier ).*)$", r"\1 --shadow-engine inprocess --bootstrap 20"),
    (r"^(fedmist tune .*)$", r"\1 --iterations 1 --seeds 0 --min-validation-rows 50"),
    (r"^(python experiments/bench_defenses\.py(?!.*--defenses).*)$", r"\1 --defenses sgd,mist"),
    (r"^(python experiments/bench_(?:defenses|memory)\.py.*)$", r"\1 --epochs 1"),
    (r"^(python experiments/bench_epoch\.py.*)$", r"\1 --epochs 2 --train-size 200 --clients 2"),
    (r"^(python experiments/bench_overhead\.py) --dataset location --epochs 8$",
     r"\1 --dataset synthetic:400x446x30 --epochs 2 --clients 2"),
    (r"^(python experiments/bench_shadows\.py) --dataset location",
     r"\1 --dataset synthetic:400x446x30 --shadows 2 --epochs 1 --engines inprocess"),
    (r"^(python experiments/bench_deploy\.py.*)$",
     r"\1 --dataset synthetic:240x12x3 --set model=mlp-small --set train_size=120 --epochs 1"),
    (r"runs/A runs/B", "runs/location-mist-c4-s0 runs/compare-location/runs/location-sgd-s0"),
    (r"^(python experiments/shadow_stability\.py.*)$", r"\1 --ks 2,4 --draws 2"),
    (r"^(python experiments/lambda_sweep\.py.*)$", r"\1 --lambdas 14 --epochs 1"),
]

_DEPLOY = "tests/deploy/test_deploy.py::test_tls_authenticated_deployment_equals_the_simulation"
NOT_RUN_HERE: dict[str, str] = {
    # install one-liners
    "python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e . && "
    "fedmist simulate --clients 4 --dataset location":
        ".ci/run installs the project the same way (with the [test] extra) on a fresh clone; its training step is "
        "README's `fedmist simulate --dataset location --defense mist --clients 4` (the same run), run here",
    "python3 -m venv .venv && . .venv/bin/activate && python -m pip install -q --upgrade pip && "
    'python -m pip install -q -c constraints.txt -e ".[test]" && python -m pytest -q':
        ".ci/run runs exactly this line",
    "fedmist simulate --out runs/abl --resume":
        "continues an interrupted run; in document order runs/abl has finished, and a finished run is refused "
        "(exit 2: nothing to resume); tests/test_cli_contract.py::test_resume_needs_only_the_run_directory runs "
        "this command on an interrupted run, ::test_ctrl_c_stops_within_seconds_keeps_the_checkpoint_and_prints_"
        "the_resume_command interrupts one",
    # Flower's own CLI
    "flwr run .":
        "needs a Flower home with a local SuperLink; tests/test_flwr_run.py runs `flwr run . --run-config ...` "
        "and the too-small-federation case",
    # deployment on other machines (10.0.0.5, /data/fedmist); the same commands on 127.0.0.1:
    "fedmist deploy superlink --certs certs/ --port 9092":
        f"a long-running server on 10.0.0.5; {_DEPLOY} starts it on 127.0.0.1 (tests/deploy/cluster.py)",
    "fedmist deploy supernode --superlink 10.0.0.5:9092 --partition 2 --num-partitions 4 "
    "--data-dir /data/fedmist --certs certs/":
        f"needs the SuperLink on 10.0.0.5; {_DEPLOY} starts 4 SuperNodes on 127.0.0.1",
    "fedmist deploy run --superlink 10.0.0.5:9092 --certs certs/ --recipe experiments/recipes/location-mist.toml "
    "--out runs/location-mist-deployed --round-timeout 120 --min-clients 3":
        f"needs the SuperLink on 10.0.0.5; {_DEPLOY} submits with `fedmist deploy run`, "
        "tests/deploy/test_dropout.py with --round-timeout and --min-clients",
    "fedmist deploy run --superlink 10.0.0.5:9092 --certs certs/ --recipe experiments/recipes/location-mist.toml "
    "--out runs/location-mist-deployed":
        f"needs the SuperLink on 10.0.0.5; {_DEPLOY} submits with `fedmist deploy run`",
    # no smaller size
    "python experiments/reproduce.py defenses|xdiff-loss|lambda|clients|repartition --dataset location":
        "a placeholder for five commands, and reproduce.py has no size option: every cell trains its full recipe "
        "(100 epochs) and audits with 200 bootstraps; its cells are `fedmist compare`'s (make_cell/run_cells), "
        "run here at the smaller size by README's compare lines",
}


class Command(NamedTuple):
    document: str  # README.md, docs/deploy.md, ...
    line: int
    text: str  # as documented (joined, comment stripped)


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def documented_commands() -> list[Command]:
    """Every command of README.md and docs/*.md, in document order."""
    found: list[Command] = []
    for doc in DOCUMENTS:
        name = str(doc.relative_to(ROOT))
        lines = doc.read_text().splitlines()
        fence: str | None = None
        pending = ""
        start = 0
        last_by_verb: dict[str, str] = {}
        for n, raw in enumerate(lines, 1):
            stripped = raw.strip()
            if stripped.startswith("```"):
                fence = stripped[3:].strip().lower() if fence is None else None
                pending = ""
                continue
            if fence is None:  # prose: inline spans
                for span in re.findall(r"`([^`]+)`", raw):
                    if span.startswith(INLINE_PREFIXES):
                        found.append(Command(name, n, " ".join(span.split())))
                continue
            if fence not in SHELL_FENCES:
                continue
            text = _strip_comment(raw)
            if not pending:
                start = n
            if text.endswith("\\"):
                pending += text[:-1].strip() + " "
                continue
            text = " ".join((pending + text.strip()).split())
            pending = ""
            if not text or text.split()[0] not in FIRST_WORDS:
                continue
            verb = " ".join(text.split()[:2])
            if " ... " in text and verb in last_by_verb:  # `fedmist compare ... --max-acc-drop 1`
                text = text.replace(f"{verb} ...", last_by_verb[verb], 1)
            last_by_verb[verb] = text
            found.append(Command(name, start, text))
    return found


COMMANDS = documented_commands()
TO_RUN = [c for c in COMMANDS if c.text not in NOT_RUN_HERE]


def smaller(text: str) -> str:
    for pattern, replacement in SMALLER:
        text = re.sub(pattern, replacement, text)
    return text


def test_the_documents_have_commands_and_every_listed_one_is_still_documented() -> None:
    assert len(COMMANDS) > 30, [c.text for c in COMMANDS]
    documented = {c.text for c in COMMANDS}
    stale = sorted(set(NOT_RUN_HERE) - documented)
    assert not stale, f"NOT_RUN_HERE lists commands no document has (any more): {stale}"


def test_the_tests_named_in_not_run_here_exist() -> None:
    for command, reason in NOT_RUN_HERE.items():
        for ref in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", reason):
            path, func = ref
            assert (ROOT / path).is_file(), (command, path)
            if func:
                assert f"def {func}(" in (ROOT / path).read_text(), (command, ref)


def test_every_command_is_run_or_listed() -> None:
    """The parametrized test below runs exactly the unlisted ones; nothing is dropped on the way."""
    assert {c.text for c in TO_RUN} | set(NOT_RUN_HERE) == {c.text for c in COMMANDS}
    for c in TO_RUN:
        assert c.text.split()[0] in ("fedmist", "python"), f"{c.document}:{c.line}: cannot run {c.text!r}"


# ------------------------------------------------------------------------------------ running them


def _data_dir() -> Path:
    from fedmist.data.paths import resolve_data_dir

    return resolve_data_dir(None)


def _missing_dataset(argv: list[str]) -> str | None:
    """The real dataset the command names that is not installed, if any."""
    from fedmist.data.download import SOURCES, dataset_present

    for flag, value in zip(argv, argv[1:]):
        if flag == "--dataset" and value in SOURCES and not dataset_present(value, _data_dir()):
            return value
    return None


def _is_smaller_recipe_run(run: Path) -> bool:
    """Whether ``run`` trained its shipped recipe, apart from the fields SMALLER changes."""
    from fedmist import default_recipe
    from fedmist.config import RunConfig, non_training_keys

    saved = json.loads((run / "config.json").read_text())
    recipe = default_recipe(saved["dataset"], saved["defense"])
    base = (RunConfig.from_toml(recipe) if recipe else RunConfig()).to_dict()
    skip = non_training_keys(RunConfig) | {"epochs", "train_size", "seed"}
    return all(saved.get(k) == v for k, v in base.items() if k not in skip)


def _resolve_runs(argv: list[str], cwd: Path) -> list[str]:
    """``runs/NAME`` (a recipe's default directory) that a smaller simulate wrote as
    ``runs/NAME-<6 hex>`` (SMALLER changed the recipe's training fields): read it there."""
    out = []
    for arg in argv:
        if arg.startswith("runs/") and not (cwd / arg).exists():
            tagged = sorted(p for p in (cwd / arg).parent.glob(Path(arg).name + "-*")
                            if re.fullmatch(re.escape(Path(arg).name) + r"-[0-9a-f]{6}", p.name)
                            and (p / "config.json").is_file() and _is_smaller_recipe_run(p))
            if len(tagged) == 1:
                arg = str(tagged[0].relative_to(cwd))
        out.append(arg)
    return out


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One scratch directory per document, made when its first command runs."""
    return {"": tmp_path_factory.mktemp("documented")}


def _workdir(workdirs: dict[str, Path], document: str) -> Path:
    if document not in workdirs:
        wd = workdirs[""] / document.replace("/", "-").removesuffix(".md")
        (wd / "experiments" / "results").mkdir(parents=True)
        for script in (ROOT / "experiments").glob("*.py"):
            shutil.copy2(script, wd / "experiments")
        shutil.copytree((ROOT / "experiments" / "recipes").resolve(), wd / "experiments" / "recipes")
        (wd / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
        workdirs[document] = wd
    return workdirs[document]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``argv`` in its own session; anything it left running (Ray workers, Flower processes) is killed."""
    env = {**os.environ, "FEDMIST_DATA": os.environ.get("FEDMIST_DATA") or str(_data_dir()), "COLUMNS": "120"}
    return run_in_session(argv, cwd, env, LIMIT_S, f"[killed after {LIMIT_S} s]")


@pytest.mark.parametrize("command", TO_RUN, ids=[f"{c.document}:{c.line}" for c in TO_RUN])
def test_documented_command_runs(command: Command, workdirs: dict[str, Path]) -> None:
    cwd = _workdir(workdirs, command.document)
    text = smaller(command.text)
    argv = _resolve_runs(shlex.split(text), cwd)
    if argv[0] == "fedmist":
        argv = [sys.executable, "-m", "fedmist", *argv[1:]]
    elif argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    t0 = time.perf_counter()
    proc = _run(argv, cwd)
    took = time.perf_counter() - t0
    where = (f"{command.document}:{command.line}: {command.text}\nran (smaller, in {cwd}): {shlex.join(argv[1:])}"
             f"\nexit {proc.returncode} after {took:.0f} s\n--- stdout (end)\n{proc.stdout[-3000:]}"
             f"\n--- stderr (end)\n{proc.stderr[-3000:]}")
    missing = _missing_dataset(argv)
    if missing:  # documented: refused with one line naming the command that installs it
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2, where
        assert len(lines) == 1 and lines[0].startswith("error:") and "fedmist data" in lines[0], where
        return
    assert proc.returncode == 0, where
    assert "Traceback" not in proc.stderr, where
