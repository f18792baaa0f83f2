"""Bad input ends with one line naming the problem and exit code 2, before any training starts."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from fedmist.cli import main
from tests.conftest import SHARED_DATA

TINY = ["--dataset", "synthetic:240x12x3", "--model", "mlp-small", "--epochs", "1", "--train-size", "120"]


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["fedmist", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    return int(exc.value.code), err


@pytest.mark.parametrize("args, message", [
    (["simulate", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["simulate", *TINY, "--model", "vgg"], "unknown model 'vgg'"),
    (["simulate", *TINY, "--defense", "magic"], "unknown defense 'magic'"),
    (["simulate", *TINY, "--clients", "1"], "needs --clients >= 2"),
    (["simulate", *TINY, "--lambda", "0"], "positive --lambda"),
    (["simulate", *TINY, "--lambda", "-3"], "positive --lambda"),
    (["simulate", *TINY, "--lr", "0"], "lr must be positive"),
    (["simulate", *TINY, "--xdiff-loss", "huber"], "xdiff_loss must be one of"),
    (["simulate", *TINY, "--set", "lamda=3"], "unknown config key 'lamda'"),
    (["simulate", *TINY, "--set", "epochs=many"], "cannot use 'many'"),
    (["simulate", *TINY, "--train-size", "5000"], "train_size must be between"),
    (["simulate", *TINY, "--recipe", "no/such/recipe.toml"], "recipe file not found"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run_cli([*args, "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "r" / "model.pt").exists()


def test_recipe_with_unknown_key(monkeypatch, capsys, tmp_path) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text('dataset = "synthetic"\nlearning_rate = 0.1\n')
    code, err = run_cli(["simulate", "--recipe", str(recipe)], monkeypatch, capsys)
    assert code == 2 and "unknown config key 'learning_rate'" in err


def test_missing_dataset_names_the_file_to_obtain(monkeypatch, capsys, tmp_path) -> None:
    code, err = run_cli(["simulate", "--dataset", "purchase", "--data-dir", str(tmp_path), "--epochs", "1"],
                        monkeypatch, capsys)
    assert code == 2 and "purchase" in err and "dataset_purchase" in err


@pytest.mark.skipif(not (SHARED_DATA / "location" / "dataset_location.tgz").is_file(), reason="needs ../shared/data")
def test_corrupted_data_file_fails_its_checksum(monkeypatch, capsys, tmp_path) -> None:
    (tmp_path / "location").mkdir()
    bad = tmp_path / "location" / "dataset_location.tgz"
    shutil.copy(SHARED_DATA / "location" / "dataset_location.tgz", bad)
    bad.chmod(0o644)
    with bad.open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    code, err = run_cli(["simulate", "--dataset", "location", "--data-dir", str(tmp_path), "--epochs", "1",
                         "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2 and "is corrupted" in err and "927203f85a868f8e" in err
