"""The loopback launcher is public API and the deployment benchmark uses only that API."""

from __future__ import annotations

import ast
from pathlib import Path

import fedmist
from fedmist.deploy.local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]


def test_launcher_is_public() -> None:
    assert fedmist.start_local_cluster.__module__ == "fedmist.deploy.local_cluster"
    assert fedmist.LocalCluster is LocalCluster
    assert {"start_local_cluster", "LocalCluster"} <= set(fedmist.__all__)


def test_bench_deploy_imports_only_the_public_api() -> None:
    tree = ast.parse((ROOT / "experiments" / "bench_deploy.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("fedmist", "tests"):
            assert node.module == "fedmist", f"bench_deploy imports {node.module}"
            assert {a.name for a in node.names} <= set(fedmist.__all__)
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith(("fedmist.", "tests")) for a in node.names)
    assert "sys.path" not in (ROOT / "experiments" / "bench_deploy.py").read_text()


def test_deploy_command_names_this_cluster(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, tmp_path / "certs", 12345, {})
    cmd = c.deploy_command(tmp_path / "out", ["epochs=2"], "--recipe", "r.toml")
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "out")
    assert ["--superlink", "127.0.0.1:12345"] == cmd[cmd.index("--superlink"):cmd.index("--superlink") + 2]
    assert cmd[cmd.index("--set") + 1] == "epochs=2" and cmd[-2:] == ["--recipe", "r.toml"]
