"""Job queue, study completion and workers on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

import dicom_node
from dicom_node import queue
from dicom_node.completion import force_complete, sweep
from dicom_node.config import load_config
from dicom_node.db import Database, upgrade
from dicom_node.ingest import Indexer, check_instance
from dicom_node.models import Job, Study, utcnow
from dicom_node.worker import HANDLERS, Worker
from tests.node_support import PYTHON, ct_datasets, node_config


@pytest.fixture
def db(db_url: str):
    upgrade(db_url)
    database = Database(db_url)
    yield database
    database.dispose()


def _config(tmp_path: Path, db_url: str, **workers):
    return load_config(node_config(tmp_path, 11112, db_url, workers={"lease_seconds": 30, **workers}))


def _study(db: Database, n: int = 3, **kw) -> str:
    datasets = ct_datasets(n, rows=8, **kw)
    indexer = Indexer(db)
    for ds in datasets:
        info = check_instance(ds, str(ds.SOPClassUID), str(ds.SOPInstanceUID), "1.2.840.10008.1.2.1")
        indexer.index(info, "p/" + str(ds.SOPInstanceUID), 1, "1.2.840.10008.1.2.1", "")
    return str(datasets[0].StudyInstanceUID)


def test_concurrent_claims_take_each_job_once(db: Database) -> None:
    with db.write() as s:
        for i in range(30):
            queue.enqueue(s, "unit", payload={"i": i}, dedupe=False)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        own = Database(db.url)  # own engine, like a separate process
        try:
            while (job := queue.claim(own, name, 60, kinds=["unit"])) is not None:
                with lock:
                    claimed.append(job.id)
                queue.complete(own, job.id, name)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 30
    with db.session() as s:
        assert queue.counts(s)["done"] == 30


def test_lease_expiry_retries_a_dead_workers_job(db: Database) -> None:
    with db.write() as s:
        job_id = queue.enqueue(s, "unit", max_attempts=2).id
    first = queue.claim(db, "dead-worker", 0.3, kinds=["unit"])
    assert first is not None and first.attempts == 1
    assert queue.claim(db, "other", 0.3, kinds=["unit"]) is None  # leased
    time.sleep(0.5)
    second = queue.claim(db, "rescuer", 30, kinds=["unit"])
    assert second is not None and second.id == job_id and second.attempts == 2
    queue.complete(db, job_id, "dead-worker")  # the late original is ignored
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job.state == "running" and job.worker == "rescuer" and "lease expired" in job.last_error
    # A lease that expires on the last attempt fails the job for good.
    time.sleep(0.1)
    with db.write() as s:
        s.get(Job, job_id).lease_until = utcnow() - dt.timedelta(seconds=1)
    assert queue.claim(db, "third", 30, kinds=["unit"]) is None
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job.state == "failed" and "after 2 attempt(s)" in job.last_error


def test_completion_sweep_and_reanalysis(db: Database, tmp_path: Path) -> None:
    config = _config(tmp_path, db.url)
    uid = _study(db)
    assert sweep(db, config) == []  # not quiet yet (quiet_seconds = 2)
    later = utcnow() + dt.timedelta(seconds=3)
    assert sweep(db, config, now=later) == [uid]
    assert sweep(db, config, now=later) == []
    with db.session() as s:
        assert s.execute(select(Study.state)).scalar_one() == "queued"
        jobs = s.execute(select(Job)).scalars().all()
        assert [(j.kind, j.state) for j in jobs] == [("analyze_study", "queued")]
    # Forcing again while the job still waits does not add a second job.
    assert force_complete(db, config, uid)
    with db.session() as s:
        assert len(s.execute(select(Job)).scalars().all()) == 1


def test_analysis_without_pipeline_fails_clearly(db: Database, tmp_path: Path, monkeypatch) -> None:
    config = _config(tmp_path, db.url)
    uid = _study(db)
    force_complete(db, config, uid)
    monkeypatch.setitem(sys.modules, "dicom_node.pipeline", None)  # "not installed"
    # ...and not reachable as the package attribute an earlier in-process import would leave behind
    monkeypatch.delattr(dicom_node, "pipeline", raising=False)
    worker = Worker(config, db=db, name="t")
    assert worker.run_one()
    with db.session() as s:
        job = s.execute(select(Job)).scalar_one()
        study = s.execute(select(Study)).scalar_one()
    assert job.state == "failed" and job.attempts == 1 and "analysis pipeline not installed" in job.last_error
    assert study.state == "failed" and "analysis pipeline not installed" in study.reason


def test_failing_handler_is_retried_then_failed(db: Database, tmp_path: Path, monkeypatch) -> None:
    config = _config(tmp_path, db.url)
    calls: list[int] = []

    def flaky(ctx):
        calls.append(ctx.job.attempts)
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(HANDLERS, "unit", flaky)
    with db.write() as s:
        job_id = queue.enqueue(s, "unit", max_attempts=2).id
    worker = Worker(config, db=db, name="t")
    assert worker.run_one()
    with db.write() as s:  # skip the backoff wait
        s.get(Job, job_id).not_before = utcnow()
    assert worker.run_one()
    assert not worker.run_one()
    with db.session() as s:
        job = s.get(Job, job_id)
    assert calls == [1, 2] and job.state == "failed" and "disk on fire" in job.last_error


def test_stop_drains_the_running_job(db: Database, tmp_path: Path, monkeypatch) -> None:
    config = _config(tmp_path, db.url, poll_seconds=0.05)
    started, finished = threading.Event(), threading.Event()

    def slow(ctx):
        started.set()
        time.sleep(1.0)
        finished.set()
        return {"ok": True}

    monkeypatch.setitem(HANDLERS, "unit", slow)
    with db.write() as s:
        job_id = queue.enqueue(s, "unit").id
        queue.enqueue(s, "unit", payload={"second": True})
    worker = Worker(config, db=db, name="t")
    loop = threading.Thread(target=worker.run)
    loop.start()
    assert started.wait(10)
    worker.stop.set()  # what SIGTERM does
    loop.join(10)
    assert finished.is_set() and not loop.is_alive()
    with db.session() as s:
        assert s.get(Job, job_id).state == "done"
        assert queue.counts(s) == {"queued": 1, "running": 0, "done": 1, "failed": 0}


def test_worker_command_exits_on_sigterm(tmp_path: Path) -> None:
    config = node_config(tmp_path, 11112)
    subprocess.run([PYTHON, "-m", "dicom_node.cli", "db", "upgrade", "--config", str(config)], check=True, capture_output=True)
    proc = subprocess.Popen([PYTHON, "-m", "dicom_node.cli", "worker", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    for line in proc.stdout:
        if "worker started" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "worker stopped" in proc.stdout.read()
