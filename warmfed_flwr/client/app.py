"""The ClientApp: one handler per message type, each in the module of its phase.

A client reads the run's settings from the run config Flower gives it (`context.run_config`:
pyproject.toml's defaults with the run's overrides, the same on the server and on every SuperNode,
simulated or real); a message carries only its phase's payload. The client's data and the diffusion
backbone are cached per process: Ray reuses its actor processes across phases.
"""

from __future__ import annotations

from typing import Callable, Mapping

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from warmfed_flwr.client.classifier import (
    handle_cross_evaluate,
    handle_dsd,
    handle_evaluate,
    handle_fit_round,
    handle_local,
    handle_personalized,
)
from warmfed_flwr.client.discovery import handle_info
from warmfed_flwr.client.lora import handle_lora
from warmfed_flwr.runtime.placement import report_placement

Handler = Callable[[Message, Context], Message]

HANDLERS: dict[str, Handler] = {
    "query.info": handle_info,
    "query.personalized": handle_personalized,
    "train.lora": handle_lora,
    "train.default": handle_fit_round,
    "train.local": handle_local,
    "train.dsd": handle_dsd,
    "evaluate.default": handle_evaluate,
    "evaluate.cross": handle_cross_evaluate,
}


def build_client_app(handlers: Mapping[str, Handler] = HANDLERS) -> ClientApp:
    """A ClientApp with one handler per message type ('<category>.<action>'); every reply says where it ran."""
    client_app = ClientApp(mods=[report_placement])
    for message_type, handler in handlers.items():
        category, action = message_type.split(".")
        getattr(client_app, category)(action)(handler)
    return client_app


app = build_client_app()
