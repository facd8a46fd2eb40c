"""``/readyz`` follows etcd: 503 with a reason while it is stopped, 200 again once it is back; reads follow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tooz.coordination

from lockd.config import Settings
from tests.etcd_process import EtcdMember
from tests.integration.api_server import ApiServer, metric
from tests.procs import wait_for


@pytest.fixture
def own_etcd(tmp_path) -> Iterator[EtcdMember]:
    member = EtcdMember("ready", tmp_path / "data")
    member.start()
    yield member
    member.stop()


def test_readyz_is_503_while_etcd_is_stopped_and_200_when_it_returns(own_etcd: EtcdMember, lock_name: str) -> None:
    url = f"lockd+etcd3+http://{own_etcd.endpoint}?lease_ttl=2&timeout=1"
    with ApiServer(Settings(backend_url=url)) as server, server.client() as http:
        assert http.get("/readyz").status_code == 200
        errors_before = metric(http, "lockd_etcd_errors_total")

        own_etcd.stop()
        down = wait_for(lambda: (a := http.get("/readyz")).status_code == 503 and a, what="readyz 503")
        assert "etcd" in down.json()["detail"]
        assert http.get("/healthz").status_code == 200  # the process itself is fine
        wait_for(lambda: http.get("/v1/locks").status_code == 503, what="reads to refuse a stale copy")
        assert metric(http, "lockd_etcd_errors_total") > errors_before

        own_etcd.start()
        wait_for(lambda: http.get("/readyz").status_code == 200, timeout=30, what="readyz 200 again")

        # The view re-read etcd: a lock taken after the outage is seen.
        coord = tooz.coordination.get_coordinator(url, b"after-outage")
        coord.start()
        try:
            assert coord.get_lock(lock_name).acquire()
            wait_for(lambda: http.get(f"/v1/locks/{lock_name}").status_code == 200, what="the new lock")
        finally:
            coord.stop()
