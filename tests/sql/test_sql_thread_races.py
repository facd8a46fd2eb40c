"""4 processes x 8 threads race to move Cinder-shaped volume rows available -> deleting, 10 rounds (20 with
``LOCKD_LONG_TESTS=1``), on SQLite, MariaDB and PostgreSQL: one winner per round, every loser sees "deleting"
(tests/race.py, tests/racer.py).

10 rounds: with the store's compare-and-set made a plain read then an unconditional update, PostgreSQL's run
showed two winners in round 0 or 1 (three runs of three rounds each).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from lockd.status import open_store
from tests.etcd_process import EtcdMember
from tests.integration.test_thread_races import assert_one_cas_winner_per_round
from tests.long_runs import LONG
from tests.race import ROUNDS, run_race
from tests.sql.tables import add_volume

pytestmark = pytest.mark.sql

SQL_ROUNDS = ROUNDS if LONG else 10


def test_cas_threads_of_four_processes_one_winner_per_round(
    volumes: tuple[str, sa.Table, sa.Engine], etcd: EtcdMember
) -> None:
    url, table, engine = volumes
    ids = [add_volume(engine, table, "available") for _ in range(SQL_ROUNDS)]
    open_store(url).close()  # lockd's side tables exist before the racers start
    rounds = run_race("cas", ids, f"lockd+etcd3+http://{etcd.endpoint}", status_url=url, threads=8, processes=4)
    assert_one_cas_winner_per_round(rounds, 32, SQL_ROUNDS)
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(table.c.status).where(table.c.id.in_(ids))).scalars().all()
    assert statuses == ["deleting"] * SQL_ROUNDS
