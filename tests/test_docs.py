"""The guide and its pages: every relative link and picture in README.md and docs/ points at something."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(path: Path) -> str:
    """The page without its code blocks and inline code, where `](` is code, not a link."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped but - and _, spaces to -."""
    heads = re.findall(r"^#{1,6}\s+(.+?)\s*$", prose(path), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_and_picture_points_somewhere(page):
    broken = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target} (no {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(REPO)})")
    assert not broken, f"{page.relative_to(REPO)}: {', '.join(broken)}"


def test_the_check_sees_links_pictures_and_anchors(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## Bad input\n\nSee [b](b.md#x) and ![p](img.png) `[c](nope.md)`\n")
    assert relative_links(tmp_path / "a.md") == ["b.md#x", "img.png"]
    assert anchors(tmp_path / "a.md") == {"top", "bad-input"}


def test_every_docs_page_is_reachable_from_the_readme_and_says_what_it_answers():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in relative_links(REPO / "README.md")}
    for page in PAGES[1:]:
        assert page.resolve() in linked, f"README.md links nowhere to {page.relative_to(REPO)}"
        assert page.read_text(encoding="utf-8").split("\n")[2].startswith("*This page answers "), page
