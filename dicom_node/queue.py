"""The job queue: rows in ``jobs``, claimed under a lease by worker processes on any host.

Claiming is one short write transaction: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL (many
workers on many hosts never block each other), ``BEGIN IMMEDIATE`` on SQLite (the write lock is
taken before the read, so two workers cannot both see the same job as free). A claimed job has a
lease; a worker that dies (kill -9, host lost) stops renewing it and the job becomes claimable
again. Attempts and the last error are recorded; after ``max_attempts`` the job is failed for good.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .db import Database, claimable
from .errors import PermanentJobError  # noqa: F401  (re-exported: handlers raise queue.PermanentJobError)
from .models import JOB_DONE, JOB_FAILED, JOB_QUEUED, JOB_RUNNING, JOB_STATES, Job, utcnow

ANALYZE_STUDY = "analyze_study"
FETCH_PRIOR = "fetch_prior"
EXPORT = "export"


@dataclass(frozen=True)
class ClaimedJob:
    """A job as a worker sees it (a plain value: no session attached)."""

    id: int
    kind: str
    study_pk: int | None
    payload: dict[str, Any]
    attempts: int
    max_attempts: int


def enqueue(
    session: Session,
    kind: str,
    *,
    study_pk: int | None = None,
    payload: dict[str, Any] | None = None,
    max_attempts: int = 3,
    dedupe: bool = True,
) -> Job:
    """Add a job in ``session``'s transaction. With ``dedupe`` an identical job that is still
    queued (not yet running) is returned instead of adding a second one."""
    payload = payload or {}
    if dedupe:
        existing = session.execute(
            select(Job).where(Job.kind == kind, Job.study_pk == study_pk, Job.state == JOB_QUEUED).order_by(Job.id)
        ).scalars().first()
        if existing is not None and existing.payload == payload:
            return existing
    job = Job(kind=kind, study_pk=study_pk, payload=payload, state=JOB_QUEUED, attempts=0,
              max_attempts=max_attempts, not_before=utcnow(), created_at=utcnow(), worker="", last_error="")
    session.add(job)
    session.flush()
    return job


def claim(db: Database, worker: str, lease_seconds: float, kinds: list[str] | None = None) -> ClaimedJob | None:
    """Claim the oldest runnable job (queued and due, or running with an expired lease).

    A job whose lease expired after its last allowed attempt is failed here ("worker lost").
    """
    now = utcnow()
    while True:
        with db.write() as s:
            query = (
                select(Job)
                .where(claimable(Job.state, JOB_QUEUED, Job.not_before, JOB_RUNNING, Job.lease_until, now))
                .order_by(Job.not_before, Job.id)
                .limit(1)
            )
            if kinds:
                query = query.where(Job.kind.in_(kinds))
            job = s.execute(db.for_claim(query)).scalars().first()
            if job is None:
                return None
            if job.state == JOB_RUNNING and job.attempts >= job.max_attempts:
                job.state = JOB_FAILED
                job.last_error = (job.last_error + "; " if job.last_error else "") + (
                    f"lease expired on worker {job.worker!r} after {job.attempts} attempt(s)"
                )
                job.finished_at = now
                _on_final_failure(s, job)
                continue
            if job.state == JOB_RUNNING:
                job.last_error = (job.last_error + "; " if job.last_error else "") + f"lease expired on worker {job.worker!r}"
            job.state = JOB_RUNNING
            job.attempts += 1
            job.worker = worker[:128]
            job.lease_until = now + dt.timedelta(seconds=lease_seconds)
            job.started_at = now
            _on_start(s, job)
            return ClaimedJob(job.id, job.kind, job.study_pk, dict(job.payload or {}), job.attempts, job.max_attempts)


def renew(db: Database, job_id: int, worker: str, lease_seconds: float) -> bool:
    """Extend the lease of a job we hold; False if we lost it (it was re-claimed elsewhere)."""
    with db.write() as s:
        result = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.worker == worker[:128], Job.state == JOB_RUNNING)
            .values(lease_until=utcnow() + dt.timedelta(seconds=lease_seconds))
        )
        return bool(result.rowcount)


def complete(db: Database, job_id: int, worker: str, result: dict[str, Any] | None = None) -> None:
    with db.write() as s:
        job = s.get(Job, job_id)
        if job is None or job.worker != worker[:128] or job.state != JOB_RUNNING:
            return  # lost the lease meanwhile; the new holder decides
        job.state = JOB_DONE
        job.result = result
        job.lease_until = None
        job.finished_at = utcnow()
        _on_done(s, job)


def fail(db: Database, job_id: int, worker: str, error: str, *, permanent: bool, retry_delay: float) -> bool:
    """Record a failed attempt. Returns True if the job will be retried."""
    with db.write() as s:
        job = s.get(Job, job_id)
        if job is None or job.worker != worker[:128] or job.state != JOB_RUNNING:
            return False
        job.last_error = error[:4000]
        job.lease_until = None
        if permanent or job.attempts >= job.max_attempts:
            job.state = JOB_FAILED
            job.finished_at = utcnow()
            _on_final_failure(s, job)
            return False
        job.state = JOB_QUEUED
        job.not_before = utcnow() + dt.timedelta(seconds=retry_delay)
        _on_retry(s, job)
        return True


def counts(session: Session) -> dict[str, int]:
    """Jobs per state (every state present, zeros included)."""
    out = {state: 0 for state in JOB_STATES}
    for state, n in session.execute(select(Job.state, func.count()).group_by(Job.state)):
        out[state] = int(n)
    return out


# Study state follows its analysis job. Kept here so every path (claim, retry, failure) agrees.
def _study_of(s: Session, job: Job) -> Any:
    from .models import Study

    if job.kind != ANALYZE_STUDY or job.study_pk is None:
        return None
    return s.get(Study, job.study_pk)


def _on_start(s: Session, job: Job) -> None:
    from .models import STUDY_ANALYSING, STUDY_RECEIVING

    study = _study_of(s, job)
    if study is not None and study.state != STUDY_RECEIVING:
        study.state = STUDY_ANALYSING


def _on_done(s: Session, job: Job) -> None:
    from .models import STUDY_ANALYSED, STUDY_ANALYSING

    study = _study_of(s, job)
    if study is not None and study.state == STUDY_ANALYSING:  # not if new instances came meanwhile
        study.state = STUDY_ANALYSED
        study.analysed_at = utcnow()
        study.reason = ""


def _on_retry(s: Session, job: Job) -> None:
    from .models import STUDY_ANALYSING, STUDY_QUEUED

    study = _study_of(s, job)
    if study is not None and study.state == STUDY_ANALYSING:
        study.state = STUDY_QUEUED
        study.reason = f"attempt {job.attempts} failed: {job.last_error}"[:2000]


def _on_final_failure(s: Session, job: Job) -> None:
    from .models import STUDY_ANALYSING, STUDY_FAILED, STUDY_QUEUED

    study = _study_of(s, job)
    if study is not None and study.state in (STUDY_ANALYSING, STUDY_QUEUED):
        study.state = STUDY_FAILED
        study.reason = job.last_error[:2000]
