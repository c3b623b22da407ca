"""Growth-model data: the manifest contract, loading, resampling, windowing and augmentation.

The manifest (``../shared/DESIGN.md``) is JSON lines, one nodule pair per line::

    {"id", "baseline_image", "baseline_mask", "followup_image", "followup_mask", "interval_days",
     "history": [{"image", "mask", "days_before_baseline"}]   # optional
     ...}                                                      # any extra keys are kept

Paths are NIfTI or MetaImage in HU (masks binary), relative paths are taken from the manifest's
folder, and the spacing is whatever the scanner gave: every pair is resampled with MONAI transforms
onto one fixed grid (``GrowthConfig.spacing_mm`` isotropic, ``patch`` voxels per side, centred on
the baseline nodule's centroid, axes of the baseline image), the follow-up and history onto the
baseline grid (so a user's pre-registered pairs stay registered), and HU are windowed to [0, 1].

Arrays inside this package are MONAI-ordered: ``(channel, i, j, k)`` in the image's own index order
(x, y, z for an ITK image) with a RAS affine carried by :class:`monai.data.MetaTensor`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    RandFlipd,
    RandRotate90d,
    RandShiftIntensityd,
    ResampleToMatchd,
    ScaleIntensityRanged,
    Spacingd,
)

REQUIRED_KEYS = ("id", "baseline_image", "baseline_mask", "followup_image", "followup_mask", "interval_days")
HISTORY_KEYS = ("image", "mask", "days_before_baseline")
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd")

# Channel layout of a prepared sample (see :func:`prepare_pair`).
IMAGE_KEYS = ("baseline_image", "followup_image", "history_image")
MASK_KEYS = ("baseline_mask", "followup_mask", "history_mask")


class ManifestError(ValueError):
    """A manifest line is unusable; the message names the file, line and field."""


@dataclass(frozen=True)
class GrowthConfig:
    """The fixed grid and intensity window the model sees (stored inside every checkpoint).

    ``spacing_mm`` × ``patch`` is the field of view: 1 mm × 48 = 48 mm holds a 30 mm nodule with
    room to grow, and 48³ keeps a CPU training run within 30 minutes (64³ costs ~2.4× more per step
    for context the nodule does not need).
    """

    spacing_mm: float = 1.0
    patch: int = 48
    hu_min: float = -1000.0
    hu_max: float = 400.0
    base_channels: int = 12
    cond_dim: int = 32
    residual_margin: int = 2  # voxels around the nodule (then and now) where the texture residual may act

    def __post_init__(self) -> None:
        if self.spacing_mm <= 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")
        if self.patch < 16 or self.patch % 8:
            raise ValueError(f"patch must be a multiple of 8 and at least 16, got {self.patch}")
        if self.hu_max <= self.hu_min:
            raise ValueError(f"hu window must be increasing, got [{self.hu_min}, {self.hu_max}]")
        if self.residual_margin < 0:
            raise ValueError(f"residual_margin must be >= 0, got {self.residual_margin}")
        if self.base_channels < 4:
            raise ValueError(f"base_channels must be >= 4, got {self.base_channels}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GrowthConfig":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class HistoryPoint:
    image: Path
    mask: Path
    days_before_baseline: float


@dataclass(frozen=True)
class PairRecord:
    """One validated manifest line."""

    id: str
    baseline_image: Path
    baseline_mask: Path
    followup_image: Path
    followup_mask: Path
    interval_days: float
    history: tuple[HistoryPoint, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # pattern, consistency, ... when present

    @property
    def pattern(self) -> str | None:
        value = self.extra.get("pattern")
        return str(value) if value is not None else None


def _image_size(path: Path) -> tuple[int, ...]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return tuple(int(s) for s in reader.GetSize())


def _resolve(where: str, base: Path, key: str, value: Any, check_files: bool) -> Path:
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: {key!r} must be a non-empty path string, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    if not any(path.name.lower().endswith(s) for s in IMAGE_SUFFIXES):
        raise ManifestError(f"{where}: {key!r} {value!r} is not NIfTI or MetaImage ({', '.join(IMAGE_SUFFIXES)})")
    if check_files and not path.is_file():
        raise ManifestError(f"{where}: {key!r} file not found: {path}")
    return path


def _positive_days(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ManifestError(f"{where}: {key!r} must be a positive number of days, got {value!r}")
    return float(value)


def _check_pair_shape(where: str, image_key: str, image: Path, mask_key: str, mask: Path) -> None:
    try:
        size_i, size_m = _image_size(image), _image_size(mask)
    except RuntimeError as exc:
        raise ManifestError(f"{where}: cannot read header of {image} or {mask}: {str(exc).strip().splitlines()[-1]}") from exc
    if size_i != size_m:
        raise ManifestError(f"{where}: {mask_key} shape {size_m} does not match {image_key} shape {size_i}")


def parse_manifest_line(line: str, where: str, base: Path, check_files: bool = True) -> PairRecord:
    """Validate one JSON line; raise :class:`ManifestError` naming what is wrong."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ManifestError(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}")
    paths = {k: _resolve(where, base, k, data[k], check_files) for k in REQUIRED_KEYS[1:5]}
    interval = _positive_days(where, "interval_days", data["interval_days"])
    history_raw = data.get("history") or []
    if not isinstance(history_raw, list):
        raise ManifestError(f"{where}: 'history' must be a list, got {type(history_raw).__name__}")
    history = []
    for i, entry in enumerate(history_raw):
        hwhere = f"{where}: history[{i}]"
        if not isinstance(entry, dict):
            raise ManifestError(f"{hwhere}: expected an object")
        hmissing = [k for k in HISTORY_KEYS if k not in entry]
        if hmissing:
            raise ManifestError(f"{hwhere}: missing key(s) {', '.join(repr(k) for k in hmissing)}")
        history.append(
            HistoryPoint(
                image=_resolve(hwhere, base, "image", entry["image"], check_files),
                mask=_resolve(hwhere, base, "mask", entry["mask"], check_files),
                days_before_baseline=_positive_days(hwhere, "days_before_baseline", entry["days_before_baseline"]),
            )
        )
    if check_files:
        _check_pair_shape(where, "baseline_image", paths["baseline_image"], "baseline_mask", paths["baseline_mask"])
        _check_pair_shape(where, "followup_image", paths["followup_image"], "followup_mask", paths["followup_mask"])
        for i, h in enumerate(history):
            _check_pair_shape(f"{where}: history[{i}]", "image", h.image, "mask", h.mask)
    extra = {k: v for k, v in data.items() if k not in REQUIRED_KEYS and k != "history"}
    return PairRecord(id=str(data["id"]), interval_days=interval, history=tuple(history), extra=extra, **paths)


