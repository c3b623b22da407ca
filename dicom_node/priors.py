"""Finding the prior CT for a study: in our database first, else from the PACS by C-FIND/C-MOVE.

Same patient means the same PatientID *and* IssuerOfPatientID (two hospitals may both have a
patient "12345"), and where both studies state sex and birth date they must agree (a mismatch
means a merged or mistyped ID: better no prior than someone else's). The prior is the most recent
earlier CT study of the chest at least ``pacs.min_prior_days`` before the current one. From the
PACS at most ``pacs.max_prior_instances`` instances are moved: one CT series (the one with most
slices under the cap, i.e. the thinnest reconstruction that fits). Every decision is recorded in
``prior_links`` with its reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from .completion import ANALYSABLE_SOP_CLASSES
from .config import Config
from .db import Database
from .logs import log_event, phi_hash
from .models import Instance, PriorLink, Series, Study, utcnow

log = logging.getLogger("noduletrack.priors")

CHEST_WORDS = ("CHEST", "THORAX", "LUNG", "THX", "TORAX", "POUMON")


class PriorError(RuntimeError):
    """The PACS could not be queried or the move failed (a retryable condition)."""


def _agree(a: str, b: str) -> bool:
    """Patient attributes agree when either is unknown or both are equal."""
    return not a or not b or a.strip().upper() == b.strip().upper()


def _looks_like_chest(texts: list[str]) -> bool:
    """True unless every stated body part/description names something other than the chest."""
    stated = [t.upper() for t in texts if t and t.strip()]
    return not stated or any(word in t for t in stated for word in CHEST_WORDS)


def _study(session: Session, study_uid: str) -> Study:
    study = session.execute(select(Study).where(Study.study_instance_uid == study_uid)).scalar_one_or_none()
    if study is None:
        raise LookupError(f"study {study_uid} is not in the database")
    return study


def find_prior_explained(session: Session, study_uid: str, min_days: int = 30) -> tuple[Study | None, str]:
    """The prior study in the database and why it was chosen (or why there is none)."""
    current = _study(session, study_uid)
    if current.study_date is None:
        return None, "current study has no StudyDate: cannot order studies in time"
    cutoff = current.study_date - dt.timedelta(days=min_days)
    has_ct = exists().where(
        Instance.series_pk == Series.id, Series.study_pk == Study.id, Instance.sop_class_uid.in_(ANALYSABLE_SOP_CLASSES)
    )
    candidates = session.execute(
        select(Study)
        .where(Study.patient_pk == current.patient_pk, Study.id != current.id,
               Study.study_date.is_not(None), Study.study_date <= cutoff, has_ct)
        .order_by(Study.study_date.desc(), Study.id.desc())
    ).scalars().all()
    rejected = []
    for study in candidates:
        if not (_agree(current.patient_sex, study.patient_sex) and _agree(current.patient_birth_date, study.patient_birth_date)):
            rejected.append(f"{study.study_instance_uid}: sex/birth date disagree")
            continue
        parts = session.execute(
            select(Series.body_part).where(Series.study_pk == study.id, Series.modality == "CT")
        ).scalars().all()
        if not _looks_like_chest(list(parts) + [study.description]):
            rejected.append(f"{study.study_instance_uid}: not a chest CT")
            continue
        days = (current.study_date - study.study_date).days if study.study_date else None
        return study, f"most recent earlier chest CT of the same patient in the database ({days} days before)"
    why = f"no chest CT of the same patient (PatientID+issuer) at least {min_days} days earlier in the database"
    if rejected:
        why += "; skipped " + "; ".join(rejected[:5])
    return None, why


def find_prior(session: Session, study_uid: str, min_days: int = 30) -> Study | None:
    """The prior CT study for ``study_uid`` among the studies we hold, or None."""
    return find_prior_explained(session, study_uid, min_days)[0]


def latest_prior_link(session: Session, study_uid: str) -> PriorLink | None:
    """What :func:`ensure_prior` last decided for ``study_uid``."""
    study = _study(session, study_uid)
    return session.execute(
        select(PriorLink).where(PriorLink.study_pk == study.id).order_by(PriorLink.id.desc())
    ).scalars().first()


@dataclass(frozen=True)
class PacsStudy:
    study_uid: str
    study_date: dt.date | None
    description: str
    instances: int | None


def _scu(config: Config) -> AE:
    ae = AE(ae_title=config.node.ae_title)
    ae.acse_timeout = ae.network_timeout = 30
    ae.dimse_timeout = 600  # a C-MOVE response comes only after all sub-operations
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    return ae


def _date(text: Any) -> dt.date | None:
    try:
        return dt.datetime.strptime(str(text)[:8], "%Y%m%d").date()
    except (TypeError, ValueError):
        return None


def _values(value: Any) -> list[str]:
    """A multi-valued (or single, or empty) element value as a list of non-empty strings."""
    if value is None:
        return []
    items = [value] if isinstance(value, (str, bytes)) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def _find(assoc: Any, query: Dataset) -> list[Dataset]:
    answers = []
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if status is None:
            raise PriorError("C-FIND: no response from the PACS")
        code = int(status.Status)
        if code in (0xFF00, 0xFF01) and identifier is not None:
            answers.append(identifier)
        elif code != 0x0000:
            raise PriorError(f"C-FIND failed with status 0x{code:04X}")
    return answers


def fetch_prior_from_pacs(db: Database, config: Config, study_uid: str) -> tuple[str | None, str]:
    """Query the PACS for the prior of ``study_uid`` and C-MOVE it to our AE.

    Returns ``(prior_study_uid or None, reason)``. Our SCP must be running and known to the PACS
    as a move destination named ``node.ae_title``; since we acknowledge only indexed instances,
    the moved instances are all in the database when the C-MOVE reports completion.
    """
    min_days = config.pacs.min_prior_days
    with db.session() as s:
        current = _study(s, study_uid)
        patient_id, issuer = current.patient.patient_id, current.patient.issuer
        sex, birth, date = current.patient_sex, current.patient_birth_date, current.study_date
    if date is None:
        return None, "current study has no StudyDate: cannot order studies in time"
    if not patient_id:
        return None, "current study has no PatientID: cannot query the PACS for the same patient"
    cutoff = date - dt.timedelta(days=min_days)

    ae = _scu(config)
    assoc = ae.associate(config.pacs.host, config.pacs.port, ae_title=config.pacs.ae_title)
    if not assoc.is_established:
        raise PriorError(f"cannot associate with the PACS {config.pacs.ae_title}@{config.pacs.host}:{config.pacs.port}")
    try:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.PatientID = patient_id
        q.IssuerOfPatientID = issuer or ""
        q.PatientSex = ""
        q.PatientBirthDate = ""
        q.StudyInstanceUID = ""
        q.StudyDate = f"-{cutoff:%Y%m%d}"
        q.StudyDescription = ""
        q.ModalitiesInStudy = "CT"
        q.NumberOfStudyRelatedInstances = ""
        candidates: list[PacsStudy] = []
        skipped: list[str] = []
        for a in _find(assoc, q):
            uid = str(a.get("StudyInstanceUID", ""))
            a_date = _date(a.get("StudyDate"))
            if not uid or uid == study_uid or a_date is None or a_date > cutoff:
                continue
            if str(a.get("PatientID", patient_id)) != patient_id or not _agree(issuer, str(a.get("IssuerOfPatientID", "") or "")):
                skipped.append(f"{uid}: other issuer")
                continue
            if not (_agree(sex, str(a.get("PatientSex", "") or "")) and _agree(birth, str(a.get("PatientBirthDate", "") or ""))):
                skipped.append(f"{uid}: sex/birth date disagree")
                continue
            modalities = _values(a.get("ModalitiesInStudy", ""))
            if modalities and "CT" not in modalities:
                continue
            if not _looks_like_chest([str(a.get("StudyDescription", "") or "")]):
                skipped.append(f"{uid}: not a chest CT")
                continue
            n = a.get("NumberOfStudyRelatedInstances")
            candidates.append(PacsStudy(uid, a_date, str(a.get("StudyDescription", "")), int(n) if n not in (None, "") else None))
        if not candidates:
            why = f"PACS has no chest CT of the same patient at least {min_days} days earlier"
            return None, why + ("; skipped " + "; ".join(skipped[:5]) if skipped else "")
        best = max(candidates, key=lambda c: (c.study_date or dt.date.min, c.study_uid))

        # Series level: move the largest CT series that fits under the cap.
        sq = Dataset()
        sq.QueryRetrieveLevel = "SERIES"
        sq.StudyInstanceUID = best.study_uid
        sq.SeriesInstanceUID = ""
        sq.Modality = "CT"
        sq.SeriesNumber = ""
        sq.BodyPartExamined = ""
        sq.NumberOfSeriesRelatedInstances = ""
        series = []
        for a in _find(assoc, sq):
            if str(a.get("Modality", "CT")) != "CT" or not a.get("SeriesInstanceUID"):
                continue
            n = a.get("NumberOfSeriesRelatedInstances")
            series.append((int(n) if n not in (None, "") else 0, str(a.SeriesInstanceUID), str(a.get("BodyPartExamined", "") or "")))
        fitting = [s for s in series if 0 < s[0] <= config.pacs.max_prior_instances and _looks_like_chest([s[2]])]
        if not fitting:
            sizes = ", ".join(str(s[0]) for s in series) or "none"
            return None, (f"prior {best.study_uid} ({best.study_date}) has no CT series within "
                          f"pacs.max_prior_instances={config.pacs.max_prior_instances} (series sizes: {sizes})")
        count, series_uid, _ = max(fitting)

        mq = Dataset()
        mq.QueryRetrieveLevel = "SERIES"
        mq.StudyInstanceUID = best.study_uid
        mq.SeriesInstanceUID = series_uid
        completed = failed = 0
        final = None
        for status, _ident in assoc.send_c_move(mq, config.node.ae_title, StudyRootQueryRetrieveInformationModelMove):
            if status is None:
                raise PriorError("C-MOVE: no response from the PACS (timeout or abort)")
            final = int(status.Status)
            completed = int(status.get("NumberOfCompletedSuboperations", completed) or completed)
            failed = int(status.get("NumberOfFailedSuboperations", failed) or failed)
        if final not in (0x0000, 0xB000) or completed == 0:
            raise PriorError(f"C-MOVE of prior series ended with status 0x{(final or 0):04X}, "
                             f"{completed} completed, {failed} failed (is {config.node.ae_title} a known modality in the PACS?)")
    finally:
        if assoc.is_established:
            assoc.release()

    with db.session() as s:
        got = s.scalar(
            select(func.count()).select_from(Instance).join(Series).where(Series.series_instance_uid == series_uid)
        )
    log_event(log, "prior moved from pacs", patient=phi_hash(patient_id), series_instances=count, received=got, failed=failed)
    days = (date - best.study_date).days if best.study_date else "?"
    return best.study_uid, (f"fetched from PACS by C-MOVE: most recent earlier chest CT ({days} days before), "
                            f"series {series_uid} with {got} of {count} instances")


def ensure_prior(db: Database, config: Config, study_uid: str) -> PriorLink:
    """Make sure the prior of ``study_uid`` is in the database if one exists; record the choice.

    Database first; if none there and ``pacs.query_retrieve`` is on, C-FIND/C-MOVE from the PACS.
    Raises :class:`PriorError` when the PACS could not be asked (the job is then retried).
    """
    min_days = config.pacs.min_prior_days
    with db.session() as s:
        prior, reason = find_prior_explained(s, study_uid, min_days)
        prior_uid = prior.study_instance_uid if prior else None
    source = "database" if prior_uid else "none"
    if prior_uid is None and config.pacs.query_retrieve and config.pacs.host:
        fetched, pacs_reason = fetch_prior_from_pacs(db, config, study_uid)
        if fetched:
            with db.session() as s:
                prior, check = find_prior_explained(s, study_uid, min_days)
            if prior is None or prior.study_instance_uid != fetched:
                raise PriorError(f"moved prior {fetched} but it does not qualify in the database: {check}")
            prior_uid, source, reason = fetched, "pacs", pacs_reason
        else:
            reason = f"{reason}; {pacs_reason}"
    with db.write() as s:
        study = _study(s, study_uid)
        link = PriorLink(study_pk=study.id, prior_study_uid=prior_uid or "", source=source, reason=reason[:4000], created_at=utcnow())
        s.add(link)
    log_event(log, "prior chosen", study=study_uid, prior=prior_uid or "-", source=source)
    return link
