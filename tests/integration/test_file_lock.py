"""drivers_shim.file_lock takes the very lock fasteners takes (oslo's unpatched external lock), both ways round.

fcntl locks belong to a process, so the other side is always another process: a child holding a plain
``fasteners.InterProcessLock`` (what an unpatched oslo process takes), or asked whether it can take one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drivers_shim import file_lock

HOLD = r"""
import sys, fasteners
lock = fasteners.InterProcessLock(sys.argv[1])
assert lock.acquire(blocking=False)
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""
PROBE = "import sys, fasteners; l = fasteners.InterProcessLock(sys.argv[1]); print(l.acquire(blocking=False))"


def fasteners_can_lock(path: Path) -> bool:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


@pytest.fixture
def held_by_fasteners(tmp_path: Path):
    path = tmp_path / "lock_path" / "cinder-x"
    path.parent.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    yield path, child
    child.kill()
    child.wait()


def test_a_fasteners_holder_keeps_it_out_until_it_lets_go(held_by_fasteners: tuple[Path, subprocess.Popen]) -> None:
    path, child = held_by_fasteners
    assert file_lock.lock(os.fsencode(path), False, 0.01, 0.1, None) is None
    assert file_lock.lock(os.fsencode(path), True, 0.01, 0.1, time.monotonic() + 0.3) is None  # waited, then gave up
    assert child.stdin is not None
    child.stdin.write("release\n")
    child.stdin.flush()
    fd = file_lock.lock(os.fsencode(path), True, 0.01, 0.1, time.monotonic() + 30)  # polls until it is free
    assert fd is not None
    file_lock.unlock(fd)


def test_its_lock_keeps_fasteners_out_until_unlocked(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "dirs" / "cinder-y"  # made on the way, as fasteners makes them
    fd = file_lock.lock(os.fsencode(path), False, 0.01, 0.1, None)
    assert fd is not None
    assert not fasteners_can_lock(path)
    file_lock.unlock(fd)
    assert fasteners_can_lock(path)
    with pytest.raises(OSError):
        os.fstat(fd)  # the descriptor is closed, not leaked


def test_a_lock_file_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(file_lock.FileLockError, match="cannot open lock file .*a-file/cinder-z"):
        file_lock.lock(os.fsencode(tmp_path / "a-file" / "cinder-z"), False, 0.01, 0.1, None)
