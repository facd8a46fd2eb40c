"""Test hosts in network namespaces, joined by one bridge, with faults a real network has.

Theory of operation
-------------------
Each host is a network namespace (``ip netns``) with one veth link to a bridge in the root namespace, and one
IPv4 address on a /24 that exists only on these links; the root namespace (the test itself) has the bridge's
``.254`` address, so it can watch and heal what the hosts do, and is never itself a fault target. Programs run
on a host through ``ip netns exec``: they share the file system with the test (UNIX sockets, such as MariaDB's,
still reach the root namespace's servers; TCP addresses do not).

Faults are packet filters inside the faulty host's namespace, so they act where a broken switch port or a
congested link would, on every packet, and the processes on both ends see what they would on a real network:
silence, not a reset.

- ``isolate``: every packet in and out of the host's link dropped (a dead switch port);
- ``cut(a, b)``: packets between two hosts dropped (a partition between them, others unaffected);
- ``drop_connection(a, port)``: the packets of one TCP connection of a host dropped, both ways (a stateful
  firewall or NAT on the path that lost that flow's state; the host's other connections are unaffected);
- ``lossy``: a share of packets dropped at random (iptables ``statistic``), out, in or both ways;
- ``slow``: every packet delayed, out, in or both ways.

This kernel has no ``netem`` qdisc (``CONFIG_NET_SCH_NETEM`` unset; ``tc qdisc add ... netem`` answers
"Specified qdisc kind is unknown"), so delay is made in user space: packets go to an NFQUEUE and
``tests/netdelay.py``, running inside the host's namespace, gives each its verdict after the delay, in order.
``heal`` removes a host's filters and stops its delayer. ``close`` deletes the namespaces (and with them their
veth ends, and so the bridge ports) and the bridge: nothing is left behind, also when a test fails.

Needs root and iptables (Debian's ``iptables``, which scripts/install-system-deps.sh installs).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_CHAIN_IN, _CHAIN_OUT = "LKN-IN", "LKN-OUT"


def unavailable() -> str | None:
    """Why namespaced test hosts cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install-system-deps.sh installs it as root)"
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        return "NetfilterQueue is not installed (the 'netfault' extra)"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 no route of the root namespace covers (the host's own networks stay untouched)."""
    routes = _run("ip", "-4", "route", "show", "table", "all").stdout
    taken = [ipaddress.ip_network(w, strict=False) for w in routes.split() if "/" in w and w[0].isdigit()]
    for _ in range(100):
        net = ipaddress.ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise RuntimeError("no free 10.x.y.0/24 for the test network")


@dataclass
class Host:
    """One namespace with one address; ``faults`` names what is applied to it now (for the history)."""

    name: str
    netns: str
    ip: str
    link: str  # the root-namespace end of its veth (a bridge port)
    faults: list[str] = field(default_factory=list)
    delayers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *command]

    def iptables(self, *rule: str) -> None:
        _run(*self.argv("iptables", "-w", *rule))


