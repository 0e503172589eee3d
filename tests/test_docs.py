"""The user docs (README.md, docs/*.md) against the repository: links resolve, the README's first
screen holds what a newcomer runs, every command and family is named, and no command a user copies
points at a folder that only exists on a maintainer's machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without its fenced code blocks (a `[x](y)` in code is not a link)."""
    return FENCE.sub("", text)


def anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation other than '-' and '_' dropped, spaces to
    '-', a repeated id numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose(text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_names_an_existing_file_and_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {file.relative_to(REPO)})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target} (no heading #{anchor} in {file.relative_to(REPO)})")
    assert not broken, f"{page.name}: " + "; ".join(broken)


MAINTAINER_ONLY = re.compile(r"/work/|/tmp/|\.\./shared|PYTHONPATH|\blent to one session|\bthe issue'?s?\b|"
                             r"\bissue #\d|\blast session|\bwe used to")


@pytest.mark.parametrize("page", [p for p in DOCS if p.name != "development.md"],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_user_docs_hold_no_maintainer_paths_or_internal_history(page: Path) -> None:
    """A command a user copies works on their machine; the docs say what is, not how it came to be
    (docs/development.md, for contributors, may name a checkout's PYTHONPATH)."""
    hits = [line.strip() for line in page.read_text().splitlines() if MAINTAINER_ONLY.search(line)]
    assert not hits, f"{page.name}: " + " | ".join(h[:120] for h in hits)


def first_screen() -> str:
    text = (REPO / "README.md").read_text()
    return text[:text.index("\n## What you get")]


def test_the_readmes_first_screen_says_how_to_install_train_test_and_look() -> None:
    screen = first_screen()
    assert len(screen.splitlines()) <= 80
    # the CPU-only wheel tip comes before the first `make train` a newcomer would copy
    assert screen.index("download.pytorch.org/whl/cpu") < screen.index("make train")
    assert "make test" in screen and "outputs/" in screen and "tensorboard --logdir outputs" in screen
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))
    used = set(re.findall(r"\bmake ([a-z][\w-]*)", (REPO / "README.md").read_text()))
    assert {"train", "test"} <= used and used <= targets, used - targets


def test_the_readme_names_every_command_and_family_with_its_page() -> None:
    """One line per console script of pyproject.toml and per option of conf/task/, each linking
    into docs/: the README is the index of what gan-cli does."""
    lines = (REPO / "README.md").read_text().splitlines()
    section = (REPO / "pyproject.toml").read_text().split("[project.scripts]\n", 1)[1].split("\n\n", 1)[0]
    scripts = re.findall(r"^([\w-]+) =", section, re.MULTILINE)  # tomllib is 3.11+, gan-cli runs on 3.10
    assert len(scripts) >= 6
    families = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))
    missing = [name for name in [*scripts, *(f"task={f}" for f in families)]
               if not any(f"`{name}`" in line and "](docs/" in line for line in lines)]
    assert not missing, missing
