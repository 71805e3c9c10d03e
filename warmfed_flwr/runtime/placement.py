"""Where a client's message ran: the Ray node (its id and address) and the process, sent back with every reply.

`report_placement` is a ClientApp mod: it adds a small ConfigRecord (`PLACEMENT_KEY`) to every good
reply. The server's Grid (`run.grid.MeteredGrid`) takes it out again before it meters the reply's
bytes or hands the reply on, and records it per client and phase in results.json. On a deployed
SuperNode, where no Ray runs, the record names the host and the process only.
"""

from __future__ import annotations

import os
import socket
import sys

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable

PLACEMENT_KEY = "placement"


def where_this_runs() -> dict[str, str | int]:
    """This process's host and pid, and in a Ray worker its node's id and address."""
    place: dict[str, str | int] = {"host": socket.gethostname(), "pid": os.getpid()}
    ray = sys.modules.get("ray")  # imported by every Ray worker; never imported here just to ask
    if ray is not None and ray.is_initialized():
        place["node_id"] = ray.get_runtime_context().get_node_id()
        place["node_address"] = ray.util.get_node_ip_address()
    return place


def report_placement(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The ClientApp mod: the handler's reply, with where it ran."""
    reply = call_next(msg, context)
    if not reply.has_error():
        reply.content[PLACEMENT_KEY] = ConfigRecord(where_this_runs())
    return reply


def take_placement(reply: Message) -> dict[str, str | int] | None:
    """Remove the placement record from a reply and return it (None when the reply has none)."""
    if reply.has_error() or PLACEMENT_KEY not in reply.content.config_records:
        return None
    return dict(reply.content.pop(PLACEMENT_KEY))
