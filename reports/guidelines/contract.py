"""The ``noduletrack guideline`` JSON-lines contract (CLINICAL.md), without any I/O.

One input line ``{"id": ..., "guideline": "fleischner2017"|"lungrads2022"|"vdt", "input": {...}}``
gives one output line with the same ``id``, the guideline and the result fields, or
``"error": "<what is wrong>"``. Output is byte-for-byte reproducible: keys in a fixed order
(``id`` first, then sorted), numbers rounded half-up (0.1 day, 0.1 %, 0.1 mm), no NaN/Infinity, UTF-8.
"""

from __future__ import annotations

import json
import math
from typing import Any

from . import GUIDELINES, assess
from .common import GuidelineInputError
from .finding import Finding

TOP_LEVEL_KEYS = ("id", "guideline", "input")


def answer_line(line: str | bytes, line_number: int | None = None) -> tuple[dict[str, Any], bool]:
    """Answer one input line: ``(output object, ok)``; ``ok`` is False when the line had an error."""
    ident: Any = None
    where = f"line {line_number}: " if line_number is not None else ""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        # NaN/Infinity parse (so the line's id can still be echoed) and are rejected by the range checks.
        request = json.loads(text)
        if not isinstance(request, dict):
            raise GuidelineInputError(f"a line must be a JSON object, got {type(request).__name__}")
        ident = request.get("id")
        if not _valid_id(ident):
            ident = None
            raise GuidelineInputError("id must be a string, a finite number or null")
        unknown = sorted(set(request) - set(TOP_LEVEL_KEYS))
        if unknown:
            raise GuidelineInputError(f"unknown field(s) {', '.join(map(repr, unknown))} (expected id, guideline, input)")
        if "id" not in request:
            raise GuidelineInputError("missing id")
        guideline = request.get("guideline")
        if guideline not in GUIDELINES:
            raise GuidelineInputError(f"unknown guideline {guideline!r} (expected {', '.join(GUIDELINES)})")
        if "input" not in request:
            raise GuidelineInputError("missing input object")
        result = assess(guideline, Finding.from_dict(request["input"]))
        return _ordered({"id": ident, "guideline": guideline, **result.to_dict()}), True
    except UnicodeDecodeError as exc:
        return _error(ident, f"{where}not valid UTF-8 ({exc.reason} at byte {exc.start})"), False
    except json.JSONDecodeError as exc:
        return _error(ident, f"{where}not valid JSON: {exc.msg} at column {exc.colno}"), False
    except RecursionError:
        return _error(ident, f"{where}JSON nested too deeply"), False
    except GuidelineInputError as exc:
        return _error(ident, f"{where}{exc}"), False


def dumps(obj: dict[str, Any]) -> str:
    """One output line (no trailing newline), deterministic."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def _valid_id(ident: Any) -> bool:
    if ident is None or isinstance(ident, str):
        return True
    if isinstance(ident, bool) or not isinstance(ident, (int, float)):
        return False
    return math.isfinite(ident)


def _error(ident: Any, message: str) -> dict[str, Any]:
    return {"id": ident, "error": message}


def _ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """``id`` first, then the other keys sorted: a fixed order whatever the code path."""
    return {"id": obj["id"], **{k: obj[k] for k in sorted(obj) if k != "id"}}
