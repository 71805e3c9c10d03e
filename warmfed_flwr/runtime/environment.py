"""What a run ran with: the versions of the libraries that move its numbers, Python, and the CPU or GPU.

The same code gave seed 0's default run 0.944 / 0.961 with peft 0.21.2 and 0.947 / 0.950 with peft
0.22.0 (BENCHMARKS.md), so every results.json records this next to the numbers.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# the distributions whose versions a result depends on
RECORDED = ("torch", "flwr", "ray", "diffusers", "peft", "numpy", "scikit-learn", "pillow")


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def run_environment() -> dict[str, object]:
    """The versions of RECORDED (None where one is not installed), Python, and the devices of this process."""
    versions: dict[str, str | None] = {}
    for name in RECORDED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import torch  # here, not at import: small processes (the launcher) must not load it

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"python": platform.python_version(), "packages": versions, "cpu": cpu_name(), "gpus": gpus}
