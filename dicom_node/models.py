"""Database schema (SQLAlchemy 2 typed ORM): every arrow in the study's path is a row.

What arrived (patients, studies, series, instances), what is to be done (jobs, outbox), what was
found (nodules, observations, predictions, recommendations, analyses, prior_links) and who did
what (audit). Alembic migrations in ``migrations/`` create exactly this schema; a test compares
the two so they cannot drift.

Timestamps are timezone-aware UTC in Python and stored as naive UTC (SQLite has no time zones);
:class:`UTCDateTime` does the conversion in one place.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Study states, in the order a study normally moves through them.
STUDY_RECEIVING = "receiving"
STUDY_COMPLETE = "complete"
STUDY_QUEUED = "queued"
STUDY_ANALYSING = "analysing"
STUDY_ANALYSED = "analysed"
STUDY_FAILED = "failed"
STUDY_STATES = (STUDY_RECEIVING, STUDY_COMPLETE, STUDY_QUEUED, STUDY_ANALYSING, STUDY_ANALYSED, STUDY_FAILED)

JOB_QUEUED = "queued"
JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_FAILED = "failed"
JOB_STATES = (JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED)

OUTBOX_PENDING = "pending"
OUTBOX_SENDING = "sending"
OUTBOX_SENT = "sent"
OUTBOX_FAILED = "failed"
OUTBOX_STATES = (OUTBOX_PENDING, OUTBOX_SENDING, OUTBOX_SENT, OUTBOX_FAILED)

# Stable constraint names so that Alembic migrations are reproducible on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Now, as an aware UTC datetime (the only kind this schema stores)."""
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (portable across backends)."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: Optional[dt.datetime], dialect: Any) -> Optional[dt.datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use aware UTC datetimes (models.utcnow())")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Optional[dt.datetime], dialect: Any) -> Optional[dt.datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Patient(Base):
    """A patient as the PACS identifies them: PatientID within IssuerOfPatientID ('' = none)."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer", name="uq_patients_patient_id_issuer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")  # DICOM DA, '' when unknown
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    studies: Mapped[list["Study"]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (Index("ix_studies_state_last", "state", "last_instance_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    # Patient attributes as this study states them; prior matching checks they agree.
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    study_date: Mapped[Optional[dt.date]] = mapped_column(default=None)
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), default=STUDY_RECEIVING)
    reason: Mapped[str] = mapped_column(Text, default="")  # why failed / why re-analysed
    # last_instance_at is maintained by the completion sweep (max received_at of its instances).
    first_instance_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_instance_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), default=None)
    analysed_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), default=None)
    # Set when instances arrive after the study was queued or analysed: the next completion
    # re-analyses (same deterministic output UIDs, so results replace rather than duplicate).
    reanalyse: Mapped[bool] = mapped_column(Boolean, default=False)
    # Arrived through our own C-MOVE (a prior fetched for another study): completing it does not
    # queue an analysis of its own (``noduletrack complete`` still can).
    retrieved_as_prior: Mapped[bool] = mapped_column(Boolean, default=False)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list["Series"]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[Optional[int]] = mapped_column(Integer, default=None)
    description: Mapped[str] = mapped_column(String(64), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    frame_of_reference_uid: Mapped[str] = mapped_column(String(64), default="")

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list["Instance"]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[Optional[int]] = mapped_column(Integer, default=None)
    path: Mapped[str] = mapped_column(String(512))  # relative to the spool
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    # Indexed: the completion sweep derives each study's last arrival from recent instances.
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    """A unit of work for the workers, claimed under a lease so a killed worker's job is retried."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_not_before", "state", "not_before"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    study_pk: Mapped[Optional[int]] = mapped_column(ForeignKey("studies.id"), default=None, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=JOB_QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), default=None)
    worker: Mapped[str] = mapped_column(String(128), default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), default=None)

    study: Mapped[Optional[Study]] = relationship()


class OutboxItem(Base):
    """One file to C-STORE to one destination, retried with exponential backoff until sent or given up."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_state_next", "state", "next_attempt_at"),
        UniqueConstraint("path", "destination", name="uq_outbox_path_destination"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024))  # absolute path of the file to send
    destination: Mapped[str] = mapped_column(String(128))  # "AE@host:port"
    study_pk: Mapped[Optional[int]] = mapped_column(ForeignKey("studies.id"), default=None, index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), default=OUTBOX_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), default=None)


class Nodule(Base):
    """A nodule followed across a patient's studies; the tracking UID goes into SEG/SR."""

    __tablename__ = "nodules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tracking_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    label: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    observations: Mapped[list["Observation"]] = relationship(back_populates="nodule")


class Observation(Base):
    """One nodule measured in one study."""

    __tablename__ = "observations"
    __table_args__ = (UniqueConstraint("nodule_pk", "study_pk", name="uq_observations_nodule_study"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nodule_pk: Mapped[int] = mapped_column(ForeignKey("nodules.id"), index=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    center_x_mm: Mapped[float] = mapped_column(Float)
    center_y_mm: Mapped[float] = mapped_column(Float)
    center_z_mm: Mapped[float] = mapped_column(Float)
    volume_mm3: Mapped[float] = mapped_column(Float)
    mean_diameter_mm: Mapped[float] = mapped_column(Float)
    consistency: Mapped[str] = mapped_column(String(16), default="")
    vdt_days: Mapped[Optional[float]] = mapped_column(Float, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    nodule: Mapped[Nodule] = relationship(back_populates="observations")


class Prediction(Base):
    """The growth model's forecast for a nodule, made from one study."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nodule_pk: Mapped[int] = mapped_column(ForeignKey("nodules.id"), index=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    horizon_days: Mapped[float] = mapped_column(Float)
    volume_mm3: Mapped[float] = mapped_column(Float)
    mean_diameter_mm: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Recommendation(Base):
    """The study's surveillance recommendation (CLINICAL.md)."""

    __tablename__ = "recommendations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    guideline: Mapped[str] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(32))
    followup_months_min: Mapped[Optional[float]] = mapped_column(Float, default=None)
    followup_months_max: Mapped[Optional[float]] = mapped_column(Float, default=None)
    due_date: Mapped[Optional[dt.date]] = mapped_column(default=None)
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Analysis(Base):
    """One run of the pipeline on a study: with which prior and model version, and the outcome."""

    __tablename__ = "analyses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    prior_study_pk: Mapped[Optional[int]] = mapped_column(ForeignKey("studies.id"), default=None)
    model_version: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(16), default="")  # ok / failed
    reason: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, default=None)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), default=None)


class PriorLink(Base):
    """Which prior study was chosen for a study (or that none was), from where, and why."""

    __tablename__ = "prior_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    prior_study_uid: Mapped[str] = mapped_column(String(64), default="")  # '' = no prior found
    source: Mapped[str] = mapped_column(String(16))  # "database" / "pacs" / "none"
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditEvent(Base):
    """Who did what: one row per association and per administrative action."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32))  # association / action
    action: Mapped[str] = mapped_column(String(64), default="")
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    called_ae: Mapped[str] = mapped_column(String(16), default="")
    peer: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
