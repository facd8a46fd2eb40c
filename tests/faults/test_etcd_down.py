"""etcd completely down: acquire fails with a clear connection error, nothing hangs, and the same coordinator
works again once etcd is back, without a restart.

Two ways down: killed (connections refused at once) and paused with SIGSTOP (connections accepted, nothing
answers, so only the client's own timeout ends the wait). Each acquire runs in a thread the test joins with a
deadline, so a hang fails the test instead of stalling the suite.
Why it would fail without the mechanism: a blocking acquire that retried connection errors internally (tooz's
polling loop) would never return while etcd is down, and a coordinator whose session died with the outage
would refuse every later acquire until restarted; the second half of each test needs a fresh session.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import tooz.coordination

from lockd.errors import BackendError
from tests.etcd_process import EtcdMember

pytestmark = [pytest.mark.faults, pytest.mark.both_etcd]


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdMember]:
    """A private single-member etcd this test may kill and pause without disturbing other tests."""
    member = EtcdMember("down", tmp_path / "data")
    member.start()
    yield member
    member.stop()


def _acquire_in_thread(lock: object, blocking: bool | float, deadline: float = 30.0) -> object:
    """Run ``lock.acquire(blocking)``; return its result or the exception it raised. Fails if it hangs."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(lock.acquire(blocking))  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever came out
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(deadline)
    assert not thread.is_alive(), f"acquire({blocking!r}) still hanging after {deadline}s with etcd down"
    return outcome[0]


@pytest.mark.parametrize("how", ["killed", "paused"])
def test_acquire_fails_cleanly_while_etcd_is_down_and_works_after(
    own_etcd: EtcdMember, lock_name: str, how: str
) -> None:
    url = f"lockd+etcd3+http://{own_etcd.endpoint}?lease_ttl=2&timeout=1"
    coord = tooz.coordination.get_coordinator(url, f"down-{uuid.uuid4().hex[:6]}".encode())
    coord.start(start_heart=True)
    try:
        lock = coord.get_lock(lock_name.encode())
        assert lock.acquire(blocking=False) and lock.release()
        session = coord.session()

        if how == "killed":
            own_etcd.kill()
        else:
            own_etcd.pause()
        for blocking in (True, False, 5):
            outcome = _acquire_in_thread(lock, blocking)
            assert isinstance(outcome, BackendError), f"acquire({blocking!r}) gave {outcome!r}"
            assert isinstance(outcome, tooz.coordination.ToozConnectionError)
            assert own_etcd.endpoint in str(outcome), f"the error should name the endpoint: {outcome}"
            assert not lock.acquired

        # Stay down past the lease TTL, so recovery needs a new session, not just a reconnect.
        assert session.lost.wait(15), "the session never noticed that etcd was gone"
        if how == "killed":
            own_etcd.start()
        else:
            own_etcd.resume()
        outcome = _acquire_in_thread(lock, 10)
        assert outcome is True, f"the same coordinator did not recover: {outcome!r}"
        assert lock.is_still_owner()
        assert lock.release()
        assert coord.session().lease_id != session.lease_id
    finally:
        if own_etcd.paused:
            own_etcd.resume()
        coord.stop()
