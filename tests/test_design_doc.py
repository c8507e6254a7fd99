"""Every pointer into docs/design.md names a section that exists, and nothing cites a document outside the repo."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("gon_lightning", "configs", "docs", "tests", "benchmarks", "reports")
SUFFIXES = {".py", ".md", ".yaml", ".toml"}


def repo_texts() -> dict[Path, str]:
    files = [p for folder in FOLDERS for p in (REPO / folder).rglob("*") if p.suffix in SUFFIXES]
    files += [REPO / "README.md", REPO / "Makefile"]
    return {p: p.read_text() for p in files if p.is_file()}


def anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_design_sections_cited_exist():
    headings = re.findall(r"^## (.+)$", (REPO / "docs" / "design.md").read_text(), re.M)
    cited: set[str] = set()
    for path, text in repo_texts().items():
        # docs/design.md + a quoted section name, in code comments (the quote may follow a line break and a "#")
        for quoted in re.findall(r'design\.md,\s*(?:#\s*)?"([^"]+)"', text):
            name = " ".join(quoted.replace("#", " ").split())
            assert name in headings, f"{path}: no section {name!r} in docs/design.md"
            cited.add(name)
        for name in re.findall(r"design\.md#([\w-]+)", text):
            assert name in {anchor(h) for h in headings}, f"{path}: no anchor #{name} in docs/design.md"
            cited.add(name)
    assert len(cited) >= 6  # the code points at its design sections


def test_nothing_cites_a_document_outside_the_repository():
    outside = ("DESIGN" + ".md", "DESIGN" + " trap", "DESIGN" + " section")
    for path, text in repo_texts().items():
        for name in outside:
            assert name not in text, f"{path} cites {name}"
