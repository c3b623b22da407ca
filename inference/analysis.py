"""One study pair → tracked nodules: the imaging core's single entry point.

``analyze_pair(prior, current)`` is pure (arrays in, dataclasses out): it computes lung masks,
registers the prior to the current study, collects nodule seeds (tracked nodules from the database,
the prior's annotations, the automatic detector), segments and measures every nodule at both time
points, matches them, and computes growth. It records how long each stage took and why nodules were
classified as new or resolved, so that the pipeline can log and report it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from .detection import Candidate, Seed, detect_nodules
from .lung import LungMask, compute_lung_mask
from .measure import measure
from .registration import RigidTransform, refine_local, register_rigid
from .segmentation import segment_nodule
from .shape import is_nodule, shape_features
from .tracking import match_confidence, match_nodules, match_tolerance_mm, mint_tracking_uid, volume_change_pct, volume_doubling_time
from .types import CTVolume, NoduleMeasurement, TrackedNodule
from .workers import ANALYSIS_WORKERS  # threads of the analysis (see there)

log = logging.getLogger("noduletrack.inference.analysis")

ProgressFn = Callable[[str, float], None]  # (stage, fraction done 0..1)


# Nodule volumetry needs thin sections: Lung-RADS v2022's technical standard is ≤ 2.5 mm (≤ 1 mm
# preferred) and Fleischner 2017 asks for ≤ 1.5 mm. Thicker series are analysed, with a note.
THIN_SECTION_MM = 2.5


def _thin_section_note(role: str, vol: CTVolume) -> str:
    return (f"{role} series slice spacing {vol.geometry.spacing[2]:.1f} mm is above {THIN_SECTION_MM} mm: small "
            "nodules may be missed and volumes and growth are less reliable (thin sections ≤ 1.5 mm recommended)")


class AnalysisError(ValueError):
    """The pair cannot be analysed (no lungs, incompatible series...); the message says why."""


@dataclass
class StudyAnalysis:
    """Result of :func:`analyze_pair`."""

    nodules: list[TrackedNodule]
    timings: dict[str, float]  # seconds per stage
    notes: list[str] = field(default_factory=list)  # reasons/decisions worth reporting
    transform: RigidTransform | None = None  # current → prior LPS
    interval_days: int | None = None
    current_lung: LungMask | None = None
    prior_lung: LungMask | None = None


@dataclass
class _Found:
    meas: NoduleMeasurement
    seg_volume: float
    source: str
    tracking_uid: str | None = None
    tracking_id: str | None = None


def _stage(timings: dict[str, float], name: str, progress: ProgressFn | None, frac: float):
    @contextmanager
    def cm() -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
            if progress is not None:
                progress(name, frac)
    return cm()


def _segment_at(vol: CTVolume, lung: LungMask, center_mm, radius_mm: float, search_mm: float | None = None,
                require_shape: bool = True) -> NoduleMeasurement | None:
    g = vol.geometry
    idx = g.lps_to_index(np.asarray(center_mm, float))
    if np.any(idx < 0) or np.any(idx > np.asarray(g.shape) - 1):
        return None
    # (a seed says a nodule is here: it may be cut off from a vessel as thick as itself)
    seg = segment_nodule(vol, lung, idx, radius_hint_mm=radius_mm, search_mm=search_mm, split_far=True)
    if seg is None:
        return None
    sx, sy, sz = g.spacing
    # a seeded or propagated nodule may be small (shrinking, or annotated below detection size) but
    # must still be nodular: a leak into vessels or the wall is not a measurement
    if not is_nodule(shape_features(seg, (sz, sy, sx)), min_diameter_mm=4.0 if require_shape else 2.0):
        return None
    return measure(vol, seg)


def _propagate(vol: CTVolume, lung: LungMask, point_mm, other: NoduleMeasurement) -> NoduleMeasurement | None:
    """Segment a nodule known at the other time point near its mapped position ``point_mm``.

    Its size here is unknown (it may have grown, shrunk or be smaller than the detector's size), so
    the nodule is *found* with the other time point's radius and with half of it; each result is then
    *measured* at its own size (:func:`_remeasure`), as the detector measures what it finds (when that
    segmentation is not nodular the first one is kept), and the one whose centre is nearest the
    mapped position is kept.
    """
    r = _radius(other)
    best: tuple[float, NoduleMeasurement] | None = None
    found: list[NoduleMeasurement] = []
    for hint in sorted({r, max(2.0, 0.5 * r)}, reverse=True):
        m = _segment_at(vol, lung, point_mm, hint, search_mm=max(3.0, 0.7 * hint), require_shape=False)
        if m is None or any(_inside(f, vol, m.center_mm) for f in found):
            continue  # (the same nodule found with both hints is measured once)
        found.append(m)
        # Not nodular at its own size is what a leak into vessels looks like (found with a small
        # hint, the region reaches the crop's edge; at its own, larger size the crop holds more of
        # the vessel tree and it is elongated), but rejecting it turns a real nodule whose
        # segmentation leaks into a "new" one (development and held-out phantoms: one pair lost in
        # each, no VDT gained): the first segmentation is kept.
        again = _remeasure(vol, lung, m)
        if again is not None:
            m = _hint_median(vol, lung, again)  # measured as a detection is
        d = float(np.linalg.norm(np.asarray(m.center_mm) - np.asarray(point_mm, float)))
        if best is None or d < best[0]:
            best = (d, m)
    return best[1] if best else None


# A re-measurement is seeded at the nodule's own centroid: the search for its densest point need not
# reach farther than a small nodule's radius (the floor of the seeds' search radius). A wider search
# lets a vessel brighter than ground glass, next to it, take the seed.
REMEASURE_SEARCH_MM = 3.0


def _remeasure(vol: CTVolume, lung: LungMask, m: NoduleMeasurement,
               factor: float = 1.0) -> NoduleMeasurement | None:
    """``m`` segmented again at its own centroid with its own radius (× ``factor``) as the size hint;
    None when that is not a nodule.

    The hint sets the crop, the search radius, the lung-envelope closing at the pleura and the cap
    on the vessel-cutting opening (``segmentation.py``). A hint from the other time point is wrong
    for a nodule that grew or shrank a lot (on development phantoms juxtapleural and ground-glass
    priors came out 14-15 % small with the current's radius as the hint, 4-9 % at their own); with
    its own size a propagated nodule is measured as a detected one is (the detector segments its
    survivors again with their own size as the hint), and its volume no longer depends on how large
    it is at the other time point.
    """
    return _segment_at(vol, lung, m.center_mm, factor * _radius(m), search_mm=REMEASURE_SEARCH_MM,
                       require_shape=False)


# A measurement should not depend much on the size hint it was segmented with, but it does: the hint
# sets the crop, the search radius, the lung-envelope closing at the pleura and the cap on the
# vessel-cutting opening (development seed 30's 12.5 mm juxtapleural ground-glass nodule: 1,012 mm³
# with a 5.7 mm hint, 1,322 mm³ with 6.2 mm; true 1,031). A detection (and a propagated nodule, after
# its re-measurement, so that both time points are measured alike) is therefore segmented again at
# its centroid with its own radius times these factors, and the median of the three volumes is kept:
# one hint's accident is outvoted by the two around it.
HINT_FACTORS = (0.8, 1.25)


def _hint_median(vol: CTVolume, lung: LungMask, m: NoduleMeasurement) -> NoduleMeasurement:
    """``m`` or one of its re-segmentations at its centroid with :data:`HINT_FACTORS` × its own radius
    as the hint, whichever has the median volume; ``m`` itself unless both re-segmentations are
    nodular and are this nodule (their centres inside ``m``'s mask)."""
    trials = [m]
    for factor in HINT_FACTORS:
        t = _remeasure(vol, lung, m, factor)
        if t is None or not _inside(m, vol, t.center_mm):
            return m
        trials.append(t)
    return sorted(trials, key=lambda t: t.volume_mm3)[1]


def _radius(m: NoduleMeasurement) -> float:
    return max(2.0, 0.5 * (6.0 * max(m.volume_mm3, 1.0) / np.pi) ** (1 / 3))


def _inside(m: NoduleMeasurement, vol: CTVolume, point_mm) -> bool:
    idx = np.rint(vol.geometry.lps_to_index(np.asarray(point_mm, float))).astype(int) - np.asarray(m.mask_offset)
    if np.any(idx < 0) or np.any(idx >= np.asarray(m.mask.shape)):
        return False
    return bool(m.mask[tuple(idx)])


def _collect(vol: CTVolume, lung: LungMask, seeds: Sequence[Seed], detected: list[Candidate],
             notes: list[str] | None = None) -> list[_Found]:
    """Segment explicit seeds (keeping their UIDs), then add detections not already covered.

    An annotation that neither segments nor names a detection is added to ``notes``: the reader
    should know that a marked nodule was not measured.
    """
    found: list[_Found] = []
    unmeasured: list[Seed] = []
    for s in seeds:
        m = _segment_at(vol, lung, s.center_mm, s.radius_mm, search_mm=max(3.0, 0.7 * s.radius_mm),
                        require_shape=False)
        if m is None:
            unmeasured.append(s)
            continue
        if any(_inside(f.meas, vol, m.center_mm) for f in found):
            continue
        found.append(_Found(m, m.volume_mm3, s.source, s.tracking_uid, s.tracking_id))
    added: list[_Found] = []
    for c in detected:
        m = _hint_median(vol, lung, measure(vol, c.segmentation))
        if any(_inside(f.meas, vol, m.center_mm) or _inside(m, vol, f.meas.center_mm) for f in found + added):
            continue
        added.append(_Found(m, m.volume_mm3, "detector"))
    # A seed whose own segmentation failed (an annotation drawn on one slice, off the nodule's
    # centre, or on thick slices) still names the nodule the detector measured where it points: the
    # nearest detection whose mask comes within the annotation's radius (to half a voxel) takes its
    # identity.
    half_voxel = 0.5 * max(vol.geometry.spacing)
    for s in unmeasured:
        reach = max(s.radius_mm, 2.0) + half_voxel
        distances = [(_distance_to_mask(f.meas, vol, s.center_mm), f) for f in added if f.source == "detector"]
        near = [(d, f) for d, f in distances if d <= reach]
        if near and s.tracking_uid:
            f = min(near, key=lambda t: t[0])[1]
            f.source, f.tracking_uid, f.tracking_id = s.source, s.tracking_uid, s.tracking_id
        elif not near and notes is not None and s.source == "annotation":
            name = f"annotated nodule {s.tracking_id}" if s.tracking_id else "an annotated nodule"
            notes.append(f"{name} at {np.round(s.center_mm, 1).tolist()} could not be segmented there: not measured")
    return found + added


def _distance_to_mask(m: NoduleMeasurement, vol: CTVolume, point_mm) -> float:
    """Distance (mm) from ``point_mm`` to the nearest voxel centre of the nodule's mask."""
    idx = np.argwhere(m.mask) + np.asarray(m.mask_offset)
    if idx.size == 0:
        return float("inf")
    return float(np.min(np.linalg.norm(vol.geometry.index_to_lps(idx) - np.asarray(point_mm, float), axis=1)))


class _PriorSide:
    """The prior's lung mask, then its automatic detection, computed in a background thread.

    ``lung()`` and ``detections()`` wait for their result (re-raising the thread's exception);
    ``close()`` stops the thread before the detection when the analysis ends early (e.g. the current
    study has no lungs). ``timings`` holds the thread's own seconds per step ("prior_*"), which
    overlap the main thread's stages.
    """

    def __init__(self, prior: CTVolume, verify_pool: ThreadPoolExecutor | None = None) -> None:
        self.timings: dict[str, float] = {}
        self._verify_pool = verify_pool
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analysis-prior")
        self._lung: Future = Future()
        self._det = self._pool.submit(self._run, prior)

    def _run(self, prior: CTVolume) -> list[Candidate]:
        t0 = time.perf_counter()
        try:
            lung = compute_lung_mask(prior)
        except BaseException as exc:
            self._lung.set_exception(exc)
            raise
        finally:
            self.timings["prior_lung_mask"] = time.perf_counter() - t0
        self._lung.set_result(lung)
        if self._cancel.is_set():
            return []
        t0 = time.perf_counter()
        try:
            found = detect_nodules(prior, lung, executor=self._verify_pool)
        finally:
            self.timings["prior_detection"] = time.perf_counter() - t0
        # The tracking stage's local registration (registration.ncc_search) imports scipy.signal:
        # ~0.4 s of import at the start of tracking, with the other core idle. Here, on this thread
        # whose work is done, it mostly overlaps the current study's detection.
        import scipy.signal  # noqa: F401
        return found

    def lung(self) -> LungMask:
        return self._lung.result()

    def detections(self) -> list[Candidate]:
        return self._det.result()

    def close(self) -> None:
        self._cancel.set()
        self._pool.shutdown(wait=True)


def analyze_pair(
    prior: CTVolume | None,
    current: CTVolume,
    *,
    known_nodules: Sequence[Seed] = (),
    prior_annotations: Sequence[Seed] = (),
    progress: ProgressFn | None = None,
) -> StudyAnalysis:
    """Find, segment, measure and track nodules of ``current`` against ``prior``.

    ``known_nodules``: nodules already tracked for this patient, centres in the *prior* study's LPS
    space (or the current one's when ``prior`` is None), with their tracking UIDs.
    ``prior_annotations``: seeds parsed from SR/SEG objects that came with the prior
    (:func:`inference.detection.seeds_from_annotations`).
    """
    timings: dict[str, float] = {}
    notes: list[str] = [_thin_section_note(role, vol) for role, vol in (("current", current), ("prior", prior))
                        if vol is not None and vol.geometry.spacing[2] > THIN_SECTION_MM]
    # The prior's lung mask and detection do not depend on the current study: they run in a second
    # thread while this one does the current's and the registration. The heavy calls (NumPy, SciPy
    # ndimage, SimpleITK) release the GIL, so on two cores the two sides overlap; the results are
    # the same as computed one after the other.
    # Candidate verification (most of detection's time) of both time points goes to one shared pool,
    # so both cores stay busy until the last candidate of either side is verified.
    verify_pool = ThreadPoolExecutor(max_workers=ANALYSIS_WORKERS, thread_name_prefix="analysis-verify")
    prior_side = _PriorSide(prior, verify_pool) if prior is not None else None
    try:
        with _stage(timings, "lung_mask", progress, 0.1):
            try:
                lung_c = compute_lung_mask(current)
                lung_p = prior_side.lung() if prior_side is not None else None
            except ValueError as exc:
                raise AnalysisError(str(exc)) from exc
        transform = None
        if prior is not None:
            with _stage(timings, "registration", progress, 0.25):
                transform = register_rigid(prior, current)
                notes.append(f"rigid registration: rotation {transform.rotation_deg:.2f}°, translation "
                             f"{np.round(transform.translation_mm, 1).tolist()} mm")
        with _stage(timings, "detection", progress, 0.6):
            det_c = detect_nodules(current, lung_c, executor=verify_pool)
            det_p = prior_side.detections() if prior_side is not None else []
    finally:
        if prior_side is not None:
            prior_side.close()
            timings.update(prior_side.timings)
        verify_pool.shutdown(wait=True)
    with _stage(timings, "segmentation", progress, 0.75):
        if prior is None:
            cur_found = _collect(current, lung_c, list(known_nodules), det_c)
            prior_found: list[_Found] = []
        else:
            prior_found = _collect(prior, lung_p, list(known_nodules) + list(prior_annotations), det_p, notes)
            cur_found = _collect(current, lung_c, [], det_c)

    interval = None
    if prior is not None and prior.study_date and current.study_date:
        interval = (current.study_date - prior.study_date).days
        if interval <= 0:
            notes.append(f"prior study date is not before the current one (interval {interval} days): no VDT")
    tracked: list[TrackedNodule] = []
    with _stage(timings, "tracking", progress, 0.95):
        pairs: list[tuple[_Found | None, _Found | None, float | None]] = []
        if prior is not None and transform is not None:
            # The local refinements and the propagated segmentations are independent of each other:
            # they run on a pool (NumPy/SimpleITK release the GIL) and are used in the same order.
            with ThreadPoolExecutor(max_workers=ANALYSIS_WORKERS, thread_name_prefix="analysis-track") as pool:
                pairs = _track(prior, current, transform, lung_p, lung_c, prior_found, cur_found, notes, pool)
        else:
            pairs = [(None, f, None) for f in cur_found]

        # stable order: by current (or prior) position, superior to inferior then right to left
        def key(p):
            m = (p[1] or p[0]).meas
            return (-m.center_mm[2], m.center_mm[0], m.center_mm[1])

        pairs.sort(key=key)
        # Labels carried from earlier studies stay; new nodules get the lowest free "Nodule k", so a
        # new nodule never shares a label with a tracked or resolved one.
        carried = {(fp.tracking_id if fp else None) or (fc.tracking_id if fc else None) for fp, fc, _ in pairs} - {None}
        free_labels = (f"Nodule {k}" for k in range(1, len(pairs) + len(carried) + 2) if f"Nodule {k}" not in carried)
        for fp, fc, conf in pairs:
            uid = (fp.tracking_uid if fp else None) or (fc.tracking_uid if fc else None)
            label = (fp.tracking_id if fp else None) or (fc.tracking_id if fc else None) or next(free_labels)
            if uid is None:
                first, study = (fp, prior) if fp is not None else (fc, current)
                uid = mint_tracking_uid(study.study_instance_uid, first.meas.center_mm)  # type: ignore[union-attr]
            if fp is not None and fc is not None:
                status = "tracked"
            elif fc is not None:
                status = "new"
            else:
                status = "resolved"
            vdt = chg = None
            if fp is not None and fc is not None:
                chg = volume_change_pct(fp.meas.volume_mm3, fc.meas.volume_mm3)
                vdt = volume_doubling_time(fp.meas.volume_mm3, fc.meas.volume_mm3, interval)
            tracked.append(TrackedNodule(
                tracking_uid=uid, tracking_id=label, status=status,  # type: ignore[arg-type]
                current=fc.meas if fc else None, prior=fp.meas if fp else None,
                interval_days=interval, match_confidence=conf, vdt_days=vdt, volume_change_pct=chg,
            ))
    return StudyAnalysis(nodules=tracked, timings=timings, notes=notes, transform=transform,
                         interval_days=interval, current_lung=lung_c, prior_lung=lung_p)


def _track(prior: CTVolume, current: CTVolume, transform: RigidTransform, lung_p: LungMask, lung_c: LungMask,
           prior_found: list[_Found], cur_found: list[_Found], notes: list[str],
           pool: ThreadPoolExecutor) -> list[tuple[_Found | None, _Found | None, float | None]]:
    """Match prior and current nodules; look for the unmatched ones at the other time point."""
    pairs: list[tuple[_Found | None, _Found | None, float | None]] = []

    def refine_prior(f: _Found) -> RigidTransform:
        c_cur = transform.to_current(np.asarray(f.meas.center_mm))[None][0]
        return refine_local(prior, current, transform, c_cur, radius_mm=max(20.0, 3 * _radius(f.meas)))

    locals_ = list(pool.map(refine_prior, prior_found))
    mapped = [loc.to_current(np.asarray(f.meas.center_mm)) for f, loc in zip(prior_found, locals_)]
    mapped_arr = np.asarray(mapped).reshape(-1, 3)
    matches = match_nodules([f.meas for f in prior_found], mapped_arr, [f.meas for f in cur_found])
    used_p = {m.prior_index for m in matches}
    used_c = {m.current_index for m in matches}
    for m in matches:
        pairs.append((prior_found[m.prior_index], cur_found[m.current_index], m.confidence))

    def look_back(f: _Found) -> tuple[RigidTransform, NoduleMeasurement | None]:
        loc = refine_local(prior, current, transform, np.asarray(f.meas.center_mm),
                           radius_mm=max(20.0, 3 * _radius(f.meas)))
        return loc, _propagate(prior, lung_p, loc.to_prior(np.asarray(f.meas.center_mm)), f.meas)

    # both searches are submitted before either is used, so they overlap
    forward = {i: pool.submit(_propagate, current, lung_c, mapped_arr[i], f.meas)
               for i, f in enumerate(prior_found) if i not in used_p}
    backward = {j: pool.submit(look_back, f) for j, f in enumerate(cur_found) if j not in used_c}
    # prior nodules the current detector missed: segment at the mapped position
    for i, fut in forward.items():
        f = prior_found[i]
        m_cur = fut.result()
        if m_cur is not None and not any(_inside(c.meas, current, m_cur.center_mm) for c in cur_found):
            d = float(np.linalg.norm(np.asarray(m_cur.center_mm) - mapped_arr[i]))
            conf = match_confidence(d, match_tolerance_mm(f.meas.mean_diameter_mm, m_cur.mean_diameter_mm),
                                    f.meas.volume_mm3, m_cur.volume_mm3)
            pairs.append((f, _Found(m_cur, m_cur.volume_mm3, "propagated"), conf))
        else:
            pairs.append((f, None, None))
            notes.append(f"prior nodule at {np.round(f.meas.center_mm, 1).tolist()} not found in the current "
                         "study: resolved")
    # current nodules without a prior match: look in the prior at the mapped-back position
    for j, fut in backward.items():
        f = cur_found[j]
        loc, m_pri = fut.result()
        if m_pri is not None and not any(_inside(p.meas, prior, m_pri.center_mm) for p in prior_found):
            mp = loc.to_current(np.asarray(m_pri.center_mm))
            d = float(np.linalg.norm(mp - np.asarray(f.meas.center_mm)))
            conf = match_confidence(d, match_tolerance_mm(f.meas.mean_diameter_mm, m_pri.mean_diameter_mm),
                                    m_pri.volume_mm3, f.meas.volume_mm3)
            pairs.append((_Found(m_pri, m_pri.volume_mm3, "propagated"), f, conf))
        else:
            pairs.append((None, f, None))
    return pairs
