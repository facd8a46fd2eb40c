"""Makes docs/img/console-deadlock.png and docs/img/console-timeline.png: the console of a real `lockd serve`
showing a real deadlock between two processes, and two processes taking turns on one lock, in Debian's headless
chromium, 1280 px wide and 800 px tall (taller, up to 1100, when the page is). docs/console.png and
docs/console-lock.png come from scripts/console_screenshot.py.

The scenes are staged on a private etcd with real lockd clients, each a child process of this script (it runs
itself with ``--child``). Each child names itself as a cinder-volume node would, and reports that node's name
as its host (``socket.gethostname`` is patched in the child, before lockd reads it), so the pictures show what
two hosts would show; everything else is what the sidecar saw.

- Deadlock: node1 and node2 take a volume's lock and a pool's lock in opposite orders, twice. The first
  deadlock is broken with ``lockd break`` (so it is listed as ended); the second is left open and the Waits page
  is captured: the cycle, its owners, the lock to break and its command, the wait-for graph (node3 also waits,
  for a lock node4 holds: an edge outside any cycle), and the ended one.
- Timeline: node1 and node2 take turns on one volume's lock for about a minute (holds of 0.5 to 3 s, a short
  pause between), while node3 holds another; the page shows the last minute, a row per lock.

    .venv/bin/python scripts/screenshot_deadlock_timeline.py [DIR (default docs/img)]
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this tree's lockd, in the children too (tooz loads it by its entry point)

WINDOW = (1280, 800)
TALLEST = 1100
TURNS_SECONDS = 58.0  # the timeline's shortest window is a minute: fill most of it


# -- the children: one lockd client each --------------------------------------------------------------------


def child(url: str, node: str, spec: dict) -> int:
    """One client process. ``spec["mode"]``: ``cross`` (take ``first``, print, on a line on stdin take
    ``second``, release both), ``hold`` (take ``first``, hold until stdin closes), ``turns`` (take and release
    ``first`` for ``seconds``). Prints one JSON line per step."""
    import socket

    socket.gethostname = lambda: node  # the host this client reports: see the module doc
    import tooz.coordination

    def say(**event: object) -> None:
        print(json.dumps(event), flush=True)

    coord = tooz.coordination.get_coordinator(url, f"cinder-volume@{node}".encode())
    coord.start(start_heart=True)
    first = coord.get_lock(spec["first"].encode())
    if spec["mode"] == "turns":
        until, rng = time.monotonic() + spec["seconds"], random.Random(node)
        say(event="ready")
        while time.monotonic() < until:
            with first:
                time.sleep(rng.uniform(0.5, 3.0))
            time.sleep(rng.uniform(0.05, 0.4))  # the other one is queued: it gets the lock meanwhile
    else:
        assert first.acquire()
        say(event="holding", token=first.token)
        if spec["mode"] == "cross":
            sys.stdin.readline()
            second = coord.get_lock(spec["second"].encode())
            assert second.acquire()
            say(event="got-second")
            second.release()
        else:
            sys.stdin.read()
        first.release()
    say(event="done")
    coord.stop()
    return 0


class Child:
    def __init__(self, url: str, node: str, **spec: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", url, node, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def expect(self, event: str) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            said = json.loads(line)
            if said.get("event") == event:
                return said
        raise RuntimeError(f"child {self.proc.pid} ended before {event!r}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


# -- the scenes ---------------------------------------------------------------------------------------------


def deadlock(url: str, base: str, children: list[Child]) -> tuple[Child, Child]:
    """Two processes in a cycle over a volume's lock and a pool's lock; returns them (still stuck)."""
    volume = str(uuid.uuid4())
    names = (f"cinder-{volume}-delete_volume", "cinder-rbd-pool-volumes-capacity")
    one = Child(url, "node1", mode="cross", first=names[0], second=names[1])
    two = Child(url, "node2", mode="cross", first=names[1], second=names[0])
    children += [one, two]
    one.expect("holding")
    two.expect("holding")
    one.send("go")
    two.send("go")
    until = time.monotonic() + 15
    while not httpx.get(f"{base}/v1/deadlocks", timeout=5).json()["deadlocks"]:
        if time.monotonic() > until:
            raise RuntimeError("no deadlock reported")
        time.sleep(0.1)
    return one, two


def break_suggested(base: str, token: str) -> None:
    (found,) = httpx.get(f"{base}/v1/deadlocks", timeout=5).json()["deadlocks"]
    name = found["suggested_break"]
    subprocess.run(
        [sys.executable, "-m", "lockd.cli.main", "break", name, "--url", base, "--admin-token", token], check=True
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    from _staging import browser, staged  # not in the children: they need only tooz

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lockd-screenshots-"))
    children: list[Child] = []
    driver = None
    try:
        with staged(work, lease_ttl=10) as stage:
            url, base = stage.url, stage.base
            try:
                driver = browser(work, WINDOW)

                # Timeline first (it takes a minute), with a hold on another lock beside it.
                other = Child(url, "node3", mode="hold", first=f"cinder-{uuid.uuid4()}-extend_volume")
                children.append(other)
                other.expect("holding")
                name = f"cinder-{uuid.uuid4()}-delete_volume"
                turns = [
                    Child(url, node, mode="turns", first=name, seconds=TURNS_SECONDS) for node in ("node1", "node2")
                ]
                children += turns
                for proc in turns:
                    proc.expect("ready")
                for proc in turns:
                    proc.expect("done")
                _shoot(driver, f"{base}/ui/timeline?minutes=1", out / "console-timeline.png")
                other.proc.stdin.close()  # type: ignore[union-attr]
                other.expect("done")

                # A first deadlock, broken (so one is listed as ended), then a second one left open.
                first = deadlock(url, base, children)
                break_suggested(base, stage.token)
                for proc in first:
                    proc.expect("done")
                holder = Child(url, "node4", mode="hold", first=f"cinder-{uuid.uuid4()}-create_snapshot")
                children.append(holder)
                holder.expect("holding")
                children.append(_waiter(url, "node3", holder_lock=_held_by(base, "node4")))
                deadlock(url, base, children)
                time.sleep(4.0)  # let it last a few seconds, as an operator would first see it
                _shoot(driver, f"{base}/ui/waits", out / "console-deadlock.png")
                for path in ("console-timeline.png", "console-deadlock.png"):
                    print(f"wrote {out / path} ({(out / path).stat().st_size // 1024} KiB)")
            finally:
                if driver is not None:
                    driver.quit()
                for proc in children:
                    proc.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _held_by(base: str, node: str) -> str:
    locks = httpx.get(f"{base}/v1/locks", timeout=5).json()["locks"]
    return next(lock["name"] for lock in locks if lock["holder"] and lock["holder"]["host"] == node)


def _waiter(url: str, node: str, holder_lock: str) -> Child:
    """A process that holds a lock of its own and waits for ``holder_lock``: an edge outside any cycle."""
    proc = Child(url, node, mode="cross", first=f"cinder-{uuid.uuid4()}-attach_volume", second=holder_lock)
    proc.expect("holding")
    proc.send("go")
    return proc


def _shoot(driver: Any, page: str, path: Path) -> None:
    """``page`` at WINDOW, after its live part refreshed; taller (up to TALLEST) when the page is, so the
    capture ends where the page does rather than cut a table in half."""
    from _staging import wait_live

    metrics = {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.get(page)
    wait_live(driver)
    tall = driver.execute_script("return document.documentElement.scrollHeight")
    if tall > WINDOW[1]:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": min(tall, TALLEST)})
    time.sleep(1.5)
    driver.save_screenshot(str(path))
    _shrink(path)


def _shrink(path: Path) -> None:
    """Down to 256 colours (flat text and table colours lose nothing visible): half the bytes, or more.
    Pillow comes with matplotlib, in lockd's bench extra; without it the PNG stays as chromium wrote it."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as shot:
        small = shot.convert("RGB").quantize(colors=256)
    small.save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
