"""Study completion: a study is complete when no instance arrived for ``stability.quiet_seconds``
(DICOM has no "end of study" message; PACS routers use the same rule), or when forced with
``noduletrack complete STUDY_UID``. Completing enqueues its analysis job — once: an identical
job still waiting is reused, so re-sent studies and forced completions never double the work.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from .config import Config
from .db import Database
from .ingest import SUPPORTED_SOP_CLASSES
from .logs import log_event
from .models import (
    STUDY_ANALYSED,
    STUDY_ANALYSING,
    STUDY_FAILED,
    STUDY_COMPLETE,
    STUDY_QUEUED,
    STUDY_RECEIVING,
    AuditEvent,
    Instance,
    Series,
    Study,
    utcnow,
)
from .queue import ANALYZE_STUDY, enqueue

log = logging.getLogger("noduletrack.completion")
# APScheduler logs two INFO lines per sweep (every few seconds); our sweep logs what it completes.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

# What the pipeline analyses: CT images (the other accepted classes come along with priors).
ANALYSABLE_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1")
assert all(c in SUPPORTED_SOP_CLASSES for c in ANALYSABLE_SOP_CLASSES)


class UnknownStudy(LookupError):
    pass


def _has_ct(s: Session, study: Study) -> bool:
    return bool(
        s.scalar(
            select(
                exists().where(
                    Instance.series_pk == Series.id,
                    Series.study_pk == study.id,
                    Instance.sop_class_uid.in_(ANALYSABLE_SOP_CLASSES),
                )
            )
        )
    )


def mark_complete(s: Session, study: Study, config: Config, *, forced: bool = False,
                  now: dt.datetime | None = None) -> bool:
    """Complete ``study`` and enqueue its analysis. Returns True if a job was queued."""
    now = now or utcnow()
    reanalysis = study.reanalyse
    study.completed_at = now
    study.reanalyse = False
    if study.retrieved_as_prior and not forced:
        study.state = STUDY_COMPLETE
        study.reason = "retrieved from the PACS as a prior; not analysed on its own"
        log_event(log, "study complete", study=study.study_instance_uid, queued=False, reason=study.reason)
        return False
    if not _has_ct(s, study):
        study.state = STUDY_COMPLETE
        study.reason = "no CT images in the study: nothing to analyse"
        log_event(log, "study complete", study=study.study_instance_uid, queued=False, reason=study.reason)
        return False
    enqueue(s, ANALYZE_STUDY, study_pk=study.id, payload={"study_instance_uid": study.study_instance_uid},
            max_attempts=config.workers.max_attempts)
    if study.state != STUDY_ANALYSING:
        study.state = STUDY_QUEUED
    study.reason = ("re-analysis: " if reanalysis else "") + ("forced" if forced else "quiet for stability.quiet_seconds")
    log_event(log, "study complete", study=study.study_instance_uid, queued=True, forced=forced, reanalysis=reanalysis)
    return True


def refresh_arrivals(s: Session, since: dt.datetime | None, margin_seconds: float = 0.0,
                     study_pk: int | None = None) -> list[str]:
    """Bring each study's ``last_instance_at`` up to its newest instance, and re-open a study that
    received instances after it was completed (queued/analysed/failed ones are then re-analysed
    once quiet again). Only instances received after ``since`` are looked at (None = all), and
    only study ``study_pk`` if given. An instance counts as "after completion" if it is newer than
    every instance the completion saw (``last_instance_at``, brought up to date in the completion's
    own transaction) and received later than ``completed_at - margin_seconds``: a row stamped just
    before a completion may commit just after it, and must not be missed — but the instances the
    completion did see must not reopen it (a ``complete`` right after a transfer re-analysed every
    study once more, ``quiet_seconds`` later).

    The receivers only insert instance rows (one INSERT per instance, no study row update on
    the hot path); this is where the study-level consequences are drawn. Returns reopened UIDs.
    """
    latest = select(Series.study_pk, func.max(Instance.received_at)).join(Instance, Instance.series_pk == Series.id)
    if since is not None:
        latest = latest.where(Instance.received_at >= since)
    if study_pk is not None:
        latest = latest.where(Series.study_pk == study_pk)
    margin = dt.timedelta(seconds=margin_seconds)
    reopened = []
    for study_pk, last in s.execute(latest.group_by(Series.study_pk)).all():
        study = s.get(Study, study_pk)
        if study is None or last is None:
            continue
        newer = last > study.last_instance_at
        if newer:
            study.last_instance_at = last
        if (study.state != STUDY_RECEIVING and study.completed_at is not None and newer
                and last > study.completed_at - margin):
            if study.state in (STUDY_QUEUED, STUDY_ANALYSING, STUDY_ANALYSED, STUDY_FAILED):
                study.reanalyse = True
            study.reason = f"new instances after {study.state}"
            study.state = STUDY_RECEIVING
            reopened.append(study.study_instance_uid)
            log_event(log, "study reopened", study=study.study_instance_uid, reanalyse=study.reanalyse)
    return reopened


def sweep(db: Database, config: Config, now: dt.datetime | None = None, full: bool = False) -> list[str]:
    """Complete every receiving study quiet for ``stability.quiet_seconds``; returns their UIDs.

    ``full`` re-derives arrivals from every instance (start-up); otherwise from the last hour (or
    four quiet periods, if longer) — instances older than that were seen by earlier sweeps.
    """
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=config.stability.quiet_seconds)
    window = dt.timedelta(seconds=max(3600.0, 4 * config.stability.quiet_seconds))
    done: list[str] = []
    with db.write() as s:
        refresh_arrivals(s, None if full else now - window, margin_seconds=min(2.0, config.stability.quiet_seconds / 2))
        studies = s.execute(
            select(Study).where(Study.state == STUDY_RECEIVING, Study.last_instance_at <= cutoff).order_by(Study.id)
        ).scalars().all()
        for study in studies:
            mark_complete(s, study, config, now=now)
            done.append(study.study_instance_uid)
    return done


def force_complete(db: Database, config: Config, study_uid: str, actor: str = "cli") -> bool:
    """``noduletrack complete``: complete now, whatever the state (re-analyses an analysed study)."""
    with db.write() as s:
        study = s.execute(select(Study).where(Study.study_instance_uid == study_uid)).scalar_one_or_none()
        if study is None:
            raise UnknownStudy(study_uid)
        refresh_arrivals(s, None, study_pk=study.id)
        queued = mark_complete(s, study, config, forced=True)
        s.add(AuditEvent(kind="action", action="complete", outcome="queued" if queued else "nothing to analyse",
                         detail={"study_instance_uid": study_uid, "actor": actor}, at=utcnow()))
        return queued


def next_due(db: Database, config: Config) -> dt.datetime | None:
    """When the earliest receiving study becomes quiet (``last_instance_at + quiet_seconds``), if any."""
    with db.session() as s:
        last = s.scalar(select(func.min(Study.last_instance_at)).where(Study.state == STUDY_RECEIVING))
    if last is None:
        return None
    if last.tzinfo is None:
        last = last.replace(tzinfo=dt.timezone.utc)
    return last + dt.timedelta(seconds=config.stability.quiet_seconds)


class CompletionScheduler:
    """APScheduler background job running :func:`sweep` every ``stability.sweep_seconds``.

    After each sweep it also books a one-off sweep for the moment the earliest receiving study
    becomes quiet, so a study is completed ``quiet_seconds`` after its last instance (as soon as a
    sweep has seen that instance) rather than up to ``sweep_seconds`` later.
    """

    _DUE_SLACK = dt.timedelta(milliseconds=50)  # land just after the study is quiet, not just before

    def __init__(self, db: Database, config: Config) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.db, self.config = db, config
        self._first = True  # the first sweep after start-up looks at every instance
        self._lock = threading.Lock()  # the regular and the booked sweep never run at once
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.scheduler.add_job(self._run, "interval", seconds=config.stability.sweep_seconds,
                               id="completion-sweep", max_instances=1, coalesce=True,
                               next_run_time=dt.datetime.now(dt.timezone.utc))

    def _run(self) -> None:
        with self._lock:
            try:
                sweep(self.db, self.config, full=self._first)
                self._first = False
                self._book_due_sweep()
            except Exception:  # keep sweeping: a transient database error must not stop completion
                log.exception("completion sweep failed")

    def _book_due_sweep(self) -> None:
        due = next_due(self.db, self.config)
        if due is None:
            return
        due += self._DUE_SLACK
        now = dt.datetime.now(dt.timezone.utc)
        regular = self.scheduler.get_job("completion-sweep")
        next_regular = regular.next_run_time if regular is not None else None
        # Only when it is earlier than the regular sweep and still ahead (a study that is already
        # quiet was completed by the sweep that just ran; never spin on one that could not be).
        if due <= now or (next_regular is not None and due >= next_regular):
            return
        self.scheduler.add_job(self._run, "date", run_date=due, id="completion-due", replace_existing=True,
                               misfire_grace_time=None)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)
