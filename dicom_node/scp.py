"""The Storage SCP: C-ECHO and C-STORE with durable, validated ingest (pynetdicom 3).

An instance is acknowledged with Success only after its header is parsed and validated, it is
written to a temporary name in the spool, renamed to its final name and fsync'd (see
``Spool.commit``), and indexed in the database. Anything else is answered with a failure status
and one log line that says why; the association and the node stay up. A duplicate SOP Instance
UID is a success (idempotent; the stored file is kept). An instance larger than
``node.max_instance_mb`` is dropped while it arrives (``receive_limit.py``) and answered with
Out of Resources. One audit row per association.

Throughput: Python's share of a C-STORE (PDU handling, header parsing) is what limits one
process, so ``node.receivers`` processes can share the port with ``SO_REUSEPORT`` (the kernel
spreads new associations over them); one process works on its own. ``reactor.install`` removes
pynetdicom's sleep-polling latency (measured: the largest single cost per instance under load).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom import _config as _pynetdicom_config
from pynetdicom.transport import ThreadedAssociationServer

from . import reactor, receive_limit
from .config import Config
from .db import Database, open_database
from .ingest import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    SUPPORTED_SOP_CLASSES,
    SUPPORTED_TRANSFER_SYNTAXES,
    Indexer,
    Rejected,
    inspect_received,
)
from .logs import log_event
from .models import AuditEvent, utcnow
from .spool import Spool, relative_path

log = logging.getLogger("noduletrack.scp")

MAX_PDU = 131072  # ~10 % faster than pynetdicom's default 16 KiB (PEERS.md)


class _ReusePortServer(ThreadedAssociationServer):
    """pynetdicom's server with ``SO_REUSEPORT`` so several receiver processes share one port."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


@dataclass
class _AssocStats:
    calling_ae: str
    called_ae: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    bytes: int = 0
    outcome: str = "open"
    reasons: list[str] = field(default_factory=list)