def read_manifest(path: str | Path, check_files: bool = True) -> list[PairRecord]:
    """Read and validate a whole manifest; the first bad line raises :class:`ManifestError`."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    records: list[PairRecord] = []
    seen: set[str] = set()
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            record = parse_manifest_line(line, where, path.parent, check_files)
            if record.id in seen:
                raise ManifestError(f"{where}: duplicate id {record.id!r}")
            seen.add(record.id)
            records.append(record)
    if not records:
        raise ManifestError(f"{path}: no pairs in manifest")
    return records


# --------------------------------------------------------------------------------------------
# Loading and the fixed grid


def sitk_to_metatensor(image: sitk.Image) -> MetaTensor:
    """A SimpleITK image (LPS) → MONAI ``(1, x, y, z)`` float32 MetaTensor with a RAS affine."""
    arr = sitk.GetArrayFromImage(image).astype(np.float32)  # (z, y, x)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D image, got {arr.ndim}-D")
    return array_to_metatensor(arr, image.GetOrigin(), image.GetSpacing(), image.GetDirection())


def array_to_metatensor(
    zyx: np.ndarray, origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]
) -> MetaTensor:
    """A ``(z, y, x)`` array with ITK/DICOM LPS geometry → ``(1, x, y, z)`` MetaTensor, RAS affine."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = d * np.asarray(spacing, dtype=np.float64)[None, :]
    lps[:3, 3] = origin
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    data = torch.as_tensor(np.ascontiguousarray(np.asarray(zyx, dtype=np.float32).transpose(2, 1, 0)))[None]
    return MetaTensor(data, affine=torch.as_tensor(ras, dtype=torch.float64))


