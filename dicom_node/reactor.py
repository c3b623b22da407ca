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
affected; everything else falls through to :func:`time.sleep`.

Last, a C-STORE's way through pynetdicom's DUL and DIMSE layers is shortened where the result is
the same (pynetdicom builds and reads command sets through pydicom ``Dataset`` objects, validating
every value, copies each PDU several times and hands every PDU and response between threads);
each shortcut was profiled first, and anything it does not recognise takes pynetdicom's path:

* a C-STORE response is encoded by :func:`encode_c_store_rsp` (same bytes; pynetdicom's path cost
  1.9 ms of CPU per response under load, encoding the command set twice for its group length);
  responses with an error comment or offending element, or with an ``EVT_DIMSE_SENT`` handler
  bound, take pynetdicom's path;
* a C-STORE response is written to the socket by the association thread itself when the DUL
  thread has nothing queued (same PDU, same order: DT-1 and every socket send share one lock)
  instead of being handed to the DUL thread through its queue and wake-up pipe; each such handoff
  cost ~0.2 ms median and ~1 ms mean under load. Not with TLS (an SSL object must not read in one
  thread and write in another) nor with ``EVT_PDU_SENT``/``EVT_FSM_TRANSITION`` handlers bound;
* a P-DATA-TF PDU received in the data transfer state goes from the socket to the DIMSE provider
  in the DUL thread without its event-queue round trip, PDU object and four of the six copies
  pynetdicom makes of its data (left: the read and the data set's buffer) — exactly what the
  state machine's DT-2 action does;
  any other PDU, state, queued event, bound ``EVT_DATA_RECV``/``EVT_PDU_RECV``/``EVT_FSM_TRANSITION``
  handler or malformed item list takes pynetdicom's path;
* a C-STORE request's command set is read by :func:`decode_c_store_rq` (~1 ms per instance less
  in the DUL thread under load); anything it does not recognise exactly (another element, a move
  originator, a UID that is not plain digits and dots, an unusual length) takes pynetdicom's path.

Idempotent.
"""

from __future__ import annotations

import logging
import os
import re
import select
import ssl
import struct
import threading
import time
import types
from typing import Any

from pynetdicom import association as _association
from pynetdicom import dimse as _dimse
from pynetdicom import dul as _dul
from pynetdicom import evt as _evt
from pynetdicom import fsm as _fsm
from pynetdicom.pdu import P_DATA_TF as _P_DATA_TF
from pynetdicom import transport as _transport
from pynetdicom import dimse_messages as _dimse_messages
from pynetdicom.dimse_primitives import C_STORE as _C_STORE
from pynetdicom.pdu_primitives import P_DATA as _P_DATA

_log = logging.getLogger("pynetdicom.dul")  # where pynetdicom logs the same conditions

_installed = False
_lock = threading.Lock()
_original_message_to_primitive: Any = None  # pynetdicom's, once install() replaced it
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


def _implicit_element(tag: int, value: bytes) -> bytes:
    """One implicit-VR little-endian element of the command group (0000,xxxx)."""
    return struct.pack("<HHI", 0x0000, tag, len(value)) + value


def _uid_value(uid: Any) -> bytes:
    raw = str(uid).encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def encode_c_store_rsp(primitive: Any) -> bytes | None:
    """The command set of a C-STORE response, encoded as pynetdicom would (implicit VR little
    endian, PS3.7 9.3.1.2), or ``None`` when the response carries optional elements that this
    fast path does not write (Error Comment, Offending Element) or values it cannot encode."""
    if type(primitive) is not _C_STORE or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    status, responded_to = primitive.Status, primitive.MessageIDBeingRespondedTo
    if not isinstance(status, int) or not isinstance(responded_to, int):
        return None
    if not (0 <= status <= 0xFFFF and 0 <= responded_to <= 0xFFFF):
        return None
    try:
        parts = []
        if primitive.AffectedSOPClassUID is not None:
            parts.append(_implicit_element(0x0002, _uid_value(primitive.AffectedSOPClassUID)))
        parts.append(_implicit_element(0x0100, struct.pack("<H", 0x8001)))  # Command Field: C-STORE-RSP
        parts.append(_implicit_element(0x0120, struct.pack("<H", responded_to)))
        parts.append(_implicit_element(0x0800, struct.pack("<H", 0x0101)))  # no data set
        parts.append(_implicit_element(0x0900, struct.pack("<H", status)))
        if primitive.AffectedSOPInstanceUID is not None:
            parts.append(_implicit_element(0x1000, _uid_value(primitive.AffectedSOPInstanceUID)))
    except (UnicodeError, struct.error):
        return None
    body = b"".join(parts)
    return _implicit_element(0x0000, struct.pack("<I", len(body))) + body


def _send_lock(transport: Any) -> Any:
    """The lock that orders every send on one association's socket (created on first use)."""
    lock = transport.__dict__.get("_nt_send_lock")
    if lock is None:
        lock = transport.__dict__.setdefault("_nt_send_lock", threading.RLock())  # atomic
    return lock


