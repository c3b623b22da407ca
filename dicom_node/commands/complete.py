"""``noduletrack complete STUDY_UID``: declare a study complete now and queue its analysis."""

from __future__ import annotations

import argparse

from ..config import Config


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "complete",
        parents=[parent],
        help="force a study complete (skip the quiet period) and queue its (re-)analysis",
        description="Mark STUDY_UID complete without waiting stability.quiet_seconds; an analysed study is re-analysed.",
    )
    p.add_argument("study_uid", metavar="STUDY_UID", help="Study Instance UID")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    # imported here so that `noduletrack --help` and other commands start fast
    from ..completion import UnknownStudy, force_complete
    from ..db import open_database
    from ..ingest import is_valid_uid

    if not is_valid_uid(args.study_uid):
        print(f"noduletrack complete: not a valid UID: {args.study_uid!r}")
        return 2
    db = open_database(config.database.url)
    try:
        queued = force_complete(db, config, args.study_uid)
    except UnknownStudy:
        print(f"noduletrack complete: study {args.study_uid} is not in the database")
        return 2
    finally:
        db.dispose()
    print(f"study {args.study_uid} complete; " + ("analysis queued" if queued else "no CT images: nothing to analyse"))
    return 0
