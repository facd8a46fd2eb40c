"""Lock scope: which oslo external locks stay host-local file locks when ``patch_lockutils()`` is on.

Some external locks guard things that exist once per host: a kernel target's configuration (LIO, nvmet), the
host's iSCSI/FC/NVMe initiator, a directory under ``state_path``. Two hosts never touch the same one, so a
cluster-wide lock only serialises both cinder-volume hosts for nothing and makes local work wait on etcd. Worse,
os-brick's locks are shared through ``[os_brick] lock_path`` with nova-compute on hyperconverged hosts, and
nova-compute takes them as file locks: a lockd lock would no longer exclude it.

The scope is a list of fnmatch patterns (``*``, ``?``, ``[seq]``; case-sensitive, like lock file names on
Linux) matched against the lockd name of the lock (``lockutils_patch.lock_name()``: oslo's lock *file name*,
prefix included, e.g. ``cinder-nvmetcli``). A matching lock is exactly what oslo would have made (a fasteners
file lock in ``lock_path``); every other external lock is a lockd lock.

Where it comes from: ``patch_lockutils(host_local=[...])``, else ``$LOCKD_HOST_LOCAL_LOCKS``, else
``DEFAULT_HOST_LOCAL_LOCKS``. The variable's value replaces the defaults; see ``parse_host_local``.

The rule behind every fallback: a mistake in the scope may only make locks *wider* (cluster-wide), never
narrower, because a lock wrongly made host-local lets two hosts into a critical section, while a lock wrongly
made cluster-wide only costs waiting.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from collections.abc import Iterable, Mapping

from lockd.errors import UsageError

ENV_VAR = "LOCKD_HOST_LOCAL_LOCKS"
DEFAULT_WORD = "default"  #: in ``$LOCKD_HOST_LOCAL_LOCKS``: the default patterns, to extend them
NONE_WORD = "none"  #: ``$LOCKD_HOST_LOCAL_LOCKS=none``: no host-local locks, every external lock is lockd's

#: Derived from the external lock sites of Cinder 29 and os-brick 7 (``lockd audit-locks``). Each guards a
#: thing of this host only. Left out on purpose, because two hosts can touch what they guard: every driver
#: lock on array state (``cinder-ETERNUS-*``, ``cinder-huawei_qos``, ``cinder-MacroSAN-*``, ``cinder-acs5000A-host``,
#: qnap, infortrend, DataCore, Hitachi copy groups), the FC zone manager's ``fcfabric-*`` (switch state), NetApp's
#: path-named image-cache locks (files on a shared NFS export) and DataCore's CHAP password file (local or on
#: shared storage, as the deployment chose). Add such a lock to the scope only knowing where its thing lives.
DEFAULT_HOST_LOCAL_LOCKS: tuple[str, ...] = (
    # cinder/volume/targets/lio.py LioAdm._execute: every cinder-rtstool run against this host's LIO kernel
    # target and its saved configuration (Cinder serialises them for an rtslib-fb race, its issue 36).
    "cinder-lioadm",
    # cinder/volume/targets/nvmet.py NVMET._map_volume / _locked_unmap_volume: this host's kernel nvmet
    # configuration (configfs subsystems, namespaces and ports, changed through nvmetcli/privsep).
    "cinder-nvmetcli",
    # cinder/backup/manager.py BackupManager._cleanup_incomplete_backup_operations: the backup_workers processes
    # of one cinder-backup service; the name carries its process group id, which means nothing on another host.
    "cinder-cleanup_incomplete_backups_*",
    # cinder/volume/drivers/yadro/tatlin_utils.py TatlinVolumeConnections.create_store: creates this host's
    # connection-counter directory under state_path ("connections of volumes to local host", its docstring).
    "cinder-tatlin-connections-store",
    # os_brick/initiator/connectors/{iscsi,fibre_channel,nvmeof,huawei}.py connect_volume, disconnect_volume,
    # extend_volume and iscsi's connect_to_iscsi_portal-<portal>-<iqn>; os_brick/initiator/utils.py
    # guard_connection (os-brick-<service_uuid>): this host's initiator (iscsiadm sessions, SCSI scans,
    # multipath, nvme connect). os-brick is built for per-host file locks (nova-compute on every compute host
    # takes them so), and on HCI hosts nova-compute shares them through [os_brick] lock_path.
    "os-brick-*",
    # os_brick/initiator/connectors/scaleio.py connect_volume / disconnect_volume: this host's PowerFlex SDC
    # (its guid, mapping to it, waiting for its /dev/disk/by-id link); the same per-host design as above.
    "scaleio-scaleio",
)


@dataclasses.dataclass(frozen=True)
class LockScope:
    """A validated list of host-local patterns, compiled once (it is consulted on every external lock).

    Raises:
        UsageError: ``host_local`` is a single string (a list of patterns is expected), or holds a pattern that
            is not a string or has no non-space character.
    """

    host_local: tuple[str, ...]
    _regex: re.Pattern[str] | None = dataclasses.field(init=False, repr=False, compare=False)

    def __init__(self, host_local: Iterable[str]) -> None:
        patterns = validate_patterns(host_local)
        object.__setattr__(self, "host_local", patterns)
        regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)) if patterns else None
        object.__setattr__(self, "_regex", regex)

    def is_host_local(self, name: str) -> bool:
        """True when the lockd lock ``name`` stays a file lock on this host."""
        return self._regex is not None and self._regex.match(name) is not None

    def covers_every_name_starting_with(self, start: str) -> bool:
        """True when every name that starts with ``start`` is host-local, whatever follows it.

        For names only partly known in advance (``lockd audit-locks`` sees ``'os-brick-' + ...``): a pattern
        ``L*`` covers them when some beginning of ``start`` already matches ``L``. Other patterns may match
        some of those names at run time, but no static answer can say so, and a name is called host-local
        only when it is sure to be.
        """
        for pattern in self.host_local:
            if pattern.endswith("*"):
                head = pattern[:-1]
                if any(fnmatch.fnmatchcase(start[:end], head) for end in range(len(start) + 1)):
                    return True
        return False


def validate_patterns(host_local: Iterable[str]) -> tuple[str, ...]:
    """The patterns as a tuple, duplicates dropped, order kept. Raises UsageError as ``LockScope`` says."""
    if isinstance(host_local, (str, bytes)):
        raise UsageError(
            f"host-local lock patterns must be a list of strings, not one string: {host_local!r} "
            f"(write [{host_local!r}])"
        )
    try:
        patterns = list(host_local)
    except TypeError:
        raise UsageError(f"host-local lock patterns must be a list of strings, got {host_local!r}") from None
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise UsageError(f"a host-local lock pattern must be a string, got {pattern!r} in {patterns!r}")
        if not pattern.strip():
            raise UsageError(f"a host-local lock pattern must not be empty, got {pattern!r} in {patterns!r}")
    return tuple(dict.fromkeys(patterns))


def parse_host_local(spec: str, source: str = ENV_VAR) -> tuple[str, ...]:
    """The patterns written as ``$LOCKD_HOST_LOCAL_LOCKS`` (or ``lockd audit-locks --host-local-locks``) is.

    Comma-separated fnmatch patterns, spaces around each ignored. The list *replaces* the defaults; the word
    ``default`` in it stands for all of them (``default,cinder-mydriver-*`` extends them). ``none`` alone means
    no host-local locks: every external lock is a lockd lock. ``source`` names the setting in error messages.

    Raises:
        UsageError: an empty value (unset the variable for the defaults, or write ``none``), an empty item
            (``a,,b``, a trailing comma), or ``none`` together with other items.
    """
    items = [item.strip() for item in spec.split(",")]
    if items == [""]:
        raise UsageError(
            f"{source} is set but empty: unset it for the default host-local locks, or set it to {NONE_WORD!r} for none"
        )
    if [item.lower() for item in items] == [NONE_WORD]:
        return ()
    patterns: list[str] = []
    for position, item in enumerate(items, 1):
        if not item:
            raise UsageError(f"{source}={spec!r}: item {position} is empty (a doubled or trailing comma?)")
        if item.lower() == NONE_WORD:
            raise UsageError(f"{source}={spec!r}: {NONE_WORD!r} means no host-local locks and stands alone")
        patterns.extend(DEFAULT_HOST_LOCAL_LOCKS if item.lower() == DEFAULT_WORD else (item,))
    return validate_patterns(patterns)


def host_local_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``$LOCKD_HOST_LOCAL_LOCKS`` parsed, or the defaults when it is not set. Raises UsageError as parsing does."""
    spec = (os.environ if environ is None else environ).get(ENV_VAR)
    return DEFAULT_HOST_LOCAL_LOCKS if spec is None else parse_host_local(spec)
