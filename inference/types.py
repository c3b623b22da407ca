"""Result types shared by ``inference``, ``reports`` and the pipeline.

Plain dataclasses over numpy arrays: no network, no database, no pydicom objects except the optional
header-only slice datasets a :class:`CTVolume` keeps so that the DICOM writers can reference their
sources. Coordinates follow DICOM: patient LPS millimetres; array indices are ``(z, y, x)`` =
(slice, row, column).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Consistency = Literal["solid", "part_solid", "ground_glass"]
NoduleStatus = Literal["tracked", "new", "resolved"]


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a ``(z, y, x)`` voxel array sits in patient space.

    ``origin`` is the LPS position of voxel ``(0, 0, 0)``; ``spacing`` is ``(x, y, z)`` in mm
    (column, row, slice step); ``direction`` is the 3×3 matrix whose *columns* are the patient-space
    unit vectors of the x (column), y (row) and z (slice) index axes (SimpleITK convention, stored
    row-major as 9 floats).
    """

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    shape: tuple[int, int, int]  # (nz, ny, nx)

    def __post_init__(self) -> None:
        if len(self.direction) != 9:
            raise ValueError(f"direction must have 9 elements, got {len(self.direction)}")
        if any(s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        if len(self.shape) != 3 or any(n <= 0 for n in self.shape):
            raise ValueError(f"shape must be three positive sizes (nz, ny, nx), got {self.shape}")

    @property
    def matrix(self) -> np.ndarray:
        """4×4 affine from ``(x, y, z)`` index (column, row, slice) to LPS mm."""
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        m = np.eye(4)
        m[:3, :3] = d * np.asarray(self.spacing, dtype=float)[None, :]
        m[:3, 3] = self.origin
        return m

    def index_to_lps(self, zyx: Any) -> np.ndarray:
        """``(..., 3)`` array of ``(z, y, x)`` indices (may be fractional) → LPS mm."""
        zyx = np.asarray(zyx, dtype=float)
        xyz1 = np.concatenate([zyx[..., ::-1], np.ones(zyx.shape[:-1] + (1,))], axis=-1)
        return (xyz1 @ self.matrix.T)[..., :3]

    def lps_to_index(self, lps: Any) -> np.ndarray:
        """``(..., 3)`` LPS mm → fractional ``(z, y, x)`` indices."""
        lps = np.asarray(lps, dtype=float)
        lps1 = np.concatenate([lps, np.ones(lps.shape[:-1] + (1,))], axis=-1)
        xyz = (lps1 @ np.linalg.inv(self.matrix).T)[..., :3]
        return xyz[..., ::-1]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))


@dataclass
class CTVolume:
    """One CT series as a volume in HU (int16) with its geometry and identifiers."""

    hu: np.ndarray  # (nz, ny, nx) int16, HU
    geometry: VolumeGeometry
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: list[str]  # one per z slice, in array order
    study_date: _dt.date | None = None
    patient_id: str = ""
    series_description: str = ""
    slice_datasets: list[Any] = field(default_factory=list)  # header-only pydicom Datasets, z order

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"hu must be a 3-D array, got shape {self.hu.shape}")
        if tuple(self.hu.shape) != tuple(self.geometry.shape):
            raise ValueError(f"hu shape {self.hu.shape} does not match geometry shape {self.geometry.shape}")
        if self.sop_instance_uids and len(self.sop_instance_uids) != self.hu.shape[0]:
            raise ValueError(
                f"{len(self.sop_instance_uids)} SOP Instance UIDs for {self.hu.shape[0]} slices"
            )


@dataclass
class NoduleMeasurement:
    """One nodule at one time point, in that study's own coordinates."""

    center_mm: tuple[float, float, float]  # LPS centroid
    volume_mm3: float
    long_axis_mm: float  # longest in-plane (axial) diameter
    short_axis_mm: float  # longest perpendicular to it, same slice
    mean_diameter_mm: float  # (long + short) / 2, CLINICAL.md
    solid_component_mm: float  # mean diameter of the solid part (0 for pure ground-glass)
    mean_hu: float
    consistency: Consistency
    long_axis_endpoints_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    long_axis_slice: int  # z index of the slice where the long axis was measured
    mask: np.ndarray  # bool, cropped box of the volume grid
    mask_offset: tuple[int, int, int]  # (z, y, x) index of mask[0, 0, 0] in the volume
    juxtapleural: bool = False
    margin: str = ""  # smooth | lobulated | spiculated when estimated

    def full_mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The mask pasted into a zero volume of ``shape``."""
        out = np.zeros(shape, dtype=bool)
        z, y, x = self.mask_offset
        dz, dy, dx = self.mask.shape
        out[z : z + dz, y : y + dy, x : x + dx] = self.mask
        return out


@dataclass
class Forecast:
    """The growth model's prediction for one nodule at ``horizon_days`` after the current study."""

    horizon_days: int
    volume_mm3: float
    volume_low_mm3: float
    volume_high_mm3: float
    mean_diameter_mm: float
    mean_diameter_low_mm: float
    mean_diameter_high_mm: float
    model_version: str
    mask: np.ndarray | None = None  # predicted extent, cropped box of the current volume grid
    mask_offset: tuple[int, int, int] = (0, 0, 0)


@dataclass
class TrackedNodule:
    """One nodule followed across studies: the same ``tracking_uid`` in every study's SEG and SR."""

    tracking_uid: str
    tracking_id: str  # human label, e.g. "Nodule 1"
    status: NoduleStatus
    current: NoduleMeasurement | None  # None when resolved
    prior: NoduleMeasurement | None  # None when new
    interval_days: int | None = None
    match_confidence: float | None = None
    vdt_days: float | None = None
    volume_change_pct: float | None = None
    forecast: Forecast | None = None
