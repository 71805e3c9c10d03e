"""What a run printed, line by line: the app's own messages with each handler's prefix taken off, to check that a
user reads each line once and no DEBUG line by default."""

from __future__ import annotations

import re
from collections import Counter

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RAY_PREFIX = re.compile(r"^\([A-Za-z]+ pid=\d+(, ip=[\d.]+)?\)\s*")
LEVEL_PREFIXES = (
    re.compile(r"^(?P<level>DEBUG|INFO|WARNING|ERROR)\s*:\s+"),  # Flower's console format
    re.compile(r"^(?P<level>DEBUG|INFO|WARNING|ERROR) \S+ \S+ \| \S+ \| "),  # Flower's with timestamps
    re.compile(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d:(?P<level>DEBUG|INFO|WARNING|ERROR):"),  # logging.basicConfig's
)
APP_MESSAGE_STARTS = ("[", "skipped ")  # Flower's own lines repeat by design (each round's "configure_train: ...")


def log_records(output: str) -> list[tuple[str, str]]:
    """(level, message) of every line of `output` that a logging handler wrote."""
    records = []
    for line in ANSI.sub("", output).splitlines():
        line = RAY_PREFIX.sub("", line.strip())
        for prefix in LEVEL_PREFIXES:
            if match := prefix.match(line):
                records.append((match["level"], line[match.end():].strip()))
                break
    return records


def repeated_app_lines(output: str) -> dict[str, int]:
    """The app's messages (a `[phase]` tag, or a client's skipped files) that `output` shows more than once."""
    counts = Counter(message for _, message in log_records(output) if message.startswith(APP_MESSAGE_STARTS))
    return {message: n for message, n in counts.items() if n > 1}


def debug_lines(output: str) -> list[str]:
    """The messages `output` shows at DEBUG level."""
    return [message for level, message in log_records(output) if level == "DEBUG"]
