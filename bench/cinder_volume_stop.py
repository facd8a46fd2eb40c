"""How long a real, idle cinder-volume (Cinder 29) takes from SIGTERM to exit, with Cinder's defaults and with the
cinder.conf setting deploy/pacemaker/README.md recommends (not a test; figures for that README).

Why it matters: under Pacemaker the order constraint stops cinder-volume before lockd can be started again, so this
stop is part of lockd's recovery. oslo.messaging's RPC listener notices a stop only between two waits on the
broker; an idle one waits up to 5 s (its poll back-off), or heartbeat_timeout_threshold / heartbeat_rate / 2 if
less, and Cinder's Service.stop() stops its three RPC servers (host, backend and cluster topics) one after another.

Setup: a private etcd (lockd.embedded), Cinder's database, RabbitMQ vhost, cinder-api and cinder-scheduler
(deploy/cinder-aa/demo.py, lockd mode); then, per setting and run, one cinder-volume started with that node's
cinder.conf, left idle ``--idle`` seconds (its listeners' back-off reaches its ceiling after about 8 s), sent
SIGTERM, and timed until its worker and its parent have exited. Needs MariaDB and RabbitMQ as the Cinder tests do.

    .venv/bin/python bench/cinder_volume_stop.py [--runs 5] [--idle 20]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lockd.embedded import EmbeddedEtcd  # noqa: E402
from tests.cinder_aa import cinder_venv, load_demo  # noqa: E402
from tests.pacemaker.conftest import CINDER_VOLUME_CONF  # noqa: E402
from tests.pacemaker.node import alive  # noqa: E402

SETTINGS = {"Cinder's defaults": "", CINDER_VOLUME_CONF.replace("\n", " ").strip(): CINDER_VOLUME_CONF}


def worker_of(pid: int, timeout: float = 120) -> int:
    """The worker process oslo.service's ProcessLauncher forks (cinder-volume's parent only supervises it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                forked = int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid
                if forked and b"cinder-volume" in (stat.parent / "cmdline").read_bytes():  # not a passing helper
                    return int(stat.parent.name)
        time.sleep(0.2)
    raise RuntimeError(f"cinder-volume {pid} forked no worker in {timeout:g}s")


def one_stop(argv: list[str], env: dict[str, str], idle: float) -> tuple[float, float]:
    """Seconds from SIGTERM until the worker, and until the parent, exited."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        worker = worker_of(proc.pid)
        time.sleep(idle)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        worker_gone = None
        while proc.poll() is None:
            if worker_gone is None and not alive(worker):
                worker_gone = time.monotonic() - sent
            time.sleep(0.01)
        parent_gone = time.monotonic() - sent
        return worker_gone if worker_gone is not None else parent_gone, parent_gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="stops per setting")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds cinder-volume idles before SIGTERM")
    args = parser.parse_args()
    demo = load_demo()
    with tempfile.TemporaryDirectory(prefix="cv-stop-") as tmp:
        etcd = EmbeddedEtcd(Path(tmp) / "etcd")
        url = etcd.start()  # the lockd backend URL
        state = argparse.Namespace(state=str(Path(tmp) / "cinder"), cinder_venv=str(cinder_venv()), array_delay=0.05)
        cinder = demo.Deployment(state, "lockd", url, uuid.uuid4().hex[:6])
        try:
            cinder.start(volumes=())
            for label, extra in SETTINGS.items():
                conf = Path(cinder.conf("node1"))
                conf.write_text(conf.read_text() + extra)
                argv = [str(cinder.bin / "cinder-volume"), "--config-file", str(conf)]
                exits = []
                for run in range(1, args.runs + 1):
                    worker, parent = one_stop(argv, cinder.env(), args.idle)
                    exits.append(parent)
                    print(f"{label}: run {run}: worker exited {worker:.2f}s, cinder-volume exited {parent:.2f}s "
                          "after SIGTERM", flush=True)  # fmt: skip
                print(f"{label}: {len(exits)} stops, min {min(exits):.2f}s, median {statistics.median(exits):.2f}s, "
                      f"max {max(exits):.2f}s\n", flush=True)  # fmt: skip
        finally:
            cinder.stop()
            etcd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
