"""The documents a newcomer reads name only files that exist.

`docs/ARCHITECTURE.md` and `README.md` name repository paths in inline code spans
(`edge_agent/decoder.py`, `cloud_hub/store/`, the paths in a command such as
`pytest tests/test_sim_*.py`) and in Markdown links; each one must exist, so a typo or a module that moved fails here. Code blocks (```) are commands,
not claims about the tree, and are left out. A span is taken as a path when it is one
word of path characters that contains a `/` or ends in a file suffix the project
uses; MQTT topics (`vigil/v1/...`), placeholders (`<work_dir>/hub.db`) and URLs are
not paths. `data/` is the git-ignored work folder that commands create, so paths
under it are not checked. `../shared/` is outside the repository: the brief the
project grew from, which may be named only as that.

Citations of the architecture from code and deploy files
(`docs/ARCHITECTURE.md "Access"`) must name one of its sections.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("docs/ARCHITECTURE.md", "README.md")

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# One word of path characters (a '*' is a glob); no spaces, placeholders, URLs.
PATHLIKE = re.compile(r"^(?:\.\./|\.)?[A-Za-z0-9_][A-Za-z0-9_./*-]*/?$")
SUFFIXES = (".py", ".md", ".toml", ".yml", ".yaml", ".conf", ".bicep", ".service", ".txt", ".svg")
NOT_PATHS = re.compile(
    r"^(vigil/v1\b.*"  # MQTT topics
    r"|vigil\.[a-z]+/\d+"  # message schemas (vigil.risk/1)
    r"|[A-Z0-9_/]+)$"  # environment variable names (TLS_CA/CERT/KEY)
)
# Folders named relative to something other than the repository: the gateway's bundle
# root (`staging/`) and an MLflow run's artefacts (`bundle/`).
ELSEWHERE = {"staging/", "bundle/"}
WORK_DIR = "data/"  # made by the commands, git-ignored
BRIEF = "../shared/"


def _named_paths(text: str) -> list[tuple[int, str]]:
    """(line number, path) for every path-like code span and relative link target."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        candidates = LINK.findall(line)
        for span in SPAN.findall(line):
            words = span.split()
            # A command (`pytest tests/test_sim_*.py`): the words that hold a '/'.
            candidates += words if len(words) == 1 else [w for w in words if "/" in w]
        for c in candidates:
            c = re.sub(
                r"^([^:]+\.py):[A-Za-z_]\w*$", r"\1", c
            )  # `cloud_hub/settings.py:HubSettings`
            if "://" in c or c.startswith(("#", "/", "mailto:")):
                continue
            if not PATHLIKE.match(c):
                continue
            if "/" not in c and not c.endswith(SUFFIXES):
                continue
            if NOT_PATHS.match(c) or c in ELSEWHERE:
                continue
            found.append((lineno, c))
    return found


def _exists(path: str) -> bool:
    if "*" in path:
        return any(ROOT.glob(path))
    return (ROOT / path).exists()


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_document_names_exists(doc):
    text = (ROOT / doc).read_text()
    named = _named_paths(text)
    assert len(named) > 20, f"{doc}: path extraction found almost nothing: {named}"
    missing = [
        f"{doc}:{n}: {p}"
        for n, p in named
        if not p.startswith((WORK_DIR, BRIEF)) and not _exists(p.rstrip("/"))
    ]
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", DOCS)
def test_the_brief_outside_the_repository_is_named_only_as_what_it_grew_from(doc):
    lines = (ROOT / doc).read_text().splitlines()
    wrong = []
    for i, line in enumerate(lines):
        if BRIEF not in line:
            continue
        # The sentence may wrap: look at the line and its neighbours.
        around = " ".join(lines[max(0, i - 1) : i + 2])
        if "grew from" not in around:
            wrong.append(f"{doc}:{i + 1}: {line.strip()}")
    assert not wrong, (
        "../shared/ is the brief the project grew from, not a reference:\n" + "\n".join(wrong)
    )


def test_the_extraction_catches_a_typo():
    text = "See `edge_agent/decoder.py` and `edge_agent/decodr.py`, topic `vigil/v1/gw/x`.\n"
    named = [p for _, p in _named_paths(text)]
    assert named == ["edge_agent/decoder.py", "edge_agent/decodr.py"]
    assert _exists(named[0]) and not _exists(named[1])


def _sections() -> set[str]:
    text = FENCE.sub("", (ROOT / "docs/ARCHITECTURE.md").read_text())
    return {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", text, re.M)}


# `docs/ARCHITECTURE.md "Access"`, `(docs/ARCHITECTURE.md, "Model bundle")`, also
# wrapped onto the next line of a comment.
CITATION = re.compile(r'ARCHITECTURE\.md`?[,:]?\s+(?:(?:#|//)\s*)?\(?(?:section\s+)?"([^"]+)"')
CITING_FILES = ("*.py", "*.md", "*.toml", "*.conf", "*.bicep", "*.yml", "*.service", "acl")


def test_citations_of_the_architecture_name_its_sections():
    sections = _sections()
    assert "Access" in sections and "Known pitfalls" in sections, sections
    bad = []
    for pattern in CITING_FILES:
        for f in ROOT.rglob(pattern):
            rel = f.relative_to(ROOT)
            if rel.parts[0] in (".venv", ".git", "data", "build") or "egg-info" in str(rel):
                continue
            text = f.read_text(errors="replace")
            for m in CITATION.finditer(text):
                title = " ".join(m.group(1).split())  # a title may wrap
                if title not in sections:
                    n = text.count("\n", 0, m.start()) + 1
                    bad.append(f"{rel}:{n}: {title!r}")
    assert not bad, f"citations of unknown sections (have {sorted(sections)}):\n" + "\n".join(bad)
