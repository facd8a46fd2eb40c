"""One Pacemaker cluster node for tests: corosync and pacemakerd in the foreground, in namespaces, stopped by PID.

Theory of operation:

- A holder process (``unshare --mount --propagation private sleep infinity``, inside ``ip netns exec NS`` for a
  node with its own network) owns the node's namespaces. corosync, pacemakerd and every command run on the node
  (pcs, cibadmin, crm_mon, crm_resource) enter them with ``nsenter``, which execs: the PID we hold is the
  daemon's own (for pacemakerd, that of the tini in front of it, which passes signals on), and teardown
  signals exactly the processes this node started.
- Pacemaker and corosync have fixed state paths. Inside the mount namespace ``/run`` is a tmpfs of its own
  (corosync's lock file lives there, so a second corosync on the machine would refuse to start), and
  ``/var/lib/pacemaker``,
  ``/var/lib/corosync``, ``/var/log/pacemaker`` and ``/run/resource-agents`` are bind mounts of the node's own
  directories, and ``/usr/lib/ocf/resource.d`` is a read-only overlay that adds our OCF agent (the operator's
  "install the agent" step). The machine's own files are never written; everything goes when the namespace goes.
- corosync's and pacemaker's IPC (libqb) listen on abstract unix sockets, which belong to a network namespace.
  A node in the machine's own network namespace would therefore collide with a cluster already running there:
  ``start`` refuses in that case. Nodes in network namespaces of their own do not see each other's IPC.
- pacemakerd runs under ``tini -s`` (a child subreaper that passes signals on): the resources' orphans (an OCF
  agent starts its daemon in the background and exits) are reparented to it and reaped at once. Without it they
  go to the machine's PID 1, which on the test VM reaps them only every second or two; until then a stopped
  cinder-volume is a zombie that ``kill -0`` still finds, and ocf:heartbeat:anything's stop keeps waiting
  (seen: 0.85 s from SIGTERM to Cinder's exit, 3.0 s to the end of the stop operation).
- Teardown finds what is left by namespace, not by name: every process the node ran (its daemons, and what
  they started, such as a ``lockd serve`` whose command line names no test path and whose cwd is Pacemaker's)
  shares the holder's mount namespace, whether or not the node has a network of its own. ``stop`` kills and
  reports those; a multi-node test checks each node's network namespace as well once its own helpers there
  (relays) are stopped.
- The CIB a node starts with sets ``stonith-enabled=false`` (nothing here can fence) and ``dc-deadtime=2s`` (the
  default 20 s is how long a lone node waits for peers before it elects itself).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "deploy" / "pacemaker" / "lockd"
TOOLS = ("corosync", "pacemakerd", "cibadmin", "crm_mon", "crm_resource", "crm_attribute", "pcs", "unshare", "nsenter",
         "tini")  # fmt: skip
# Bind-mounted inside the node's mount namespace: the daemon's path -> the node directory's subdirectory.
STATE_PATHS = {
    "/var/lib/pacemaker": "lib-pacemaker",
    "/var/lib/corosync": "lib-corosync",
    "/var/log/pacemaker": "log-pacemaker",
    "/run/resource-agents": "rsctmp",
}
# Pacemaker's daemons run as hacluster:haclient and write below /var/lib/pacemaker.
PACEMAKER_OWNED = ("lib-pacemaker", "log-pacemaker")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def namespaces_of(pid: int) -> dict[str, str]:
    """The namespaces ``pid`` lives in ("mnt", "net" -> "mnt:[4026532301]"); empty once it is gone."""
    found = {}
    for kind in ("mnt", "net"):
        with contextlib.suppress(OSError):
            found[kind] = os.readlink(f"/proc/{pid}/ns/{kind}")
    return found


def namespace_pids(namespaces: dict[str, str], exclude: tuple[int, ...] = ()) -> list[int]:
    """Live PIDs in any of ``namespaces`` (as ``namespaces_of`` gives them), ``exclude`` left out."""
    wanted = set(namespaces.items())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in exclude:
            if wanted & set(namespaces_of(int(entry.name)).items()) and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def describe(pid: int) -> str:
    """``pid: command line (cwd ...)``, for a report of what was left behind."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace(chr(0), " ").strip()[:160]
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return f"{pid}: (gone)"
    return f"{pid}: {cmdline} (cwd {cwd})"


