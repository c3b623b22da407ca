"""Key images (Secondary Capture) for viewers that show neither SEG nor SR.

One RGB Secondary Capture per nodule, all in one series ("NoduleTrack key images") in the original
study. Each image has four panels drawn with matplotlib (Agg, no display needed):

    prior | current | predicted | growth chart

* prior / current: the axial slice through the nodule (the slice of its long axis), lung window,
  same physical field of view, with the nodule outline, the long axis and the measurements;
* predicted: the current slice with the growth model's predicted extent at the forecast date
  (dashed) over the current outline, with the predicted volume and its band;
* chart: volume over time (measured points, the exponential through them, the forecast with its band).

A banner "AI OUTPUT — NOT FOR DIAGNOSIS" is burned in (Burned In Annotation YES). No patient
identifiers are drawn: only tracking IDs, dates and measurements.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import matplotlib

matplotlib.use("Agg")  # headless: no display on a DICOM node

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import RLELossless  # noqa: E402

from inference.types import CTVolume, Forecast, NoduleMeasurement, TrackedNodule  # noqa: E402
from reports.seg import (  # noqa: E402
    GROWTH_MODEL_NAME,
    MANUFACTURER,
    add_predecessor,
    clip_to_volume,
    forecast_date,
    software_version,
)
from reports.uids import ObjectUIDs, Predecessor, content_digest, object_uids  # noqa: E402

KEY_SERIES_NUMBER = 9703
KEY_SERIES_DESCRIPTION = "NoduleTrack key images"
BANNER = "AI OUTPUT — NOT FOR DIAGNOSIS · NoduleTrack"
LUNG_WINDOW = (-600.0, 1500.0)  # level, width (HU)
_DPI = 100
_FIG_SIZE = (16.0, 4.6)  # inches → 1600 × 460 pixels


@dataclass(frozen=True)
class KeyImageResult:
    dataset: hd.sc.SCImage
    uids: ObjectUIDs
    tracking_uid: str


def _window(hu: np.ndarray) -> np.ndarray:
    level, width = LUNG_WINDOW
    return np.clip((hu.astype(np.float32) - (level - width / 2)) / width, 0.0, 1.0)


def _fov_mm(nodule: TrackedNodule) -> float:
    """Field of view (mm) that fits the largest of prior, current and predicted with context."""
    sizes = [m.long_axis_mm for m in (nodule.prior, nodule.current) if m is not None]
    if nodule.forecast is not None:
        sizes.append(nodule.forecast.mean_diameter_high_mm)
    return float(min(max(40.0, 3.0 * max(sizes, default=10.0)), 200.0))


def _slice_panel(
    ax: plt.Axes, volume: CTVolume, z: int, center_mm: Sequence[float], fov: float,
    outlines: list[tuple[np.ndarray, str, str]], axis_points: np.ndarray | None, title: str, lines: list[str],
) -> None:
    """Draw one axial slice (lung window) centred on ``center_mm`` with mask outlines and text."""
    g = volume.geometry
    sx, sy = g.spacing[0], g.spacing[1]
    c = g.lps_to_index(np.asarray(center_mm, dtype=float))
    cy, cx = float(c[1]), float(c[2])
    half_y, half_x = fov / 2 / sy, fov / 2 / sx
    y0, y1 = max(0, int(math.floor(cy - half_y))), min(volume.hu.shape[1], int(math.ceil(cy + half_y)) + 1)
    x0, x1 = max(0, int(math.floor(cx - half_x))), min(volume.hu.shape[2], int(math.ceil(cx + half_x)) + 1)
    img = _window(volume.hu[z, y0:y1, x0:x1])
    # Extent in mm relative to the nodule centre, so every panel has the same physical scale.
    extent = ((x0 - 0.5 - cx) * sx, (x1 - 0.5 - cx) * sx, (y1 - 0.5 - cy) * sy, (y0 - 0.5 - cy) * sy)
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    yy = (np.arange(y0, y1) - cy) * sy
    xx = (np.arange(x0, x1) - cx) * sx
    for mask2d, color, style in outlines:
        sub = mask2d[y0:y1, x0:x1]
        if sub.any():
            ax.contour(xx, yy, sub.astype(float), levels=[0.5], colors=[color], linewidths=1.6, linestyles=style)
    if axis_points is not None:
        ax.plot((axis_points[:, 2] - cx) * sx, (axis_points[:, 1] - cy) * sy, color="#ffe119", lw=1.4, marker="o", ms=3)
    ax.set_xlim(-fov / 2, fov / 2)
    ax.set_ylim(fov / 2, -fov / 2)
    ax.set_title(title, fontsize=11, color="white")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("black")
    ax.text(0.02, 0.02, "\n".join(lines), transform=ax.transAxes, fontsize=9, color="white", va="bottom", ha="left",
            bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 2})
    # 10 mm scale bar
    ax.plot([fov / 2 - 14, fov / 2 - 4], [fov / 2 - 4, fov / 2 - 4], color="white", lw=2)
    ax.text(fov / 2 - 9, fov / 2 - 6, "10 mm", color="white", fontsize=8, ha="center", va="bottom")


def _mask_slice(m: NoduleMeasurement | Forecast, shape: tuple[int, int, int], z: int) -> np.ndarray:
    out = np.zeros(shape[1:], dtype=bool)
    if m.mask is None:
        return out
    clipped = clip_to_volume(m.mask, m.mask_offset, shape)
    if clipped is None:
        return out
    mask, (oz, oy, ox) = clipped
    if not oz <= z < oz + mask.shape[0]:
        return out
    dy, dx = mask.shape[1:]
    out[oy : oy + dy, ox : ox + dx] = mask[z - oz]
    return out


def _axis_points(volume: CTVolume, m: NoduleMeasurement) -> np.ndarray:
    return volume.geometry.lps_to_index(np.asarray(m.long_axis_endpoints_mm, dtype=float))


def _measure_lines(m: NoduleMeasurement) -> list[str]:
    return [
        f"Volume {m.volume_mm3:.0f} mm³",
        f"Long {m.long_axis_mm:.1f} mm · short {m.short_axis_mm:.1f} mm",
        f"Mean diameter {m.mean_diameter_mm:.1f} mm · {m.consistency.replace('_', '-')}",
    ]


def _date_text(d: _dt.date | None) -> str:
    return d.isoformat() if d else "date unknown"


def _chart(ax: plt.Axes, nodule: TrackedNodule, prior: CTVolume | None, current: CTVolume) -> None:
    """Volume over time: measured points, the exponential through them, the forecast with its band."""
    cur = nodule.current
    assert cur is not None
    # Time axis: days relative to the current study (dates may be unknown).
    pts_t: list[float] = [0.0]
    pts_v: list[float] = [cur.volume_mm3]
    if nodule.prior is not None:
        dt_days = nodule.interval_days
        if dt_days is None and prior is not None and prior.study_date and current.study_date:
            dt_days = (current.study_date - prior.study_date).days
        if dt_days is not None:
            pts_t.insert(0, -float(dt_days))
            pts_v.insert(0, nodule.prior.volume_mm3)
    ax.plot(pts_t, pts_v, "o", color="#3cb44b", ms=7, label="measured", zorder=3)
    f = nodule.forecast
    t_end = float(f.horizon_days) if f is not None else 0.0
    if len(pts_t) == 2 and pts_t[0] < 0 and pts_v[0] > 0:
        # Exponential through the measured points, drawn over the whole time range.
        k = math.log(pts_v[1] / pts_v[0]) / (pts_t[1] - pts_t[0])
        tt = np.linspace(pts_t[0], max(t_end, 0.0), 100)
        label = "exponential fit" + (f" (VDT {nodule.vdt_days:.0f} d)" if nodule.vdt_days else "")
        ax.plot(tt, pts_v[1] * np.exp(k * tt), "-", color="#4363d8", lw=1.5, label=label)
    if f is not None:
        tt = np.linspace(0.0, t_end, 50)
        frac = tt / t_end if t_end > 0 else tt
        # Band widens from the current measurement to the forecast's spread (log-linear).
        low = cur.volume_mm3 * (f.volume_low_mm3 / cur.volume_mm3) ** frac
        high = cur.volume_mm3 * (f.volume_high_mm3 / cur.volume_mm3) ** frac
        ax.fill_between(tt, low, high, color="#f58231", alpha=0.25, label="forecast band")
        err = [[f.volume_mm3 - f.volume_low_mm3], [f.volume_high_mm3 - f.volume_mm3]]
        ax.errorbar([t_end], [f.volume_mm3], yerr=err, fmt="D", color="#f58231", ms=7, capsize=4,
                    label=f"{GROWTH_MODEL_NAME} {f.model_version} (AI)")
    ax.set_xlabel("days from current study", color="white")
    ax.set_ylabel("volume (mm³)", color="white", labelpad=2)
    ax.set_title("Volume over time", fontsize=11, color="white")
    ax.tick_params(colors="white", labelsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


def render_nodule_panel(nodule: TrackedNodule, prior: CTVolume | None, current: CTVolume) -> np.ndarray:
    """The four-panel key image for one nodule as an ``(rows, cols, 3)`` uint8 RGB array."""
    cur = nodule.current
    if cur is None:
        raise ValueError(f"{nodule.tracking_id} has no current measurement: no key image")
    fov = _fov_mm(nodule)
    fig = Figure(figsize=_FIG_SIZE, dpi=_DPI, facecolor="black")
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.45]})
    shape = tuple(current.hu.shape)

    p = nodule.prior
    if p is not None and prior is not None:
        pz = int(p.long_axis_slice)
        _slice_panel(axes[0], prior, pz, p.center_mm, fov, [(_mask_slice(p, tuple(prior.hu.shape), pz), "#3cb44b", "solid")],
                     _axis_points(prior, p), f"Prior {_date_text(prior.study_date)}", _measure_lines(p))
    else:
        axes[0].set_facecolor("black")
        axes[0].set_xticks([])
        axes[0].set_yticks([])
        axes[0].text(0.5, 0.5, "new nodule:\nno prior" if nodule.status == "new" else "no prior",
                     color="white", ha="center", va="center", fontsize=12, transform=axes[0].transAxes)
        axes[0].set_title("Prior", fontsize=11, color="white")

    z = int(cur.long_axis_slice)
    cur_lines = _measure_lines(cur)
    if nodule.volume_change_pct is not None:
        growth = f"VDT {nodule.vdt_days:.0f} d" if nodule.vdt_days else ("decreasing" if nodule.volume_change_pct < 0 else "no growth")
        cur_lines.append(f"Change {nodule.volume_change_pct:+.0f} % · {growth}")
    _slice_panel(axes[1], current, z, cur.center_mm, fov, [(_mask_slice(cur, shape, z), "#3cb44b", "solid")],
                 _axis_points(current, cur), f"Current {_date_text(current.study_date)}", cur_lines)

    f = nodule.forecast
    if f is not None:
        when = forecast_date(current.study_date, f.horizon_days)
        outlines = [(_mask_slice(cur, shape, z), "#3cb44b", "solid")]
        if f.mask is not None:
            outlines.append((_mask_slice(f, shape, z), "#f58231", "dashed"))
        _slice_panel(
            axes[2], current, z, cur.center_mm, fov, outlines, None,
            f"Predicted {when.isoformat() if when else f'+{f.horizon_days} d'} (AI)",
            [f"Volume {f.volume_mm3:.0f} mm³ ({f.volume_low_mm3:.0f}–{f.volume_high_mm3:.0f})",
             f"Mean diameter {f.mean_diameter_mm:.1f} mm", f"{GROWTH_MODEL_NAME} {f.model_version} — prediction"],
        )
    else:
        axes[2].set_facecolor("black")
        axes[2].set_xticks([])
        axes[2].set_yticks([])
        axes[2].text(0.5, 0.5, "no forecast", color="white", ha="center", va="center", fontsize=12, transform=axes[2].transAxes)
        axes[2].set_title("Predicted", fontsize=11, color="white")

    _chart(axes[3], nodule, prior, current)
    axes[3].set_facecolor("white")
    fig.suptitle(f"{BANNER}   ·   {nodule.tracking_id}", color="#ff4040", fontsize=13, fontweight="bold")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.13, wspace=0.24)
    # Draw on the Agg canvas and take its RGBA buffer: the same pixels savefig would write, without
    # a PNG encode + decode round trip (about a third of the rendering time).
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3], dtype=np.uint8)


def _source_item(ds: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    purpose = Dataset()
    purpose.CodeValue = "121322"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def build_key_images(
    prior: CTVolume | None,
    current: CTVolume,
    nodules: Sequence[TrackedNodule],
    *,
    model_version: str,
    predecessors: Mapping[str, Predecessor] | None = None,
    series_number: int = KEY_SERIES_NUMBER,
) -> list[KeyImageResult]:
    """One Secondary Capture per nodule with a current measurement, in the current study.

    ``predecessors`` maps a tracking UID to the key image a previous run wrote for that nodule (when
    the result changed), which the new image then references.
    """
    if not current.slice_datasets:
        raise ValueError("CTVolume.slice_datasets is empty: key images copy the patient/study from the source CT")
    present = [n for n in nodules if n.current is not None]
    if not present:
        raise ValueError("no nodule with a current measurement: no key images")
    series_digest = content_digest(
        "keyimages", current.study_instance_uid, current.series_instance_uid,
        prior.series_instance_uid if prior is not None else None,
        prior.study_date if prior is not None else None, current.study_date,
        [(n.tracking_uid, n.tracking_id, n.status, n.current, n.prior, n.interval_days, n.vdt_days, n.volume_change_pct, n.forecast)
         for n in present],
    )
    series_uid = object_uids(current.study_instance_uid, "keyimages", series_digest, model_version).series_instance_uid
    for n in present:  # validate everything before rendering anything
        z = int(n.current.long_axis_slice)  # type: ignore[union-attr]
        if not 0 <= z < len(current.slice_datasets):
            raise ValueError(f"{n.tracking_id}: long_axis_slice {z} is outside the series (0..{len(current.slice_datasets) - 1})")
        if n.prior is not None and prior is not None and not 0 <= int(n.prior.long_axis_slice) < prior.hu.shape[0]:
            raise ValueError(f"{n.tracking_id}: prior long_axis_slice {n.prior.long_axis_slice} is outside the prior series")
    out: list[KeyImageResult] = []
    for number, n in enumerate(present, start=1):
        cur = n.current
        assert cur is not None
        z = int(cur.long_axis_slice)
        uids = object_uids(current.study_instance_uid, "keyimages", content_digest(series_digest, n.tracking_uid), model_version)
        uids = ObjectUIDs(series_uid, uids.sop_instance_uid, uids.content_digest)
        rgb = render_nodule_panel(n, prior, current)
        ref = current.slice_datasets[z]
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ref,
            pixel_array=rgb,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=uids.sop_instance_uid,
            instance_number=number,
            manufacturer=MANUFACTURER,
            patient_orientation=("L", "P"),  # the image panels are axial, radiological convention
            series_description=KEY_SERIES_DESCRIPTION,
            # RLE Lossless: flat rendered panels compress ~8× (2.2 MB → ~0.3 MB) for ~0.05 s, and
            # every PACS/viewer decodes it.
            transfer_syntax_uid=RLELossless,
        )
        sc.SpecificCharacterSet = "ISO_IR 192"  # comments and names in UTF-8
        sc.ImageType = ["DERIVED", "SECONDARY"]
        sc.ConversionType = "WSD"  # rendered by software (workstation), not digitised from film/video
        sc.BurnedInAnnotation = "YES"
        # A chest CT: without Body Part Examined, validators ask for Laterality (a paired-organ rule).
        sc.BodyPartExamined = str(getattr(ref, "BodyPartExamined", "") or "CHEST")
        sc.RecognizableVisualFeatures = "NO"
        sc.SoftwareVersions = [software_version(), f"{GROWTH_MODEL_NAME} {model_version}"]
        sc.ImageComments = f"{n.tracking_id}: prior | current | predicted (AI) | growth chart. AI output, not for diagnosis."
        sc.DerivationDescription = "NoduleTrack key image: nodule measurements and MT-NoGNet growth forecast (AI prediction)"
        sources = [_source_item(ref)]
        if prior is not None and n.prior is not None and prior.slice_datasets:
            sources.append(_source_item(prior.slice_datasets[int(n.prior.long_axis_slice)]))
        sc.SourceImageSequence = sources
        add_predecessor(sc, (predecessors or {}).get(n.tracking_uid))
        out.append(KeyImageResult(dataset=sc, uids=uids, tracking_uid=n.tracking_uid))
    return out
