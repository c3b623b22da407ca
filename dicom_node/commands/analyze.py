"""``noduletrack analyze --prior DIR --current DIR --out DIR``: measure and track nodules of a study pair.

Loads the best CT series of each directory and runs the node's pipeline on them
(:func:`dicom_node.pipeline.run_pipeline`: :func:`inference.analysis.analyze_pair`, growth forecast,
guideline engine, DICOM SEG/SR/key images), which writes ``OUT/summary.json`` (contract in DESIGN.md,
"analyze output") next to the DICOM files. A series that cannot be analysed (no usable CT series, gaps, mixed orientation,
no lungs, ...) exits with code 2 and says why.
"""

from __future__ import annotations

import argparse
import logging
import sys
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
    p.set_defaults(func=run, skip_teardown=True)  # one-shot: see cli.entry


def _load(role: str, src: str | None) -> Any:
    """The chosen series of one study directory: (selection, volume), or None for no directory.

    Raises :class:`ValueError` subclasses (or FileNotFoundError) that say why it cannot be analysed.
    """
    from inference.series import select_series
    from inference.volume import load_selected

    if src is None:
        return None
    if not Path(src).exists():
        raise FileNotFoundError(f"--{role} {src}: no such directory")
    selection = select_series(src)
    return selection, load_selected(selection)


def run(args: argparse.Namespace, config: Config) -> int:
    from ..pipeline import forecast_service_in_background

    out = Path(args.out)
    t0 = time.perf_counter()
    # without a spare core for the warm-up thread, the growth model loads in a child process from
    # now on, while the series are read and analysed, instead of after the analysis
    service = forecast_service_in_background()
    try:
        return _load_and_analyze(args, config, out, t0, service)
    finally:
        if service is not None:
            service.close()


def _load_and_analyze(args: argparse.Namespace, config: Config, out: Path, t0: float, service: Any) -> int:
    from inference.series import SeriesSelectionError
    from inference.volume import VolumeLoadError

    from ..pipeline import warm_up_in_background

    volumes, selections = {}, {}
    for role in ("prior", "current"):
        try:
            loaded = _load(role, getattr(args, role))
        except (SeriesSelectionError, VolumeLoadError, FileNotFoundError) as exc:
            print(f"noduletrack analyze: the {role} study cannot be analysed: {exc}", file=sys.stderr)
            log_event(log, "series rejected", logging.WARNING, role=role, reason=str(exc))
            return 2
        selections[role], volumes[role] = loaded if loaded is not None else (None, None)
    prior, current = volumes["prior"], volumes["current"]
    load_s = time.perf_counter() - t0
    # with a spare core, the remaining imports and the growth model's weights load while the
    # analysis runs instead of after it
    warm_up = warm_up_in_background()
    try:
        return _analyze(args, config, prior, current, selections.get("prior"), out, t0, load_s, service)
    finally:
        if warm_up is not None:
            warm_up.join()  # a daemon thread stopped mid-import at exit can abort the interpreter


def _analyze(args: argparse.Namespace, config: Config, prior: Any, current: Any, prior_selection: Any,
             out: Path, t0: float, load_s: float, service: Any = None) -> int:
    from inference.detection import seeds_from_annotations

    from ..pipeline import StudyNotAnalysable, run_pipeline, write_json

    seeds = []
    if prior is not None:
        selection = prior_selection
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
    try:
        result = run_pipeline(prior, current, out, config, prior_annotations=seeds, progress=progress,
                              forecast_service=service)
    except StudyNotAnalysable as exc:
        print(f"noduletrack analyze: cannot analyse: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    summary = result.summary
    summary.setdefault("timings_s", {})["load"] = round(load_s, 3)
    write_json(out / "summary.json", summary)
    n = len(summary["nodules"])
    log_event(log, "analyzed", patient=phi_hash(current.patient_id), nodules=n,
              seconds=round(time.perf_counter() - t0, 2))
    print(f"{n} nodule(s); summary written to {out / 'summary.json'}")
    return 0
