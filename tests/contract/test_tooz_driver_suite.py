"""tooz's own driver test suite is the contract: every test stock ``etcd3+http`` passes, lockd passes too.

tooz ships the suite in its wheel (``tooz/tests/test_coordination.py``, class ``TestAPI``, driven by
``$TOOZ_TEST_URL``). It is run twice on the session's etcd, at the same time: against ``lockd+etcd3+http://``
and, as the control, against stock ``etcd3+http://``. Each run is a pytest subprocess with a config file of
its own (so this repository's settings do not apply) writing a JUnit report; the reports are compared by
test name. Skips come from tooz itself (``tooz.NotImplemented`` becomes a skip, e.g. shared locks and
leaders); a test skipped on lockd that passes on stock counts as a failure.

Two settings keep the runs short without changing what a test asks of a driver:
  * futurist's idle executor worker polls for shutdown once a second (``ThreadWorker.MAX_IDLE_FOR``), so every
    ``stop()`` of a coordinator that used its executor (all group calls do) waited up to 1 s, about 50 s a
    run; the subprocess sets it to 0.05 s before pytest starts. Work is still run by the same single worker.
  * the stock control's membership lease is 5 s instead of its default 30 s (``membership_timeout``, the value
    tooz's own ``test_timeout`` uses): ``test_watch_join_group_disappear`` leaves a member that never stops
    and waits for it to expire. lockd's run keeps its defaults.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract import junit
from tests.etcd_process import EtcdMember

#: The stock driver passed 63 tests here (tooz 9.1, etcd 3.4); far fewer means the control did not really run.
MIN_STOCK_PASSED = 50

#: pytest with futurist's idle worker polling for shutdown every 0.05 s instead of every second (see above).
BOOT = (
    "import sys, futurist._thread, pytest; futurist._thread.ThreadWorker.MAX_IDLE_FOR = 0.05; "
    "sys.exit(pytest.main(sys.argv[1:]))"
)


def _start_suite(url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    workdir.mkdir()
    (workdir / "pytest.ini").write_text("[pytest]\n")
    report = workdir / "junit.xml"
    command = [
        sys.executable, "-c", BOOT, "-c", str(workdir / "pytest.ini"), "-p", "no:cacheprovider",
        "--pyargs", "tooz.tests.test_coordination", "-k", "TestAPI", "-q", "--timeout", "120",
        f"--junitxml={report}",
    ]  # fmt: skip
    env = {**os.environ, "TOOZ_TEST_URL": url, "PYTHONWARNINGS": "ignore"}
    log = open(workdir / "pytest.log", "wb")
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, report


def _outcomes(report: Path) -> dict[str, str]:
    """test name -> passed, failed, error or skipped, from a JUnit XML report."""
    return {case.get("name", "?"): outcome for case, outcome in junit.outcomes(report)}


@pytest.mark.timeout(900)
def test_lockd_passes_every_tooz_driver_test_that_stock_etcd3gw_passes(etcd: EtcdMember, tmp_path: Path) -> None:
    runs = {
        "lockd": _start_suite(f"lockd+etcd3+http://{etcd.endpoint}", tmp_path / "lockd"),
        "stock": _start_suite(f"etcd3+http://{etcd.endpoint}?membership_timeout=5", tmp_path / "stock"),
    }
    for proc, _ in runs.values():
        proc.wait(840)
    lockd, stock = (_outcomes(report) for _, report in runs.values())
    stock_passed = sorted(name for name, outcome in stock.items() if outcome == "passed")
    assert len(stock_passed) >= MIN_STOCK_PASSED, (tmp_path / "stock" / "pytest.log").read_text()[-3000:]
    missing = {name: lockd.get(name, "not run") for name in stock_passed if lockd.get(name) != "passed"}
    assert not missing, f"{missing}\n" + (tmp_path / "lockd" / "pytest.log").read_text()[-3000:]
    lockd_passed = sum(outcome == "passed" for outcome in lockd.values())
    print(f"\ntooz TestAPI: lockd {lockd_passed} passed, stock etcd3+http {len(stock_passed)} passed")
