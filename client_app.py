"""Flower ClientApp entry point (`[tool.flwr.app.components] clientapp`)."""

from warmfed_flwr.client.app import app

__all__ = ["app"]
