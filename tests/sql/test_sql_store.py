"""The SQL status store on SQLite, MariaDB and PostgreSQL, mapped onto a Cinder-shaped ``volumes`` table.

Servers: ``$LOCKD_TEST_MYSQL_URL`` (default ``mysql+pymysql://root@127.0.0.1:3306/test``) and
``$LOCKD_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``). A server that does not
answer skips its tests with the reason, except under ``CI=true``, where it fails them: CI must not go green
without having run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lockd.errors import UsageError
from lockd.status import CONFLICT, FENCED, open_store
from tests.integration.test_status_race import assert_exactly_one_winner, race

pytestmark = pytest.mark.sql

SERVERS = {
    "mariadb": os.environ.get("LOCKD_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "postgresql": os.environ.get("LOCKD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
}


def _cinder_volumes(metadata: sa.MetaData, name: str, id_column: str = "id", status_column: str = "status") -> sa.Table:
    """The columns of Cinder's ``volumes`` that matter here, plus a few it has that lockd must leave alone."""
    return sa.Table(
        name,
        metadata,
        sa.Column(id_column, sa.String(36), primary_key=True),
        sa.Column(status_column, sa.String(255)),
        sa.Column("host", sa.String(255)),
        sa.Column("size", sa.Integer),
        sa.Column("display_name", sa.String(255)),
        sa.Column("deleted", sa.Boolean, default=False),
        sa.Column("attach_status", sa.String(255)),
    )


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL that answers; the table ``volumes_<random>`` in it is this test's to use."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/cinder.db"
        return
    url = SERVERS[request.param]
    store_url_engine = sa.create_engine(_driver_url(url))
    try:
        with store_url_engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # any failure to connect is "the server does not answer"
        why = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = f"{request.param} at {sa.make_url(url).render_as_string(hide_password=True)} does not answer: {why}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    finally:
        store_url_engine.dispose()
    yield url


def _driver_url(url: str) -> sa.URL:
    from lockd.status.sql_store import parse_sql_url

    return parse_sql_url(url).url


@pytest.fixture
def volumes(database: str) -> Iterator[tuple[str, sa.Table, sa.Engine]]:
    """A fresh Cinder-shaped table; yields (status URL mapping kind volume onto it, the table, an engine)."""
    name = f"volumes_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(_driver_url(database))
    table = _cinder_volumes(sa.MetaData(), name)
    table.create(engine)
    separator = "&" if "?" in database else "?"
    yield f"{database}{separator}tables=volume:{name}", table, engine
    table.drop(engine)
    engine.dispose()


def _add_volume(engine: sa.Engine, table: sa.Table, status: str, **columns: Any) -> str:
    vid = str(uuid.uuid4())
    values = {"host": "cinder@lvm#pool", "size": 10, "display_name": "db", "deleted": False, **columns}
    with engine.begin() as conn:
        conn.execute(table.insert().values(id=vid, status=status, **values))
    return vid


def _row(engine: sa.Engine, table: sa.Table, vid: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(table.select().where(table.c.id == vid)).mappings().one())


def test_32_processes_race_on_cinder_volumes_one_winner(volumes: tuple[str, sa.Table, sa.Engine]) -> None:
    url, table, engine = volumes
    vid = _add_volume(engine, table, "available")
    before = _row(engine, table, vid)
    store = open_store(url)  # lockd's side tables exist before the children race
    assert_exactly_one_winner(race(url, "volume", vid))
    after = _row(engine, table, vid)
    assert after == {**before, "status": "deleting"}  # only the status column changed
    assert [(e["from"], e["to"]) for e in store.history("volume", vid)] == [("available", "deleting")]
    store.close()


def test_cinder_row_status_is_read_and_updated_in_place(volumes: tuple[str, sa.Table, sa.Engine]) -> None:
    url, table, engine = volumes
    vid = _add_volume(engine, table, "in-use")
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
    engine = sa.create_engine(_driver_url(database))
    table = _cinder_volumes(sa.MetaData(), name, id_column="uuid", status_column="state")
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
    vid = _add_volume(engine, table, "available")
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
