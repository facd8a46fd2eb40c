"""The gateway's JSON encoding of etcd data: base64 bytes, int64 as strings, and the key-value record."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    # binascii directly: base64.b64decode(text) is the same call behind two Python-level checks, and every key and
    # value of every watch event comes through here
    return binascii.a2b_base64(text) if text else b""


@dataclasses.dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        get = kv.get
        return cls(
            unb64(get("key")),
            unb64(get("value")),
            int(get("create_revision", 0)),
            int(get("mod_revision", 0)),
            int(get("version", 0)),
            int(get("lease", 0)),
        )
