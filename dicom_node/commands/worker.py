"""``noduletrack worker``: job workers only (e.g. on another host sharing the database and spool)."""

from __future__ import annotations

import argparse
import signal
import threading

from ..config import Config


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "worker",
        parents=[parent],
        help="run job workers only (analysis, prior retrieval, export); SIGTERM drains",
        description="Claim jobs from the database queue and deliver the outbox. SIGTERM lets running jobs finish.",
    )
    p.add_argument("--processes", type=int, metavar="N", help="worker processes (default workers.processes, at least 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    # imported here so that `noduletrack --help` and other commands start fast
    from ..worker import Worker, WorkerPool

    n = args.processes if args.processes is not None else max(1, config.workers.processes)
    if n < 1:
        print("noduletrack worker: --processes must be >= 1")
        return 2
    if n == 1:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        Worker(config, stop=stop).run()
        return 0
    pool = WorkerPool(config, processes=n)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    pool.start()
    while not stop.wait(1.0) and pool.alive():
        pass
    pool.drain()
    return 0
