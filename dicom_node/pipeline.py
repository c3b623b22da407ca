"""The analysis of one study, start to finish: the only place that knows the order of the steps.

Two layers:

* :func:`run_pipeline` works on volumes and a directory: measure and track (``inference.analysis``),
  recommend without a forecast to learn the follow-up date, forecast every nodule at that date
  (``inference.growth``), recommend again with the forecast (it adds "predicted to reach ..."),
  write SEG + TID 1500 SR + key images (``reports``) and ``summary.json``. ``noduletrack analyze``
  calls it directly.
* :func:`analyze_study` is the worker's job handler: it gathers the study's files and its prior from
  the database, the nodules already tracked for the patient and the prior's annotations, runs
  :func:`run_pipeline`, records observations, predictions, the recommendation and the analysis, and
  queues the DICOM outputs for the PACS in the outbox (same transaction).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import Config
from .logs import log_event, phi_hash
from .errors import PermanentJobError

log = logging.getLogger("noduletrack.pipeline")

# When the guideline proposes no follow-up date (no routine follow-up, or work-up without a fixed
# interval), the forecast is still made at one year: the time a radiologist most often asks about.
DEFAULT_HORIZON_DAYS = 365

ProgressFn = Callable[[str, float], None]


class StudyNotAnalysable(PermanentJobError, ValueError):
    """The study cannot be analysed (no usable CT series, no lungs, ...); the message says why."""


@dataclass
class PipelineResult:
    """Everything one run produced."""

    analysis: Any  # inference.analysis.StudyAnalysis
    recommendation: Any | None  # reports.guidelines.StudyRecommendation
    summary: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)  # DICOM files written (SEG, SR, key images)
    output_objects: list[dict[str, str]] = field(default_factory=list)  # identifiers of each output
    model_version: str = ""


# ------------------------------------------------------------------------------- growth model


_FORECASTER: Any = None
_FORECASTER_LOCK = threading.Lock()


def growth_forecaster() -> Any:
    """The growth model, loaded once per process (weights are read from the package)."""
    global _FORECASTER
    with _FORECASTER_LOCK:  # the worker's warm-up thread and a first job may ask at once
        if _FORECASTER is None:
            import torch

            from inference.growth.forecast import GrowthForecaster

            _FORECASTER = GrowthForecaster(device="cuda" if torch.cuda.is_available() else "cpu")
    return _FORECASTER


def warm_up() -> float:
    """Import the analysis stack and load the growth model now, not inside the first study.

    A fresh worker otherwise pays several seconds (torch, MONAI, SimpleITK, highdicom imports and
    the weights) on the first follow-up it analyses. Returns the seconds spent; a model that cannot
    be loaded is left for the job to report (it records "growth model unavailable").
    """
    started = time.perf_counter()
    import highdicom  # noqa: F401
    import inference.analysis  # noqa: F401
    import reports.keyimages  # noqa: F401
    import reports.sr  # noqa: F401

    try:
        growth_forecaster()
    except (OSError, ImportError, RuntimeError) as exc:
        log_event(log, "growth model not preloaded", logging.WARNING, error=str(exc))
    return time.perf_counter() - started


def warm_up_in_background() -> threading.Thread | None:
    """Start :func:`warm_up` on a daemon thread and return it (join it before the process exits),
    or return None when the analysis will keep every core busy.

    ``noduletrack analyze`` calls this once the series are loaded. With a core to spare, the imports
    and the weights (~2 s of mostly GIL-holding Python) overlap the analysis instead of following it.
    Without one they only compete with it: on 2 cores the lung-mask stage went from 1.3 s to
    3.2-4.8 s while the forecast saved 2.2 s, and peak memory rose by ~0.3 GB; so they are then
    loaded when first needed.
    """
    if not _spare_core():
        return None

    def run() -> None:
        try:
            warm_up()
        except Exception:  # noqa: BLE001 - the steps that need these import them again and report
            pass

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread


def _spare_core() -> bool:
    """Is a core left beside the analysis's threads (``inference.workers.ANALYSIS_WORKERS``)?"""
    from inference.workers import ANALYSIS_WORKERS

    return (os.cpu_count() or 1) > ANALYSIS_WORKERS


