"""Statuses in a SQL database (SQLite, MySQL/MariaDB, PostgreSQL) through SQLAlchemy Core.

Theory of operation
-------------------
Tables:
  ``lockd_status``          (kind, id, status): statuses of kinds not mapped elsewhere.
  a mapped table            e.g. Cinder's ``volumes`` via ``?tables=volume:volumes``: its ``id`` and ``status``
                            columns (``id_column=``, ``status_column=`` to rename) are read and updated in place,
                            so the deployment keeps one source of truth. Rows are never deleted.
  ``lockd_status_meta``     (kind, id, revision, fence, epoch): lockd's revision counter, the highest fencing
                            token written and the etcd epoch it came from (lockd.epoch), for every kind; a
                            side table so a foreign table needs no new column.
  ``lockd_epoch_adoptions`` (at, who, kind, id, old_epoch, old_fence, new_epoch): every ``adopt_epoch``.
  ``lockd_status_history``  (kind, id, revision, who, at, from, to, token): the last HISTORY_KEEP transitions.

compare_and_set, in one transaction:
  1. ``SELECT status ... FOR UPDATE`` (row lock; SQLite: ``BEGIN IMMEDIATE`` takes the database write lock);
     a status outside ``expected`` answers CONFLICT.
  2. ``SELECT revision, fence, epoch FROM lockd_status_meta ... FOR UPDATE``; a token from another epoch than
     the recorded one answers EPOCH (tokens of two cluster lifetimes are not comparable: see lockd.epoch;
     ``adopt_epoch`` is the way through), a token below ``fence`` FENCED. A bare integer token has no epoch
     and is compared as it is.
  3. ``UPDATE <table> SET status = :new WHERE id = :id AND status IN (:expected)``, success when rowcount is 1
     (Cinder's conditional_update), or an INSERT when the resource was absent and None was expected.
  4. Bump the meta row (revision + 1, fence = max), append history, trim it; commit.
  Refusals roll back, so nothing is written. A lost creation race (unique violation) or a deadlock victim
  is retried only while the status is still in ``expected``. Given a lock object, ``lock.is_still_owner()``
  is asked (one etcd read) before the transaction; the token check in step 2 is what stops a holder that was
  paused after that question.

Statuses written by others (Cinder itself) are seen as they are, but do not bump lockd's revision.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import time
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, make_url

from lockd.errors import BackendError, UsageError
from lockd.status.model import (
    CONFLICT,
    HISTORY_KEEP,
    MAX_FIELD_LENGTH,
    NOT_OWNER,
    Fence,
    Result,
    check_expected,
    check_fence,
    check_limit,
    check_resource,
    check_status,
    check_who,
    fence_refusal,
    still_owner,
)

SQL_SCHEMES = ("sqlite", "mysql", "mariadb", "postgresql")
#: Query options lockd reads and strips before the URL reaches SQLAlchemy.
URL_OPTIONS = ("tables", "id_column", "status_column")
MAX_ATTEMPTS = 16
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63})?$")

_metadata = sa.MetaData()
_text = sa.String(MAX_FIELD_LENGTH)
OWN_TABLE = sa.Table(
    "lockd_status",
    _metadata,
    sa.Column("kind", _text, primary_key=True),
    sa.Column("id", _text, primary_key=True),
    sa.Column("status", _text, nullable=False),
)
META_TABLE = sa.Table(
    "lockd_status_meta",
    _metadata,
    sa.Column("kind", _text, primary_key=True),
    sa.Column("id", _text, primary_key=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("fence", sa.BigInteger, nullable=True),
    sa.Column("epoch", sa.String(64), nullable=True),
)
ADOPTIONS_TABLE = sa.Table(
    "lockd_epoch_adoptions",
    _metadata,
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("who", _text, nullable=False),
    sa.Column("kind", _text, nullable=False),
    sa.Column("id", _text, nullable=False),
    sa.Column("old_epoch", sa.String(64), nullable=True),
    sa.Column("old_fence", sa.BigInteger, nullable=True),
    sa.Column("new_epoch", sa.String(64), nullable=False),
)
HISTORY_TABLE = sa.Table(
    "lockd_status_history",
    _metadata,
    sa.Column("kind", _text, primary_key=True),
    sa.Column("id", _text, primary_key=True),
    sa.Column("revision", sa.BigInteger, primary_key=True),
    sa.Column("who", _text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("from_status", _text, nullable=True),
    sa.Column("to_status", _text, nullable=False),
    sa.Column("token", sa.BigInteger, nullable=True),
)


@dataclasses.dataclass(frozen=True)
class SqlOptions:
    """A status URL split into what SQLAlchemy gets and what lockd reads."""

    url: URL
    tables: dict[str, str]
    id_column: str = "id"
    status_column: str = "status"


# A URL without a driver gets SQLAlchemy's default DBAPI (psycopg 3 for postgresql since SQLAlchemy 2.1,
# mysqlclient for mysql); lockd[sql] installs psycopg2 and PyMySQL, so fall back to those when needed.
_FALLBACK_DRIVERS = {
    "postgresql": ("psycopg", "psycopg2"),
    "mysql": ("MySQLdb", "pymysql"),
    "mariadb": ("MySQLdb", "pymysql"),
}


def _with_installed_driver(url: URL) -> URL:
    fallback = _FALLBACK_DRIVERS.get(url.drivername)
    if fallback is None or importlib.util.find_spec(fallback[0]) is not None:
        return url
    return url.set(drivername=f"{url.drivername}+{fallback[1]}")


def _identifier(what: str, value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise UsageError(f"{what} {value!r} is not a plain SQL identifier")
    return value


def parse_sql_url(url: str) -> SqlOptions:
    """Parse ``sqlite:///f.db`` or ``mysql+pymysql://..?tables=volume:volumes&id_column=id&status_column=status``.

    Raises:
        UsageError: not a SQL URL, or a malformed lockd option.
    """
    try:
        parsed = make_url(url)
    except exc.ArgumentError as error:
        raise UsageError(f"status URL is not a SQLAlchemy URL: {error}") from None
    if parsed.get_backend_name() not in SQL_SCHEMES:
        raise UsageError(f"status URL scheme {parsed.drivername!r} is not one of {', '.join(SQL_SCHEMES)}")

    def option(name: str) -> str | None:
        value = parsed.query.get(name)
        return value[-1] if isinstance(value, tuple) else value

    tables: dict[str, str] = {}
    for item in (option("tables") or "").split(","):
        if not item.strip():
            continue
        kind, sep, table = item.strip().partition(":")
        if not sep or not kind:
            raise UsageError(f"tables entry {item!r} is not KIND:TABLE")
        tables[kind] = _identifier("table", table)
    return SqlOptions(
        url=_with_installed_driver(parsed.difference_update_query(URL_OPTIONS)),
        tables=tables,
        id_column=_identifier("id_column", option("id_column") or "id"),
        status_column=_identifier("status_column", option("status_column") or "status"),
    )


@dataclasses.dataclass(frozen=True)
class _Target:
    """Where one kind's status lives: lockd's own table, or a mapped one (no kind column)."""

    table: sa.TableClause
    id: sa.ColumnClause[Any]
    status: sa.ColumnClause[Any]
    kind: sa.ColumnClause[Any] | None

    def where(self, kind: str, id: str) -> sa.ColumnElement[bool]:
        match = self.id == id
        return match if self.kind is None else sa.and_(self.kind == kind, match)

    def row(self, kind: str, id: str, status: str) -> dict[str, str]:
        values = {self.id.name: id, self.status.name: status}
        if self.kind is not None:
            values[self.kind.name] = kind
        return values


def _is_lost_race(error: exc.DBAPIError) -> bool:
    """A unique violation (two creators) or a deadlock/serialization victim: worth re-reading and retrying."""
    if isinstance(error, exc.IntegrityError):
        return True
    text = str(error.orig).lower()
    return "deadlock" in text or "could not serialize" in text or "(1213" in text


class SqlStatusStore:
    """Statuses in SQL; see the module docstring. One engine (connection pool) per store."""

    def __init__(self, url: str) -> None:
        self.options = parse_sql_url(url)
        self.backend = self.options.url.get_backend_name()
        self.engine = self._engine()
        self._own = _Target(OWN_TABLE, OWN_TABLE.c.id, OWN_TABLE.c.status, OWN_TABLE.c.kind)
        self._mapped = {kind: self._mapped_target(table) for kind, table in self.options.tables.items()}
        self._create_tables()

    def _mapped_target(self, table: str) -> _Target:
        schema, _, name = table.rpartition(".")
        id_name, status_name = self.options.id_column, self.options.status_column
        clause = sa.table(name, sa.column(id_name), sa.column(status_name), schema=schema or None)
        return _Target(clause, clause.c[id_name], clause.c[status_name], None)

    def _engine(self) -> sa.Engine:
        url = self.options.url
        try:
            if self.backend != "sqlite":
                return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
            engine = sa.create_engine(url, connect_args={"timeout": 30})
        except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
            raise UsageError(f"cannot use status URL {url.render_as_string(hide_password=True)}: {error}") from None

        # SQLite: take the write lock at BEGIN (no upgrade deadlocks between readers turning writers), and
        # WAL so readers do not block the writer. The recipe from SQLAlchemy's SQLite dialect docs.
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA busy_timeout = 30000")
            dbapi_connection.execute("PRAGMA journal_mode = WAL")

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _create_tables(self) -> None:
        """Create lockd's tables if missing; a concurrent creator in another process is not an error."""
        for attempt in (0, 1, 2):
            try:
                _metadata.create_all(self.engine, checkfirst=True)
                self._add_epoch_column()
                return
            except (exc.OperationalError, exc.ProgrammingError, exc.IntegrityError) as error:
                if attempt == 2:
                    raise BackendError(f"cannot create lockd's status tables: {error.orig}") from error
                time.sleep(0.1 * (attempt + 1))

    def _add_epoch_column(self) -> None:
        """Tables made before epochs existed lack ``lockd_status_meta.epoch``: add it (NULL = not yet known;
        the next fenced write records its epoch)."""
        columns = {c["name"] for c in sa.inspect(self.engine).get_columns(META_TABLE.name)}
        if "epoch" not in columns:
            with self.engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {META_TABLE.name} ADD COLUMN epoch VARCHAR(64)"))

    def _target(self, kind: str) -> _Target:
        return self._mapped.get(kind, self._own)

    # -- reads ------------------------------------------------------------------------------------------------

    def _read(self, conn: Connection, kind: str, id: str, lock: bool) -> tuple[str | None, int, int, str | None]:
        """(status or None, revision, fence, epoch) of one resource, row-locked when ``lock``."""
        target = self._target(kind)
        query = sa.select(target.status).select_from(target.table).where(target.where(kind, id))
        m = META_TABLE.c
        meta = sa.select(m.revision, m.fence, m.epoch).where(m.kind == kind, m.id == id)
        if lock:
            query, meta = query.with_for_update(), meta.with_for_update()
        status = conn.execute(query).scalar_one_or_none()
        row = conn.execute(meta).first()
        if row is None:
            return status, 0, 0, None
        return status, row.revision, row.fence or 0, row.epoch

    def get_record(self, kind: str, id: str) -> tuple[str, int] | None:
        """(status, lockd revision) of the resource, None if it has no row. The revision is 0 for a row
        whose status only others have written."""
        kind, id = check_resource(kind, id)
        with self._connect() as conn:
            status, revision, _, _ = self._read(conn, kind, id, lock=False)
        return None if status is None else (status, revision)

    def history(self, kind: str, id: str, limit: int = HISTORY_KEEP) -> list[dict[str, Any]]:
        """The last ``limit`` transitions lockd wrote (at most HISTORY_KEEP), newest first."""
        kind, id = check_resource(kind, id)
        limit = check_limit(limit)
        h = HISTORY_TABLE.c
        query = (
            sa.select(h.who, h.at, h.from_status, h.to_status, h.token)
            .where(h.kind == kind, h.id == id)
            .order_by(h.revision.desc())
            .limit(limit)
        )
        with self._connect() as conn:
            rows = conn.execute(query).all()
        return [{"who": r.who, "at": r.at, "from": r.from_status, "to": r.to_status, "token": r.token} for r in rows]

    # -- compare and set -------------------------------------------------------------------------------------

    def compare_and_set(
        self,
        kind: str,
        id: str,
        expected: Collection[str | None],
        new: str,
        fence: Any = None,
        who: str | None = None,
    ) -> Result:
        """Set ``new`` if the status is in ``expected`` (and the fence holds), in one transaction.

        Raises:
            UsageError: bad input; nothing was written.
            BackendError: the database failed; the transaction was rolled back.
        """
        kind, id = check_resource(kind, id)
        wanted = check_expected(expected)
        new = check_status(new, "new status")
        fenced = check_fence(fence)
        who = check_who(who)
        if fenced is not None and fenced.lock is not None and (fenced.token == 0 or not still_owner(fenced)):
            record = self.get_record(kind, id)
            return Result(False, record[0] if record else None, record[1] if record else 0, NOT_OWNER)
        with self._connect() as conn:
            for _ in range(MAX_ATTEMPTS):
                transaction = conn.begin()
                try:
                    result = self._attempt(conn, kind, id, wanted, new, fenced, who)
                except exc.DBAPIError as error:
                    transaction.rollback()
                    if _is_lost_race(error):
                        continue
                    raise BackendError(f"status store failed: {error.orig}") from error
                except BaseException:
                    transaction.rollback()
                    raise
                if result is None:
                    transaction.rollback()
                    continue
                if result.ok:
                    transaction.commit()
                else:
                    transaction.rollback()
                return result
        raise BackendError(f"status of {kind}/{id} kept changing within {sorted(map(str, wanted))}; gave up")

    def _attempt(
        self,
        conn: Connection,
        kind: str,
        id: str,
        wanted: frozenset[str | None],
        new: str,
        fence: Fence | None,
        who: str,
    ) -> Result | None:
        """Steps 1-4 of the module doc inside the caller's transaction; None = lost a race, roll back and retry."""
        current, revision, highest, epoch = self._read(conn, kind, id, lock=True)
        if current not in wanted:
            return Result(False, current, revision, CONFLICT)
        refusal = fence_refusal(fence, epoch, highest) if fence is not None else None
        if refusal:
            return Result(False, current, revision, refusal)
        target = self._target(kind)
        if current is None:
            conn.execute(sa.insert(target.table).values(target.row(kind, id, new)))
        else:
            statuses = sorted(s for s in wanted if s is not None)
            update = (
                sa.update(target.table)
                .where(target.where(kind, id), target.status.in_(statuses))
                .values({target.status.name: new})
            )
            if conn.execute(update).rowcount != 1:
                return None
        token = fence.token if fence is not None else None
        revision += 1
        meta = {
            "revision": revision,
            "fence": max(highest, token or 0) or None,
            "epoch": (fence.epoch if fence is not None and fence.epoch else None) or epoch,
        }
        m = META_TABLE.c
        if revision == 1:
            conn.execute(sa.insert(META_TABLE).values(kind=kind, id=id, **meta))
        else:
            conn.execute(sa.update(META_TABLE).where(m.kind == kind, m.id == id).values(**meta))
        h = HISTORY_TABLE.c
        entry = {"who": who, "at": round(time.time(), 3), "from_status": current, "to_status": new, "token": token}
        conn.execute(sa.insert(HISTORY_TABLE).values(kind=kind, id=id, revision=revision, **entry))
        conn.execute(sa.delete(HISTORY_TABLE).where(h.kind == kind, h.id == id, h.revision <= revision - HISTORY_KEEP))
        return Result(True, new, revision)

    # -- epochs ------------------------------------------------------------------------------------------------

    def adopt_epoch(self, epoch: str, kind: str | None = None, id: str | None = None, who: str | None = None) -> int:
        """Accept tokens of ``epoch`` from now on for every resource (or one kind, or one resource) whose fence
        came from another epoch: its recorded token is dropped, so the new cluster's tokens start afresh.
        Each change is kept in ``lockd_epoch_adoptions``. Returns how many resources changed.

        Run it only when the old cluster is gone for good (lockd.epoch says why this is not automatic).
        """
        epoch = check_status(epoch, "epoch")
        who = check_who(who)
        m = META_TABLE.c
        where = [m.epoch.is_not(None), m.epoch != epoch]
        if kind is not None:
            where.append(m.kind == check_resource(kind, id or "-")[0])
        if id is not None:
            where.append(m.id == check_resource(kind or "-", id)[1])
        with self._connect() as conn, conn.begin():
            rows = conn.execute(sa.select(m.kind, m.id, m.epoch, m.fence).where(*where).with_for_update()).all()
            for row in rows:
                conn.execute(
                    sa.update(META_TABLE).where(m.kind == row.kind, m.id == row.id).values(fence=None, epoch=epoch)
                )
                conn.execute(
                    sa.insert(ADOPTIONS_TABLE).values(
                        at=round(time.time(), 3),
                        who=who,
                        kind=row.kind,
                        id=row.id,
                        old_epoch=row.epoch,
                        old_fence=row.fence,
                        new_epoch=epoch,
                    )
                )
        return len(rows)

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except exc.DBAPIError as error:
            raise BackendError(f"status database unreachable: {error.orig}") from error

    def close(self) -> None:
        self.engine.dispose()
