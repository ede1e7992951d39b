"""Copy the tables of results/*.md into the README, so no number there is typed by hand.

The README marks each copied block:
    <!-- begin results/fashion_mnist.md -->
    ...  (replaced by every markdown table row of that file, tables separated by a blank line)
    <!-- end results/fashion_mnist.md -->
Usage: .venv/bin/python -m distill.reports.readme   (the reproduction scripts call it when they finish)
"""

from __future__ import annotations

import re
from pathlib import Path

from distill.io.atomic import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- begin (?P<path>results/[\w./-]+\.md) -->\n)(?P<body>.*?)(<!-- end (?P=path) -->)", re.S)


def table_rows(markdown: str) -> str:
    """Every table row ('|' lines) of a markdown text, with one blank line between separate tables."""
    groups: list[list[str]] = [[]]
    for line in markdown.splitlines():
        if line.startswith("|"):
            groups[-1].append(line)
        elif groups[-1]:
            groups.append([])
    return "\n\n".join("\n".join(g) for g in groups if g) + "\n"


def synced(readme: str, root: Path) -> str:
    """The README text with every marked block replaced by the table rows of its results file
    (a block whose file does not exist is left as it is)."""

    def replace(match: re.Match) -> str:
        source = root / match["path"]
        if not source.is_file():
            return match[0]
        return match[1] + table_rows(source.read_text()) + match[4]

    return BLOCK.sub(replace, readme)


def sync_readme(root: Path = ROOT) -> bool:
    """Rewrite root/README.md in place (atomically) when a block is stale; True if it changed."""
    readme = root / "README.md"
    old = readme.read_text()
    new = synced(old, root)
    if new != old:
        atomic_write_bytes(readme, new.encode())
    return new != old


if __name__ == "__main__":
    print("README.md updated" if sync_readme() else "README.md already up to date")
