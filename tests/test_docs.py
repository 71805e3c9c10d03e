"""The docs hold together: every relative link and #anchor resolves, and the README lists every preset."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").glob("appendix-*.md")]
)
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")


def prose_lines(text: str) -> list[str]:
    """The lines of a markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation dropped but hyphens, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor GitHub gives `page`'s headings; a repeated one gets -1, -2, ... as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match[2])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The link targets of `page`'s prose (code blocks and inline code left out)."""
    targets = []
    for line in prose_lines(page.read_text()):
        targets += LINK.findall(INLINE_CODE.sub("", line))
    return targets


def broken_links(page: Path) -> list[str]:
    """`page`'s relative links whose file is missing, or whose #anchor is not a heading of the file it names."""
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not checked here
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no heading with that anchor in {linked.name})")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == [], f"{page.relative_to(ROOT)} has broken links"


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section: with `code`, (and) punctuation\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#a-section-with-code-and-punctuation) [ok](other.md#twice-1) [ok](#page)\n"
        "[gone](missing.md) [bad](other.md#no-such-section) [bad](#nowhere) [web](https://example.org/x#y)\n"
        "```\n[in code](not-checked.md)\n```\n`[inline](not-checked-either.md)`\n"
    )
    assert broken_links(page) == [
        "missing.md (no such file)",
        "other.md#no-such-section (no heading with that anchor in other.md)",
        "#nowhere (no heading with that anchor in page.md)",
    ]


def test_the_readme_preset_table_lists_every_preset():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Presets\n"):]
    section = section[: section.index("\n## ", 1)]
    listed = set(re.findall(r"^\| `(conf/[\w.-]+\.toml)` \|", section, flags=re.MULTILINE))
    presets = {f"conf/{path.name}" for path in (ROOT / "conf").glob("*.toml")}
    assert presets, "no presets found in conf/"
    assert sorted(presets - listed) == [], "presets missing from the README's preset table"
    assert sorted(listed - presets) == [], "the README's preset table lists files that are not in conf/"
