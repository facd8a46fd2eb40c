"""The SQL status store on SQLite, MariaDB and PostgreSQL, mapped onto a Cinder-shaped ``volumes`` table
(the servers and tables come from tests/sql/conftest.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from lockd.errors import UsageError
from lockd.status import CONFLICT, FENCED, open_store
from tests.integration.test_status_race import assert_exactly_one_winner, race
from tests.sql.tables import add_volume, cinder_volumes, driver_url

pytestmark = pytest.mark.sql


def _row(engine: sa.Engine, table: sa.Table, vid: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(table.select().where(table.c.id == vid)).mappings().one())


def test_32_processes_race_on_cinder_volumes_one_winner(volumes: tuple[str, sa.Table, sa.Engine]) -> None:
    url, table, engine = volumes
    vid = add_volume(engine, table, "available")
    before = _row(engine, table, vid)
    store = open_store(url)  # lockd's side tables exist before the children race
    assert_exactly_one_winner(race(url, "volume", vid))
    after = _row(engine, table, vid)
    assert after == {**before, "status": "deleting"}  # only the status column changed
    assert [(e["from"], e["to"]) for e in store.history("volume", vid)] == [("available", "deleting")]
    store.close()


def test_cinder_row_status_is_read_and_updated_in_place(volumes: tuple[str, sa.Table, sa.Engine]) -> None:
    url, table, engine = volumes
    vid = add_volume(engine, table, "in-use")
    store = open_store(url)
    assert store.get_record("volume", vid) == ("in-use", 0)  # written by Cinder, not by lockd: revision 0
    refused = store.compare_and_set("volume", vid, ["available", "error"], "deleting")
    assert (refused.ok, refused.current, refused.reason) == (False, "in-use", CONFLICT)
    with engine.begin() as conn:  # Cinder detaches the volume
        conn.execute(table.update().where(table.c.id == vid).values(status="available"))
    moved = store.compare_and_set("volume", vid, ["available", "error"], "deleting", fence=40)
    assert moved.ok and moved.revision == 1
    assert _row(engine, table, vid)["status"] == "deleting"
    stale = store.compare_and_set("volume", vid, ["deleting"], "error_deleting", fence=39)
    assert (stale.ok, stale.reason) == (False, FENCED) and _row(engine, table, vid)["status"] == "deleting"
    # Unmapped kinds still go to lockd's own table in the same database.
    assert store.compare_and_set("snapshot", vid, [None], "creating").ok
    assert store.get_record("snapshot", vid) == ("creating", 1)
    store.close()


def test_renamed_columns(database: str) -> None:
    name = f"vols_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(driver_url(database))
    table = cinder_volumes(sa.MetaData(), name, id_column="uuid", status_column="state")
    table.create(engine)
    try:
        with engine.begin() as conn:
            conn.execute(table.insert().values(uuid="v1", state="available", size=1))
        separator = "&" if "?" in database else "?"
        store = open_store(f"{database}{separator}tables=volume:{name}&id_column=uuid&status_column=state")
        assert store.compare_and_set("volume", "v1", ["available"], "deleting").ok
        with engine.connect() as conn:
            assert conn.execute(sa.select(table.c.state)).scalar_one() == "deleting"
        store.close()
    finally:
        table.drop(engine)
        engine.dispose()


def test_bad_input_writes_nothing(volumes: tuple[str, sa.Table, sa.Engine]) -> None:
    url, table, engine = volumes
    vid = add_volume(engine, table, "available")
    store = open_store(url)
    for bad in ({"new": "x" * 1000}, {"expected": "available"}, {"id": ""}, {"fence": 0}):
        call: dict[str, Any] = {"kind": "volume", "id": vid, "expected": ["available"], "new": "deleting", **bad}
        with pytest.raises(UsageError):
            store.compare_and_set(**call)
    assert _row(engine, table, vid)["status"] == "available" and store.history("volume", vid) == []
    store.close()


@pytest.mark.parametrize(
    "query", ["tables=volume", "tables=volume:vol umes", "id_column=id;drop", "tables=:volumes"], ids=str
)
def test_bad_url_options_are_usage_errors(query: str) -> None:
    with pytest.raises(UsageError):
        open_store(f"sqlite:///unused.db?{query}")
