"""A Cinder-shaped ``volumes`` table and rows in it, for the SQL status store tests."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa


def cinder_volumes(metadata: sa.MetaData, name: str, id_column: str = "id", status_column: str = "status") -> sa.Table:
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


def driver_url(url: str) -> sa.URL:
    """The SQLAlchemy URL lockd's store would use for ``url`` (lockd's query options stripped)."""
    from lockd.status.sql_store import parse_sql_url

    return parse_sql_url(url).url


def add_volume(engine: sa.Engine, table: sa.Table, status: str, **columns: Any) -> str:
    """Insert a volume row as Cinder would; returns its id."""
    vid = str(uuid.uuid4())
    values = {"host": "cinder@lvm#pool", "size": 10, "display_name": "db", "deleted": False, **columns}
    with engine.begin() as conn:
        conn.execute(table.insert().values(id=vid, status=status, **values))
    return vid
