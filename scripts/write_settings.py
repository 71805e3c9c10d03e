"""Write pyproject.toml's `[tool.flwr.app.config]` and the settings table of docs/configuration.md from the
settings declared in warmfed_flwr/config.py (`SETTINGS`), the one place a key, its default and its meaning live.

    python scripts/write_settings.py           # rewrite both files
    python scripts/write_settings.py --check   # exit 1, naming the file, when either is not current
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from warmfed_flwr.config import SETTINGS, Setting

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT_START = "# settings:start (written by scripts/write_settings.py from warmfed_flwr/config.py; do not edit)"
PYPROJECT_END = "# settings:end"
TABLE_PAGE = "docs/configuration.md"
TABLE_START = "<!-- settings:start (written by scripts/write_settings.py from warmfed_flwr/config.py) -->"
TABLE_END = "<!-- settings:end -->"


def toml_value(value: bool | int | float | str) -> str:
    """`value` as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def pyproject_config(settings: tuple[Setting, ...] = SETTINGS) -> str:
    """The `[tool.flwr.app.config]` tables: top-level keys first, then one table per section, in declared order."""
    sections: dict[str, list[str]] = {"": []}
    for setting in settings:
        section, _, name = setting.key.rpartition(".")
        sections.setdefault(section, []).append(f"{name} = {toml_value(setting.default)}")
    tables = []
    for section, lines in sections.items():
        header = "[tool.flwr.app.config" + (f".{section}" if section else "") + "]"
        tables.append("\n".join([header, *lines]))
    return "\n\n".join(tables)


def settings_table(settings: tuple[Setting, ...] = SETTINGS) -> str:
    """The table of every setting: key, default, meaning (the help texts link relative to docs/)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for setting in settings:
        default = toml_value(setting.default) if setting.default == "" or not isinstance(setting.default, str) \
            else setting.default
        rows.append(f"| `{setting.key}` | `{default}` | {setting.help} |")
    return "\n".join(rows)


def with_block(text: str, start: str, end: str, block: str, path: Path) -> str:
    """`text` with what lies between the lines `start` and `end` replaced by `block`."""
    try:
        head, rest = text.split(start + "\n", 1)
        _, tail = rest.split(end + "\n", 1)
    except ValueError:
        raise SystemExit(f"{path}: the marker lines {start!r} and {end!r} are missing") from None
    return f"{head}{start}\n{block}\n{end}\n{tail}"


def current_files(root: Path = ROOT) -> dict[Path, str]:
    """Each generated file's text as it should be."""
    pyproject, page = root / "pyproject.toml", root / TABLE_PAGE
    return {
        pyproject: with_block(pyproject.read_text(), PYPROJECT_START, PYPROJECT_END, pyproject_config(), pyproject),
        page: with_block(page.read_text(), TABLE_START, TABLE_END, settings_table(), page),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the files are current")
    parser.add_argument("--root", type=Path, default=ROOT, help=f"the folder of pyproject.toml and {TABLE_PAGE}")
    args = parser.parse_args(argv)
    files = current_files(args.root)
    stale = [path for path, text in files.items() if path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.name} is not current with warmfed_flwr/config.py: run python scripts/write_settings.py",
                  file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(files[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
