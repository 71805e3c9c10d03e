"""Stopping processes by PID: SIGTERM first, SIGKILL for those that outlive a grace time."""

from __future__ import annotations

import psutil


def terminate_all(victims: list[psutil.Process], grace_seconds: float) -> None:
    """SIGTERM every process in `victims` at once, SIGKILL those still alive after `grace_seconds`, wait for them."""
    for proc in victims:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(victims, timeout=grace_seconds)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_seconds)
