"""Flower's in-memory LinkState with the node-indexed message lookup (runtime/link_state.py) answers every simulated
node as Flower's own does, and a sweep over a thousand nodes stays cheap."""

from __future__ import annotations

import time

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
from flwr.superlink.grid import InMemoryGrid
from measure_link_state import federation

from warmfed_flwr.runtime import link_state


def sweeps(state: InMemoryLinkState, grid: InMemoryGrid, nodes: list[int]) -> list[list[tuple[int, str]]]:
    """What the engine's sweeps get: messages to every node (two to some, one already expired), more pushed
    between sweeps; each sweep asks every node for one message, as `vce_api.add_messages_to_queue` does."""
    def message(node: int, tag: str, ttl: float = 3600.0) -> Message:
        return Message(RecordDict({"tag": ConfigRecord({"tag": tag})}), dst_node_id=node, message_type="train", ttl=ttl)

    grid.push_messages([message(node, f"first-{i}") for i, node in enumerate(nodes)] + [message(nodes[3], "second-3")])
    grid.push_messages([message(nodes[5], "expired-5", ttl=0.01)])
    time.sleep(0.05)
    seen = []
    for sweep in range(3):
        if sweep == 1:
            grid.push_messages([message(nodes[0], "later-0"), message(nodes[7], "later-7")])
        got = []
        for node in nodes:
            for msg in state.get_message_ins(node_id=node, limit=1):
                got.append((nodes.index(node), str(msg.content["tag"]["tag"])))
        seen.append(got)
    return seen


def test_the_indexed_lookup_gives_every_node_what_flowers_own_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    flower = sweeps(*federation(10))
    monkeypatch.setattr(InMemoryLinkState, "get_message_ins", InMemoryLinkState.get_message_ins)  # undone after
    link_state.install()
    assert getattr(InMemoryLinkState.get_message_ins, link_state._MARK)
    state, grid, nodes = federation(10)
    indexed = sweeps(state, grid, nodes)
    assert indexed == flower
    assert indexed[0][3] == (3, "first-3") and (3, "second-3") in indexed[1]
    assert (5, "expired-5") not in sum(indexed, [])
    assert not [msg for msg in state.message_ins_store.values() if msg.metadata.ttl < 1]  # the expired one is deleted


def test_a_sweep_over_a_thousand_nodes_checks_no_other_nodes_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(InMemoryLinkState, "get_message_ins", InMemoryLinkState.get_message_ins)
    link_state.install()
    state, grid, nodes = federation(1000)
    grid.push_messages([Message(RecordDict(), dst_node_id=node, message_type="train") for node in nodes])
    checked: list[int] = []
    original_check = state._check_stored_messages
    monkeypatch.setattr(state, "_check_stored_messages", lambda ids, run_id=None: (checked.append(len(ids)),
                                                                                    original_check(ids, run_id)))
    for _ in range(2):  # the first sweep delivers every message, the second finds none left
        for node in nodes:
            state.get_message_ins(node_id=node, limit=1)
    assert checked == [1] * 1000  # Flower's own checks every stored message for every node: 2 x 1000 x 1000