def load_image(path: Path) -> MetaTensor:
    return sitk_to_metatensor(sitk.ReadImage(str(path)))


def mask_centroid(mask: torch.Tensor) -> np.ndarray:
    """Voxel-index centroid of a (soft) ``(1, i, j, k)`` mask; the array centre when it is empty."""
    m = np.asarray(mask[0], dtype=np.float64)
    total = m.sum()
    if total <= 0:
        return (np.asarray(m.shape) - 1) / 2.0
    grids = np.indices(m.shape, dtype=np.float64)
    return np.array([(g * m).sum() / total for g in grids])


def _stack_time_points(images: dict[str, MetaTensor]) -> dict[str, MetaTensor]:
    """Join each time point's image and mask into one 2-channel MetaTensor when they share a grid.

    One resampling grid then serves both (half the interpolation work, identical values per
    channel). Keys become ``baseline``, ``followup``, ``history``; an image/mask whose geometry
    differs (a mask written with its own header) stays as two keys and is resampled on its own.
    """
    out: dict[str, MetaTensor] = {}
    for key, value in images.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_image" in images:
            continue
        name = key[: -len("_image")] if key.endswith("_image") else None
        mask = images.get(f"{name}_mask") if name else None
        if mask is not None and mask.shape == value.shape and torch.allclose(mask.affine, value.affine, atol=1e-4):
            out[name] = MetaTensor(torch.cat([value.as_tensor(), mask.as_tensor()]), affine=value.affine.clone())
        else:
            out[key] = value
            if mask is not None:
                out[f"{name}_mask"] = mask
    return out


def _crop_padded(t: MetaTensor, start: Sequence[int], size: int) -> MetaTensor:
    """The ``size``³ box at index ``start`` (may reach outside), filled with 0 (air after the window)
    where the data end; the affine is moved to the box's first voxel."""
    shape = t.shape[1:]
    out = torch.zeros((t.shape[0], size, size, size), dtype=t.dtype)
    src = [slice(max(s, 0), min(s + size, n)) for s, n in zip(start, shape)]
    dst = [slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start)]
    if all(sl.stop > sl.start for sl in src):
        out[(slice(None), *dst)] = t.as_tensor()[(slice(None), *src)]
    affine = t.affine.clone()
    affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ torch.as_tensor(start, dtype=affine.dtype)
    return MetaTensor(out, affine=affine)


def prepare_pair(images: dict[str, MetaTensor], cfg: GrowthConfig) -> dict[str, Any]:
    """Resample, window and crop one pair's MetaTensors onto the model grid.

    ``images`` holds ``baseline_image`` and ``baseline_mask`` and optionally ``followup_*`` and
    ``history_*``. Returns float32 ``(1, P, P, P)`` MetaTensors for the same keys (masks soft in
    [0, 1] after linear resampling, so their sum is a sub-voxel volume) and, as ``affine``, the RAS
    affine of the patch grid (used to map predictions back).
    """
    keys = list(images)
    stacked = _stack_time_points(images)
    base_keys = [k for k in ("baseline", "baseline_image", "baseline_mask") if k in stacked]
    dst_key = "baseline" if "baseline" in stacked else "baseline_image"
    other = [k for k in stacked if k not in base_keys]
    steps: list[Any] = [Spacingd(base_keys, pixdim=cfg.spacing_mm, mode="bilinear", dtype=np.float32)]
    if other:
        steps.append(ResampleToMatchd(other, key_dst=dst_key, mode="bilinear", padding_mode="border", dtype=np.float32))
    resampled = Compose(steps)(dict(stacked))
    data: dict[str, MetaTensor] = {}
    for k, v in resampled.items():
        if k in ("baseline", "followup", "history"):
            data[f"{k}_image"], data[f"{k}_mask"] = v[:1], v[1:]
        else:
            data[k] = v
    img_keys = [k for k in keys if k.endswith("_image")]
    data = ScaleIntensityRanged(img_keys, a_min=cfg.hu_min, a_max=cfg.hu_max, b_min=0.0, b_max=1.0, clip=True)(data)
    for k in keys:
        if k.endswith("_mask"):
            data[k] = data[k].clamp(0.0, 1.0)
    # a patch centred on the baseline nodule's centroid, air-padded where the data end
    centre = mask_centroid(data["baseline_mask"])
    half = cfg.patch // 2
    start = [int(round(c)) - half for c in centre]
    out: dict[str, Any] = {k: _crop_padded(data[k], start, cfg.patch).float() for k in keys}
    out["affine"] = out["baseline_image"].affine.clone()
    return out


