"""lockd.audit and ``lockd audit-locks`` on small driver-shaped sources (written for these tests, not copied)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest

from lockd.audit import audit, scan_source
from lockd.cli.main import main
from lockd.errors import UsageError

# Cinder 29 as installed on the developer machine this was written on; CI machines do not have it.
CINDER = Path("/tmp/cinder-venv/lib/python3.11/site-packages/cinder")

# An iSCSI target helper in the style of Cinder's LIO one: cinder utils, a fixed external lock name.
LIO_LIKE = """
from cinder import utils
from cinder.volume.targets import iscsi


class LioTarget(iscsi.ISCSITarget):
    @utils.synchronized('lioadm', external=True)
    def create_iscsi_target(self, name, tid, lun, path):
        return self._execute('cinder-rtstool', 'create', path, name)

    @utils.synchronized('lioadm', external=True)
    def remove_iscsi_target(self, tid, lun, vol_id, vol_name):
        return None

    @utils.synchronized('lio-cache')
    def _cached(self):
        return None
"""

# An NVMe-oF target in the style of nvmet: oslo lockutils directly, decorator and context manager.
NVMET_LIKE = """
from oslo_concurrency import lockutils as lu

SYNC = lu.synchronized_with_prefix('cinder-')


class NVMETTarget:
    @lu.synchronized('nvmetcli', 'cinder-', external=True)
    def create_export(self, context, volume, volume_path):
        with lu.lock('nvmet-ports', lock_file_prefix='cinder-', external=True):
            pass

    @SYNC('nvmet-subsys', external=True)
    def delete_nvmeof_target(self, volume):
        ext = lu.external_lock('nvmet-raw', 'cinder-')
        with ext:
            pass
"""

# An NFS driver in the style of NetApp's: locks named by a file path, built at run time or literal.
NETAPP_NFS_LIKE = """
import os

from oslo_concurrency import lockutils
from cinder import utils


class NetAppNfsDriver:
    def _copy_from_cache(self, volume, image_id, cache_path):
        @utils.synchronized(cache_path, external=True)
        def _do_copy():
            pass
        _do_copy()

    def _clean_image_cache(self, share):
        path = os.path.join(self._mount_point(share), 'img-cache')
        with lockutils.lock(path, 'cinder-', external=True):
            pass
        lockutils.remove_external_lock_file(path, 'cinder-')

    @utils.synchronized('/var/lib/cinder/mnt/share1/img-cache-lock', external=True)
    def _fixed(self):
        pass
"""

# A FC driver in the style of 3PAR: cinder.coordination locks with templates.
THREEPAR_LIKE = """
from cinder import coordination
import fasteners

import drivers_shim


class HPE3PARFCDriver:
    @coordination.synchronized('3par-{volume.id}')
    def initialize_connection(self, volume, connector):
        pass

    @coordination.synchronized('3par-{connector[host]}')
    def terminate_connection(self, volume, connector, **kwargs):
        pass

    def _raw(self):
        with fasteners.InterProcessLock('/tmp/3par.lock'):
            pass

    @drivers_shim.synchronized('{volume.id}-delete_volume')
    def delete_volume(self, volume):
        pass
"""


# os-brick's connectors (written for these tests): its own synchronized() with the 'os-brick-' prefix, names fixed
# or built at run time, and a bare lockutils.lock() like its guard_connection().
OS_BRICK_LIKE = """
from oslo_concurrency import lockutils

from os_brick.initiator.connectors import base


class ISCSIConnector:
    @base.synchronized('connect_volume', external=True)
    def connect_volume(self, connection_properties):
        pass

    def _connect_to_iscsi_portal(self, portal, iqn):
        lock_name = f'connect_to_iscsi_portal-{portal}-{iqn}'
        return base.synchronized(lock_name, external=True)(self._unsafe)

    @base.synchronized('scaleio', 'scaleio-', external=True)
    def scaleio(self):
        pass

    @base.synchronized('volume_op')
    def in_process(self):
        pass


def guard_connection(device):
    with lockutils.lock(device['service_uuid'], 'os-brick-', external=True):
        pass
"""

# Names built at run time: the scope can tell only when the fixed start of the name decides it.
BUILT_NAMES = """
import os

