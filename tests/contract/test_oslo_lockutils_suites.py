"""oslo.concurrency's own lockutils tests are the contract the lockutils patch must meet, unpatched runs the control.

``drivers_shim.patch_lockutils()`` (turned on at interpreter start by ``LOCKD_PATCH_LOCKUTILS=1`` and the
``lockd_lockutils_patch.pth`` hook) swaps ``lockutils.external_lock`` under every user of oslo's locks. Whatever
oslo's own tests expect of lockutils must therefore still hold with the patch on. oslo.concurrency ships the
tests in its wheel (``oslo_concurrency/tests/unit/test_lockutils.py`` and ``test_lockutils_eventlet.py``, built
on ``oslotest``). Each module is run twice, all runs at the same time: as the control, with no ``LOCKD_*``
or ``OSLO_*`` variable in the environment, and patched, with ``LOCKD_PATCH_LOCKUTILS=1`` and ``LOCKD_BACKEND_URL``
naming the session's etcd. Each run is a pytest subprocess with a config file of its own (so this repository's
settings do not apply) writing a JUnit report; the reports are compared by test id. A test the control passes
must pass patched too, unless ``BY_DESIGN`` names it with a reason (printed on every run).

How the runs are checked to be what they claim to be:
  * a small pytest plugin (``PROBE``, written into each run's directory, loaded with ``-p``) records
    ``lockutils.external_lock.__module__`` once the tests are collected and again when the session ends; it must be
    ``drivers_shim.lockutils_patch`` in a patched run and ``oslo_concurrency.lockutils`` in a control run;
  * the control must pass at least ``Suite.min_control_passed`` tests, so a broken control cannot pass vacuously.

``test_lockutils.py`` runs a second time monkey-patched (``TEST_EVENTLET=1``, below), as cinder-volume runs: its
external locks then take the file lock and the lockd lock from green threads.

``test_lockutils_eventlet.py`` runs as upstream's tox runs it: with ``TEST_EVENTLET=1``, which makes the
``oslo_concurrency.tests`` package call ``eventlet.monkey_patch()`` when it is imported, and therefore in processes
of its own (monkey-patching is process-wide). Without it the module is not testing anything meaningful and does not
even finish: its green threads block on real ``threading`` primitives, the two ``TestInternalLock`` fair-lock tests
fail and ``test_lock_with_spawn`` hangs. The probe checks that eventlet had patched ``thread`` in those runs. That
module takes ``InterProcessLock`` directly and only internal locks through ``lock()``, so it never reaches
``external_lock``: its patched run shows that the import hook and a patched lockutils leave eventlet's green
locking as it was, not that external locks work under eventlet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.contract import junit
from tests.etcd_process import EtcdMember

UNIT_TESTS = "oslo_concurrency.tests.unit"
ORIGINAL_MODULE = "oslo_concurrency.lockutils"
PATCHED_MODULE = "drivers_shim.lockutils_patch"


@dataclass(frozen=True)
class Suite:
    module: str  #: a module of ``oslo_concurrency.tests.unit``
    eventlet: bool  #: run with ``TEST_EVENTLET=1`` (eventlet monkey-patches the whole process first)
    min_control_passed: int  #: fewer passes in the control means the control did not really run


#: oslo.concurrency 7.6.1 here: the control passes 33 of test_lockutils.py (plain and monkey-patched) and 9 of
#: test_lockutils_eventlet.py. test_lockutils.py monkey-patched is how cinder-volume runs (upstream's tox runs it
#: so too); its patched run has an etcd of its own, as its lock names ("foo", ...) are the plain run's.
SUITES = {
    "test_lockutils": Suite("test_lockutils", eventlet=False, min_control_passed=25),
    "test_lockutils_monkey_patched": Suite("test_lockutils", eventlet=True, min_control_passed=25),
    "test_lockutils_eventlet": Suite("test_lockutils_eventlet", eventlet=True, min_control_passed=7),
}

#: Test id (``test_lockutils.py::Class::test``) -> why it cannot pass with the patch on. Printed on every run.
BY_DESIGN: dict[str, str] = {}

#: Seconds a run may take (they take about 20 s); a run still going is killed and the test fails with its log.
RUN_TIMEOUT = 240

#: The plugin each run loads with ``-p``: what ``external_lock`` is (and whether eventlet patched threads) once the
#: tests are collected and when the session ends, into ``probe.json`` next to itself. It imports nothing of oslo's.
PROBE = """\
import json
import pathlib
import sys

_seen = {}


def _look():
    lockutils = sys.modules.get("oslo_concurrency.lockutils")
    patcher = sys.modules.get("eventlet.patcher")
    return {
        "external_lock": None if lockutils is None else lockutils.external_lock.__module__,
        "monkey_patched_thread": bool(patcher is not None and patcher.is_monkey_patched("thread")),
    }


def pytest_collection_finish(session):
    _seen["collected"] = _look()


def pytest_sessionfinish(session, exitstatus):
    _seen["finished"] = _look()
    pathlib.Path(__file__).with_name("probe.json").write_text(json.dumps(_seen))
"""


@dataclass
class Run:
    suite: Suite
    patched: bool
    workdir: Path
    proc: subprocess.Popen[bytes]

    @property
    def label(self) -> str:
        return f"{self.suite.module} {'patched' if self.patched else 'control'}"

    def log_tail(self, chars: int = 4000) -> str:
        log = self.workdir / "pytest.log"
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        return f"--- {self.label}: {log} ---\n{text[-chars:]}"

    def wait(self) -> None:
        try:
            self.proc.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.label} still running after {RUN_TIMEOUT} s, killed\n{self.log_tail()}")

    def outcomes(self) -> dict[str, str]:
        """test id -> passed, failed, error or skipped, from the run's JUnit XML report."""
        report = self.workdir / "junit.xml"
        assert report.exists(), f"{self.label} wrote no report (exit {self.proc.returncode})\n{self.log_tail()}"
        found = {}
        for case, outcome in junit.outcomes(report):
            cls = case.get("classname", "?").rsplit(".", 1)[-1]
            found[f"{self.suite.module}.py::{cls}::{case.get('name', '?')}"] = outcome
        return found

    def probe(self) -> dict[str, dict[str, object]]:
        probe = self.workdir / "probe.json"
        assert probe.exists(), f"{self.label}: the probe plugin recorded nothing\n{self.log_tail()}"
        return json.loads(probe.read_text())