def _send_directly(dul: Any, pdata: Any) -> bool:
    """Send the P-DATA ``pdata`` from the calling thread if that keeps pynetdicom's behaviour
    (data transfer state, nothing waiting in the DUL's queue, no TLS, no handlers that would see
    the DUL's send); ``False`` when the DUL thread must send it."""
    transport = dul.socket
    sock = getattr(transport, "socket", None)
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return False
    assoc = dul.assoc
    if assoc.get_handlers(_evt.EVT_PDU_SENT) or assoc.get_handlers(_evt.EVT_FSM_TRANSITION):
        return False
    with _send_lock(transport):
        if dul.state_machine.current_state != "Sta6" or dul.to_provider_queue.qsize():
            return False
        transport.send(_P_DATA_TF(pdata).encode())  # a failure queues Evt17 as the DUL's send does
    return True


def split_pdv_items(body: bytearray) -> list[tuple[int, memoryview]] | None:
    """The (context ID, message fragment) items of a P-DATA-TF PDU's body as views into it, or
    ``None`` when the item list is malformed (pynetdicom's decoder then reports it)."""
    view = memoryview(body)
    items = []
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 6:
            return None
        (length,) = struct.unpack_from(">I", body, offset)
        if length < 2 or length > end - offset - 4:
            return None
        items.append((body[offset + 4], view[offset + 5:offset + 4 + length]))
        offset += 4 + length
    return items or None


def _read_pdu_data(self: Any, original: Any) -> None:
    """``DULServiceProvider._read_pdu_data`` with P-DATA-TF handed straight to DIMSE (DT-2)."""
    assoc = self.assoc
    if (self.state_machine.current_state != "Sta6" or not self.event_queue.empty()
            or assoc.get_handlers(_evt.EVT_DATA_RECV) or assoc.get_handlers(_evt.EVT_PDU_RECV)
            or assoc.get_handlers(_evt.EVT_FSM_TRANSITION)):
        original(self)
        return
    transport = self.socket
    try:
        header = transport.recv(6)
    except (OSError, TimeoutError) as exc:
        _log.error("Connection closed before the entire PDU was received")
        _log.exception(exc)
        self.event_queue.put("Evt17")
        return
    if len(header) < 6:
        self.event_queue.put("Evt17")
        return
    pdu_type, _, pdu_length = struct.unpack(">BBL", header)
    if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
        _log.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
        self.event_queue.put("Evt19")
        return
    try:
        body = transport.recv(pdu_length)
    except (OSError, TimeoutError) as exc:
        _log.error("Connection closed before the entire PDU was received")
        _log.exception(exc)
        self.event_queue.put("Evt17")
        return
    if len(body) != pdu_length:
        _log.error(f"The received PDU is shorter than expected ({6 + len(body)} of {6 + pdu_length} bytes received)")
        self.event_queue.put("Evt17")
        return
    items = split_pdv_items(body) if pdu_type == 0x04 else None
    if items is not None:
        primitive = _P_DATA()
        primitive.presentation_data_value_list.extend(items)
        try:
            assoc.dimse.receive_primitive(primitive)  # DT-2: Sta6 -> Sta6
        except Exception:
            _log.error("State Machine received an exception attempting to perform the action 'DT-2' "
                       "while in state 'Sta6'")
            self.kill_dul()
            raise
        return
    bytestream = bytearray(header)
    bytestream += body
    try:
        pdu, event = self._decode_pdu(bytestream)
        self.event_queue.put(event)
    except Exception as exc:
        _log.error("Unable to decode the received PDU data")
        _log.exception(exc)
        self.event_queue.put("Evt19")
        return
    self._recv_pdu.put(pdu)


