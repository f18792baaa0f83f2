"""experiments/gpu_monitor.py: what the GPU benchmarks report as utilization (runs without a GPU)."""

from __future__ import annotations

import doctest
import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "experiments" / "gpu_monitor.py"
spec = importlib.util.spec_from_file_location("gpu_monitor", PATH)
gpu_monitor = importlib.util.module_from_spec(spec)
sys.modules["gpu_monitor"] = gpu_monitor  # dataclasses look their module up there
spec.loader.exec_module(gpu_monitor)


def test_doctests() -> None:
    result = doctest.testmod(gpu_monitor)
    assert result.attempted >= 2 and result.failed == 0


def test_without_nvidia_smi_the_monitor_records_nothing_and_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no nvidia-smi
    with gpu_monitor.GpuMonitor() as gpu:
        pass
    assert gpu.samples == [] and "no samples" in gpu.summary()


def test_samples_come_from_nvidia_smi_while_the_block_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A stand-in nvidia-smi that prints one sample line every 50 ms until terminated, and checks
    # that it was asked for the query the parser expects.
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\ncase "$*" in *utilization.gpu,memory.used*noheader,nounits*) ;; *) exit 3;; esac\n'
                    'i=0\nwhile true; do i=$((i+1)); echo "$((i % 2 * 100)), $((i * 10))"; sleep 0.05; done\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with gpu_monitor.GpuMonitor(interval_ms=50) as gpu:
        time.sleep(0.5)
    assert len(gpu.samples) >= 3
    assert {s.utilization for s in gpu.samples} <= {0.0, 100.0}
    assert [s.memory_mib for s in gpu.samples] == [10.0 * (i + 1) for i in range(len(gpu.samples))]
    assert "peak memory" in gpu.summary()
