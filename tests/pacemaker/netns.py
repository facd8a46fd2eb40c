"""A private network for multi-node tests: one network namespace per node, joined by a bridge in a namespace of its
own, so nothing is added to the machine's network. Names start with ``lkpm`` (the prefix this project's Pacemaker
tests own); ``cut`` takes a node's link down (its cluster traffic and everything else stop), ``heal`` brings it back.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Network:
    size: int
    subnet: str = "10.213.7"  # inside the private switch only: no route to it exists outside these namespaces
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    created: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"lkpm{self.tag}sw"

    def namespace(self, index: int) -> str:
        return f"lkpm{self.tag}n{index}"

    def address(self, index: int) -> str:
        return f"{self.subnet}.{index}"

    def create(self) -> None:
        for ns in (self.switch, *(self.namespace(i) for i in range(1, self.size + 1))):
            ip("netns", "add", ns)
            self.created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for i in range(1, self.size + 1):
            ns = self.namespace(i)
            # created inside the node's namespace, the peer end moved to the switch: never in the machine's
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", self.switch)
            ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0")
            ip("-n", self.switch, "link", "set", f"p{i}", "up")

    def cut(self, index: int) -> None:
        ip("-n", self.switch, "link", "set", f"p{index}", "down")

    def heal(self, index: int) -> None:
        ip("-n", self.switch, "link", "set", f"p{index}", "up")

    def destroy(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
        self.created.clear()
