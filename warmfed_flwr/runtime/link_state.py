"""Flower's in-memory LinkState without its quadratic message lookup, for simulations of many clients.

In a simulation, Flower 1.42's engine asks the in-memory LinkState for the next message of every
simulated SuperNode, every 0.1 s (`vce_api.add_messages_to_queue`). `InMemoryLinkState.get_message_ins`
answers by checking every stored message for expiry and federation membership before it looks at
the message's destination, and a message stays stored until its reply is pulled. With N clients
and their N messages in flight, each sweep of the engine does N x N such checks: measured on the
project's 2-core machine (`scripts/measure_link_state.py`; BENCHMARKS.md, "1,000 clients on 2
cores"), 0.029 s per sweep at 100 clients, 0.27 s at 300 and 2.9 s at 1,000, so that at 1,000
clients one of the two cores only scans the message store, all phase long.

`install()` replaces the method with one that looks the node's undelivered messages up in an
index by destination, rebuilt only when the store changed (messages added or deleted), and checks
only those (expiry, federation): a sweep then costs about N lookups. The answer is the same; a
message addressed to another node is checked when that node asks, which the engine does in the
same sweep. Installed by the ServerApp, in the process that runs the simulation engine.
"""

from __future__ import annotations

import threading
from typing import Any

_installed = threading.Lock()
_MARK = "_warmfed_looks_up_by_node"
_INDEX = "_warmfed_undelivered_by_node"  # (signature of the store's keys, message ids by destination node)


def _undelivered_by_node(state: Any) -> dict[int, list[str]]:
    """The ids of the store's undelivered messages by destination node, rebuilt when the store's keys changed.

    Messages are only added (at the end) or deleted, so the number of keys and the last key change with any
    change of the key set."""
    store = state.message_ins_store
    signature = (len(store), next(reversed(store), None))
    cached = state.__dict__.get(_INDEX)
    if cached is None or cached[0] != signature:
        index: dict[int, list[str]] = {}
        for msg_id, msg in store.items():
            if msg.metadata.delivered_at == "":
                index.setdefault(msg.metadata.dst_node_id, []).append(msg_id)
        cached = (signature, index)
        state.__dict__[_INDEX] = cached
    return cached[1]


def install() -> None:
    """Replace InMemoryLinkState.get_message_ins once per process."""
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.supercore.date import now

    def get_message_ins(self: Any, node_id: int, limit: int | None, *, run_id: int | None = None) -> list[Any]:
        """The undelivered messages for `node_id` (at most `limit`), marked delivered; invalid ones are deleted."""
        if limit is not None and limit < 1:
            raise AssertionError("`limit` must be >= 1")
        with self.lock:
            store = self.message_ins_store
            waiting = [
                msg_id for msg_id in _undelivered_by_node(self).get(node_id, [])
                if (msg := store.get(msg_id)) is not None and msg.metadata.delivered_at == ""
                and (run_id is None or msg.metadata.run_id == run_id)
            ]
            if waiting:
                self._check_stored_messages(set(waiting))  # deletes the expired ones and those out of the federation
            found = [store[msg_id] for msg_id in waiting if msg_id in store][:limit]
            delivered_at = now().isoformat()
            for msg in found:
                msg.metadata.delivered_at = delivered_at
        return found

    setattr(get_message_ins, _MARK, True)
    with _installed:
        if not getattr(InMemoryLinkState.get_message_ins, _MARK, False):
            InMemoryLinkState.get_message_ins = get_message_ins
