"""``noduletrack guideline``: apply Fleischner 2017, Lung-RADS v2022 or the VDT rules to JSON lines.

Reads one JSON object per line (stdin, or ``--input FILE``) and writes one JSON object per line to
stdout, in the same order, with the same ``id`` (contract: CLINICAL.md). Blank lines are skipped.
A bad line is answered in-band with ``"error"``; the other lines are still answered.

Exit codes: 0 every line answered without error; 2 at least one line had an input error (all lines
were still answered); 1 the input could not be read, or an internal error (also answered in-band).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import IO, Any, Iterable

from dicom_node.config import Config
from dicom_node.logs import log_event
from reports.guidelines.contract import answer_line, dumps

log = logging.getLogger("noduletrack.guideline")

EXAMPLE = (
    '{"id": "n1", "guideline": "fleischner2017", "input": {"consistency": "solid", '
    '"mean_diameter_mm": 5.5, "multiplicity": "single", "risk": "low"}}'
)


def register(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "guideline",
        parents=[parent],
        help="apply Fleischner 2017 / Lung-RADS v2022 / VDT rules to JSON lines",
        description=(
            "Apply Fleischner 2017, Lung-RADS v2022 or the volume-doubling-time rules to findings given as "
            "JSON lines, one answer line per input line (same id, fields as in CLINICAL.md). A bad line gets an "
            '"error" field and the others are still answered.'
        ),
        epilog=(
            f"Example input line:\n  {EXAMPLE}\n\n"
            "Exit codes: 0 all lines answered without error; 2 some line had an error (answered in-band); "
            "1 the input could not be read or an internal error occurred."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", metavar="FILE", help="read JSON lines from FILE instead of standard input")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    try:
        if args.input:
            with Path(args.input).open("rb") as stream:
                return _answer_all(stream, sys.stdout.buffer)
        return _answer_all(sys.stdin.buffer, sys.stdout.buffer)
    except OSError as exc:
        print(f"noduletrack guideline: cannot read input: {exc}", file=sys.stderr)
        return 1


def _answer_all(lines: Iterable[bytes], out: IO[bytes]) -> int:
    answered = errors = internal = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj, ok = answer_line(raw, number)
        except Exception as exc:  # a bug, not bad input: say so in-band, keep answering, exit 1
            log.exception("guideline.internal_error", extra={"fields": {"line": number}})
            obj, ok = {"id": None, "error": f"line {number}: internal error ({type(exc).__name__})"}, False
            internal += 1
        # Bytes in explicit UTF-8 whatever the locale, so the output is the same everywhere.
        out.write((dumps(obj) + "\n").encode("utf-8"))
        out.flush()  # one answer per line as it comes: usable interactively and in pipes
        answered += 1
        errors += not ok
    log_event(log, "guideline.done", lines=answered, errors=errors, internal_errors=internal)
    if internal:
        return 1
    return 0 if errors == 0 else 2
