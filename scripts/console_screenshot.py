"""Makes docs/console.png and docs/console-lock.png: the web console of a real `lockd serve` in Debian's
headless chromium, 1280 px wide (the overview, and one lock's page with its queue).

The scene is staged on a private etcd with real lockd holders: two cinder-volume-like members holding volume
locks, two waiters queued behind one of them, a stock tooz holder, a volume whose status moved under a fenced
lock, and one force-break in the audit trail.

    .venv/bin/python scripts/console_screenshot.py [DIR (default docs)]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import tooz.coordination
from _staging import REPO, browser, staged, wait_live  # before lockd: puts this tree first on sys.path

from lockd.status import open_store


def coordinator(url: str, member: str) -> tooz.coordination.CoordinationDriver:
    coord = tooz.coordination.get_coordinator(url, member.encode())
    coord.start(start_heart=True)
    return coord


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs"
    work = Path(tempfile.mkdtemp(prefix="lockd-screenshot-"))
    coords = []
    driver = None
    with staged(work, lease_ttl=30) as stage:
        url, address, base = stage.url, stage.address, stage.base
        try:
            node1 = coordinator(url, "cinder-volume@node1")
            node2 = coordinator(url, "cinder-volume@node2")
            node3 = coordinator(url, "cinder-volume@node3")
            coords += [node1, node2, node3]
            volumes = [str(uuid.uuid4()) for _ in range(4)]
            busy = node1.get_lock(f"cinder-{volumes[0]}-delete_volume".encode())
            assert busy.acquire()
            time.sleep(1.5)
            assert node2.get_lock(f"cinder-{volumes[1]}-extend_volume".encode()).acquire()
            for waiter in (node2, node3):  # queued behind node1's delete
                threading.Thread(
                    target=waiter.get_lock(f"cinder-{volumes[0]}-delete_volume".encode()).acquire, daemon=True
                ).start()
                time.sleep(0.3)
            stock = tooz.coordination.get_coordinator(f"etcd3+http://{address}?lock_timeout=30", b"old-node")
            stock.start()
            coords.append(stock)
            assert stock.get_lock(b"cinder-backup-export-2").acquire()
            assert node1.get_lock(f"cinder-{volumes[2]}-create_snapshot".encode()).acquire()
            stuck = node3.get_lock(f"cinder-{volumes[3]}-detach_volume".encode())
            assert stuck.acquire()
            store = open_store(url)
            store.compare_and_set("volume", volumes[0], [None], "available")
            store.compare_and_set("volume", volumes[0], ["available", "error"], "deleting", fence=busy)
            store.close()
            answer = httpx.delete(
                f"{base}/v1/locks/cinder-{volumes[3]}-detach_volume",
                headers={"Authorization": f"Bearer {stage.token}"},
            )
            answer.raise_for_status()

            driver = browser(work, (1280, 1180))
            driver.get(base + "/")
            wait_live(driver)
            time.sleep(2.0)
            driver.save_screenshot(str(out / "console.png"))
            driver.set_window_size(1280, 760)
            driver.get(f"{base}/ui/locks/cinder-{volumes[0]}-delete_volume")
            wait_live(driver)
            time.sleep(1.0)
            driver.save_screenshot(str(out / "console-lock.png"))
            print(f"wrote {out / 'console.png'} and {out / 'console-lock.png'}")
        finally:
            if driver is not None:
                driver.quit()
            for coord in coords:
                try:
                    coord.stop()
                except Exception:  # a lock the break took from it: stopping still ends its session
                    pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
