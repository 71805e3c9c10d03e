"""What every ClientApp handler needs first: the run's settings, this SuperNode's partition and node
config, its share of the data (cached per process) and its seeded training schedule."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from flwr.app import ConfigRecord, Context, Message

from warmfed_flwr import data
from warmfed_flwr.config import NODE_LOCAL, DataSettings, Settings
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.node_local import DATA_ROOT_KEY, DOMAIN_KEY, HELP, node_client_data
from warmfed_flwr.data.types import ClientData
from warmfed_flwr.learning.training import Schedule, classifier_schedule
from warmfed_flwr.logs import logger
from warmfed_flwr.run.federation import AGREED_CLASSES_KEY
from warmfed_flwr.seeds import client_seed

# Where a training handler takes this client's data from: `client_data` in the real ClientApp; the benchmark's
# poisoning experiments build a ClientApp whose attacking clients train on altered data (benchmark/poisoning.py).
DataSource = Callable[[Settings, Context, Message], ClientData]


def run_settings(context: Context) -> Settings:
    """The run's settings, from the run config Flower gives this ClientApp."""
    return Settings.from_run_config(context.run_config)


def agreed_class_names(msg: Message) -> tuple[str, ...]:
    """The class list the server agreed on at discovery (node-local runs send it with every later message)."""
    record = msg.content.config_records.get(AGREED_CLASSES_KEY)
    if record is None:
        raise ValueError(f"message {msg.metadata.message_type!r} carries no agreed class names ('{AGREED_CLASSES_KEY}')")
    return tuple(str(name) for name in record["class-names"])


def partition_id(context: Context) -> int:
    """This SuperNode's partition, from its node config."""
    try:
        return int(context.node_config["partition-id"])
    except KeyError as err:
        raise KeyError(
            "node config key 'partition-id' is missing: start the SuperNode with "
            "--node-config 'partition-id=K num-partitions=N'"
        ) from err


def node_data_root(context: Context) -> str:
    """The SuperNode's own image folder (node config `data-root`) of a node-local run."""
    root = str(context.node_config.get(DATA_ROOT_KEY, ""))
    if not root:
        raise DataError(f"data.name={NODE_LOCAL} but this SuperNode's node config has no '{DATA_ROOT_KEY}'; {HELP}")
    return root


def node_domain(context: Context) -> str:
    """How results name a node-local client's data: node config `domain`, else node-<partition-id>."""
    return str(context.node_config.get(DOMAIN_KEY, f"node-{partition_id(context)}"))


def num_partitions(context: Context) -> int | None:
    """The federation's size this SuperNode was started with (node config `num-partitions`), if given."""
    return int(context.node_config.get("num-partitions", 0)) or None


@lru_cache(maxsize=1)
def shared_client_data(settings: DataSettings, pid: int, partitions: int | None) -> ClientData:
    return data.load_client_data(settings, pid, partitions)


@lru_cache(maxsize=1)
def _node_client_data(root: str, settings: DataSettings, pid: int, domain: str, agreed: tuple[str, ...]) -> ClientData:
    return node_client_data(root, settings, pid, domain, agreed)


def client_data(settings: Settings, context: Context, msg: Message) -> ClientData:
    """This client's train/test split, decoded; a process keeps only the last client's it served.

    Node-local runs read the SuperNode's own folder, with labels numbered by the class list agreed
    at discovery; otherwise the client takes its partition of the run's data set. In a simulation
    one worker serves many clients in turn, so it holds one share at a time.
    """
    if settings.data.name == NODE_LOCAL:
        cd = _node_client_data(
            node_data_root(context), settings.data, partition_id(context), node_domain(context), agreed_class_names(msg)
        )
    else:
        cd = shared_client_data(settings.data, partition_id(context), num_partitions(context))
    report_unreadable_once(cd, context)
    return cd


UNREADABLE_REPORTED = "unreadable-files-reported"  # context.state record: this node has warned about its skipped files


def report_unreadable_once(cd: ClientData, context: Context) -> None:
    """Warn about the client's unreadable image files once per node (its state remembers it), not once per process
    and phase that decodes its share."""
    if not cd.unreadable or UNREADABLE_REPORTED in context.state:
        return
    for line in cd.unreadable:
        logger.warning("%s", line)
    context.state[UNREADABLE_REPORTED] = ConfigRecord({"lines": list(cd.unreadable)})


def client_schedule(settings: Settings, pid: int, epochs: int, purpose: int) -> Schedule:
    """How this client trains a model: the run's batches, rate and shift augmentation, the client's seed for `purpose`."""
    return classifier_schedule(settings.train, epochs, client_seed(settings.seed, pid, purpose))
