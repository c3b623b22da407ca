"""Structured logging: one line per event, ``event key=value ...`` or JSON, PHI hashed.

Use :func:`log_event` rather than formatting messages by hand, so that every line can be parsed
by a log shipper, and :func:`phi_hash` for anything that identifies a patient.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})))


def phi_hash(value: object) -> str:
    """Short, stable, non-reversible token for a patient identifier (never log the raw value)."""
    if value is None or value == "":
        return "-"
    return "h" + hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:12]


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` (rendered by the configured formatter)."""
    logger.log(level, event, extra={"fields": fields})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(getattr(record, "fields", {}) or {})
    for key, value in vars(record).items():
        if key not in _RESERVED and key not in ("fields", "message", "asctime"):
            fields.setdefault(key, value)
    return fields


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    """``2026-11-22T01:02:03Z INFO noduletrack.scp stored sop=... bytes=...``"""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z"
        parts = [ts, record.levelname, record.name, _quote(record.getMessage())]
        parts += [f"{k}={_quote(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update({k: v if isinstance(v, (int, float, bool, type(None))) else str(v) for k, v in _fields(record).items()})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, sort_keys=False)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once (idempotent) to write structured lines to stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_noduletrack", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler._noduletrack = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # pynetdicom logs every PDU and highdicom every module it adds at INFO; our own events say what matters.
    for chatty in ("pynetdicom", "highdicom"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