class TestNetwork:
    """Hosts named by the caller ("e0", "c1", ...) on one bridge; faults and heals addressed by host."""

    __test__ = False  # not a pytest test class

    def __init__(self, names: Sequence[str]) -> None:
        self.tag = f"lkn{os.getpid() % 1000:03d}{random.randint(0, 35**2 - 1):03x}"  # short: interface names <= 15
        self.subnet = _free_subnet()
        self.bridge = self.tag
        addresses = list(self.subnet.hosts())
        self.gateway = str(addresses[-1])
        self.hosts = {
            name: Host(name, f"{self.tag}-{name}", str(addresses[i]), f"{self.tag}{i}") for i, name in enumerate(names)
        }

    # -- building and tearing down -----------------------------------------------------------------------------

    def create(self) -> TestNetwork:
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for host in self.hosts.values():
                self._add_host(host)
        except BaseException:
            self.close()
            raise
        return self

    def _add_host(self, host: Host) -> None:
        _run("ip", "netns", "add", host.netns)
        _run("ip", "link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _run("ip", "link", "set", host.link, "master", self.bridge, "up")
        _run(*host.argv("ip", "addr", "add", f"{host.ip}/{self.subnet.prefixlen}", "dev", "eth0"))
        _run(*host.argv("ip", "link", "set", "eth0", "up"))
        _run(*host.argv("ip", "link", "set", "lo", "up"))
        for chain, hook in ((_CHAIN_IN, "INPUT"), (_CHAIN_OUT, "OUTPUT")):
            host.iptables("-N", chain)
            host.iptables("-A", hook, "!", "-i" if hook == "INPUT" else "-o", "lo", "-j", chain)

    def close(self) -> None:
        """Delete everything this network made; safe to call twice and after a half-built create()."""
        for host in self.hosts.values():
            self._stop_delayers(host)
            _run("ip", "netns", "del", host.netns, check=False)
            _run("ip", "link", "del", host.link, check=False)  # gone with the namespace, unless that failed
        _run("ip", "link", "del", self.bridge, check=False)

    def __enter__(self) -> TestNetwork:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pids(self, name: str) -> list[int]:
        """PIDs of the processes in host ``name``'s network namespace (``ip netns pids``), for teardown checks."""
        done = _run("ip", "netns", "pids", self.hosts[name].netns, check=False)
        return [int(word) for word in done.stdout.split()]

    def leftovers(self) -> list[str]:
        """Namespaces and links of this network that still exist (a teardown check for tests)."""
        names = _run("ip", "netns", "list").stdout + _run("ip", "-br", "link").stdout
        return sorted({w.split("@")[0] for w in names.split() if w.startswith(self.tag)})

    # -- faults ---------------------------------------------------------------------------------------------

    def isolate(self, name: str) -> None:
        """Every packet to and from the host vanishes, as behind a dead switch port."""
        host = self.hosts[name]
        host.iptables("-A", _CHAIN_IN, "-j", "DROP")
        host.iptables("-A", _CHAIN_OUT, "-j", "DROP")
        host.faults.append("isolated")

    def cut(self, name: str, others: Sequence[str]) -> None:
        """Packets between ``name`` and each of ``others`` vanish; the rest of the network is unaffected."""
        host = self.hosts[name]
        for other in others:
            ip = self.hosts[other].ip
            host.iptables("-A", _CHAIN_IN, "-s", ip, "-j", "DROP")
            host.iptables("-A", _CHAIN_OUT, "-d", ip, "-j", "DROP")
        host.faults.append(f"cut from {','.join(others)}")

    def drop_connection(self, name: str, local_port: int) -> None:
        """The packets of the host's TCP connection from ``local_port`` vanish, both ways; its others flow on.

        What a connection sees when a stateful firewall or NAT box on its path forgets it (a failover, a full
        table): silence on that one connection, while new connections to the same server work.
        """
        host = self.hosts[name]
        host.iptables("-A", _CHAIN_OUT, "-p", "tcp", "--sport", str(local_port), "-j", "DROP")
        host.iptables("-A", _CHAIN_IN, "-p", "tcp", "--dport", str(local_port), "-j", "DROP")
        host.faults.append(f"connection from port {local_port} dropped")

    def lossy(self, name: str, share: float, direction: str = "both") -> None:
        """Each packet dropped with probability ``share``, leaving (``out``), arriving (``in``) or both."""
        host = self.hosts[name]
        for chain in _chains(direction):
            host.iptables(
                "-A", chain, "-m", "statistic", "--mode", "random", "--probability", f"{share:.3f}", "-j", "DROP"
            )
        host.faults.append(f"loss {share:.0%} {direction}")

    def slow(self, name: str, delay: float, direction: str = "both") -> None:
        """Each packet held ``delay`` seconds before it goes on (user space, see the module doc)."""
        host = self.hosts[name]
        queue = 0
        for chain in _chains(direction):
            queue += 1
            delayer = subprocess.Popen(
                host.argv(sys.executable, "-m", "tests.netdelay", str(queue), str(delay)),
                cwd=REPO,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
                stdout=subprocess.PIPE,
            )
            host.delayers.append(delayer)
            assert delayer.stdout is not None
            if delayer.stdout.readline().strip() != b"ready":  # bound to its queue before any packet is sent there
                raise RuntimeError(f"the delayer on {name} did not start")
            host.iptables("-A", chain, "-j", "NFQUEUE", "--queue-num", str(queue))
        host.faults.append(f"delay {delay * 1000:.0f}ms {direction}")

    def heal(self, name: str | None = None) -> None:
        """Remove the filters of one host (or of all): its packets flow again at once."""
        for host in [self.hosts[name]] if name else self.hosts.values():
            if host.faults:
                host.iptables("-F", _CHAIN_IN)
                host.iptables("-F", _CHAIN_OUT)
                self._stop_delayers(host)  # after the flush, so no packet waits in a queue nobody serves
                host.faults.clear()

    @staticmethod
    def _stop_delayers(host: Host) -> None:
        for delayer in host.delayers:
            delayer.kill()
            delayer.wait(10)
        host.delayers.clear()

    @contextlib.contextmanager
    def fault(self, kind: str, name: str, *args: object) -> Iterator[None]:
        """Apply one fault for the span of a ``with`` block, then heal that host."""
        getattr(self, kind)(name, *args)
        try:
            yield
        finally:
            self.heal(name)


def _chains(direction: str) -> list[str]:
    if direction not in ("in", "out", "both"):
        raise ValueError(f"direction must be in, out or both, not {direction!r}")
    return {"in": [_CHAIN_IN], "out": [_CHAIN_OUT], "both": [_CHAIN_OUT, _CHAIN_IN]}[direction]


def wait_reachable(network: TestNetwork, name: str, ip: str, port: int, timeout: float = 10.0) -> None:
    """Wait until ``name`` can open a TCP connection to ``ip:port`` (a bash /dev/tcp probe in its namespace)."""
    deadline = time.monotonic() + timeout
    host = network.hosts[name]
    while time.monotonic() < deadline:
        probe = f"exec 3<>/dev/tcp/{ip}/{port}"
        if subprocess.run(host.argv("timeout", "1", "bash", "-c", probe), capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} cannot reach {ip}:{port} after {timeout}s")
