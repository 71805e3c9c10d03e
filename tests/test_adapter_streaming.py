"""Phase `lora` at scale: each adapter is validated and stored as its reply arrives, before the next reply is taken,
so the server holds one adapter at a time; generation reads each back when its client's turn comes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from warmfed_flwr.config import Settings
from warmfed_flwr.generative import load_backbone
from warmfed_flwr.generative.adapter import adapter_config
from warmfed_flwr.generative.upload import SCALES, encode_adapter
from warmfed_flwr.phases.lora import collect_adapters
from warmfed_flwr.run.artifacts import ArtifactCache
from warmfed_flwr.run.federation import ClientInfo
from warmfed_flwr.run.results import RunRecorder
from warmfed_flwr.run.store import ClientAdapter
from warmfed_flwr.run.transport import arrays_to_record


class StreamingRun:
    """What `collect_adapters` uses of a RunContext; its replies come one at a time, in an arrival order that is not
    partition order, and it notes how many replies had been handed out whenever an adapter is kept."""

    def __init__(self, tmp_path: Path, settings: Settings, arrival: list[int]) -> None:
        self.settings = settings
        self.clients = [ClientInfo(100 + pid, pid, 4, "clean", 8, 2, ("0", "1")) for pid in range(4)]
        self.recorder = RunRecorder(tmp_path, "warmfed", 0, 0, "digits-domains")
        for client in self.clients:
            self.recorder.add_client(client.partition_id, client.domain, client.node_id)
        self.arrival = arrival
        self.handed_out = 0
        shapes = load_backbone(settings.lora).adapter_shapes(settings.lora)
        self.adapters = {pid: {name: np.full(shape, pid, np.float32) for name, shape in shapes.items()}
                         for pid in range(4)}

    def stream(
        self, phase: str, message_type: str, contents: dict[int, RecordDict]
    ) -> Iterator[tuple[int, RecordDict]]:
        assert phase == "lora" and message_type == "train.lora" and len(contents) == 4
        for pid in self.arrival:
            self.handed_out += 1
            sent = encode_adapter(self.adapters[pid], self.settings.lora.upload_dtype)  # as a client sends it
            yield 100 + pid, RecordDict({
                "adapter": arrays_to_record(sent.tensors),
                "adapter-scales": arrays_to_record({SCALES: sent.scales}),
                "adapter-config": ConfigRecord(adapter_config(self.settings.lora)),
                "metrics": MetricRecord({"num-examples": 8, "fit-seconds": 0.5, "label-counts": [pid, 8 - pid]}),
            })


def test_each_adapter_is_stored_before_the_next_reply_is_taken_and_read_back_in_partition_order(tmp_path: Path) -> None:
    settings = Settings.from_run_config({"min-clients": 2})
    run = StreamingRun(tmp_path, settings, arrival=[2, 0, 3, 1])
    store = ArtifactCache(tmp_path / "artifacts")
    kept_after: list[int] = []

    def keep(client: ClientInfo, arrays: dict[str, np.ndarray], counts: list[int] | None) -> ClientAdapter:
        kept_after.append(run.handed_out)
        store.save_adapter("k", client.partition_id, arrays, {"label_counts": counts})
        return ClientAdapter(client, counts, store, "k")

    adapters = collect_adapters(run, keep)  # type: ignore[arg-type]
    assert kept_after == [1, 2, 3, 4]  # one reply in hand at a time
    assert [a.client.partition_id for a in adapters] == [0, 1, 2, 3]
    assert [a.label_counts for a in adapters] == [[0, 8], [1, 7], [2, 6], [3, 5]]
    for adapter in adapters:
        read = adapter.arrays()
        assert all(np.allclose(tensor, adapter.client.partition_id) for tensor in read.values())
    values = sum(a.size for a in run.adapters[3].values())  # int8 (the default): a byte per value, and the scales
    assert values < run.recorder.clients[3].details["adapter_bytes"] < 1.05 * values
