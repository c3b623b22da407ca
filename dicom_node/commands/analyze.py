"""``noduletrack analyze --prior DIR --current DIR --out DIR``: measure and track nodules of a study pair.

Loads the best CT series of each directory, runs :func:`inference.analysis.analyze_pair`, applies the
guideline engine when it is installed, and writes ``OUT/summary.json`` (contract in DESIGN.md,
"analyze output"). A series that cannot be analysed (no usable CT series, gaps, mixed orientation,
no lungs, ...) exits with code 2 and says why.
"""

from __future__ import annotations

import argparse
import datetime as dt
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


def _r(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(float(v), nd)


def nodule_summary(t: Any, transform: Any) -> dict[str, Any]:
    """One nodule of summary.json (the contract fields first, then details)."""
    cur, pri = t.current, t.prior
    if cur is not None:
        center = cur.center_mm
    elif pri is not None and transform is not None:
        center = tuple(transform.to_current(pri.center_mm))
    else:
        center = pri.center_mm if pri is not None else None
    f = t.forecast
    out: dict[str, Any] = {
        "tracking_uid": t.tracking_uid,
        "center_mm": None if center is None else [round(float(v), 2) for v in center],
        "volume_mm3": _r(cur.volume_mm3, 1) if cur else None,
        "prior_volume_mm3": _r(pri.volume_mm3, 1) if pri else None,
        "mean_diameter_mm": _r(cur.mean_diameter_mm) if cur else None,
        "consistency": (cur or pri).consistency,
        "vdt_days": _r(t.vdt_days, 1),
        "predicted": None if f is None else {
            "horizon_days": int(f.horizon_days), "volume_mm3": _r(f.volume_mm3, 1),
            "mean_diameter_mm": _r(f.mean_diameter_mm),
        },
        "tracking_id": t.tracking_id,
        "status": t.status,
        "match_confidence": _r(t.match_confidence, 3),
        "volume_change_pct": _r(t.volume_change_pct, 1),
        "interval_days": t.interval_days,
        "long_axis_mm": _r(cur.long_axis_mm) if cur else None,
        "short_axis_mm": _r(cur.short_axis_mm) if cur else None,
        "solid_component_mm": _r(cur.solid_component_mm) if cur else None,
        "mean_hu": _r(cur.mean_hu, 1) if cur else None,
        "juxtapleural": bool(cur.juxtapleural) if cur else None,
        "prior_mean_diameter_mm": _r(pri.mean_diameter_mm) if pri else None,
        "prior_center_mm": [round(float(v), 2) for v in pri.center_mm] if pri else None,
    }
    return out


def _forecast(nodules: list[Any], current: Any) -> str | None:
    """Fill ``forecast`` with the growth model when it is installed; returns a note when it is not."""
    try:
        from inference.growth import forecast_nodules  # type: ignore[attr-defined]
    except ImportError:
        return "growth model not available: no forecast"
    try:
        forecast_nodules(nodules, current)
    except Exception as exc:  # the forecast informs; its failure must not lose the measurements
        log_event(log, "forecast failed", logging.WARNING, error=str(exc))
        return f"growth forecast failed: {exc}"
    return None


def _recommendation(nodules: list[Any], study_date: dt.date | None, config: Config) -> tuple[dict | None, str | None]:
    try:
        from reports.guidelines import NoduleInput, StudyContext, recommend
    except ImportError:
        return None, "guideline engine not available"
    date = study_date or dt.date.today()
    items = [NoduleInput.from_tracked(t, date) for t in nodules if t.current is not None]
    g = getattr(config, "guideline", None)
    ctx = StudyContext(
        study_date=date,
        screening=bool(getattr(g, "screening_program", False)),
        risk=str(getattr(g, "risk", "low")),
        age_years=float(getattr(g, "default_age_years", 60)),
    )
    try:
        rec = recommend(items, ctx)
    except Exception as exc:
        log_event(log, "guideline failed", logging.WARNING, error=str(exc))
        return None, f"guideline engine failed: {exc}"
    return rec.to_dict(), None


def _write_json(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".summary-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def run(args: argparse.Namespace, config: Config) -> int:
    from inference.analysis import AnalysisError, analyze_pair
    from inference.detection import seeds_from_annotations
    from inference.series import SeriesSelectionError
    from inference.volume import VolumeLoadError, load_study

    out = Path(args.out)
    t0 = time.perf_counter()
    volumes = {}
    for role in ("prior", "current"):
        src = getattr(args, role)
        if src is None:
            volumes[role] = None
            continue
        if not Path(src).exists():
            print(f"noduletrack analyze: --{role} {src}: no such directory", file=sys.stderr)
            return 2
        try:
            volumes[role] = load_study(src)
        except (SeriesSelectionError, VolumeLoadError, FileNotFoundError) as exc:
            print(f"noduletrack analyze: the {role} study cannot be analysed: {exc}", file=sys.stderr)
            log_event(log, "series rejected", logging.WARNING, role=role, reason=str(exc))
            return 2
    prior, current = volumes["prior"], volumes["current"]
    load_s = time.perf_counter() - t0
    annotation_files = [Path(p) for p in args.annotations]
    if args.prior and not args.annotations:
        annotation_files = [p for p in Path(args.prior).rglob("*") if p.is_file()]
    seeds = seeds_from_annotations(annotation_files) if prior is not None else []

    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=100, desc="analyze", unit="%", file=sys.stderr)

    def progress(stage: str, frac: float) -> None:
        if bar is not None:
            bar.set_postfix_str(stage)
            bar.update(int(frac * 100) - bar.n)

    try:
        result = analyze_pair(prior, current, prior_annotations=seeds, progress=progress)
    except AnalysisError as exc:
        print(f"noduletrack analyze: cannot analyse: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    result.timings["load"] = load_s
    notes = list(result.notes)
    t1 = time.perf_counter()
    note = _forecast(result.nodules, current)
    if note:
        notes.append(note)
    result.timings["forecast"] = time.perf_counter() - t1
    present = [t for t in result.nodules if t.current is not None]
    rec, note = _recommendation(present, current.study_date, config)
    if note:
        notes.append(note)

    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "study_instance_uid": current.study_instance_uid,
        "series_instance_uid": current.series_instance_uid,
        "prior_study_instance_uid": prior.study_instance_uid if prior else None,
        "prior_series_instance_uid": prior.series_instance_uid if prior else None,
        "interval_days": result.interval_days,
        "nodules": [nodule_summary(t, result.transform) for t in result.nodules],
        "recommendation": rec,
        "outputs": ["summary.json"],
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "notes": notes,
    }
    _write_json(out / "summary.json", summary)
    log_event(log, "analyzed", patient=phi_hash(current.patient_id), nodules=len(result.nodules),
              seconds=round(time.perf_counter() - t0, 2))
    print(f"{len(result.nodules)} nodule(s); summary written to {out / 'summary.json'}")
    return 0
