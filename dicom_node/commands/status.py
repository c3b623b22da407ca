"""``noduletrack status [--json]``: studies with their state, job queue and outbox counts.

This is the one place that prints raw patient IDs (the operator's view; the JSON is a contract).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


from ..config import Config


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "status",
        parents=[parent],
        help="studies, job queue and outbox (a table, or --json)",
        description="Print every study (UID, patient ID, instance count, state) plus job and outbox counts by state.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="newest N studies (default 1000)")
    p.set_defaults(func=run)


def collect(db: Any, limit: int = 1000) -> dict[str, Any]:
    """The status document: studies (newest first), queue and outbox counts, recent export failures."""
    from sqlalchemy import func, select  # imported on use: keeps the CLI's start-up light

    from .. import outbox, queue
    from ..models import OUTBOX_FAILED, Instance, OutboxItem, Patient, Series, Study

    with db.session() as s:
        counts = (
            select(Series.study_pk, func.count(Instance.id).label("n"))
            .join(Instance, Instance.series_pk == Series.id)
            .group_by(Series.study_pk)
            .subquery()
        )
        rows = s.execute(
            select(Study.study_instance_uid, Patient.patient_id, func.coalesce(counts.c.n, 0), Study.state,
                   Study.reason, Study.study_date)
            .join(Patient, Patient.id == Study.patient_pk)
            .outerjoin(counts, counts.c.study_pk == Study.id)
            .order_by(Study.last_instance_at.desc())
            .limit(limit)
        ).all()
        failed_exports = s.execute(
            select(OutboxItem.path, OutboxItem.destination, OutboxItem.attempts, OutboxItem.last_error)
            .where(OutboxItem.state == OUTBOX_FAILED).order_by(OutboxItem.id.desc()).limit(20)
        ).all()
        return {
            "studies": [
                {"study_instance_uid": uid, "patient_id": pid, "instances": int(n), "state": state, "reason": reason,
                 "study_date": date.isoformat() if date else None}
                for uid, pid, n, state, reason, date in rows
            ],
            "queue": queue.counts(s),
            "outbox": outbox.counts(s),
            "outbox_failures": [
                {"path": p, "destination": d, "attempts": a, "last_error": e} for p, d, a, e in failed_exports
            ],
        }


def run(args: argparse.Namespace, config: Config) -> int:
    from ..db import open_database  # here, not at the top: `noduletrack --help` starts fast

    db = open_database(config.database.url)
    try:
        data = collect(db, args.limit)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"{'STUDY INSTANCE UID':<64}  {'PATIENT ID':<16}  {'INST':>5}  STATE")
    for st in data["studies"]:
        line = f"{st['study_instance_uid']:<64}  {st['patient_id']:<16}  {st['instances']:>5}  {st['state']}"
        if st["state"] == "failed" and st["reason"]:
            line += f"  ({st['reason'].splitlines()[0][:80]})"
        print(line)
    if not data["studies"]:
        print("(no studies)")
    print("jobs:   " + "  ".join(f"{k}={v}" for k, v in data["queue"].items()))
    print("outbox: " + "  ".join(f"{k}={v}" for k, v in data["outbox"].items()))
    for f in data["outbox_failures"]:
        print(f"  export failed: {f['path']} -> {f['destination']} after {f['attempts']} attempts: {f['last_error'][:100]}")
    return 0
