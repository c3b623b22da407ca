"""Study completion: a study is complete when no instance arrived for ``stability.quiet_seconds``
(DICOM has no "end of study" message; PACS routers use the same rule), or when forced with
``noduletrack complete STUDY_UID``. Completing enqueues its analysis job — once: an identical
job still waiting is reused, so re-sent studies and forced completions never double the work.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from .config import Config
from .db import Database
from .ingest import SUPPORTED_SOP_CLASSES
from .logs import log_event
from .models import (
    STUDY_ANALYSING,
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


def mark_complete(s: Session, study: Study, config: Config, *, forced: bool = False) -> bool:
    """Complete ``study`` and enqueue its analysis. Returns True if a job was queued."""
    now = utcnow()
    reanalysis = study.reanalyse
    study.completed_at = now
    study.reanalyse = False
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


def sweep(db: Database, config: Config, now: dt.datetime | None = None) -> list[str]:
    """Complete every receiving study quiet for ``stability.quiet_seconds``; returns their UIDs."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=config.stability.quiet_seconds)
    done: list[str] = []
    with db.write() as s:
        studies = s.execute(
            select(Study).where(Study.state == STUDY_RECEIVING, Study.last_instance_at <= cutoff).order_by(Study.id)
        ).scalars().all()
        for study in studies:
            mark_complete(s, study, config)
            done.append(study.study_instance_uid)
    return done


def force_complete(db: Database, config: Config, study_uid: str, actor: str = "cli") -> bool:
    """``noduletrack complete``: complete now, whatever the state (re-analyses an analysed study)."""
    with db.write() as s:
        study = s.execute(select(Study).where(Study.study_instance_uid == study_uid)).scalar_one_or_none()
        if study is None:
            raise UnknownStudy(study_uid)
        queued = mark_complete(s, study, config, forced=True)
        s.add(AuditEvent(kind="action", action="complete", outcome="queued" if queued else "nothing to analyse",
                         detail={"study_instance_uid": study_uid, "actor": actor}, at=utcnow()))
        return queued


class CompletionScheduler:
    """APScheduler background job running :func:`sweep` every ``stability.sweep_seconds``."""

    def __init__(self, db: Database, config: Config) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.db, self.config = db, config
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.scheduler.add_job(self._run, "interval", seconds=config.stability.sweep_seconds,
                               id="completion-sweep", max_instances=1, coalesce=True,
                               next_run_time=dt.datetime.now(dt.timezone.utc))

    def _run(self) -> None:
        try:
            sweep(self.db, self.config)
        except Exception:  # keep sweeping: a transient database error must not stop completion
            log.exception("completion sweep failed")

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)
