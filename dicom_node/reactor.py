"""Event-driven waits for pynetdicom's polling reactors (a measured latency fix).

pynetdicom 3 runs two polling loops per association: the DUL thread sleeps ``_run_loop_delay``
(1 ms) whenever its socket and queues are idle, and the acceptor's association thread sleeps
1 ms before every look at its DIMSE message queue. Each C-STORE passes through several of these
waits, and on a busy host a 1 ms ``time.sleep`` returns after several milliseconds: profiling
the SCP under load showed ~9 of every 20 ms per instance spent asleep in these two loops.

:func:`install` swaps the ``sleep`` both modules call for waits that end as soon as there is work:

* DUL thread: ``select`` on its socket plus a wake-up pipe that :meth:`send_pdu` writes to, so
  incoming data and outgoing primitives (our C-STORE response) both wake it at once;
* association thread: a wait on its DIMSE queue's ``not_empty`` condition.

The timeouts stay short (the loops still check timers and flags on every turn), so behaviour is
unchanged except for latency. It also replaces the transport's ``recv``, which reads PDUs in
4 KiB ``recv`` calls (~130 per CT slice), with ``recv_into`` a buffer of the PDU's size. Only the ``sleep`` calls made from those two thread kinds are
affected; everything else falls through to :func:`time.sleep`. Idempotent.
"""

from __future__ import annotations

import os
import select
import threading
import time
import types
from typing import Any

from pynetdicom import association as _association
from pynetdicom import dul as _dul
from pynetdicom import transport as _transport

_installed = False
_lock = threading.Lock()
_IDLE_WAIT = 0.005  # upper bound of one idle wait; events end it earlier


class _TimeShim(types.ModuleType):
    """Stands in for the ``time`` module inside a pynetdicom module; only ``sleep`` differs."""

    def __init__(self, sleep: Any) -> None:
        super().__init__("time")
        self._sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self._sleep(seconds)


def _dul_sleep(seconds: float) -> None:
    thread = threading.current_thread()
    if not isinstance(thread, _dul.DULServiceProvider) or seconds <= 0:
        time.sleep(seconds)
        return
    transport = getattr(thread, "socket", None)
    sock = getattr(transport, "socket", None) if transport is not None else None
    if sock is None or sock.fileno() < 0:
        time.sleep(seconds)
        return
    wake_r = getattr(thread, "_nt_wake_r", None)
    if wake_r is None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        thread._nt_wake_r, thread._nt_wake_w = wake_r, wake_w  # type: ignore[attr-defined]
        if not thread.to_provider_queue.empty():
            return
    try:
        ready, _, _ = select.select([sock, wake_r], [], [], max(seconds, _IDLE_WAIT))
    except (OSError, ValueError):
        return  # socket closed: the reactor notices on its next turn
    if wake_r in ready:
        try:
            while os.read(wake_r, 4096):
                pass
        except BlockingIOError:
            pass


def _assoc_sleep(seconds: float) -> None:
    thread = threading.current_thread()
    dimse = getattr(thread, "dimse", None) if isinstance(thread, _association.Association) else None
    if dimse is None or seconds <= 0 or thread.is_requestor:
        time.sleep(seconds)
        return
    q = dimse.msg_queue
    with q.not_empty:
        if not q._qsize():
            q.not_empty.wait(max(seconds, _IDLE_WAIT))


def _recv(self: Any, nr_bytes: int) -> bytearray:
    """``AssociationSocket.recv`` with the same contract: ``nr_bytes`` bytes, or fewer if the
    connection broke, but read straight into one buffer."""
    buf = bytearray(nr_bytes)
    view = memoryview(buf)
    nr_read = 0
    try:
        while nr_read < nr_bytes:
            n = self.socket.recv_into(view[nr_read:], nr_bytes - nr_read)
            if not n:
                break
            nr_read += n
    finally:
        view.release()
    if nr_read < nr_bytes:
        del buf[nr_read:]
    return buf


def install() -> None:
    """Patch pynetdicom's ``dul`` and ``association`` modules (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        original_send_pdu = _dul.DULServiceProvider.send_pdu
        original_run = _dul.DULServiceProvider.run

        def send_pdu(self: Any, primitive: Any) -> None:
            original_send_pdu(self, primitive)
            wake_w = getattr(self, "_nt_wake_w", None)
            if wake_w is not None:
                try:
                    os.write(wake_w, b"\0")
                except (BlockingIOError, OSError):
                    pass  # pipe full (already awake) or closed (thread ended)

        def run(self: Any) -> None:
            try:
                original_run(self)
            finally:
                for name in ("_nt_wake_w", "_nt_wake_r"):
                    fd = getattr(self, name, None)
                    if fd is not None:
                        setattr(self, name, None)
                        try:
                            os.close(fd)
                        except OSError:
                            pass

        _dul.DULServiceProvider.send_pdu = send_pdu  # type: ignore[method-assign]
        _dul.DULServiceProvider.run = run  # type: ignore[method-assign]
        _transport.AssociationSocket.recv = _recv  # type: ignore[method-assign]
        _dul.time = _TimeShim(_dul_sleep)  # type: ignore[attr-defined]
        _association.time = _TimeShim(_assoc_sleep)  # type: ignore[attr-defined]
        _installed = True
