"""Flower ServerApp entry point (`[tool.flwr.app.components] serverapp`)."""

from warmfed_flwr.server import make_server_app

app = make_server_app()
