"""The patched oslo locks find their backend in cinder.conf: ``[coordination] backend_url`` of the process's cfg.CONF.

Each test runs a child shaped like cinder-volume's start-up: it imports lockutils (the ``LOCKD_PATCH_LOCKUTILS``
hook patches it right then, before any config is read), registers ``state_path`` and ``[coordination]
backend_url`` on the global ``cfg.CONF`` as Cinder does (``cinder/common/config.py``, ``cinder/coordination.py``;
Cinder itself is not imported), parses a real config file, takes an oslo external lock and reports, as JSON on
stdout, the backend URL in force. The lock is checked in the real etcd (``/tooz/locks<name>``) while the child
holds it. The global ``cfg.CONF`` is the point, which is why this runs in child processes and not on a private
``ConfigOpts`` here.

Every child gets an empty ``LOCKD_STATE_DIR`` (or one announcing a URL the test chose): a ``lockd serve`` of
whoever else uses this machine must not be found by accident.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tooz.coordination

from lockd.etcd import keys
from lockd.options import BACKEND_URL_FILE
from tests.etcd_process import free_port
from tests.procs import ChildProcess

CINDER_VOLUME = r"""
import json, sys
from oslo_concurrency import lockutils  # as cinder.utils does at import: the start-up hook patches it here
from oslo_config import cfg

args = json.loads(sys.argv[1])

def report(event, **fields):
    print(json.dumps({"event": event, "patched_by": lockutils.external_lock.__module__, **fields}), flush=True)

if args["register"]:
    cfg.CONF.register_opts([cfg.StrOpt("state_path", default="/var/lib/cinder")])
    cfg.CONF.register_opts([cfg.StrOpt("backend_url", default="file://$state_path")], group="coordination")
if args["parse"]:
    cfg.CONF(["--config-file", args["config"]], project="cinder")
if args["override"]:
    cfg.CONF.set_override("backend_url", args["override"], "coordination")
if args["patch_in_code"]:
    import drivers_shim
    drivers_shim.patch_lockutils()

from lockd import runtime
try:
    with lockutils.lock(args["name"], "cinder-", external=True):
        report("held", backend_url=runtime.backend_url())
        sys.stdin.readline()
except Exception as exc:
    report("failed", error=type(exc).__name__, message=str(exc))
else:
    report("released")
"""

LOCKD_PATCHED = "drivers_shim.lockutils_patch"


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The children's environment: no LOCKD_*/OSLO_*/oslo [coordination] setting of the test run, a lock_path,
    and a ``lockd serve`` state directory of their own (empty: nothing announced until a test writes it)."""
    for var in [v for v in os.environ if v.startswith(("LOCKD_", "OSLO_", "OS_COORDINATION__"))]:
        monkeypatch.delenv(var)
    state = tmp_path / "lockd-state"
    state.mkdir()
    monkeypatch.setenv("LOCKD_STATE_DIR", str(state))
    monkeypatch.setenv("OSLO_LOCK_PATH", str(tmp_path))  # every cinder-volume has a lock_path; the patch uses it too
    return state


def cinder_volume(
    workers: list[ChildProcess],
    tmp_path: Path,
    conf: str,
    name: str,
    *,
    hook: bool = True,
    register: bool = True,
    parse: bool = True,
    override: str | None = None,
    monkeypatch: pytest.MonkeyPatch,
) -> ChildProcess:
    """Start the cinder-volume-like child with ``conf`` as its config file; ``hook``: patched by
    ``LOCKD_PATCH_LOCKUTILS=1``, else by ``drivers_shim.patch_lockutils()`` after the config is parsed."""
    path = tmp_path / "cinder.conf"
    path.write_text(conf)
    if hook:
        monkeypatch.setenv("LOCKD_PATCH_LOCKUTILS", "1")
    else:
        monkeypatch.delenv("LOCKD_PATCH_LOCKUTILS", raising=False)
    args = {
        "config": str(path),
        "name": name,
        "register": register,
        "parse": parse,
        "override": override,
        "patch_in_code": not hook,
    }
    child = ChildProcess("-c", CINDER_VOLUME, json.dumps(args))
    workers.append(child)
    return child


def coordination(url: str) -> str:
    return f"[coordination]\nbackend_url = {url}\n"


def held_in_etcd(coordinator: tooz.coordination.CoordinationDriver, name: str) -> bool:
    return coordinator.etcd.get(keys.lock_key(f"cinder-{name}")) is not None


def hold_and_release(
    child: ChildProcess, coordinator: tooz.coordination.CoordinationDriver, name: str, expected_url: str
) -> None:
    """The child holds the lock on ``expected_url``, the key is in etcd while it does, and gone after release."""
    assert child.wait_event("held", "failed") == {
        "event": "held",
        "patched_by": LOCKD_PATCHED,
        "backend_url": expected_url,
    }
    assert held_in_etcd(coordinator, name)
    child.send("release")
    child.wait_event("released")
    assert not held_in_etcd(coordinator, name)


def dead_lockd_url() -> str:
    """A lockd URL nothing answers on: a child that used it could not take the lock."""
    return f"lockd+etcd3+http://127.0.0.1:{free_port()}?timeout=1"