def pids_mentioning(text: str) -> list[int]:
    """Live PIDs whose command line contains ``text`` (a test's own directory, so only its processes match)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if text in cmdline and alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def _stop_pid(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Peer:
    """One member of the corosync ring."""

    name: str
    nodeid: int
    address: str


@dataclass
class PacemakerNode:
    """A cluster node (see the module docstring). ``netns`` None: the machine's own network namespace."""

    name: str
    base: Path
    peers: list[Peer]
    netns: str | None = None
    holder: subprocess.Popen[bytes] | None = None
    mount_ns: str = ""  # the holder's, as namespaces_of() names it
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        """Pacemaker's log (all its daemons), as seen from outside the namespace."""
        return self.base / "log-pacemaker" / "pacemaker.log"

    # -- commands inside the node ------------------------------------------------------------------------------

    def enter(self, *argv: str) -> list[str]:
        """``argv`` prefixed so that it runs in the node's namespaces."""
        assert self.holder is not None, "node not started"
        flags = ["-m"] + (["-n"] if self.netns else [])
        return ["nsenter", "-t", str(self.holder.pid), *flags, *argv]

    def run(self, *argv: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 60):
        """Run a command on the node; returns the CompletedProcess (text)."""
        done = subprocess.run(self.enter(*argv), capture_output=True, text=True, env=env, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} on {self.name}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def crm_mon_xml(self) -> ET.Element | None:
        done = self.run("crm_mon", "-1", "--output-as=xml", check=False, timeout=30)
        if done.returncode != 0:
            return None
        with contextlib.suppress(ET.ParseError):
            return ET.fromstring(done.stdout)
        return None

    def online(self) -> bool:
        """This node is online in its own view and a DC has been elected."""
        mon = self.crm_mon_xml()
        if mon is None:
            return False
        dc = mon.find("summary/current_dc")
        me = mon.find(f"nodes/node[@name='{self.name}']")
        return dc is not None and dc.get("present") == "true" and me is not None and me.get("online") == "true"

    def roles(self) -> dict[tuple[str, str], str]:
        """(resource id, node) -> role ("Started", "Stopped", ...) of every clone instance crm_mon shows."""
        mon = self.crm_mon_xml()
        found: dict[tuple[str, str], str] = {}
        for resource in mon.iter("resource") if mon is not None else []:
            for node in resource.findall("node") or [ET.Element("node", name="")]:
                if node.get("name"):
                    found[(resource.get("id", ""), node.get("name", ""))] = resource.get("role", "")
        return found

    def failures(self) -> list[dict[str, str]]:
        """crm_mon's failed resource actions (op_key, exitstatus, exitreason, ...)."""
        mon = self.crm_mon_xml()
        return [dict(f.attrib) for f in mon.iter("failure")] if mon is not None else []

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.netns is None and _machine_cluster_running():
            raise RuntimeError("a corosync already listens in this network namespace; refusing to start another")
        for sub in (*STATE_PATHS.values(), "ocf", "ocf/lockd", "lib-pacemaker/cib", "lib-pacemaker/pengine",
                    "lib-pacemaker/blackbox", "lib-pacemaker/cores"):  # fmt: skip
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(AGENT, self.base / "ocf" / "lockd" / "lockd")
        (self.base / "ocf" / "lockd" / "lockd").chmod(0o755)
        (self.base / "corosync.conf").write_text(self._corosync_conf())
        self._initial_cib(self.base / "lib-pacemaker" / "cib" / "cib.xml")
        for sub in PACEMAKER_OWNED:
            for path in [self.base / sub, *(self.base / sub).rglob("*")]:
                shutil.chown(path, "hacluster", "haclient")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.holder = subprocess.Popen([*prefix, "unshare", "--mount", "--propagation", "private", "sleep", "infinity"])
        # Only once the holder runs `sleep` are its namespaces final (`ip netns exec` makes a mount namespace of
        # its own before unshare makes ours: a mount done in between would land in the wrong one).
        self._wait(lambda: _comm(self.holder.pid) == "sleep", 10, "the namespace holder")
        self.mount_ns = namespaces_of(self.holder.pid).get("mnt", "")
        # never the machine's own: stop() kills whatever lives in it
        assert self.mount_ns not in ("", namespaces_of(os.getpid())["mnt"]), f"no mount namespace for {self.name}"
        # a /run of its own first (corosync refuses to start while another holds the lock on /run/corosync.pid)
        mounts = ["mount -t tmpfs lkpm-run /run", *(f"mkdir -p {path}" for path in STATE_PATHS)]
        mounts += [f"mount --bind {self.base / sub} {path}" for path, sub in STATE_PATHS.items()]
        mounts.append(f"mount -t overlay lkpm-ocf -o lowerdir={self.base / 'ocf'}:/usr/lib/ocf/resource.d "
                      "/usr/lib/ocf/resource.d")  # fmt: skip
        self.run("sh", "-ec", " && ".join(mounts))
        with open(self.base / "corosync.out", "ab") as out:
            self.daemons["corosync"] = subprocess.Popen(
                self.enter("corosync", "-f", "-c", str(self.base / "corosync.conf")), stdout=out, stderr=out
            )
        with open(self.base / "pacemakerd.out", "ab") as out:
            # tini -s: pacemakerd's signals pass through, and what its resources orphan is reaped at once, as
            # systemd does on a real node (see the module docstring)
            self.daemons["pacemakerd"] = subprocess.Popen(
                self.enter("tini", "-s", "--", "pacemakerd", "-f"), stdout=out, stderr=out
            )

    def wait_online(self, timeout: float = 60) -> None:
        self._wait(self.online, timeout, f"node {self.name} online with a DC")

    def _wait(self, probe, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            for name, proc in self.daemons.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} of {self.name} exited with {proc.returncode}: see {self.base}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.3)

    def stop(self) -> list[str]:
        """Stop pacemakerd (it stops the resources it runs first), corosync, then the namespace holder.

        Returns what was left behind and had to be killed (empty when the shutdown was clean): any process still
        in the node's mount namespace (see the module docstring); one that survives even SIGKILL is named as such.
        """
        left: list[str] = []
        if self.holder is None:
            return left
        namespaces = {"mnt": self.mount_ns}
        pacemakerd = self.daemons.pop("pacemakerd", None)
        if pacemakerd is not None:
            _stop_pid(pacemakerd.pid, 150)  # a graceful shutdown stops every resource first
            pacemakerd.wait(10)
        corosync = self.daemons.pop("corosync", None)
        if corosync is not None:
            _stop_pid(corosync.pid, 30)
            corosync.wait(10)
        for pid in namespace_pids(namespaces, (self.holder.pid,)):
            left.append(describe(pid))
            _stop_pid(pid, 5)
        self.holder.kill()
        self.holder.wait(10)
        self.holder = None
        survivors = namespace_pids(namespaces)
        left += [f"survived SIGKILL: {describe(pid)}" for pid in survivors]
        return left

    # -- files -------------------------------------------------------------------------------------------------

    def _corosync_conf(self) -> str:
        nodes = "".join(
            f"    node {{\n        ring0_addr: {p.address}\n        name: {p.name}\n"
            f"        nodeid: {p.nodeid}\n    }}\n"
            for p in self.peers
        )
        two_node = "    two_node: 1\n" if len(self.peers) == 2 else ""
        return (
            "totem {\n    version: 2\n    cluster_name: lkpm\n    transport: knet\n"
            "    crypto_cipher: none\n    crypto_hash: none\n    token: 1000\n}\n"
            f"nodelist {{\n{nodes}}}\n"
            f"quorum {{\n    provider: corosync_votequorum\n{two_node}}}\n"
            "logging {\n    to_stderr: yes\n    to_logfile: no\n    to_syslog: no\n    timestamp: on\n}\n"
        )

    @staticmethod
    def _initial_cib(path: Path) -> None:
        path.write_text(subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True, check=True).stdout)
        env = {**os.environ, "CIB_file": str(path)}
        for name, value in (("stonith-enabled", "false"), ("dc-deadtime", "2s")):
            subprocess.run(
                ["crm_attribute", "--type", "crm_config", "--name", name, "--update", value],
                env=env, check=True, capture_output=True,
            )  # fmt: skip


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _machine_cluster_running() -> bool:
    """A corosync (or anything) listening on corosync's abstract IPC socket in our network namespace."""
    with contextlib.suppress(OSError):
        return bool(re.search(r" @cmap\b", Path("/proc/net/unix").read_text()))
    return False
