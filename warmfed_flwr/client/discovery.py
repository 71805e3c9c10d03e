"""Discovery (`query.info`): which partition and domain this client holds, how many images, of which classes."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict

from warmfed_flwr.client.context import (
    node_data_root,
    node_domain,
    num_partitions,
    partition_id,
    run_settings,
    shared_client_data,
)
from warmfed_flwr.config import NODE_LOCAL
from warmfed_flwr.data.node_local import read_node_folder


def handle_info(msg: Message, context: Context) -> Message:
    """Discovery: which partition and domain this client holds, how many images, of which classes.

    A node-local client lists its folder (nothing decoded) and reports its own class names, from
    which the server agrees on the federation's class list.
    """
    settings = run_settings(context)
    pid = partition_id(context)
    if settings.data.name == NODE_LOCAL:
        folder = read_node_folder(node_data_root(context), settings.data, pid)
        domain, class_names, num_train, num_test = node_domain(context), folder.class_names, len(folder.train), len(folder.test)
    else:
        cd = shared_client_data(settings.data, pid, num_partitions(context))
        domain, class_names, num_train, num_test = cd.domain, cd.class_names, len(cd.train), len(cd.test)
    info = ConfigRecord(
        {
            "partition-id": pid,
            "num-partitions": int(context.node_config.get("num-partitions", -1)),
            "domain": domain,
            "num-train": num_train,
            "num-test": num_test,
            "class-names": list(class_names),
        }
    )
    return Message(RecordDict({"info": info}), reply_to=msg)