# C-STORE-RQ command elements (0000,eeee) read by decode_c_store_rq; any other element -> pynetdicom.
_RQ_GROUP_LENGTH, _RQ_SOP_CLASS, _RQ_COMMAND_FIELD, _RQ_MESSAGE_ID = 0x0000, 0x0002, 0x0100, 0x0110
_RQ_PRIORITY, _RQ_DATA_SET_TYPE, _RQ_SOP_INSTANCE = 0x0700, 0x0800, 0x1000
_RQ_US = frozenset({_RQ_COMMAND_FIELD, _RQ_MESSAGE_ID, _RQ_PRIORITY, _RQ_DATA_SET_TYPE})
_PLAIN_UID = re.compile(rb"[0-9](?:[0-9.]{0,63})")


def decode_c_store_rq(command: bytes) -> dict[str, Any] | None:
    """The parameters of a C-STORE request from its encoded command set (implicit VR little
    endian), or ``None`` when it holds anything but the plain required elements with values that
    pynetdicom would accept unchanged (UIDs of digits and dots, priority 0-2, a data set)."""
    values: dict[int, Any] = {}
    offset, end = 0, len(command)
    while offset < end:
        if end - offset < 8:
            return None
        group, element, length = struct.unpack_from("<HHI", command, offset)
        offset += 8
        if group != 0x0000 or element in values or length > end - offset:
            return None
        value = command[offset:offset + length]
        offset += length
        if element == _RQ_GROUP_LENGTH:
            if length != 4:
                return None
            values[element] = None
        elif element in _RQ_US:
            if length != 2:
                return None
            values[element] = struct.unpack("<H", value)[0]
        elif element in (_RQ_SOP_CLASS, _RQ_SOP_INSTANCE):
            uid = bytes(value).rstrip(b"\x00 ")
            if _PLAIN_UID.fullmatch(uid) is None:
                return None
            values[element] = uid.decode("ascii")
        else:
            return None
    if (values.get(_RQ_COMMAND_FIELD) != 0x0001 or values.get(_RQ_PRIORITY) not in (0, 1, 2)
            or values.get(_RQ_DATA_SET_TYPE, 0x0101) == 0x0101
            or not {_RQ_SOP_CLASS, _RQ_SOP_INSTANCE, _RQ_MESSAGE_ID} <= values.keys()):
        return None
    return {
        "MessageID": values[_RQ_MESSAGE_ID],
        "AffectedSOPClassUID": values[_RQ_SOP_CLASS],
        "AffectedSOPInstanceUID": values[_RQ_SOP_INSTANCE],
        "Priority": values[_RQ_PRIORITY],
    }


# The shortcuts above replace pynetdicom internals (the DUL loop, the state machine's DT actions,
# DIMSE command decoding) and were checked against this release series only. On another, the node
# runs on pynetdicom's own paths: slower, same behaviour.
TESTED_PYNETDICOM_SERIES = "3.0."


