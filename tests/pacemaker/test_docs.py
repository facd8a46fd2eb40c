"""The pcs commands deploy/pacemaker/README.md shows are the ones the live tests run (configure.sh), word for word
once configure.sh's two variables take their defaults. Pure text: no cluster needed."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGURE = REPO / "deploy" / "pacemaker" / "configure.sh"
README = REPO / "deploy" / "pacemaker" / "README.md"
LIVE_MARK = "<!-- tested live: tests/pacemaker/test_one_node.py runs deploy/pacemaker/configure.sh"


def commands(script: str) -> list[str]:
    """The script's pcs and cibadmin commands, continuation lines joined and whitespace collapsed."""
    joined = re.sub(r"\\\n\s*", " ", script)
    lines = (" ".join(line.split()) for line in joined.splitlines())
    return [line for line in lines if line.startswith(("pcs ", "cibadmin "))]


def defaults(script: str) -> dict[str, str]:
    """configure.sh's ``name=${ENV:-default}`` assignments."""
    return dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]*)\}$", script, re.MULTILINE))


def test_the_readme_shows_the_commands_configure_sh_runs() -> None:
    script = CONFIGURE.read_text()
    expected = commands(script)
    for name, value in defaults(script).items():
        expected = [line.replace(f"${name}", value) for line in expected]
    readme = README.read_text()
    assert LIVE_MARK in readme
    block = readme.split(LIVE_MARK, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert commands(block) == expected
    assert len(expected) == 6, expected  # cib, 2 resources, 2 constraints, the push: the extractor found them
