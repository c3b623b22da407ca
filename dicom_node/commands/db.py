"""``noduletrack db upgrade``: create or migrate the database schema (Alembic), from any directory."""

from __future__ import annotations

import argparse

from ..config import Config


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "db",
        parents=[parent],
        help="database schema: `db upgrade` applies the migrations, `db current` shows the revision",
        description="Manage the database schema ([database] url). `upgrade` is idempotent.",
    )
    p.add_argument("action", choices=["upgrade", "current"], help="upgrade: migrate to the newest schema; current: print the revision")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    # imported here so that `noduletrack --help` and other commands start fast
    from ..db import current_revision, head_revision, upgrade

    url = config.database.url
    if args.action == "upgrade":
        before = current_revision(url)
        upgrade(url)
        after = current_revision(url)
        print(f"database schema at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))
        return 0
    current = current_revision(url)
    print(f"{current or 'none'} (head {head_revision()})")
    return 0
