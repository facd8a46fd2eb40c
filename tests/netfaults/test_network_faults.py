"""The test network itself: each fault does what it says on real packets, and heal undoes it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.netns import TestNetwork

ECHO = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9000)); s.listen()
while True:
    c, _ = s.accept()
    while data := c.recv(100):
        c.sendall(data)
    c.close()
"""

PING = """
import socket, sys, time
lost = []; rtts = []
for _ in range(int(sys.argv[2])):
    try:
        with socket.create_connection((sys.argv[1], 9000), timeout=1) as s:
            s.settimeout(1)
            t = time.monotonic(); s.sendall(b"x"); s.recv(1); rtts.append(time.monotonic() - t)
    except OSError as exc:
        lost.append(type(exc).__name__)
print(",".join(lost) or "-", min(rtts) if rtts else -1)
"""


def ping(net: TestNetwork, src: str, dst: str, count: int = 3) -> tuple[list[str], float]:
    """Connect-send-receive ``count`` times: the errors of those that failed, and the best round trip (seconds,
    -1 if none)."""
    out = subprocess.run(
        net.hosts[src].argv(sys.executable, "-c", PING, net.hosts[dst].ip, str(count)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    return [e for e in out[0].split(",") if e != "-"], float(out[1])


@pytest.fixture
def echo(network: TestNetwork):
    server = subprocess.Popen(network.hosts["b"].argv(sys.executable, "-c", ECHO))
    time.sleep(0.3)
    yield
    server.kill()
    server.wait()


@pytest.mark.hosts("a", "b", "c")
def test_isolate_and_cut_drop_silently_and_heal(network: TestNetwork, echo: None) -> None:
    assert ping(network, "a", "b")[0] == []
    network.isolate("a")
    assert ping(network, "a", "b", 1)[0] == ["TimeoutError"]  # silence until the timeout, not a refusal
    network.heal("a")
    assert ping(network, "a", "b")[0] == []
    network.cut("a", ["b"])
    assert ping(network, "a", "b", 1)[0] == ["TimeoutError"]
    assert ping(network, "c", "b")[0] == []  # only the a-b pair is cut
    network.heal()
    assert ping(network, "a", "b")[0] == []


@pytest.mark.hosts("a", "b")
def test_slow_and_lossy_links(network: TestNetwork, echo: None) -> None:
    network.slow("a", 0.2, "out")
    lost, rtt = ping(network, "a", "b")
    assert lost == [] and rtt >= 0.2  # each round trip carries one delayed packet out of a
    network.heal("a")
    network.slow("a", 0.1, "both")
    assert ping(network, "a", "b")[1] >= 0.2  # out and in: both legs delayed
    network.heal("a")
    assert network.hosts["a"].delayers == [] and ping(network, "a", "b")[1] < 0.2  # no longer through the delayer
    network.lossy("a", 1.0, "in")  # every answer lost: the one-way fault a filter on one side makes
    assert ping(network, "a", "b", 1)[0] == ["TimeoutError"]
    network.heal("a")
    assert ping(network, "a", "b")[0] == []


def test_unknown_direction_is_refused(network: TestNetwork) -> None:
    with pytest.raises(ValueError, match="direction"):
        network.lossy("a", 0.3, "sideways")
    assert network.hosts["a"].faults == []  # nothing was applied