def forecast_service_in_background() -> Any:
    """For a one-shot command on a machine without a spare core (where :func:`warm_up_in_background`
    does nothing): an :class:`inference.growth.service.ForecastService`, a child process that loads
    torch, MONAI and the weights while this process reads the series and analyses them, and
    forecasts there (same code, same numbers). None with a spare core: the warm-up thread does it
    then. Pass it to :func:`run_pipeline` and close it at the end.
    """
    if _spare_core():
        return None
    from inference.growth.service import ForecastService

    try:
        return ForecastService()
    except OSError as exc:  # no child process: forecast in-process as before
        log_event(log, "forecast process not started", logging.WARNING, error=str(exc))
        return None


def _forecast(analysis: Any, prior: Any, current: Any, horizon_days: int, notes: list[str],
              service: Any = None) -> str:
    """Fill each present nodule's ``forecast``; returns the model version ('' if unavailable).

    ``service``: a :class:`inference.growth.service.ForecastService` to ask first; when it cannot
    answer, the model is loaded here (and a missing model reported) as without it.
    """
    present = [t for t in analysis.nodules if t.current is not None]
    if not present:
        return ""  # nothing to forecast: do not import torch/MONAI (several seconds) for nothing
    # the prior time point of each nodule, as (volume, nodule, days before), when it has one
    days = analysis.interval_days
    earlier = [(prior, t.prior, float(days)) if prior is not None and t.prior is not None and days and days > 0
               else None for t in present]
    nodules = [t.current for t in present]
    answer = service.forecast(current, nodules, horizon_days, earlier) if service is not None else None
    if answer is not None:
        model_version, forecasts = answer
        log_event(log, "forecast by the model's process", nodules=len(present),
                  waited_for_model_s=round(service.waited_s, 2), process_peak_gb=round(service.child_peak_gb, 2))
    else:
        if service is not None:
            log_event(log, "forecast process did not answer; forecasting in-process", logging.WARNING)
        from inference.growth.forecast import PriorPatch

        try:
            model = growth_forecaster()
        except (OSError, ImportError, RuntimeError) as exc:  # missing/corrupt weights: report, don't guess
            notes.append(f"growth model unavailable, no forecast: {exc}")
            log_event(log, "growth model unavailable", logging.WARNING, error=str(exc))
            return ""
        priors = [None if e is None else PriorPatch(volume=e[0], nodule=e[1], days_before=e[2]) for e in earlier]
        model_version = model.model_version
        forecasts = model.forecast(current, nodules, horizon_days, priors=priors)
    for t, f in zip(present, forecasts):
        t.forecast = f
    return str(model_version)


# --------------------------------------------------------------------------------- guideline


def _patient_age_years(current: Any) -> float | None:
    """Age at the study from PatientAge (e.g. '063Y') or birth date; None when the header says neither."""
    ds = current.slice_datasets[0] if current.slice_datasets else None
    if ds is None:
        return None
    age = str(getattr(ds, "PatientAge", "") or "")
    if len(age) == 4 and age[:3].isdigit():
        factor = {"Y": 1.0, "M": 1 / 12, "W": 1 / 52.18, "D": 1 / 365.25}.get(age[3])
        if factor:
            return int(age[:3]) * factor
    birth = str(getattr(ds, "PatientBirthDate", "") or "")
    if len(birth) == 8 and birth.isdigit() and current.study_date is not None:
        try:
            born = dt.date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))
        except ValueError:
            return None
        return (current.study_date - born).days / 365.25
    return None