from oslo_concurrency import lockutils
from cinder import utils

PGRP = os.getpgrp()


class Manager:
    @utils.synchronized('cleanup_incomplete_backups_%s' % PGRP, external=True)
    def cleanup(self):
        pass

    def serve(self, group, prefix, x):
        with lockutils.lock('datacore-backend-%s' % group.Id, 'cinder-', external=True):
            pass
        with lockutils.lock(f'os-brick-{x}', external=True):
            pass
        with lockutils.lock('os-brick-' + x, external=True):
            pass
        with lockutils.lock('{}-os-brick-'.format(x), external=True):
            pass
        with lockutils.lock('lioadm', prefix, external=True):
            pass
"""


def by_line(source: str) -> dict[int, object]:
    return {site.line: site for site in scan_source(textwrap.dedent(source))}


def sites_of(
    source: str, host_local: Iterable[str] | None = None
) -> list[tuple[str, str, str, str | None, str, str, str | None]]:
    return [
        (s.usage, s.api, s.name, s.lock_name, s.today, s.with_patch, s.scope)
        for s in scan_source(textwrap.dedent(source), host_local=host_local)
    ]


def test_lio_like_utils_synchronized_external_is_host_local_and_stays_so_under_the_default_scope() -> None:
    assert sites_of(LIO_LIKE) == [
        ("decorator", "utils.synchronized", "lioadm", "cinder-lioadm", "host-local", "unchanged", "host-local"),
        ("decorator", "utils.synchronized", "lioadm", "cinder-lioadm", "host-local", "unchanged", "host-local"),
        ("decorator", "utils.synchronized", "lio-cache", None, "in-process", "unchanged", None),
    ]
    first = scan_source(LIO_LIKE)[0]
    assert first.function == "LioTarget.create_iscsi_target" and first.line == 7


def test_lio_like_becomes_distributed_with_no_host_local_locks() -> None:
    assert (
        sites_of(LIO_LIKE, host_local=[])[:2]
        == [
            ("decorator", "utils.synchronized", "lioadm", "cinder-lioadm", "host-local", "distributed", "cluster-wide"),
        ]
        * 2
    )


def test_nvmet_like_aliases_prefix_factories_and_context_managers_are_resolved() -> None:
    distributed = ("host-local", "distributed", "cluster-wide")
    assert sites_of(NVMET_LIKE) == [
        ("decorator", "lockutils.synchronized", "nvmetcli", "cinder-nvmetcli", "host-local", "unchanged", "host-local"),
        ("with", "lockutils.lock", "nvmet-ports", "cinder-nvmet-ports", *distributed),
        ("decorator", "SYNC", "nvmet-subsys", "cinder-nvmet-subsys", *distributed),
        ("call", "lockutils.external_lock", "nvmet-raw", "cinder-nvmet-raw", *distributed),
    ]


def test_netapp_like_path_named_locks_show_the_expression_or_the_mapped_name() -> None:
    assert sites_of(NETAPP_NFS_LIKE) == [
        ("decorator", "utils.synchronized", "cache_path", None, "host-local", "distributed", "cluster-wide"),
        ("with", "lockutils.lock", "path", None, "host-local", "distributed", "cluster-wide"),
        (
            "call",
            "lockutils.remove_external_lock_file (cleanup)",
            "path",
            None,
            "host-local",
            "unchanged",
            "cluster-wide",
        ),  # fmt: skip
        (
            "decorator",
            "utils.synchronized",
            "/var/lib/cinder/mnt/share1/img-cache-lock",
            "cinder-_var_lib_cinder_mnt_share1_img-cache-lock",
            "host-local",
            "distributed",
            "cluster-wide",
        ),
    ]


def test_os_brick_connector_locks_are_found_and_host_local_by_default() -> None:
    local = ("host-local", "unchanged", "host-local")
    assert sites_of(OS_BRICK_LIKE) == [
        ("decorator", "os-brick base.synchronized", "connect_volume", "os-brick-connect_volume", *local),
        ("call", "os-brick base.synchronized", "lock_name", None, *local),  # 'os-brick-' + anything
        ("decorator", "os-brick base.synchronized", "scaleio", "scaleio-scaleio", *local),
        ("decorator", "os-brick base.synchronized", "volume_op", None, "in-process", "unchanged", None),
        ("with", "lockutils.lock", "device['service_uuid']", None, *local),
    ]


def test_names_built_at_run_time_are_host_local_only_when_their_fixed_start_decides_it() -> None:
    scopes = [(s.name, s.lock_name, s.with_patch, s.scope) for s in scan_source(textwrap.dedent(BUILT_NAMES))]
    assert scopes == [
        ("'cleanup_incomplete_backups_%s' % PGRP", None, "unchanged", "host-local"),
        ("'datacore-backend-%s' % group.Id", None, "distributed", "cluster-wide"),
        ("f'os-brick-{x}'", None, "unchanged", "host-local"),
        ("'os-brick-' + x", None, "unchanged", "host-local"),
        ("'{}-os-brick-'.format(x)", None, "distributed", "cluster-wide"),
        ("lioadm", None, "distributed", "cluster-wide"),  # a variable prefix: no lock name, no claim
    ]


def test_a_custom_scope_judges_the_sites_and_bad_patterns_are_usage_errors() -> None:
    sites = scan_source(textwrap.dedent(NETAPP_NFS_LIKE), host_local=["cinder-_var_lib_cinder_mnt_*"])
    assert [s.scope for s in sites] == ["cluster-wide", "cluster-wide", "cluster-wide", "host-local"]
    for bad in ("cinder-x", [1], [""]):
        with pytest.raises(UsageError):
            scan_source(LIO_LIKE, host_local=bad)  # type: ignore[arg-type]
    nested = scan_source(NETAPP_NFS_LIKE)[0]
    assert nested.function == "NetAppNfsDriver._copy_from_cache._do_copy" and not nested.literal


def test_3par_like_coordination_fasteners_and_shim_sites() -> None:
    condition = "distributed if backend_url=lockd+etcd3+http://"
    assert sites_of(THREEPAR_LIKE) == [
        (
            "decorator",
            "coordination.synchronized",
            "3par-{volume.id}",
            "cinder-3par-{volume.id}",
            "coordination",
            condition,
            None,
        ),
        (
            "decorator",
            "coordination.synchronized",
            "3par-{connector[host]}",
            "cinder-3par-{connector[host]}",
            "coordination",
            condition,
            None,
        ),
        ("with", "fasteners.InterProcessLock", "/tmp/3par.lock", None, "host-local", "not covered", None),
        (
            "decorator",
            "drivers_shim.synchronized",
            "{volume.id}-delete_volume",
            "cinder-{volume.id}-delete_volume",
            "distributed",
            "unchanged",
            None,
        ),
    ]


def test_unrelated_calls_and_dynamic_external_flags() -> None:
    source = """
    from oslo_concurrency import lockutils
    import threading

    lock = threading.Lock()
    def f(flag):
        with lock:
            pass
        with lockutils.lock('x', external=flag):
            pass
        lockutils.synchronized_with_prefix('nova')('y', external=True)
    """
    assert sites_of(source) == [
        ("with", "lockutils.lock", "x", "x", "host-local if external", "distributed if external", "cluster-wide"),
        ("call", "lockutils.synchronized_with_prefix(...)", "y", "nova-y", "host-local", "distributed", "cluster-wide"),
    ]


@pytest.fixture
def drivers(tmp_path: Path) -> Path:
    root = tmp_path / "drivers"
    (root / "targets").mkdir(parents=True)
    (root / "targets" / "lio.py").write_text(LIO_LIKE)
    (root / "targets" / "nvmet.py").write_text(NVMET_LIKE)
    (root / "netapp_nfs.py").write_text(NETAPP_NFS_LIKE)
    (root / "hpe_3par_fc.py").write_text(THREEPAR_LIKE)
    (root / "broken.py").write_text("def oops(:\n")
    (root / "README.txt").write_text("@utils.synchronized('not python', external=True)\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "skip.py").write_text(LIO_LIKE)
    return root


def test_cli_table_lists_every_site_and_a_summary(drivers: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit-locks", str(drivers)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["LOCATION", "USE", "API", "LOCK", "NAME", "TODAY", "WITH", "PATCH", "SCOPE"]
    assert f"{drivers / 'targets' / 'lio.py'}:7" in out
    lio_row = next(line for line in lines if line.startswith(f"{drivers / 'targets' / 'lio.py'}:7 "))
    assert lio_row.split()[-3:] == ["host-local", "unchanged", "host-local"]
    fasteners_row = next(line for line in lines if "fasteners.InterProcessLock" in line)
    assert fasteners_row.split()[-3:] == ["not", "covered", "-"]
    assert "cinder-_var_lib_cinder_mnt_share1_img-cache-lock" in out
    assert ".hidden" not in out and "README" not in out
    assert any(line.startswith(f"skipped {drivers / 'broken.py'}: SyntaxError") for line in lines)
    summary = next(line for line in lines if "lock site(s)" in line)
    assert summary.startswith(
        "15 lock site(s) in 4 file(s): 11 host-local today, 6 become distributed with LOCKD_PATCH_LOCKUTILS=1, "
        "3 kept host-local by the lock scope, 1 not covered;"
    )


def test_cli_host_local_locks_option_takes_the_environment_syntax(
    drivers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lio = str(drivers / "targets" / "lio.py")
    assert main(["audit-locks", "--json", "--host-local-locks", "none", lio]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [site["scope"] for site in data["sites"]] == ["cluster-wide", "cluster-wide", None]
    assert data["summary"]["become_distributed"] == 2 and data["summary"]["kept_host_local"] == 0

    assert main(["audit-locks", "--json", "--host-local-locks", "default,cinder-lio-*", lio]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["kept_host_local"] == 2


def test_cli_bad_host_local_locks_is_a_usage_error_in_one_line(drivers: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lockd.cli.main", "audit-locks", "--host-local-locks", "a,,b", str(drivers)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockd: error: --host-local-locks='a,,b': item 2 is empty")


def test_cli_json_is_machine_readable(drivers: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit-locks", "--json", str(drivers / "targets" / "lio.py"), str(drivers / "netapp_nfs.py")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["sites"] == 7
    assert data["summary"]["become_distributed"] == 3
    assert data["summary"]["kept_host_local"] == 2
    assert data["skipped"] == []
    assert {site["path"] for site in data["sites"]} == {
        str(drivers / "targets" / "lio.py"),
        str(drivers / "netapp_nfs.py"),
    }
    assert set(data["sites"][0]) == {
        "path",
        "line",
        "function",
        "usage",
        "api",
        "name",
        "literal",
        "lock_name",
        "today",
        "with_patch",
        "scope",
    }


def test_cli_nonexistent_path_is_a_usage_error_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lockd.cli.main", "audit-locks", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"lockd: error: no such file or directory: {tmp_path / 'missing'}"]


@pytest.mark.skipif(not CINDER.is_dir(), reason=f"needs Cinder 29 installed at {CINDER} (a developer machine, not CI)")
def test_real_cinder_29_lio_and_nvmet_sites_are_host_local_by_default_and_backend_locks_are_not() -> None:
    targets = audit([str(CINDER / "volume" / "targets")])
    assert {(Path(s.path).name, s.lock_name, s.scope, s.with_patch) for s in targets.sites} == {
        ("lio.py", "cinder-lioadm", "host-local", "unchanged"),
        ("nvmet.py", "cinder-nvmetcli", "host-local", "unchanged"),
    }
    report = audit([str(CINDER / "volume"), str(CINDER / "backup"), str(CINDER / "zonemanager")])
    kept = {s.lock_name or s.name for s in report.sites if s.scope == "host-local"}
    assert kept == {
        "cinder-lioadm",
        "cinder-nvmetcli",
        "cinder-tatlin-connections-store",
        "'cleanup_incomplete_backups_%s' % SERVICE_PGRP",
    }
    wide = {s.lock_name for s in report.sites if s.scope == "cluster-wide" and s.lock_name}
    assert {"cinder-ETERNUS-vol", "cinder-huawei_qos", "cinder-MacroSAN-Attach-Detach", "fcfabric-brcd"} <= wide
