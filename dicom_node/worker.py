"""Worker processes: claim jobs, run their handler, deliver the outbox; drain on SIGTERM.

A job's handler is looked up by kind in :data:`HANDLERS`. ``analyze_study`` imports
``dicom_node.pipeline`` lazily: if it is not installed the job fails with a clear error (never a
fake success). While a handler runs, a heartbeat thread renews the job's lease; a worker killed
mid-job simply stops renewing and another worker retries the job when the lease expires.
SIGTERM (or SIGINT) lets the current job finish, then the worker exits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select

from . import outbox, queue
from .config import Config
from .db import Database, open_database
from .logs import log_event
from .models import Study

log = logging.getLogger("noduletrack.worker")


@dataclass
class JobContext:
    """What a handler gets: the job, the database, the configuration and the spool directory."""

    job: queue.ClaimedJob
    db: Database
    config: Config
    worker: str

    @property
    def spool(self) -> Path:
        return self.config.spool_dir.resolve()

    def study_uid(self) -> str:
        uid = self.job.payload.get("study_instance_uid")
        if uid:
            return str(uid)
        if self.job.study_pk is None:
            raise queue.PermanentJobError(f"job {self.job.id} ({self.job.kind}) names no study")
        with self.db.session() as s:
            return s.execute(select(Study.study_instance_uid).where(Study.id == self.job.study_pk)).scalar_one()


Handler = Callable[[JobContext], "dict[str, Any] | None"]


def _analyze_study(ctx: JobContext) -> dict[str, Any] | None:
    try:
        from . import pipeline  # lazy: heavy (torch), and written separately
    except ModuleNotFoundError as exc:
        if exc.name in ("dicom_node.pipeline",):
            raise queue.PermanentJobError("analysis pipeline not installed (module dicom_node.pipeline is missing)") from None
        raise
    from .priors import ensure_prior

    study_uid = ctx.study_uid()
    # The prior: our database first, then (pacs.query_retrieve) C-FIND/C-MOVE; the choice and its
    # reason are recorded in prior_links. A PACS that cannot be asked raises PriorError and the
    # job is retried (analysing without the prior would report every nodule as new).
    ensure_prior(ctx.db, ctx.config, study_uid)
    result = pipeline.analyze_study(ctx.db.factory, ctx.config, study_uid, ctx.spool)
    if result is None or isinstance(result, dict):
        return result
    if hasattr(result, "__dict__"):
        return {k: v for k, v in vars(result).items() if isinstance(v, (str, int, float, bool, type(None)))}
    return {"result": str(result)}


def _fetch_prior(ctx: JobContext) -> dict[str, Any] | None:
    from .priors import ensure_prior

    link = ensure_prior(ctx.db, ctx.config, ctx.study_uid())
    return {"prior_study_uid": link.prior_study_uid, "source": link.source, "reason": link.reason}


def _export(ctx: JobContext) -> dict[str, Any] | None:
    ids = [int(i) for i in ctx.job.payload.get("outbox_ids", [])]
    attempted = outbox.deliver_due(ctx.db, ctx.config, limit=max(1, len(ids)) if ids else 100, ids=ids or None)
    return {"attempted": attempted}


HANDLERS: dict[str, Handler] = {
    queue.ANALYZE_STUDY: _analyze_study,
    queue.FETCH_PRIOR: _fetch_prior,
    queue.EXPORT: _export,
}


class Worker:
    """One worker loop (one per process). ``stop`` is any object with ``is_set``/``wait``."""

    def __init__(self, config: Config, db: Database | None = None, stop: Any = None, name: str | None = None) -> None:
        self.config = config
        self.db = db or open_database(config.database.url)
        self.stop = stop or threading.Event()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.jobs_done = 0
        # Set while no warm-up is running; an analysis waits for a running warm-up instead of
        # importing the same heavy modules concurrently from a second thread.
        self._warmed = threading.Event()
        self._warmed.set()

    def run_one(self) -> bool:
        """Claim and run one job; False when there was nothing to do."""
        job = queue.claim(self.db, self.name, self.config.workers.lease_seconds, kinds=list(HANDLERS))
        if job is None:
            return False
        ctx = JobContext(job, self.db, self.config, self.name)
        handler = HANDLERS.get(job.kind)
        if job.kind == queue.ANALYZE_STUDY:
            self._warmed.wait(timeout=600)
        log_event(log, "job started", job=job.id, kind=job.kind, attempt=job.attempts, worker=self.name)
        heartbeat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, heartbeat_stop), daemon=True)
        beat.start()
        try:
            if handler is None:
                raise queue.PermanentJobError(f"no handler for job kind {job.kind!r}")
            result = handler(ctx)
        except queue.PermanentJobError as exc:
            heartbeat_stop.set()
            queue.fail(self.db, job.id, self.name, str(exc), permanent=True, retry_delay=0)
            log_event(log, "job failed", logging.ERROR, job=job.id, kind=job.kind, error=str(exc), retry=False)
        except Exception as exc:
            heartbeat_stop.set()
            error = f"{type(exc).__name__}: {exc}"
            delay = outbox.backoff_seconds(job.attempts, 5.0, 300.0)
            retry = queue.fail(self.db, job.id, self.name, error + "\n" + traceback.format_exc(limit=8),
                               permanent=False, retry_delay=delay)
            log_event(log, "job failed", logging.ERROR, job=job.id, kind=job.kind, error=error[:300], retry=retry)
        else:
            heartbeat_stop.set()
            queue.complete(self.db, job.id, self.name, result if isinstance(result, dict) else None)
            log_event(log, "job done", job=job.id, kind=job.kind)
        finally:
            heartbeat_stop.set()
            beat.join()
        self.jobs_done += 1
        return True

    def _heartbeat(self, job_id: int, stop: threading.Event) -> None:
        interval = max(0.5, self.config.workers.lease_seconds / 3)
        while not stop.wait(interval):
            try:
                if not queue.renew(self.db, job_id, self.name, self.config.workers.lease_seconds):
                    log_event(log, "job lease lost", logging.WARNING, job=job_id)
                    return
            except Exception:
                log.exception("lease renewal failed", extra={"fields": {"job": job_id}})

    def _warm_up(self) -> None:
        try:
            from . import pipeline

            seconds = pipeline.warm_up()
            log_event(log, "worker warmed up", worker=self.name, seconds=round(seconds, 2))
        except Exception:  # a warm-up problem surfaces (with its reason) in the first job instead
            log.exception("worker warm-up failed")
        finally:
            self._warmed.set()

    def run(self) -> None:
        """Loop until ``stop`` is set: jobs first, then due outbox items, else sleep.

        The analysis stack is imported and the growth model loaded in a background thread at start,
        so the first study does not pay for it; other jobs (exports, prior fetches) run meanwhile,
        an analysis claimed before the warm-up ends waits for it.
        """
        log_event(log, "worker started", worker=self.name)
        self._warmed.clear()
        threading.Thread(target=self._warm_up, name="worker-warm-up", daemon=True).start()
        while not self.stop.is_set():
            busy = False
            try:
                busy = self.run_one()
                if not busy and self.config.pacs.send_results:
                    busy = outbox.deliver_due(self.db, self.config) > 0
            except Exception:  # database briefly unavailable etc.: log, back off, keep going
                log.exception("worker loop error")
            if not busy:
                self.stop.wait(self.config.workers.poll_seconds)
        log_event(log, "worker stopped", worker=self.name, jobs=self.jobs_done)


def _worker_process_main(config: Config, stop: Any, index: int) -> None:
    """Entry point of a spawned worker process."""
    from .logs import setup_logging

    setup_logging(config.logging.level, config.logging.format)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards Ctrl-C as a drain
    parent = os.getppid()

    def watch_parent() -> None:  # parent killed with -9: drain and exit rather than linger
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    Worker(config, stop=stop, name=f"{socket.gethostname()}:{os.getpid()}:w{index}").run()


class WorkerPool:
    """``workers.processes`` worker processes (multiprocessing spawn: no inherited DB handles)."""

    def __init__(self, config: Config, processes: int | None = None) -> None:
        self.config = config
        self.count = config.workers.processes if processes is None else processes
        self._ctx = multiprocessing.get_context("spawn")
        self.stop_event = self._ctx.Event()
        self.procs: list[Any] = []

    def _spawn(self, index: int) -> Any:
        proc = self._ctx.Process(target=_worker_process_main, args=(self.config, self.stop_event, index),
                                 name=f"noduletrack-worker-{index}")
        proc.start()
        return proc

    def start(self) -> None:
        self.procs = [self._spawn(i) for i in range(self.count)]

    def restart_dead(self) -> int:
        """Replace worker processes that died (e.g. killed by the OOM killer); their job's lease
        expires and another worker retries it. Returns how many were restarted."""
        if self.stop_event.is_set():
            return 0
        restarted = 0
        for i, proc in enumerate(self.procs):
            if not proc.is_alive():
                log_event(log, "worker process died; restarting", logging.ERROR, index=i, exitcode=proc.exitcode)
                self.procs[i] = self._spawn(i)
                restarted += 1
        return restarted

    def drain(self, timeout: float | None = None) -> None:
        """Ask every worker to finish its current job and exit; wait for them."""
        self.stop_event.set()
        for proc in self.procs:
            proc.join(timeout)

    def alive(self) -> int:
        return sum(1 for p in self.procs if p.is_alive())