def _recommend(analysis: Any, current: Any, config: Config, guideline: str | None) -> Any:
    from reports.guidelines import NoduleInput, StudyContext, recommend

    study_date = current.study_date or dt.date.today()
    context = StudyContext.from_settings(
        config.guideline, study_date, guideline=guideline, age_years=_patient_age_years(current),
        baseline=analysis.interval_days is None or None,
    )
    items = [NoduleInput.from_tracked(t, study_date) for t in analysis.nodules if t.current is not None]
    return recommend(items, context)


def _remove_stale_outputs(out_dir: Path, current_names: Sequence[str]) -> None:
    """Delete files an earlier run listed in ``summary.json`` that this run did not write again
    (e.g. a nodule's key image after it resolved), so the folder holds one coherent result. Only
    names we wrote ourselves are touched: ``--out`` may be a folder with other files in it."""
    try:
        earlier = json.loads((out_dir / "summary.json").read_text()).get("outputs", [])
    except (OSError, ValueError, AttributeError):
        return
    keep = set(current_names)
    for name in earlier:
        if isinstance(name, str) and name not in keep and Path(name).name == name:
            (out_dir / name).unlink(missing_ok=True)


def _horizon_days(recommendation: Any, study_date: dt.date | None) -> int:
    if recommendation is not None and recommendation.due_date is not None and study_date is not None:
        days = (recommendation.due_date - study_date).days
        if days > 0:
            return days
    return DEFAULT_HORIZON_DAYS


# ----------------------------------------------------------------------------------- outputs


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def nodule_summary(tracked: Any, transform: Any) -> dict[str, Any]:
    """One nodule of ``summary.json``: the DESIGN.md contract fields first, then details."""
    cur, pri, f = tracked.current, tracked.prior, tracked.forecast
    if cur is not None:
        center = cur.center_mm
    elif pri is not None and transform is not None:
        center = tuple(transform.to_current(pri.center_mm))
    else:
        center = pri.center_mm if pri is not None else None
    return {
        "tracking_uid": tracked.tracking_uid,
        "center_mm": None if center is None else [round(float(v), 2) for v in center],
        "volume_mm3": _round(cur.volume_mm3, 1) if cur else None,
        "prior_volume_mm3": _round(pri.volume_mm3, 1) if pri else None,
        "mean_diameter_mm": _round(cur.mean_diameter_mm) if cur else None,
        "consistency": (cur or pri).consistency,
        "vdt_days": _round(tracked.vdt_days, 1),
        "predicted": None if f is None else {
            "horizon_days": int(f.horizon_days),
            "volume_mm3": _round(f.volume_mm3, 1),
            "mean_diameter_mm": _round(f.mean_diameter_mm),
            "volume_range_mm3": [_round(f.volume_low_mm3, 1), _round(f.volume_high_mm3, 1)],
            "mean_diameter_range_mm": [_round(f.mean_diameter_low_mm), _round(f.mean_diameter_high_mm)],
            "model_version": f.model_version,
        },
        "tracking_id": tracked.tracking_id,
        "status": tracked.status,
        "match_confidence": _round(tracked.match_confidence, 3),
        "volume_change_pct": _round(tracked.volume_change_pct, 1),
        "interval_days": tracked.interval_days,
        "long_axis_mm": _round(cur.long_axis_mm) if cur else None,
        "short_axis_mm": _round(cur.short_axis_mm) if cur else None,
        "solid_component_mm": _round(cur.solid_component_mm) if cur else None,
        "mean_hu": _round(cur.mean_hu, 1) if cur else None,
        "juxtapleural": bool(cur.juxtapleural) if cur else None,
        "prior_mean_diameter_mm": _round(pri.mean_diameter_mm) if pri else None,
        "prior_center_mm": [round(float(v), 2) for v in pri.center_mm] if pri else None,
    }


def _identifiers(kind: str, ds: Any, tracking_uid: str = "") -> dict[str, str]:
    return {
        "kind": kind,
        "tracking_uid": tracking_uid,
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "sop_class_uid": str(ds.SOPClassUID),
    }


