"""Database: migrations create exactly the ORM schema, on SQLite and on a real PostgreSQL server;
the ingest index is idempotent and safe with concurrent writers."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
import time

from sqlalchemy import func, select, text, update

from dicom_node.db import Database, current_revision, head_revision, open_database, upgrade
from dicom_node.ingest import Indexer, check_instance
from dicom_node.completion import sweep
from dicom_node.config import load_config
from dicom_node.models import Base, Instance, Patient, Series, Study, utcnow
from tests.node_support import PYTHON, ct_datasets, node_config


def _info(ds):
    return check_instance(ds, str(ds.SOPClassUID), str(ds.SOPInstanceUID), "1.2.840.10008.1.2.1")


def test_upgrade_matches_models_and_is_idempotent(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    upgrade(db_url)  # second run is a no-op
    assert current_revision(db_url) == head_revision()
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"migrations and models differ: {diff}"
        if db.is_sqlite:
            with db.engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        db.dispose()


def test_open_database_requires_migrations(db_url: str) -> None:
    try:
        open_database(db_url)
    except RuntimeError as exc:
        assert "noduletrack db upgrade" in str(exc)
    else:
        raise AssertionError("an unmigrated database was accepted")


def test_cli_db_upgrade_from_any_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'n.db'}"
    env = {"NODULETRACK_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([PYTHON, "-m", "dicom_node.cli", "db", "upgrade"], cwd="/", env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "revision" in proc.stdout
    assert current_revision(url) == head_revision()


def test_index_is_idempotent_and_concurrent(db_url: str) -> None:
    upgrade(db_url)
    db = Database(db_url)
    try:
        series = ct_datasets(40, rows=8, patient_id="P1", issuer="ISS")
        infos = [_info(ds) for ds in series]
        # Four "receivers" (separate caches, as separate processes have) index the same series at
        # once, each instance twice: exactly one row per instance, one patient/study/series.
        results: list[bool] = []
        lock = threading.Lock()

        def run(part: list) -> None:
            indexer = Indexer(db)
            for info in part:
                new = indexer.index(info, f"x/{info.sop_instance_uid}", 10, "1.2.840.10008.1.2.1", "SCU")
                with lock:
                    results.append(new)

        threads = [threading.Thread(target=run, args=(infos[i::2] + infos[::-1],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(results) == 40, "each instance must be new exactly once"
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(Instance)) == 40
            assert s.scalar(select(func.count()).select_from(Series)) == 1
            assert s.scalar(select(func.count()).select_from(Patient)) == 1
            study = s.execute(select(Study)).scalar_one()
            assert study.state == "receiving" and study.patient.patient_id == "P1" and study.patient.issuer == "ISS"
            assert study.study_date is not None and study.patient_sex == "F"
    finally:
        db.dispose()


def test_new_instance_for_analysed_study_requests_reanalysis(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)
    db = Database(db_url)
    config = load_config(node_config(tmp_path, 11112, db_url))
    try:
        first, late = ct_datasets(2, rows=8)
        indexer = Indexer(db)
        indexer.index(_info(first), "a", 1, "1.2.840.10008.1.2.1", "")
        time.sleep(1.1)  # past the margin for rows committed around a completion (quiet/2 = 1 s)
        with db.write() as s:
            s.execute(update(Study).values(state="analysed", completed_at=utcnow()))
        # A duplicate of a known instance changes nothing...
        assert not indexer.index(_info(first), "a", 1, "1.2.840.10008.1.2.1", "")
        sweep(db, config)
        with db.session() as s:
            assert s.execute(select(Study.state, Study.reanalyse)).one() == ("analysed", False)
        # ...a new one reopens the study (at the next sweep) and marks it for re-analysis.
        assert indexer.index(_info(late), "b", 1, "1.2.840.10008.1.2.1", "")
        sweep(db, config)
        with db.session() as s:
            state, reanalyse, reason = s.execute(select(Study.state, Study.reanalyse, Study.reason)).one()
        assert (state, reanalyse) == ("receiving", True) and "analysed" in reason
    finally:
        db.dispose()
