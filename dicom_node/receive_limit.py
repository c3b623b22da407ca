"""Refuse oversized instances *while* they arrive, not after they are in memory.

pynetdicom 3 gathers a C-STORE data set in a ``BytesIO`` until the last P-DATA fragment, and only
then calls our handler. An instance of several gigabytes (a mistaken enhanced multi-frame, a hostile
sender) would therefore be held whole in memory before ``node.max_instance_mb`` could refuse it.

:func:`install` wraps ``DIMSEMessage.decode_msg`` (called once per P-DATA primitive): when a C-STORE
data set grows past the limit of the receiving AE, its buffer is swapped for a
:class:`DiscardedDataSet` that only counts further bytes. The association carries on; once the last
fragment arrives the handler sees the discarded data set and answers with a failure status
(``0xA700`` Out of Resources) and a log line, so the sender gets a proper DIMSE status and memory
stays bounded by the limit. The limit is read per association from ``ae.nt_max_dataset_bytes``
(set by :class:`~dicom_node.scp.StorageSCP`); AEs without it are untouched. Idempotent.
"""

from __future__ import annotations

import threading
from io import BytesIO
from typing import Any

from pynetdicom import dimse_messages as _dimse_messages

_installed = False
_lock = threading.Lock()

MAX_DATASET_ATTRIBUTE = "nt_max_dataset_bytes"


class DiscardedDataSet(BytesIO):
    """Stands in for a data set that exceeded the limit: counts the bytes, keeps none of them."""

    def __init__(self, received_bytes: int, limit_bytes: int) -> None:
        super().__init__()
        self.received_bytes = received_bytes
        self.limit_bytes = limit_bytes

    def write(self, data: Any) -> int:  # type: ignore[override]
        n = len(data)
        self.received_bytes += n
        return n


def install() -> None:
    """Patch pynetdicom's DIMSE message decoding (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        original = _dimse_messages.DIMSEMessage.decode_msg

        def decode_msg(self: Any, primitive: Any, assoc: Any = None) -> bool:
            done = original(self, primitive, assoc)
            limit = getattr(getattr(assoc, "ae", None), MAX_DATASET_ATTRIBUTE, None)
            buffer = getattr(self, "data_set", None)
            if (limit and isinstance(self, _dimse_messages.C_STORE_RQ) and isinstance(buffer, BytesIO)
                    and not isinstance(buffer, DiscardedDataSet)):
                size = buffer.tell()  # written sequentially: the position is the size
                if size > limit:
                    self.data_set = DiscardedDataSet(size, limit)
                    buffer.close()
            return bool(done)

        _dimse_messages.DIMSEMessage.decode_msg = decode_msg  # type: ignore[method-assign]
        _installed = True