def _save(ds: Any, path: Path) -> Path:
    """Write ``ds`` durably: temporary name, fsync, rename (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".dcm")
    try:
        with os.fdopen(fd, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def _prefetch_in_background(module: str) -> None:
    """Import ``module`` in a daemon thread, unless it is imported already (a slow import that the
    writing step needs later overlaps work done meanwhile)."""
    if module in sys.modules:
        return

    def run() -> None:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - the writing step imports it again and reports any error
            pass

    threading.Thread(target=run, name=f"prefetch-{module}", daemon=True).start()


def _write_dicom(
    prior: Any, current: Any, analysis: Any, recommendation: Any, model_version: str, out_dir: Path,
    previous: Sequence[dict[str, str]],
) -> tuple[list[Path], list[dict[str, str]]]:
    """SEG, SR and one key image per nodule. A result that differs from ``previous`` references it.

    With no nodule on the current study only the SR is written: it says that no nodules were
    detected and carries the guideline's result for that case (a SEG with no segment is invalid,
    and there is nothing to draw a key image of).
    """
    from reports.sr import build_sr
    from reports.uids import Predecessor

    present = [t for t in analysis.nodules if t.current is not None]
    version = model_version or ("no-growth-model" if present else "no-nodules")

    def predecessor(kind: str, tracking_uid: str = "") -> Predecessor | None:
        for p in previous:
            if p.get("kind") == kind and p.get("tracking_uid", "") == tracking_uid:
                return Predecessor(p["study_instance_uid"], p["series_instance_uid"], p["sop_instance_uid"], p["sop_class_uid"])
        return None

    prior_date = prior.study_date if prior is not None else None
    if not present:
        sr = build_sr(current, analysis.nodules, None, recommendation, model_version=version, prior_study_date=prior_date,
                      predecessor=predecessor("sr"))
        return [_save(sr.dataset, out_dir / "sr.dcm")], [_identifiers("sr", sr.dataset)]

    # imported here: key images need matplotlib, a second or more to import, for nothing without nodules
    from reports.keyimages import build_key_images
    from reports.seg import build_seg

    # The writers reference a predecessor only when the new object's UID differs (a changed result);
    # the same inputs give the same UIDs, so a re-run simply replaces the objects in the PACS.
    seg = build_seg(current, present, model_version=version, predecessor=predecessor("seg"))
    sr = build_sr(current, analysis.nodules, seg, recommendation, model_version=version, prior_study_date=prior_date,
                  predecessor=predecessor("sr"))
    key_predecessors = {t.tracking_uid: p for t in present if (p := predecessor("key", t.tracking_uid)) is not None}
    keys = build_key_images(prior, current, present, model_version=version, predecessors=key_predecessors)

    paths = [_save(seg.dataset, out_dir / "seg.dcm"), _save(sr.dataset, out_dir / "sr.dcm")]
    objects = [_identifiers("seg", seg.dataset), _identifiers("sr", sr.dataset)]
    labels = {t.tracking_uid: t.tracking_id for t in present}
    for key in keys:
        label = "".join(c if c.isalnum() else "_" for c in labels.get(key.tracking_uid, "nodule")).lower()
        paths.append(_save(key.dataset, out_dir / f"key_{label}.dcm"))
        objects.append(_identifiers("key", key.dataset, key.tracking_uid))
    return paths, objects


# ------------------------------------------------------------------------------ one study pair


def run_pipeline(
    prior: Any,
    current: Any,
    out_dir: Path,
    config: Config,
    *,
    known_nodules: Sequence[Any] = (),
    prior_annotations: Sequence[Any] = (),
    previous_outputs: Sequence[dict[str, str]] = (),
    guideline: str | None = None,
    write_dicom: bool = True,
    progress: ProgressFn | None = None,
    forecast_service: Any = None,
) -> PipelineResult:
    """Analyse ``current`` (against ``prior`` when given) and write the results into ``out_dir``.

    ``known_nodules`` and ``prior_annotations`` are :class:`inference.detection.Seed` lists;
    ``previous_outputs`` are the identifiers a previous run wrote for this study (a changed result
    references them as predecessors). ``guideline`` overrides the configured guideline for this
    study (``fleischner2017`` or ``lungrads2022``). ``forecast_service``: see
    :func:`forecast_service_in_background`. Raises :class:`StudyNotAnalysable`.
    """
    from inference.analysis import AnalysisError, analyze_pair

    started = time.perf_counter()
    if write_dicom:
        # the SR writer (highdicom) takes a second or more to import in a fresh process (`noduletrack
        # analyze`): import it while the analysis runs (a worker has it from its warm-up already)
        _prefetch_in_background("reports.sr")
    try:
        analysis = analyze_pair(prior, current, known_nodules=known_nodules,
                                prior_annotations=prior_annotations, progress=progress)
    except AnalysisError as exc:
        raise StudyNotAnalysable(str(exc)) from exc
    notes = list(analysis.notes)

    if forecast_service is not None and write_dicom and any(t.current is not None for t in analysis.nodules):
        # the key-image writer imports matplotlib (~0.5 s): here it overlaps the forecast, which this
        # process only waits for (in-process, torch/MONAI imported matplotlib already)
        _prefetch_in_background("reports.keyimages")
    t0 = time.perf_counter()
    first = _recommend(analysis, current, config, guideline)
    horizon = _horizon_days(first, current.study_date)
    model_version = _forecast(analysis, prior, current, horizon, notes, forecast_service)
    recommendation = _recommend(analysis, current, config, guideline) if model_version else first
    analysis.timings["forecast_and_guideline"] = time.perf_counter() - t0

    outputs: list[Path] = []
    objects: list[dict[str, str]] = []
    if write_dicom:
        t0 = time.perf_counter()
        outputs, objects = _write_dicom(prior, current, analysis, recommendation, model_version, out_dir, previous_outputs)
        analysis.timings["dicom_outputs"] = time.perf_counter() - t0
        if not any(t.current is not None for t in analysis.nodules):
            notes.append("no nodule found: SR states it (no SEG, no key images)")
    analysis.timings["total"] = time.perf_counter() - started

    summary = {
        "study_instance_uid": current.study_instance_uid,
        "series_instance_uid": current.series_instance_uid,
        "study_date": current.study_date.isoformat() if current.study_date else None,
        "prior_study_instance_uid": prior.study_instance_uid if prior is not None else None,
        "prior_series_instance_uid": prior.series_instance_uid if prior is not None else None,
        "interval_days": analysis.interval_days,
        "nodules": [nodule_summary(t, analysis.transform) for t in analysis.nodules],
        "recommendation": recommendation.to_dict() if recommendation is not None else None,
        "outputs": [p.name for p in outputs] + ["summary.json"],
        "model_version": model_version or None,
        "timings_s": {k: round(v, 3) for k, v in analysis.timings.items()},
        "notes": notes,
    }
    _remove_stale_outputs(out_dir, summary["outputs"])
    write_json(out_dir / "summary.json", summary)
    log_event(log, "study analysed", patient=phi_hash(current.patient_id), nodules=len(analysis.nodules),
              outputs=len(outputs), seconds=round(analysis.timings["total"], 2))
    return PipelineResult(analysis, recommendation, summary, outputs, objects, model_version)


# ---------------------------------------------------------------------------- the worker's job


def results_dir(config: Config, study_uid: str) -> Path:
    """Where a study's outputs live: ``[storage] results`` / hash of the Study Instance UID."""
    return Path(config.storage.results) / hashlib.sha256(study_uid.encode()).hexdigest()[:24]


