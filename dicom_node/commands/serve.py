"""``noduletrack serve``: the node — SCP receivers, completion scheduler and worker processes."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from ..config import Config
from ..logs import log_event

log = logging.getLogger("noduletrack.serve")


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "serve",
        parents=[parent],
        help="run the DICOM node: SCP + study completion + workers (SIGTERM drains)",
        description=(
            "Listen for C-ECHO/C-STORE on node.host:node.port as node.ae_title (node.receivers processes), "
            "complete studies after stability.quiet_seconds, and run workers.processes worker processes. "
            "Applies pending database migrations first unless --no-migrate."
        ),
    )
    p.add_argument("--no-migrate", action="store_true", help="do not apply database migrations at start-up")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    # imported here so that `noduletrack --help` and other commands start fast
    from ..completion import CompletionScheduler
    from ..db import open_database, upgrade
    from ..scp import ReceiverGroup, prepare_spool
    from ..worker import WorkerPool

    if not args.no_migrate:
        upgrade(config.database.url)
    db = open_database(config.database.url)
    prepare_spool(config, db)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    receivers = ReceiverGroup(config, db)
    receivers.start()
    scheduler = CompletionScheduler(db, config)
    scheduler.start()
    pool = WorkerPool(config)
    pool.start()
    log_event(log, "node started", ae_title=config.node.ae_title, port=config.node.port,
              receivers=config.node.receivers, workers=pool.count)
    try:
        while not stop.wait(1.0):
            pool.restart_dead()
    finally:
        # Stop taking new work first, then let running jobs finish.
        log_event(log, "node stopping")
        receivers.stop()
        scheduler.stop()
        pool.drain()
        db.dispose()
        log_event(log, "node stopped")
    return 0