def fast_paths_supported(version: str) -> bool:
    """Whether :func:`install` patches a pynetdicom of this ``version``."""
    return version.startswith(TESTED_PYNETDICOM_SERIES)


def install() -> None:
    """Patch pynetdicom's ``dul`` and ``association`` modules (once per process).

    Does nothing (and says so once in the log) on a pynetdicom release it was not checked against.
    """
    global _installed
    with _lock:
        if _installed:
            return
        import pynetdicom

        if not fast_paths_supported(pynetdicom.__version__):
            logging.getLogger("noduletrack.scp").warning(
                "pynetdicom %s is not the %sx series the receive shortcuts were checked against: "
                "using pynetdicom's own paths (slower ingest)", pynetdicom.__version__, TESTED_PYNETDICOM_SERIES)
            _installed = True
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

        original_send_msg = _dimse.DIMSEServiceProvider.send_msg

        def send_msg(self: Any, primitive: Any, context_id: int) -> None:
            command = encode_c_store_rsp(primitive)
            max_pdu = self.maximum_pdu_size
            if (command is None or (max_pdu and len(command) + 6 > max_pdu)
                    or self.assoc.get_handlers(_evt.EVT_DIMSE_SENT)):
                original_send_msg(self, primitive, context_id)
                return
            pdata = _P_DATA()
            pdata.presentation_data_value_list.append((context_id, b"\x03" + command))  # last command fragment
            if not _send_directly(self.dul, pdata):
                self.dul.send_pdu(pdata)

        _dimse.DIMSEServiceProvider.send_msg = send_msg  # type: ignore[method-assign]

        original_socket_send = _transport.AssociationSocket.send

        def socket_send(self: Any, bytestream: bytes) -> None:
            with _send_lock(self):
                original_socket_send(self, bytestream)

        _transport.AssociationSocket.send = socket_send  # type: ignore[method-assign]
        description, original_dt_1, next_state = _fsm.ACTIONS["DT-1"]

        def dt_1(dul: Any) -> str:
            # Dequeue and send as one step, so a direct send cannot overtake a queued P-DATA.
            if dul.socket is None:
                return str(original_dt_1(dul))
            with _send_lock(dul.socket):
                return str(original_dt_1(dul))

        _fsm.ACTIONS["DT-1"] = (description, dt_1, next_state)

        global _original_message_to_primitive
        original_message_to_primitive = _dimse_messages.DIMSEMessage.message_to_primitive
        _original_message_to_primitive = original_message_to_primitive

        def message_to_primitive(self: Any) -> Any:
            if type(self) is _dimse_messages.C_STORE_RQ and self._data_set_path is None:
                params = decode_c_store_rq(self.encoded_command_set.getvalue())
                if params is not None:
                    primitive = _C_STORE()
                    for name, value in params.items():
                        setattr(primitive, name, value)  # pynetdicom's setters (and checks)
                    primitive.DataSet = self.data_set
                    primitive._context_id = self.context_id
                    primitive._dataset_path = None
                    primitive._dataset_file = self._data_set_file
                    return primitive
            return original_message_to_primitive(self)

        _dimse_messages.DIMSEMessage.message_to_primitive = message_to_primitive  # type: ignore[method-assign]
        original_read_pdu_data = _dul.DULServiceProvider._read_pdu_data

        def read_pdu_data(self: Any) -> None:
            _read_pdu_data(self, original_read_pdu_data)

        _dul.DULServiceProvider._read_pdu_data = read_pdu_data  # type: ignore[method-assign]
        _dul.DULServiceProvider.send_pdu = send_pdu  # type: ignore[method-assign]
        _dul.DULServiceProvider.run = run  # type: ignore[method-assign]
        _transport.AssociationSocket.recv = _recv  # type: ignore[method-assign]
        _dul.time = _TimeShim(_dul_sleep)  # type: ignore[attr-defined]
        _association.time = _TimeShim(_assoc_sleep)  # type: ignore[attr-defined]
        _installed = True