def _study_files(session: Any, spool: Path, study_uid: str) -> tuple[list[Path], list[Path]]:
    """(CT image files, SEG/SR annotation files) of a study, from the index."""
    from sqlalchemy import select

    from .ingest import ANNOTATION_SOP_CLASSES, CT_IMAGE_SOP_CLASSES
    from .models import Instance, Series, Study

    rows = session.execute(
        select(Instance.path, Instance.sop_class_uid).join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id).where(Study.study_instance_uid == study_uid)
    ).all()
    images = [spool / p for p, c in rows if c in CT_IMAGE_SOP_CLASSES]
    annotations = [spool / p for p, c in rows if c in ANNOTATION_SOP_CLASSES]
    return images, annotations


def _tracked_seeds(session: Any, prior_study_pk: int) -> list[Any]:
    """Nodules we already track, as seeds at their position in the prior study."""
    from sqlalchemy import select

    from inference.detection import Seed

    from .models import Nodule, Observation

    rows = session.execute(
        select(Observation, Nodule).join(Nodule, Observation.nodule_pk == Nodule.id)
        .where(Observation.study_pk == prior_study_pk)
    ).all()
    return [
        Seed(center_mm=(o.center_x_mm, o.center_y_mm, o.center_z_mm), source="tracked",
             tracking_uid=n.tracking_uid, tracking_id=n.label or None,
             radius_mm=max(2.0, o.mean_diameter_mm / 2.0))
        for o, n in rows
    ]


