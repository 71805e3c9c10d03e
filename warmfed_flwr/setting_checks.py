"""How one run-config setting is declared (`setting`) and the checks a value must pass.

A setting is a dataclass field whose metadata holds its default as the run config writes it, its
help text and its check, in the manner of peft's `LoraConfig`. Everything else (the list of keys,
the defaults, pyproject.toml's run config, the table of docs/configuration.md, validation and error texts) is
derived from these fields by `warmfed_flwr/config.py`.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Callable

# A check returns what is wrong with a value (to follow "config key 'k': <value> "), or None.
Check = Callable[[Any], str | None]
# A parse turns the run-config value (already of the default's type) into the field's value.
Parse = Callable[[Any], Any]

AUTO = "auto"


class ConfigError(ValueError):
    """A run-config value is unknown, of the wrong type or out of range."""


def setting(default: bool | int | float | str, help: str, check: Check | None = None, parse: Parse | None = None,
            key: str = "") -> Any:
    """A dataclass field declaring one run-config setting.

    `key` is the name after the section (default: the field name in kebab-case, e.g. `batch_size` ->
    `batch-size`); `parse` converts the checked value for fields of another type (e.g. a list).
    """
    return field(metadata={"default": default, "help": help, "check": check, "parse": parse, "key": key})


def copied_from(key: str) -> Any:
    """A field that repeats the value of another key (e.g. the data settings carry the run's `seed`)."""
    return field(metadata={"copy": key})


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"{value!r} is not one of {', '.join(choices)}"


def between(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"{value!r} must be between {low} and {high}"


def at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"{value!r} must be >= {low}"


def positive(value: Any) -> str | None:
    return None if value > 0 else f"{value!r} must be > 0"


def weights_file(choices: tuple[str, ...], suffixes: tuple[str, ...]) -> Check:
    """One of `choices` or the path of a weights file (whether it exists is checked where it is loaded)."""
    return lambda value: None if value in choices or value.endswith(suffixes) else (
        f"{value!r} is not {', '.join(choices)} or a path ending in {', '.join(suffixes)}"
    )


def contains(part: str) -> Check:
    return lambda value: None if part in value else f"must contain '{part}'"


def auto_or_between(low: int, high: int) -> Check:
    """"auto" or a whole number in [low, high]."""
    return lambda value: None if value == AUTO else between(low, high)(value)


def auto_or_int(value: Any) -> int | None:
    """None for "auto", else the whole number."""
    return None if value == AUTO else int(value)


def comma_list(value: str) -> tuple[str, ...]:
    """The non-empty, stripped items of a comma-separated list."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _whole(value: Any) -> bool:
    """An int, or a float with no fractional part; not a bool."""
    return not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))


def typed(key: str, default: Any, value: Any) -> Any:
    """`value` coerced to the type of `default`, or a ConfigError naming the key; "auto" keys keep the value."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if isinstance(default, int):
        if not _whole(value):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if default == AUTO:  # "auto" or a whole number
        if value == AUTO:
            return value
        if not _whole(value):
            raise ConfigError(f"config key '{key}': expected \"auto\" or a whole number, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    return value
