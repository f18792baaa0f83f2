"""GPU utilization while a benchmark runs: ``nvidia-smi`` sampled in the background.

Issue 9 asks whether C clients sharing one GPU, or a stack of shadows, keep the device busy; the
answer is the utilization ``nvidia-smi`` reports (share of time a kernel was running) and the memory
in use, sampled every ``interval_ms`` while the measured code runs. On a machine without
``nvidia-smi`` the monitor records nothing and says so.

    with GpuMonitor() as gpu:
        train()
    print(gpu.summary())

As a script it samples for a while and prints the summary (is the GPU busy, and with what?):

    python experiments/gpu_monitor.py --seconds 10
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuSample:
    utilization: float  # % of the sample interval a kernel ran
    memory_mib: float


def parse_smi(text: str) -> list[GpuSample]:
    """Samples from ``nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits``
    output (one ``util, memory`` line per GPU per sample); lines that are not two numbers are skipped.

    >>> parse_smi("87, 1200\\n[N/A], 3\\n 5 , 640\\n")
    [GpuSample(utilization=87.0, memory_mib=1200.0), GpuSample(utilization=5.0, memory_mib=640.0)]
    """
    samples = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            continue
        try:
            samples.append(GpuSample(float(parts[0]), float(parts[1])))
        except ValueError:
            continue
    return samples


def summarize(samples: list[GpuSample]) -> str:
    """``mean / max utilization, peak memory`` of the samples, or why there are none.

    >>> summarize([GpuSample(50.0, 100.0), GpuSample(100.0, 300.0)])
    'GPU utilization mean 75 %, max 100 % (2 samples), peak memory 300 MiB'
    """
    if not samples:
        return "GPU utilization: no samples (no nvidia-smi, or the run was shorter than one interval)"
    util = [s.utilization for s in samples]
    return (f"GPU utilization mean {sum(util) / len(util):.0f} %, max {max(util):.0f} % ({len(util)} samples), "
            f"peak memory {max(s.memory_mib for s in samples):.0f} MiB")


@dataclass
class GpuMonitor:
    interval_ms: int = 200
    samples: list[GpuSample] = field(default_factory=list)
    _proc: subprocess.Popen | None = None

    def __enter__(self) -> "GpuMonitor":
        smi = shutil.which("nvidia-smi")
        if smi is not None:
            self._proc = subprocess.Popen(
                [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 f"-lms={self.interval_ms}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            out, _ = self._proc.communicate(timeout=10)
            self.samples = parse_smi(out)
            self._proc = None

    def summary(self) -> str:
        return summarize(self.samples)


def main() -> None:
    import argparse

    from _cli import (  # same folder; imported here so tests can load this module
        positive_float,
        positive_int,
        run_main,
    )

    def sample() -> None:
        ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        ap.add_argument("--seconds", type=positive_float, default=10.0, help="how long to sample")
        ap.add_argument("--interval-ms", type=positive_int, default=200)
        args = ap.parse_args()
        with GpuMonitor(interval_ms=args.interval_ms) as gpu:
            time.sleep(args.seconds)
        print(gpu.summary())

    run_main(sample)


if __name__ == "__main__":
    main()
