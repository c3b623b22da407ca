"""``noduletrack analyze --prior DIR --current DIR --out DIR``: measure and track nodules of a study pair.

Loads the best CT series of each directory and runs the node's pipeline on them
(:func:`dicom_node.pipeline.run_pipeline`: :func:`inference.analysis.analyze_pair`, growth forecast,
guideline engine, DICOM SEG/SR/key images), which writes ``OUT/summary.json`` (contract in DESIGN.md,
"analyze output") next to the DICOM files. A series that cannot be analysed (no usable CT series, gaps, mixed orientation,
no lungs, ...) exits with code 2 and says why.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..logs import log_event, phi_hash

log = logging.getLogger("noduletrack.analyze")


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "analyze",
        parents=[parent],
        help="measure and track lung nodules between a prior and a current CT (writes OUT/summary.json)",
        description=(
            "Select the thinnest axial CT series in each directory, register the prior to the current "
            "study, find, segment and measure nodules at both time points, match them, compute volume "
            "doubling times and the guideline recommendation. Exit 2 when a series cannot be analysed."
        ),
    )
    p.add_argument("--prior", metavar="DIR", help="prior study (DICOM files, any layout); omit for a baseline")
    p.add_argument("--current", metavar="DIR", required=True, help="current study (DICOM files, any layout)")
    p.add_argument("--out", metavar="DIR", required=True, help="output directory (created)")
    p.add_argument("--annotations", metavar="PATH", nargs="*", default=[],
                   help="TID 1500 SR / SEG files annotating the prior (default: any SR/SEG found in --prior)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _write_json(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".summary-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def run(args: argparse.Namespace, config: Config) -> int:
    from inference.detection import seeds_from_annotations
    from inference.series import SeriesSelectionError, select_series
    from inference.volume import VolumeLoadError, load_selected

    out = Path(args.out)
    t0 = time.perf_counter()
    volumes = {}
    selections = {}
    for role in ("prior", "current"):
        src = getattr(args, role)
        if src is None:
            volumes[role] = None
            continue
        if not Path(src).exists():
            print(f"noduletrack analyze: --{role} {src}: no such directory", file=sys.stderr)
            return 2
        try:
            selection = select_series(src)
            volumes[role] = load_selected(selection)
            selections[role] = selection
        except (SeriesSelectionError, VolumeLoadError, FileNotFoundError) as exc:
            print(f"noduletrack analyze: the {role} study cannot be analysed: {exc}", file=sys.stderr)
            log_event(log, "series rejected", logging.WARNING, role=role, reason=str(exc))
            return 2
    prior, current = volumes["prior"], volumes["current"]
    load_s = time.perf_counter() - t0
    seeds = []
    if prior is not None:
        selection = selections["prior"]
        # every header of the prior directory was read once by the series selection: the SR/SEG
        # objects are among the files it set aside, and SCOORD references resolve through the
        # headers of its CT series (the chosen one and any other reconstruction)
        references = [h for c in (selection.chosen, *selection.others) for h in c.headers]
        if args.annotations:
            annotation_files = [Path(p) for p in args.annotations]
        else:
            annotation_files = [path for path, _ in selection.ignored_files]
        seeds = seeds_from_annotations(annotation_files, reference_slices=references)

    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=100, desc="analyze", unit="%", file=sys.stderr)

    def progress(stage: str, frac: float) -> None:
        if bar is not None:
            bar.set_postfix_str(stage)
            bar.update(int(frac * 100) - bar.n)

    out.mkdir(parents=True, exist_ok=True)
    # the node's own pipeline: analysis, growth forecast, guideline, SEG/SR/key images, summary.json
    from ..pipeline import StudyNotAnalysable, run_pipeline

    try:
        result = run_pipeline(prior, current, out, config, prior_annotations=seeds, progress=progress)
    except StudyNotAnalysable as exc:
        print(f"noduletrack analyze: cannot analyse: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    summary = result.summary
    summary.setdefault("timings_s", {})["load"] = round(load_s, 3)
    _write_json(out / "summary.json", summary)
    n = len(summary["nodules"])
    log_event(log, "analyzed", patient=phi_hash(current.patient_id), nodules=n,
              seconds=round(time.perf_counter() - t0, 2))
    print(f"{n} nodule(s); summary written to {out / 'summary.json'}")
    return 0
