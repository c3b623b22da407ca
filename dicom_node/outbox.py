"""The outbox: results waiting to be C-STOREd to a destination, retried until delivered.

The pipeline calls :func:`enqueue` (in its own transaction) for the files it wrote; workers call
:func:`deliver_due`, which claims due rows under a short lease (``SKIP LOCKED`` on PostgreSQL),
sends them in one association per destination, and either marks them sent or schedules the next
attempt with exponential backoff (``pacs.retry_initial_seconds`` doubling up to
``pacs.retry_max_seconds``). After ``pacs.max_attempts`` a row is ``failed`` — visible in
``noduletrack status`` with its last error — and its file is still on disk: nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from pydicom import dcmread
from pynetdicom import AE
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .config import Config
from .db import Database, claimable
from .logs import log_event
from .models import (
    OUTBOX_FAILED,
    OUTBOX_PENDING,
    OUTBOX_SENDING,
    OUTBOX_SENT,
    OUTBOX_STATES,
    OutboxItem,
    Study,
    utcnow,
)

log = logging.getLogger("noduletrack.outbox")

SEND_LEASE_SECONDS = 300
_DEST_RE = re.compile(r"^(?P<ae>[^@\\]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})$")
_SUCCESS_OR_WARNING = {0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007}


def pacs_destination(config: Config) -> str:
    """The ``[pacs]`` section as an outbox destination string ``AE@host:port``."""
    return f"{config.pacs.ae_title}@{config.pacs.host}:{config.pacs.port}"


def parse_destination(destination: str) -> tuple[str, str, int]:
    match = _DEST_RE.match(destination)
    if not match:
        raise ValueError(f"destination must be 'AE@host:port', got {destination!r}")
    return match["ae"], match["host"], int(match["port"])


def backoff_seconds(attempts: int, initial: float, maximum: float) -> float:
    """Delay before the next try after ``attempts`` failed ones: initial, 2x, 4x ... capped."""
    return float(min(maximum, initial * (2 ** max(0, attempts - 1))))


def enqueue(session: Session, paths: Iterable[str | os.PathLike[str]], destination: str,
            study_uid: str | None = None) -> list[OutboxItem]:
    """Queue ``paths`` (DICOM files that must stay where they are until sent) for ``destination``.

    Runs in the caller's transaction, so results and their export commit together. Enqueuing the
    same file for the same destination again re-arms it (a re-analysis rewrote it) instead of
    adding a duplicate row.
    """
    parse_destination(destination)
    study_pk = None
    if study_uid is not None:
        study_pk = session.execute(select(Study.id).where(Study.study_instance_uid == study_uid)).scalar_one_or_none()
    items = []
    now = utcnow()
    for raw in paths:
        path = str(Path(raw).resolve())
        if not os.path.isfile(path):
            raise FileNotFoundError(f"outbox: {path} does not exist")
        sop_uid = str(dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).get("SOPInstanceUID", ""))
        item = session.execute(
            select(OutboxItem).where(OutboxItem.path == path, OutboxItem.destination == destination)
        ).scalar_one_or_none()
        if item is None:
            item = OutboxItem(path=path, destination=destination, created_at=now)
            session.add(item)
        item.study_pk = study_pk
        item.sop_instance_uid = sop_uid[:64]
        item.state = OUTBOX_PENDING
        item.attempts = 0
        item.next_attempt_at = now
        item.lease_until = None
        item.last_error = ""
        items.append(item)
    session.flush()
    return items


def counts(session: Session) -> dict[str, int]:
    out = {state: 0 for state in OUTBOX_STATES}
    for state, n in session.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state)):
        out[state] = int(n)
    return out


def _claim(db: Database, limit: int, ids: Sequence[int] | None) -> list[tuple[int, str, str, int]]:
    now = utcnow()
    with db.write() as s:
        query = (
            select(OutboxItem)
            .where(claimable(OutboxItem.state, OUTBOX_PENDING, OutboxItem.next_attempt_at, OUTBOX_SENDING,
                             OutboxItem.lease_until, now))
            .order_by(OutboxItem.next_attempt_at, OutboxItem.id)
            .limit(limit)
        )
        if ids:
            query = query.where(OutboxItem.id.in_(list(ids)))
        rows = s.execute(db.for_claim(query)).scalars().all()
        for row in rows:
            row.state = OUTBOX_SENDING
            row.attempts += 1
            row.lease_until = now + dt.timedelta(seconds=SEND_LEASE_SECONDS)
        return [(r.id, r.path, r.destination, r.attempts) for r in rows]


def _finish(db: Database, config: Config, results: dict[int, tuple[bool, str, bool]]) -> None:
    """Apply send outcomes: {id: (sent, error, permanent)}."""
    now = utcnow()
    with db.write() as s:
        for item_id, (sent, error, permanent) in results.items():
            item = s.get(OutboxItem, item_id)
            if item is None:
                continue
            item.lease_until = None
            if sent:
                item.state = OUTBOX_SENT
                item.sent_at = now
                item.last_error = ""
                continue
            item.last_error = error[:2000]
            if permanent or item.attempts >= config.pacs.max_attempts:
                item.state = OUTBOX_FAILED
                log_event(log, "export failed for good", logging.ERROR, outbox_id=item_id,
                          destination=item.destination, attempts=item.attempts, error=error[:300])
            else:
                item.state = OUTBOX_PENDING
                delay = backoff_seconds(item.attempts, config.pacs.retry_initial_seconds, config.pacs.retry_max_seconds)
                item.next_attempt_at = now + dt.timedelta(seconds=delay)
                log_event(log, "export retry scheduled", logging.WARNING, outbox_id=item_id,
                          destination=item.destination, attempts=item.attempts, retry_in_s=delay, error=error[:300])


def deliver_due(db: Database, config: Config, limit: int = 100, ids: Sequence[int] | None = None) -> int:
    """Send due outbox rows (optionally only ``ids``); returns how many were attempted."""
    claimed = _claim(db, limit, ids)
    if not claimed:
        return 0
    by_dest: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for item_id, path, dest, _attempts in claimed:
        by_dest[dest].append((item_id, path))
    results: dict[int, tuple[bool, str, bool]] = {}
    for dest, items in by_dest.items():
        results.update(_send(config, dest, items))
    _finish(db, config, results)
    sent = sum(1 for ok, _, _ in results.values() if ok)
    log_event(log, "export attempt", attempted=len(results), sent=sent)
    return len(results)


_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")  # explicit, implicit VR little endian


def _send(config: Config, destination: str, items: list[tuple[int, str]]) -> dict[int, tuple[bool, str, bool]]:
    results: dict[int, tuple[bool, str, bool]] = {}
    datasets = {}
    for item_id, path in items:
        try:
            datasets[item_id] = dcmread(path)
        except FileNotFoundError:
            results[item_id] = (False, f"file vanished: {path}", True)
        except Exception as exc:
            results[item_id] = (False, f"unreadable: {type(exc).__name__}: {exc}", True)
    if not datasets:
        return results
    try:
        ae_title, host, port = parse_destination(destination)
    except ValueError as exc:
        return {**results, **{i: (False, str(exc), True) for i in datasets}}

    ae = AE(ae_title=config.node.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    contexts: dict[tuple[str, str], None] = {}
    for ds in datasets.values():
        contexts[(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))] = None
    # One context per exact transfer syntax (an acceptor picks ONE syntax per context, so listing a
    # compressed syntax with uncompressed fallbacks in the same context can leave no way to send
    # the compressed file as it is), plus an uncompressed context per SOP class as the fallback.
    proposed: list[tuple[str, list[str]]] = []
    for sop_class, ts in contexts:
        proposed.append((sop_class, [ts]))
        if ts not in _UNCOMPRESSED:
            proposed.append((sop_class, list(_UNCOMPRESSED)))
    for sop_class, syntaxes in list(dict.fromkeys((c, tuple(s)) for c, s in proposed))[:128]:  # 128 = the maximum per association
        ae.add_requested_context(sop_class, list(syntaxes))
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        why = f"association to {destination} failed (rejected, aborted or unreachable)"
        return {**results, **{i: (False, why, False) for i in datasets}}
    try:
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
        for item_id, ds in datasets.items():
            try:
                if (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) not in accepted:
                    ds.decompress()  # the peer takes this class only uncompressed: send it decoded
                status = assoc.send_c_store(ds)
            except Exception as exc:
                results[item_id] = (False, f"{type(exc).__name__}: {exc}", False)
                if not assoc.is_established:
                    break
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in _SUCCESS_OR_WARNING:
                results[item_id] = (True, "", False)
            elif code == -1:
                results[item_id] = (False, "no response (association aborted or timed out)", False)
            else:
                results[item_id] = (False, f"C-STORE status 0x{code:04X}", False)
    finally:
        if assoc.is_established:
            assoc.release()
    for item_id in datasets:
        results.setdefault(item_id, (False, "association lost before sending", False))
    return results