@pytest.mark.parametrize(
    ("hook", "source"),
    [
        pytest.param(True, "file", id="hook-cinder.conf"),
        pytest.param(False, "file", id="patch_lockutils-cinder.conf"),
        pytest.param(True, "oslo-env", id="hook-OS_COORDINATION__BACKEND_URL"),
    ],
)
def test_a_lockd_url_the_operator_set_in_coordination_is_used(
    tmp_path: Path,
    state_dir: Path,
    workers: list[ChildProcess],
    coordinator: tooz.coordination.CoordinationDriver,
    etcd_url: str,
    lock_name: str,
    monkeypatch: pytest.MonkeyPatch,
    hook: bool,
    source: str,
) -> None:
    """No LOCKD_BACKEND_URL, nothing announced: cinder.conf (or oslo.config's own environment source, also the
    operator's) is the only place the URL is written, and the patched lock is on that etcd."""
    if source == "oslo-env":
        monkeypatch.setenv("OS_COORDINATION__BACKEND_URL", etcd_url)
        conf = "[DEFAULT]\n"
    else:
        conf = coordination(etcd_url)
    child = cinder_volume(workers, tmp_path, conf, lock_name, hook=hook, monkeypatch=monkeypatch)
    hold_and_release(child, coordinator, lock_name, etcd_url)


def test_cinder_default_is_not_used_and_the_error_names_every_source(
    tmp_path: Path,
    state_dir: Path,
    workers: list[ChildProcess],
    lock_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cinder's default ``file://$state_path`` is host-local: with nothing else set the lock fails, unrun."""
    conf = f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n"
    child = cinder_volume(workers, tmp_path, conf, lock_name, monkeypatch=monkeypatch)
    event = child.wait_event("held", "failed")
    assert event["error"] == "UsageError", event
    for source in ("drivers_shim.configure", "LOCKD_BACKEND_URL", "[coordination] backend_url", "lockd serve"):
        assert source in event["message"], event["message"]


def test_cinder_default_falls_through_to_the_environment_variable(
    tmp_path: Path,
    state_dir: Path,
    workers: list[ChildProcess],
    coordinator: tooz.coordination.CoordinationDriver,
    etcd_url: str,
    lock_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCKD_BACKEND_URL", etcd_url)
    child = cinder_volume(workers, tmp_path, "[DEFAULT]\n", lock_name, monkeypatch=monkeypatch)
    hold_and_release(child, coordinator, lock_name, etcd_url)


def test_the_environment_variable_beats_cinder_conf(
    tmp_path: Path,
    state_dir: Path,
    workers: list[ChildProcess],
    coordinator: tooz.coordination.CoordinationDriver,
    etcd_url: str,
    lock_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Explicit beats implicit: cinder.conf names an etcd nobody answers on; the lock is on the variable's."""
    monkeypatch.setenv("LOCKD_BACKEND_URL", etcd_url)
    child = cinder_volume(workers, tmp_path, coordination(dead_lockd_url()), lock_name, monkeypatch=monkeypatch)
    hold_and_release(child, coordinator, lock_name, etcd_url)


@pytest.mark.parametrize("kind", ["file", "stock-etcd3"])
def test_a_url_that_is_not_lockd_is_skipped_for_the_announced_one(
    tmp_path: Path,
    state_dir: Path,
    workers: list[ChildProcess],
    coordinator: tooz.coordination.CoordinationDriver,
    etcd_url: str,
    stock_url: str,
    lock_name: str,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """``file://`` is the host-local lock the patch replaces; stock ``etcd3+http`` still needs the variable. Both
    fall through to the next source: here a ``lockd serve`` announcement (its file, as serve writes it)."""
    (state_dir / BACKEND_URL_FILE).write_text(etcd_url + "\n")
    file_dir = tmp_path / "file-locks"
    url = f"file://{file_dir}" if kind == "file" else stock_url
    child = cinder_volume(workers, tmp_path, coordination(url), lock_name, monkeypatch=monkeypatch)
    hold_and_release(child, coordinator, lock_name, etcd_url)
    assert not file_dir.exists(), "tooz's file driver was used"


@pytest.mark.parametrize(
    ("register", "parse", "in_file"),
    [
        pytest.param(True, False, True, id="config-not-parsed-yet"),
        pytest.param(False, True, True, id="option-not-registered"),
        pytest.param(True, True, False, id="set_override-by-code"),
    ],
)
def test_a_value_that_is_not_the_operators_parsed_setting_is_not_used(
    tmp_path: Path,
    state_dir: Path,
    workers: list[ChildProcess],
    etcd_url: str,
    lock_name: str,
    monkeypatch: pytest.MonkeyPatch,
    register: bool,
    parse: bool,
    in_file: bool,
) -> None:
    """Before ``cfg.CONF()`` ran, without Cinder's option, or set by code: the source stays silent (no
    exception of its own) and the lock fails with the usual UsageError, since nothing else is set."""
    conf = coordination(etcd_url) if in_file else "[DEFAULT]\n"
    override = None if in_file else etcd_url
    child = cinder_volume(
        workers, tmp_path, conf, lock_name, register=register, parse=parse, override=override, monkeypatch=monkeypatch
    )
    event = child.wait_event("held", "failed")
    assert event["error"] == "UsageError", event
    assert event["message"].startswith("no lock backend"), event["message"]