def _environment(suite: Suite, workdir: Path, backend_url: str | None) -> dict[str, str]:
    """This process's environment without any LOCKD_, OSLO_ or PYTEST_ variable or TEST_EVENTLET, plus the run's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LOCKD_", "OSLO_", "PYTEST_")) and key != "TEST_EVENTLET"
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(workdir), env.get("PYTHONPATH")) if p)
    if suite.eventlet:
        env["TEST_EVENTLET"] = "1"
    if backend_url is not None:
        env["LOCKD_PATCH_LOCKUTILS"] = "1"
        env["LOCKD_BACKEND_URL"] = backend_url
    return env


def _start(suite: Suite, workdir: Path, backend_url: str | None) -> Run:
    workdir.mkdir(parents=True)
    (workdir / "pytest.ini").write_text("[pytest]\n")
    (workdir / "lockd_contract_probe.py").write_text(PROBE)
    command = [
        sys.executable, "-m", "pytest", "-c", str(workdir / "pytest.ini"), "-p", "no:cacheprovider",
        "-p", "lockd_contract_probe", "--pyargs", f"{UNIT_TESTS}.{suite.module}", "-q", "-rfEs",
        "--timeout", "60", f"--junitxml={workdir / 'junit.xml'}",
    ]  # fmt: skip
    with open(workdir / "pytest.log", "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=_environment(suite, workdir, backend_url),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Run(suite, backend_url is not None, workdir, proc)


@pytest.fixture(scope="module")
def suite_runs(etcd: EtcdMember, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Run, Run]]]:
    """All runs, started at once: suite name -> (control, patched)."""
    if not etcd.running():
        etcd.start()
    base = tmp_path_factory.mktemp("oslo-lockutils")
    green_etcd = EtcdMember("oslo-green", base / "green-etcd")  # the monkey-patched runs' own cluster (see SUITES)
    green_etcd.start()
    runs = {}
    for name, suite in SUITES.items():
        member = green_etcd if suite.eventlet else etcd
        backend_url = f"lockd+etcd3+http://{member.endpoint}?lease_ttl=3&timeout=2"
        runs[name] = (_start(suite, base / name / "control", None), _start(suite, base / name / "patched", backend_url))
    yield runs
    green_etcd.stop()
    for pair in runs.values():
        for run in pair:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()


def _check_probe(run: Run) -> None:
    expected = PATCHED_MODULE if run.patched else ORIGINAL_MODULE
    for moment, seen in run.probe().items():
        assert seen["external_lock"] == expected, (
            f"{run.label}: lockutils.external_lock came from {seen['external_lock']!r} at {moment}, "
            f"not {expected!r}\n{run.log_tail()}"
        )
        if run.suite.eventlet:
            assert seen["monkey_patched_thread"], f"{run.label}: eventlet had not patched threads at {moment}"


@pytest.mark.timeout(RUN_TIMEOUT + 60)
@pytest.mark.parametrize("suite_name", list(SUITES))
def test_patched_lockutils_passes_every_oslo_lockutils_test_the_control_passes(
    suite_name: str, suite_runs: dict[str, tuple[Run, Run]]
) -> None:
    control_run, patched_run = suite_runs[suite_name]
    control_run.wait()
    patched_run.wait()
    control, patched = control_run.outcomes(), patched_run.outcomes()
    _check_probe(control_run)
    _check_probe(patched_run)

    control_passed = sorted(test for test, outcome in control.items() if outcome == "passed")
    patched_passed = sum(outcome == "passed" for outcome in patched.values())
    by_design = {test: why for test, why in BY_DESIGN.items() if test.startswith(f"{patched_run.suite.module}.py::")}
    broken = {
        test: patched.get(test, "not run")
        for test in control_passed
        if patched.get(test) != "passed" and test not in by_design
    }
    both = {test: (outcome, patched.get(test, "not run")) for test, outcome in control.items() if outcome != "passed"}
    only_patched = sorted(test for test, outcome in patched.items() if test not in control and outcome == "passed")

    lines = [f"\noslo {suite_name}: control passed {len(control_passed)}, patched passed {patched_passed}"]
    for test, why in by_design.items():
        outcome = patched.get(test, "not run")
        hint = " (passes patched now: drop it from BY_DESIGN?)" if outcome == "passed" else ""
        lines.append(f"  by design, {test} ({outcome} patched): {why}{hint}")
    lines += [f"  fails unpatched too, {test}: control {c}, patched {p}" for test, (c, p) in sorted(both.items())]
    lines += [f"  only in the patched run, {test}: passed" for test in only_patched]
    lines += [f"  BROKEN BY THE PATCH, {test}: {outcome}" for test, outcome in sorted(broken.items())]
    print("\n".join(lines))

    assert len(control_passed) >= control_run.suite.min_control_passed, control_run.log_tail()
    stale = sorted(test for test in by_design if test not in control)
    assert not stale, f"BY_DESIGN names tests the control did not run: {stale}"
    log = patched_run.log_tail(12000)
    assert not broken, f"{len(broken)} tests the control passes do not pass patched: {broken}\n{log}"
