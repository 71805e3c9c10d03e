"""The app's logger for modules that must import without Flower (scripts/gpu_check.py runs where flwr is absent).

It is a child of Flower's `flwr` logger, so under Flower its records go through Flower's handlers and format.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("flwr.warmfed")
