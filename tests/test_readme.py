"""The README stays a newcomer's page: short, and every link in it leads somewhere.

`mkdocs build --strict` (tests/run.sh) checks the links inside docs/; the README is outside the
site, so its relative links and their anchors are checked here the way GitHub resolves them.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub and MkDocs give a page's headings (lower case, punctuation dropped, spaces as -)."""
    found, fenced = set(), False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6} (.+)$", line)):
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            found.add(text.replace(" ", "-"))
    return found


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_every_relative_link_in_the_readme_resolves() -> None:
    broken = []
    for target in LINK.findall(README.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        page = (README.parent / path) if path else README
        if not page.exists():
            broken.append(target)
        elif anchor and anchor not in anchors(page.read_text()):
            broken.append(target)
    assert not broken, broken


def test_anchors_follow_the_heading_rules() -> None:
    assert anchors("## Exit codes\n```\n# not a heading\n```\n### `hpcjup ls`, `url`\n") == {
        "exit-codes",
        "hpcjup-ls-url",
    }
