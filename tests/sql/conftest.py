"""SQL servers for the status store tests, and a Cinder-shaped ``volumes`` table in each.

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

import pytest
import sqlalchemy as sa

from tests.sql.tables import cinder_volumes, driver_url

SERVERS = {
    "mariadb": os.environ.get("LOCKD_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "postgresql": os.environ.get("LOCKD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
}


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL that answers; the table ``volumes_<random>`` in it is this test's to use."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/cinder.db"
        return
    url = SERVERS[request.param]
    store_url_engine = sa.create_engine(driver_url(url))
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


@pytest.fixture
def volumes(database: str) -> Iterator[tuple[str, sa.Table, sa.Engine]]:
    """A fresh Cinder-shaped table; yields (status URL mapping kind volume onto it, the table, an engine)."""
    name = f"volumes_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(driver_url(database))
    table = cinder_volumes(sa.MetaData(), name)
    table.create(engine)
    separator = "&" if "?" in database else "?"
    yield f"{database}{separator}tables=volume:{name}", table, engine
    table.drop(engine)
    engine.dispose()
