"""Engines, sessions and migrations for SQLite (default) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout so that the SCP's receiver processes, the scheduler
and the workers can share one file. Two kinds of session are offered:

* :meth:`Database.session` — an ordinary (deferred) transaction: reads, and writes that don't
  first read what they are about to change. Holds no lock while idle, so a long analysis that
  keeps one open does not stall ingest.
* :meth:`Database.write` — on SQLite a ``BEGIN IMMEDIATE`` transaction (the write lock is taken
  up front, so read-then-write sequences such as claiming a job cannot fail half-way with
  ``SQLITE_BUSY``); on PostgreSQL an ordinary transaction (claims use ``FOR UPDATE SKIP LOCKED``).

Keep write transactions short: they serialise every writer on SQLite.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Engine, and_, create_engine, event, or_
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from .errors import OperatorError

# Alembic logs plugin set-up and context details at INFO on every command; nothing an operator needs.
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the pragmas/options this service relies on.

    For ``sqlite:///relative/path`` the parent directory is created (the default database lives in
    ``./var`` which does not exist on a fresh checkout).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, **kwargs)
    raise ValueError(f"unsupported database URL {url!r} (use sqlite:/// or postgresql+psycopg://)")


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling is disabled so that we can emit BEGIN / BEGIN IMMEDIATE
    # ourselves (the documented SQLAlchemy recipe).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives any process crash (kill -9); the spool files themselves are
        # fsync'd before acknowledgement and the index can be rebuilt from them (spool.reindex).
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("sqlite_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


class Database:
    """One engine plus its session factories. Safe to share between threads, not processes."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.is_postgresql = self.engine.dialect.name == "postgresql"
        self.factory: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        self.write_engine = self.engine.execution_options(sqlite_immediate=True) if self.is_sqlite else self.engine
        self.write_factory: sessionmaker[Session] = sessionmaker(self.write_engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A deferred transaction, committed on success and rolled back on error."""
        with self.factory() as s, s.begin():
            yield s

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        with self.write_factory() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()

    def for_claim(self, query: Any) -> Any:
        """``query`` locking the rows it returns for a claim: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL
        (concurrent claimers take different rows); SQLite's ``BEGIN IMMEDIATE`` already serialises."""
        return query.with_for_update(skip_locked=True) if self.is_postgresql else query


def claimable(state: Any, waiting: str, due_at: Any, active: str, lease_until: Any, now: Any) -> Any:
    """Rows ready to be claimed: waiting and due, or active with a lease that ran out (its holder died)."""
    return or_(and_(state == waiting, due_at <= now), and_(state == active, lease_until < now))


def alembic_config(url: str) -> Any:
    """Alembic configuration pointing at the shipped ``migrations/`` directory, whatever the cwd."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser interpolation syntax; URLs may contain it (escaped passwords).
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the Alembic migrations up to ``revision`` (idempotent)."""
    from alembic import command

    make_engine(url).dispose()  # creates the SQLite parent directory when needed
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The database's Alembic revision, or None when it has never been migrated."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


class SchemaNotCurrent(OperatorError, RuntimeError):
    """The database exists (or not) but is not at the code's schema revision; the message says what to run."""


def open_database(url: str, *, check_schema: bool = True) -> Database:
    """Open ``url``; with ``check_schema`` raise a clear error if migrations are missing."""
    if check_schema:
        current = current_revision(url)
        head = head_revision()
        if current != head:
            raise SchemaNotCurrent(
                f"database schema is at revision {current or 'none'}, expected {head}: "
                "run `noduletrack db upgrade` (with the same --config)"
            )
    return Database(url)
