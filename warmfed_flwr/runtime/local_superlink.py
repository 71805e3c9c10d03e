"""A local SuperLink of the run's own, stopped when the run ends.

`flwr run` starts a detached local SuperLink on fixed ports (39091, 39093) unless one already
answers there, and then hands the run to whichever SuperLink that is: one left by an earlier run,
or by another checkout with other code and another virtualenv. Flower reads the two ports from the
environment (`FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`, `FLWR_LOCAL_CONTROL_API_PORT`), so the launcher
gives every run two free ports of its own: its `flwr run` then starts, and uses, its own SuperLink
(with this interpreter and environment), and the launcher stops that SuperLink and the processes
it started (SuperExec, the simulation, Ray) once the run has ended, unless asked to keep it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import psutil

from warmfed_flwr.runtime.processes import terminate_all

HTTP_PORT_VARIABLE = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"
CONTROL_PORT_VARIABLE = "FLWR_LOCAL_CONTROL_API_PORT"


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that are free now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class OwnSuperLink:
    """The ports of this run's local SuperLink, and how to stop it."""

    ports: list[int] = field(default_factory=lambda: free_ports(2))

    @property
    def http_port(self) -> int:
        return self.ports[0]

    def env(self) -> dict[str, str]:
        """The environment variables that make `flwr run` start and use this SuperLink."""
        return {HTTP_PORT_VARIABLE: str(self.ports[0]), CONTROL_PORT_VARIABLE: str(self.ports[1])}

    def processes(self) -> list[psutil.Process]:
        """The SuperLink listening on this run's port, with every process it started."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            command = proc.info["cmdline"] or []
            if any(part.endswith("flower-superlink") for part in command) and self._serves_our_port(command):
                try:
                    found += [proc, *proc.children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
        return found

    def _serves_our_port(self, command: list[str]) -> bool:
        return any(a == "--port" and b == str(self.http_port) for a, b in zip(command, command[1:]))

    def stop(self, grace_seconds: float = 10.0) -> int:
        """Terminate the SuperLink and its processes (SIGKILL after `grace_seconds`); returns how many there were."""
        victims = self.processes()
        terminate_all(victims, grace_seconds)
        return len(victims)