def make_ssl_context(config: Config) -> ssl.SSLContext | None:
    """Server-side TLS from ``node.tls_cert``/``tls_key`` (and client verification with ``tls_ca``)."""
    if not config.node.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.node.tls_cert, config.node.tls_key)
    if config.node.tls_ca:
        ctx.load_verify_locations(config.node.tls_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class StorageSCP:
    """One receiving process: an AE bound to ``node.host:node.port`` writing to the spool and DB."""

    def __init__(self, config: Config, db: Database | None = None, reuse_port: bool = True) -> None:
        reactor.install()  # event-driven waits in pynetdicom's reactors (see reactor.py)
        receive_limit.install()  # oversized data sets are dropped while they arrive
        # pynetdicom's "standard" handlers format a log text for every PDU and DIMSE message even
        # when nothing is logged; our own per-association and per-failure lines say what matters.
        _pynetdicom_config.LOG_HANDLER_LEVEL = "none"
        self.config = config
        self.db = db or open_database(config.database.url)
        self.spool = Spool(config.spool_dir, fsync=config.storage.fsync)
        self.indexer = Indexer(self.db)
        self.reuse_port = reuse_port
        self._assocs: dict[int, _AssocStats] = {}
        self._lock = threading.Lock()
        self.server: ThreadedAssociationServer | None = None
        self.ae = self._build_ae()
        self.max_bytes = config.node.max_instance_mb * 1024 * 1024

    def _build_ae(self) -> AE:
        node = self.config.node
        ae = AE(ae_title=node.ae_title)
        ae.maximum_associations = node.max_associations
        ae.maximum_pdu_size = MAX_PDU
        ae.require_called_aet = True
        ae.require_calling_aet = list(node.allowed_calling_ae)
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.network_timeout = 60
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification
        for sop_class in SUPPORTED_SOP_CLASSES:
            ae.add_supported_context(sop_class, SUPPORTED_TRANSFER_SYNTAXES)
        return ae

    @property
    def max_bytes(self) -> int:
        """Largest data set accepted, in bytes (enforced while receiving, see receive_limit.py)."""
        return int(getattr(self.ae, receive_limit.MAX_DATASET_ATTRIBUTE))

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        setattr(self.ae, receive_limit.MAX_DATASET_ATTRIBUTE, int(value))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind and serve in background threads (returns once listening)."""
        handlers = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        address = (self.config.node.host, self.config.node.port)
        server_class = _ReusePortServer if self.reuse_port else ThreadedAssociationServer
        self.server = self.ae.make_server(
            address,
            ae_title=self.config.node.ae_title,
            ssl_context=make_ssl_context(self.config),
            evt_handlers=handlers,
            server_class=server_class,
        )
        thread = threading.Thread(target=self.server.serve_forever, name="scp-acceptor", daemon=True)
        thread.start()
        self.ae._servers.append(self.server)
        log_event(log, "scp listening", ae_title=self.config.node.ae_title, host=address[0],
                  port=self.server.server_address[1], pid=os.getpid())

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop accepting and close the listening socket (open associations are aborted)."""
        self.ae.shutdown()
        log_event(log, "scp stopped", pid=os.getpid())

    # ------------------------------------------------------------------ handlers

    def _stats(self, event: Any) -> _AssocStats:
        key = id(event.assoc)
        stats = self._assocs.get(key)
        if stats is None:
            req = event.assoc.requestor
            # The AE title the peer asked for (ours is in acceptor.ae_title).
            called = getattr(req.primitive, "called_ae_title", None) or event.assoc.acceptor.ae_title
            stats = _AssocStats(
                calling_ae=str(req.ae_title).strip(),
                called_ae=str(called).strip(),
                peer=f"{req.address}:{req.port}",
            )
            with self._lock:
                self._assocs[key] = stats
        return stats

    def _on_accepted(self, event: Any) -> None:
        stats = self._stats(event)
        stats.outcome = "accepted"

    def _on_rejected(self, event: Any) -> None:
        stats = self._stats(event)
        stats.outcome = "rejected"
        rej = event.assoc.acceptor.primitive
        why = _rejection_reason(rej, stats, self.config)
        stats.reasons.append(why)
        log_event(log, "association rejected", logging.WARNING, calling_ae=stats.calling_ae,
                  called_ae=stats.called_ae, peer=stats.peer, reason=why)

    def _on_aborted(self, event: Any) -> None:
        self._stats(event).outcome = "aborted"

    def _on_released(self, event: Any) -> None:
        self._stats(event).outcome = "released"

    def _on_close(self, event: Any) -> None:
        with self._lock:
            stats = self._assocs.pop(id(event.assoc), None)
        if stats is None:
            return
        detail = {
            "stored": stats.stored,
            "duplicates": stats.duplicates,
            "failed": stats.failed,
            "bytes": stats.bytes,
            "seconds": round(time.monotonic() - stats.started, 3),
            "reasons": stats.reasons[:20],
            "pid": os.getpid(),
        }
        log_event(log, "association closed", calling_ae=stats.calling_ae, peer=stats.peer,
                  outcome=stats.outcome, **{k: v for k, v in detail.items() if k != "reasons"})
        try:
            with self.db.write() as s:
                s.add(AuditEvent(kind="association", action="c-store" if stats.stored or stats.failed else "",
                                 calling_ae=stats.calling_ae[:16], called_ae=stats.called_ae[:16],
                                 peer=stats.peer[:64], outcome=stats.outcome, detail=detail, at=utcnow()))
        except Exception:
            log.exception("audit write failed", extra={"fields": {"peer": stats.peer}})

    def _on_echo(self, event: Any) -> int:
        self._stats(event)
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> int:
        stats = self._stats(event)
        req = event.request
        sop_class = str(req.AffectedSOPClassUID or "")
        sop_instance = str(req.AffectedSOPInstanceUID or "")
        transfer_syntax = str(event.context.transfer_syntax)
        stream: memoryview | None = None
        try:
            if isinstance(req.DataSet, receive_limit.DiscardedDataSet):
                raise Rejected(STATUS_OUT_OF_RESOURCES,
                               f"instance of {req.DataSet.received_bytes} bytes exceeds node.max_instance_mb="
                               f"{self.config.node.max_instance_mb} (dropped while receiving)")
            stream = req.DataSet.getbuffer()  # the bytes as received: no decode, no copy
            info = inspect_received(stream, transfer_syntax, sop_class, sop_instance)
            # Order matters (durability): temp file written -> UID not yet indexed? -> rename and
            # fsync (Spool.commit) -> row inserted and committed -> Success. A duplicate UID keeps
            # the stored file and is a success.
            rel = relative_path(info.sop_instance_uid)
            meta = file_meta_prefix(sop_class, info.sop_instance_uid, transfer_syntax, stats.calling_ae)
            tmp = self.spool.write_temp([meta, stream])
            written = tmp.size
            try:
                # Sub-operations of our own C-MOVE (prior retrieval) name us as move originator.
                originator = str(req.MoveOriginatorApplicationEntityTitle or "").strip()
                new = self.indexer.index(info, rel, written, transfer_syntax, stats.calling_ae,
                                         on_new=lambda: self.spool.commit(tmp, rel),
                                         retrieved=originator == self.config.node.ae_title)
            finally:
                self.spool.discard(tmp)  # no-op once committed
        except Rejected as exc:
            stats.failed += 1
            stats.reasons.append(exc.reason)
            log_event(log, "instance refused", logging.WARNING, status=f"0x{exc.status:04X}", reason=exc.reason,
                      sop=_safe_uid(sop_instance), calling_ae=stats.calling_ae)
            return exc.status
        except Exception as exc:  # disk full, database down...: the sender must retry later
            stats.failed += 1
            stats.reasons.append(f"{type(exc).__name__}: {exc}"[:200])
            log.exception("instance not stored", extra={"fields": {"sop": _safe_uid(sop_instance), "calling_ae": stats.calling_ae}})
            return STATUS_OUT_OF_RESOURCES
        finally:
            if stream is not None:
                try:
                    stream.release()  # pynetdicom closes the buffer after us; no export may remain
                except BufferError:
                    pass
        stats.bytes += written
        if new:
            stats.stored += 1
        else:
            stats.duplicates += 1
        if log.isEnabledFor(logging.DEBUG):
            log_event(log, "instance stored", logging.DEBUG, sop=sop_instance, bytes=written, duplicate=not new)
        return STATUS_SUCCESS


def _element(group_elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian element with a 2-byte length (UI/SH/AE/UL)."""
    return struct.pack("<HH", group_elem >> 16, group_elem & 0xFFFF) + vr + struct.pack("<H", len(value)) + value


def _even(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii", "replace")
    return raw + pad if len(raw) % 2 else raw


def file_meta_prefix(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group, encoded directly.

    Same content as pydicom's writer (PS3.10 7.1) but ~20x cheaper, which matters at hundreds of
    instances per second. The UIDs were validated (digits and dots) before this is called.
    """
    body = b"".join((
        struct.pack("<HH", 0x0002, 0x0001) + b"OB\x00\x00" + struct.pack("<I", 2) + b"\x00\x01",
        _element(0x00020002, b"UI", _even(sop_class, b"\x00")),
        _element(0x00020003, b"UI", _even(sop_instance, b"\x00")),
        _element(0x00020010, b"UI", _even(transfer_syntax, b"\x00")),
        _element(0x00020012, b"UI", _even(PYNETDICOM_IMPLEMENTATION_UID, b"\x00")),
        _element(0x00020013, b"SH", _even(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
        _element(0x00020016, b"AE", _even(source_ae or "", b" ")) if source_ae else b"",
    ))
    group_length = _element(0x00020000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body


def _safe_uid(uid: str) -> str:
    """A received UID for a log line: bounded and printable (it came from the network)."""
    return uid[:80].encode("ascii", "backslashreplace").decode("ascii")


def _rejection_reason(primitive: Any, stats: _AssocStats, config: Config) -> str:
    diag = getattr(primitive, "diagnostic", None)
    if diag == 0x07:
        return f"called AE {stats.called_ae!r} is not ours ({config.node.ae_title!r})"
    if diag == 0x03:
        return f"calling AE {stats.calling_ae!r} not in node.allowed_calling_ae"
    if diag == 0x02 and getattr(primitive, "result", None) == 0x02:
        return f"too many associations (node.max_associations={config.node.max_associations})"
    return f"result={getattr(primitive, 'result', '?')} source={getattr(primitive, 'result_source', '?')} diagnostic={diag}"


# ---------------------------------------------------------------------- receiver processes


def prepare_spool(config: Config, db: Database) -> None:
    """Start-up housekeeping before any receiver listens: drop orphaned temp files, index files
    that reached their final name but not the database (a crash between the two)."""
    from .ingest import reindex_spool

    spool = Spool(config.spool_dir, fsync=config.storage.fsync)
    removed = spool.clean_tmp()
    added = reindex_spool(db, spool)
    if removed or added:
        log_event(log, "spool recovered", temp_files_removed=removed, reindexed=added)


def _receiver_main(config: Config, ready: Any, stop: Any) -> None:
    """Entry point of an extra receiver process (multiprocessing spawn)."""
    from .logs import setup_logging

    setup_logging(config.logging.level, config.logging.format)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    scp = StorageSCP(config)
    scp.start()
    ready.set()
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:  # the parent died (kill -9): don't linger holding the port
            break
    scp.stop()


class ReceiverGroup:
    """``node.receivers`` processes on one port: this process plus ``receivers - 1`` spawned ones."""

    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.local = StorageSCP(config, db)
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = self._ctx.Event()
        self._procs: list[Any] = []

    def start(self) -> None:
        self.local.start()
        for _ in range(self.config.node.receivers - 1):
            ready = self._ctx.Event()
            proc = self._ctx.Process(target=_receiver_main, args=(self.config, ready, self._stop),
                                     name="noduletrack-receiver", daemon=False)
            proc.start()
            if not ready.wait(60):
                raise RuntimeError("receiver process did not start")
            self._procs.append(proc)

    def stop(self) -> None:
        self._stop.set()
        self.local.stop()
        for proc in self._procs:
            proc.join(15)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