def analyze_study(session_factory: Any, config: Config, study_uid: str, spool: Path) -> dict[str, Any]:
    """Job handler: analyse a complete study against its prior, record everything, queue the outputs.

    A study that cannot be analysed is recorded as failed with the reason (and raises
    :class:`StudyNotAnalysable` so the queue does not retry it).
    """
    from sqlalchemy import select

    from inference.detection import seeds_from_annotations
    from inference.series import SeriesSelectionError
    from inference.volume import VolumeLoadError, load_study

    from . import outbox
    from .models import (
        STUDY_ANALYSED, STUDY_FAILED, Analysis, Nodule, Observation, Prediction, PriorLink, Recommendation, Study, utcnow,
    )

    spool = Path(spool)
    with session_factory() as s:
        study = s.execute(select(Study).where(Study.study_instance_uid == study_uid)).scalar_one()
        link = s.execute(select(PriorLink).where(PriorLink.study_pk == study.id).order_by(PriorLink.id.desc())).scalars().first()
        prior_uid = link.prior_study_uid if link is not None and link.prior_study_uid else None
        if link is None:
            from .priors import find_prior

            found = find_prior(s, study_uid, config.pacs.min_prior_days)
            prior_uid = found.study_instance_uid if found is not None else None
        prior_study = s.execute(select(Study).where(Study.study_instance_uid == prior_uid)).scalar_one() if prior_uid else None
        current_files, _ = _study_files(s, spool, study_uid)
        prior_files, prior_annotation_files = _study_files(s, spool, prior_uid) if prior_uid else ([], [])
        known = _tracked_seeds(s, prior_study.id) if prior_study is not None else []
        last = s.execute(select(Analysis).where(Analysis.study_pk == study.id, Analysis.outcome == "ok")
                         .order_by(Analysis.id.desc())).scalars().first()
        previous = list((last.summary or {}).get("output_objects", [])) if last is not None else []
        study_pk, patient_pk = study.id, study.patient_pk
        prior_pk = prior_study.id if prior_study is not None else None

    started = utcnow()
    load_started = time.perf_counter()
    try:
        try:
            current = load_study(current_files)
        except (SeriesSelectionError, VolumeLoadError, FileNotFoundError) as exc:
            raise StudyNotAnalysable(f"current study: {exc}") from exc
        prior = None
        if prior_files:
            try:
                prior = load_study(prior_files)
            except (SeriesSelectionError, VolumeLoadError, FileNotFoundError) as exc:
                # A bad prior must not block the follow-up: analyse it as a baseline and say why.
                log_event(log, "prior not usable", logging.WARNING, study=study_uid, reason=str(exc))
                prior = None
        seeds = (seeds_from_annotations(prior_annotation_files, reference_slices=prior.slice_datasets)
                 if prior is not None and prior_annotation_files else [])
        load_seconds = time.perf_counter() - load_started
        result = run_pipeline(prior, current, results_dir(config, study_uid), config, known_nodules=known if prior is not None else (),
                              prior_annotations=seeds, previous_outputs=previous)
        if prior is None and prior_files:
            result.summary["notes"].append("prior study present but not usable; analysed as a baseline")
    except StudyNotAnalysable as exc:
        with session_factory() as s, s.begin():
            s.add(Analysis(study_pk=study_pk, prior_study_pk=prior_pk, outcome="failed", reason=str(exc)[:4000],
                           started_at=started, finished_at=utcnow()))
            st = s.get(Study, study_pk)
            st.state, st.reason = STUDY_FAILED, f"cannot be analysed: {exc}"[:4000]
        log_event(log, "study not analysable", logging.WARNING, study=study_uid, reason=str(exc))
        raise

    # Reading the series from the spool happens before run_pipeline; keep it next to its stages.
    result.summary["timings_s"] = {"load_series": round(load_seconds, 3), **result.summary["timings_s"]}
    summary = dict(result.summary, output_objects=result.output_objects)
    with session_factory() as s, s.begin():
        for t in result.analysis.nodules:
            nodule = s.execute(select(Nodule).where(Nodule.tracking_uid == t.tracking_uid)).scalar_one_or_none()
            if nodule is None:
                nodule = Nodule(tracking_uid=t.tracking_uid, patient_pk=patient_pk, label=t.tracking_id[:64])
                s.add(nodule)
                s.flush()
            if t.current is None:
                continue
            obs = s.execute(select(Observation).where(Observation.nodule_pk == nodule.id, Observation.study_pk == study_pk)).scalar_one_or_none()
            if obs is None:
                obs = Observation(nodule_pk=nodule.id, study_pk=study_pk)
                s.add(obs)
            m = t.current
            obs.center_x_mm, obs.center_y_mm, obs.center_z_mm = (float(v) for v in m.center_mm)
            obs.volume_mm3, obs.mean_diameter_mm = float(m.volume_mm3), float(m.mean_diameter_mm)
            obs.consistency, obs.vdt_days = m.consistency, (None if t.vdt_days is None else float(t.vdt_days))
            if t.forecast is not None:
                f = t.forecast
                s.add(Prediction(nodule_pk=nodule.id, study_pk=study_pk, horizon_days=float(f.horizon_days),
                                 volume_mm3=float(f.volume_mm3), mean_diameter_mm=float(f.mean_diameter_mm),
                                 model_version=f.model_version[:64]))
        rec = result.recommendation
        if rec is not None:
            s.add(Recommendation(study_pk=study_pk, guideline=rec.guideline, category=rec.category[:32],
                                 followup_months_min=rec.followup_months_min, followup_months_max=rec.followup_months_max,
                                 due_date=rec.due_date, text=rec.text))
        s.add(Analysis(study_pk=study_pk, prior_study_pk=prior_pk, model_version=result.model_version[:64], outcome="ok",
                       summary=json.loads(json.dumps(summary)), started_at=started, finished_at=utcnow()))
        st = s.get(Study, study_pk)
        st.state, st.reason, st.analysed_at = STUDY_ANALYSED, "", utcnow()
        if config.pacs.send_results and config.pacs.host and result.outputs:
            outbox.enqueue(s, result.outputs, outbox.pacs_destination(config), study_uid=study_uid)
    return {"nodules": len(result.analysis.nodules), "outputs": len(result.outputs),
            "category": rec.category if rec is not None else None, "prior": prior_uid}
