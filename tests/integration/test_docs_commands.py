"""Every shell block the docs mark as tested runs, in order, against a real etcd and a real `lockd serve`.

Convention (docs/README.md): a fenced ```sh block directly preceded by the line ``<!-- tested -->`` is run
with ``bash -euo pipefail`` from the repository root, ``lockd`` and ``python3`` from this checkout's
environment on PATH, ``$LOCKD_URL`` and ``$LOCKD_ADMIN_TOKEN`` set, and the default addresses rewritten:
``127.0.0.1:7170`` to the test's `lockd serve` and ``127.0.0.1:2379`` to the test's etcd. A block that cannot
be run on a test machine (installing packages, systemctl) is preceded by ``<!-- not tested: REASON -->``, and
one that another test runs against a live system (a Pacemaker cluster) by ``<!-- tested live: TEST ... -->``;
in the docs this helper owns, every shell block must carry one of the marks.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd_process import EtcdMember
from tests.procs import lockd_serve

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = sorted((REPO / "docs").glob("*.md")) + sorted((REPO / "deploy").rglob("*.md"))
#: Docs in which every shell block must be marked tested or not tested (others' docs opt in block by block).
STRICT_DOCS = ("docs/architecture.md", "docs/operations.md", "docs/api.md", "docs/README.md")
SHELL_LANGS = ("sh", "bash", "shell", "console")
TESTED = "<!-- tested -->"
NOT_TESTED = re.compile(r"<!-- not tested: .+ -->")
#: Run by another test against a live system (e.g. a Pacemaker cluster in tests/pacemaker/), which it names.
TESTED_LIVE = re.compile(r"<!-- tested live: tests/\S+.* -->")
BLOCK = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _blocks(path: Path) -> list[tuple[int, str, str, str]]:
    """(line, language, mark line above the block, body) for each fenced block of ``path``."""
    text = path.read_text()
    found = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        found.append((line, match.group(1), before, match.group(2)))
    return found


TESTED_BLOCKS = [
    pytest.param(body, id=f"{path.relative_to(REPO)}:{line}")
    for path in DOC_FILES
    for line, lang, mark, body in _blocks(path)
    if lang in SHELL_LANGS and mark == TESTED
]


@pytest.fixture(scope="module")
def docs_env(etcd: EtcdMember, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real `lockd serve` with an admin token on the session etcd, and the environment the blocks run in."""
    state = tmp_path_factory.mktemp("docs-serve")
    token = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "LOCKD_ADMIN_TOKEN": token,
        "LOCKD_STATE_DIR": str(state / "state"),
        "LOCKD_DEMO_DIR": str(state / "demo"),
        "HOME": str(state),
    }
    env.pop("LOCKD_BACKEND_URL", None)
    with lockd_serve(state, "--backend-url", f"lockd+etcd3+http://{etcd.endpoint}", env=env) as url:
        env["LOCKD_URL"] = url
        env["_SERVE_ADDR"] = url.split("://", 1)[1]
        env["_ETCD_ADDR"] = etcd.endpoint
        yield env
    subprocess.run(["bash", str(REPO / "deploy" / "local-cluster.sh"), "stop"], env=env, capture_output=True)


@pytest.mark.parametrize("body", TESTED_BLOCKS)
def test_documented_command_runs(body: str, docs_env: dict[str, str]) -> None:
    script = body.replace("127.0.0.1:7170", docs_env["_SERVE_ADDR"]).replace("127.0.0.1:2379", docs_env["_ETCD_ADDR"])
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=docs_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"exit {result.returncode}\n--- script\n{script}\n--- stdout\n{result.stdout}\n" + (
        f"--- stderr\n{result.stderr}"
    )


def test_docs_mark_every_shell_block() -> None:
    """In our docs a shell block is either run by the test above or says why it cannot be."""
    unmarked = [
        f"{name}:{line}"
        for name in STRICT_DOCS
        if (REPO / name).exists()
        for line, lang, mark, _ in _blocks(REPO / name)
        if lang in SHELL_LANGS and mark != TESTED and not (NOT_TESTED.fullmatch(mark) or TESTED_LIVE.fullmatch(mark))
    ]
    assert not unmarked, f"shell blocks marked neither tested, tested live nor not tested (with why): {unmarked}"


def test_the_docs_have_tested_blocks() -> None:
    """Guards the extractor itself: a broken regex must not make the suite pass by running nothing."""
    ids = {p.id.split(":")[0] for p in TESTED_BLOCKS}
    assert {"docs/api.md", "docs/operations.md"} <= ids, ids
