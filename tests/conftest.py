"""Fixtures that start real peers (loopback only) and always clean up."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests import peers

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[peers.Postgres]:
    """One throwaway PostgreSQL cluster for the whole run (own socket dir and loopback port)."""
    # Not under pytest's tmp_path: that is mode 0700 for root and the server runs as 'postgres'.
    workdir = Path(tempfile.mkdtemp(prefix="nt-pg-"))
    workdir.chmod(0o755)
    pg = peers.start_postgres(workdir)
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: peers.Postgres) -> str:
    """SQLAlchemy URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres.create_database(f"nt_test_{next(_db_counter)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run a database test against both back ends: SQLite (WAL) in a temp dir and real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'noduletrack.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., peers.Orthanc]]:
    """Start Orthanc instances (``factory(aet=..., modalities=..., lua=...)``); all stopped at teardown."""
    started: list[peers.Orthanc] = []

    def factory(**kwargs) -> peers.Orthanc:
        orthanc = peers.start_orthanc(tmp_path / f"orthanc{len(started)}", **kwargs)
        started.append(orthanc)
        return orthanc

    yield factory
    for orthanc in started:
        orthanc.stop()


@pytest.fixture
def orthanc(orthanc_factory: Callable[..., peers.Orthanc]) -> peers.Orthanc:
    return orthanc_factory()


@pytest.fixture
def dciodvfy() -> Callable[[str | Path], peers.Validation]:
    """``dciodvfy(path)`` → Validation; assert ``.ok`` (no ``Error`` line)."""
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy not installed (dicom3tools); `make test` installs it")
    return peers.dciodvfy
