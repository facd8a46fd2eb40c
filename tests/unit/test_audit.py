"""lockd.audit and ``lockd audit-locks`` on small driver-shaped sources (written for these tests, not copied)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lockd.audit import scan_source
from lockd.cli.main import main

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


def by_line(source: str) -> dict[int, object]:
    return {site.line: site for site in scan_source(textwrap.dedent(source))}


def sites_of(source: str) -> list[tuple[str, str, str, str | None, str, str]]:
    return [(s.usage, s.api, s.name, s.lock_name, s.today, s.with_patch) for s in scan_source(textwrap.dedent(source))]


def test_lio_like_utils_synchronized_external_is_host_local_and_becomes_distributed() -> None:
    assert sites_of(LIO_LIKE) == [
        ("decorator", "utils.synchronized", "lioadm", "cinder-lioadm", "host-local", "distributed"),
        ("decorator", "utils.synchronized", "lioadm", "cinder-lioadm", "host-local", "distributed"),
        ("decorator", "utils.synchronized", "lio-cache", None, "in-process", "unchanged"),
    ]
    first = scan_source(LIO_LIKE)[0]
    assert first.function == "LioTarget.create_iscsi_target" and first.line == 7


def test_nvmet_like_aliases_prefix_factories_and_context_managers_are_resolved() -> None:
    assert sites_of(NVMET_LIKE) == [
        ("decorator", "lockutils.synchronized", "nvmetcli", "cinder-nvmetcli", "host-local", "distributed"),
        ("with", "lockutils.lock", "nvmet-ports", "cinder-nvmet-ports", "host-local", "distributed"),
        ("decorator", "SYNC", "nvmet-subsys", "cinder-nvmet-subsys", "host-local", "distributed"),
        ("call", "lockutils.external_lock", "nvmet-raw", "cinder-nvmet-raw", "host-local", "distributed"),
    ]


def test_netapp_like_path_named_locks_show_the_expression_or_the_mapped_name() -> None:
    assert sites_of(NETAPP_NFS_LIKE) == [
        ("decorator", "utils.synchronized", "cache_path", None, "host-local", "distributed"),
        ("with", "lockutils.lock", "path", None, "host-local", "distributed"),
        ("call", "lockutils.remove_external_lock_file (cleanup)", "path", None, "host-local", "no-op"),
        (
            "decorator",
            "utils.synchronized",
            "/var/lib/cinder/mnt/share1/img-cache-lock",
            "cinder-_var_lib_cinder_mnt_share1_img-cache-lock",
            "host-local",
            "distributed",
        ),
    ]
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
        ),
        (
            "decorator",
            "coordination.synchronized",
            "3par-{connector[host]}",
            "cinder-3par-{connector[host]}",
            "coordination",
            condition,
        ),
        ("with", "fasteners.InterProcessLock", "/tmp/3par.lock", None, "host-local", "not covered"),
        (
            "decorator",
            "drivers_shim.synchronized",
            "{volume.id}-delete_volume",
            "cinder-{volume.id}-delete_volume",
            "distributed",
            "unchanged",
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
        ("with", "lockutils.lock", "x", "x", "host-local if external", "distributed if external"),
        ("call", "lockutils.synchronized_with_prefix(...)", "y", "nova-y", "host-local", "distributed"),
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
    assert lines[0].split() == ["LOCATION", "USE", "API", "LOCK", "NAME", "TODAY", "WITH", "PATCH"]
    assert f"{drivers / 'targets' / 'lio.py'}:7" in out
    assert "cinder-_var_lib_cinder_mnt_share1_img-cache-lock" in out
    assert ".hidden" not in out and "README" not in out
    assert any(line.startswith(f"skipped {drivers / 'broken.py'}: SyntaxError") for line in lines)
    summary = next(line for line in lines if "lock site(s)" in line)
    assert summary.startswith("15 lock site(s) in 4 file(s): 11 host-local today, 9 become distributed")


def test_cli_json_is_machine_readable(drivers: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit-locks", "--json", str(drivers / "targets" / "lio.py"), str(drivers / "netapp_nfs.py")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["sites"] == 7
    assert data["summary"]["become_distributed"] == 5
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