def load_pair(record: PairRecord, cfg: GrowthConfig) -> dict[str, Any]:
    """Read one manifest pair from disk and prepare it; shape/consistency errors name the pair."""
    images = {
        "baseline_image": load_image(record.baseline_image),
        "baseline_mask": load_image(record.baseline_mask),
        "followup_image": load_image(record.followup_image),
        "followup_mask": load_image(record.followup_mask),
    }
    hist = min(record.history, key=lambda h: h.days_before_baseline) if record.history else None
    if hist is not None:
        images["history_image"] = load_image(hist.image)
        images["history_mask"] = load_image(hist.mask)
    for a, b in (("baseline_image", "baseline_mask"), ("followup_image", "followup_mask"), ("history_image", "history_mask")):
        if a in images and images[a].shape != images[b].shape:
            raise ManifestError(f"pair {record.id!r}: {b} shape {tuple(images[b].shape[1:])} does not match {a} shape {tuple(images[a].shape[1:])}")
    if float(images["baseline_mask"].sum()) <= 0:
        raise ManifestError(f"pair {record.id!r}: baseline_mask is empty ({record.baseline_mask})")
    out = prepare_pair(images, cfg)
    return to_sample(out, record.interval_days, hist.days_before_baseline if hist else None, record)


def to_sample(
    prepared: dict[str, Any], interval_days: float, days_before: float | None, record: PairRecord | None = None
) -> dict[str, Any]:
    """Pack a prepared pair as a training/evaluation sample of plain tensors (zeros for absent keys)."""
    like = prepared["baseline_image"]
    sample: dict[str, Any] = {}
    for k in IMAGE_KEYS + MASK_KEYS:
        t = prepared.get(k)
        sample[k] = torch.zeros_like(like.as_tensor()) if t is None else t.as_tensor().clone()
    sample["has_followup"] = torch.tensor(float("followup_image" in prepared))
    sample["has_history"] = torch.tensor(float("history_image" in prepared))
    sample["interval_days"] = torch.tensor(float(interval_days))
    sample["days_before"] = torch.tensor(float(days_before) if days_before else 0.0)
    if record is not None:
        sample["id"] = record.id
        sample["pattern"] = record.pattern or "unknown"
    return sample


class PairCache:
    """All pairs of a manifest prepared once and kept as float16 tensors (a 48³ pair is ~1.3 MB)."""

    def __init__(self, records: Sequence[PairRecord], cfg: GrowthConfig, progress: bool = False) -> None:
        from tqdm import tqdm

        self.records = list(records)
        self.samples: list[dict[str, Any]] = []
        for rec in tqdm(self.records, desc="loading pairs", unit="pair", disable=not progress):
            s = load_pair(rec, cfg)
            for k in IMAGE_KEYS + MASK_KEYS:
                s[k] = s[k].half()
            self.samples.append(s)

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, i: int) -> dict[str, Any]:
        s = dict(self.samples[i])
        for k in IMAGE_KEYS + MASK_KEYS:
            s[k] = s[k].float()
        return s


def augmentation(seed: int) -> Compose:
    """Random flips on every axis, 90° turns in the axial plane, a small global intensity shift.

    The same draw applies to every image and mask of a sample, so baseline, history and follow-up
    stay registered. Geometry-preserving only: interpolation would blur the masks.
    """
    keys = list(IMAGE_KEYS + MASK_KEYS)
    t = Compose(
        [
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
            RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)),
            RandShiftIntensityd(list(IMAGE_KEYS), offsets=0.02, prob=0.5),
        ]
    )
    t.set_random_state(seed=seed)
    return t


def collate(samples: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch (tensors stacked, strings listed)."""
    samples = list(samples)
    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        out[k] = torch.stack([torch.as_tensor(v) for v in vals]) if isinstance(vals[0], torch.Tensor) else vals
    return out
