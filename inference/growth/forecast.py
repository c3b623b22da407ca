"""Pipeline use of the growth model: forecast each nodule at a horizon, in the current study's grid.

For every nodule of the current study: a patch around it (its measurement mask + the CT in HU) is
put on the model grid with the same MONAI preparation as training (:func:`~.data.prepare_pair`); if
the nodule was seen before, the prior study's patch is added as the history time point, aligned to
the current one by the nodule centroids (studies have different frames of reference; the small
rotation of a repositioned patient is ignored). All nodules and all test-time augmentations (flips)
run as one batch. The predicted soft mask goes back onto the current volume's voxels
(:class:`monai.transforms.ResampleToMatch`), thresholded at 0.5, cropped to its bounding box.

Volume and mean diameter are reported relative to the measurement, so that the model grid's
resampling cancels out: ``V_pred = V_measured · Σ predicted / Σ baseline`` (soft sums on the model
grid) and ``d_pred = d_measured · (V_pred / V_measured)^(1/3)``; the low/high values are the extremes
over the flipped copies (model instability, not biological uncertainty — say so in reports).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import ResampleToMatch

from ..types import CTVolume, Forecast, NoduleMeasurement
from .data import array_to_metatensor, prepare_pair
from .network import MTNoGNet
from .train import load_model

AIR_HU = -1000.0
WEIGHTS_FILE = "mt_nognet.pt"
# Test-time augmentation: the patch as is and mirrored on all three axes (dims 2-4 of a MONAI batch);
# two passes keep a forecast under 100 ms per nodule on a 2-core CPU.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (2, 3, 4))


def default_weights_path() -> Path:
    """The weights shipped with the package (``inference/growth/mt_nognet.pt``; package data)."""
    return Path(__file__).resolve().parent / WEIGHTS_FILE


@dataclass(frozen=True)
class PriorPatch:
    """The same nodule at an earlier study: that study's volume, its measurement, and the gap."""

    volume: CTVolume
    nodule: NoduleMeasurement
    days_before: float

    def __post_init__(self) -> None:
        if not (isinstance(self.days_before, (int, float)) and math.isfinite(self.days_before) and self.days_before > 0):
            raise ValueError(f"days_before must be a positive number of days, got {self.days_before!r}")


def _crop_around(volume: CTVolume, nodule: NoduleMeasurement, half_mm: float) -> tuple[MetaTensor, MetaTensor, np.ndarray]:
    """Image and mask MetaTensors of a box around the nodule (air-padded past the volume's edge).

    Returns also the box's ``(z, y, x)`` start index in the volume (may be negative).
    """
    if nodule.mask is None or not np.any(nodule.mask):
        raise ValueError("nodule measurement has an empty mask; nothing to forecast")
    geo = volume.geometry
    idx = np.argwhere(nodule.mask)
    centre = idx.mean(axis=0) + np.asarray(nodule.mask_offset)  # (z, y, x)
    sp_zyx = np.asarray(geo.spacing, dtype=float)[::-1]
    half = np.ceil(half_mm / sp_zyx).astype(int)
    start = np.round(centre).astype(int) - half
    size = 2 * half + 1
    img = np.full(tuple(size), AIR_HU, dtype=np.float32)
    msk = np.zeros(tuple(size), dtype=np.float32)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + size, np.asarray(volume.hu.shape))
    if np.any(src_hi <= src_lo):
        raise ValueError("nodule lies outside its volume")
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    img[dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = volume.hu[
        src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]]
    full = np.zeros(tuple(size), dtype=bool)
    m_lo = np.asarray(nodule.mask_offset) - start
    m_hi = m_lo + np.asarray(nodule.mask.shape)
    a, b = np.maximum(m_lo, 0), np.minimum(m_hi, size)
    full[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = nodule.mask[
        a[0] - m_lo[0]:b[0] - m_lo[0], a[1] - m_lo[1]:b[1] - m_lo[1], a[2] - m_lo[2]:b[2] - m_lo[2]]
    msk[full] = 1.0
    origin = geo.index_to_lps(start.astype(float))
    return (array_to_metatensor(img, origin, geo.spacing, geo.direction),
            array_to_metatensor(msk, origin, geo.spacing, geo.direction), start)


def _shift_to(mt: MetaTensor, shift_ras: np.ndarray) -> MetaTensor:
    aff = mt.affine.clone()
    aff[:3, 3] += torch.as_tensor(shift_ras, dtype=aff.dtype)
    out = mt.clone()
    out.affine = aff
    return out


def _ras_centroid(mask: MetaTensor) -> np.ndarray:
    m = np.asarray(mask[0])
    ijk = np.argwhere(m > 0.5).mean(axis=0)
    return (np.asarray(mask.affine, dtype=float) @ np.append(ijk, 1.0))[:3]


class GrowthForecaster:
    """Loads the weights once; :meth:`forecast` handles any number of nodules in one batch."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", tta: bool = True,
                 threads: int | None = 2) -> None:
        if threads:
            torch.set_num_threads(threads)
        path = Path(weights) if weights else default_weights_path()
        self.model: MTNoGNet
        self.model, meta = load_model(path, device)
        self.device = torch.device(device)
        self.cfg = self.model.cfg
        self.flips = TTA_FLIPS if tta else ((),)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        self.model_version = f"MT-NoGNet {meta.get('version', '1')} ({digest})"

    def forecast(
        self,
        current: CTVolume,
        nodules: Sequence[NoduleMeasurement],
        horizon_days: float | Sequence[float],
        priors: Sequence[PriorPatch | None] | None = None,
    ) -> list[Forecast]:
        """One :class:`~inference.types.Forecast` per nodule, in order."""
        n = len(nodules)
        if n == 0:
            return []
        horizons = [float(horizon_days)] * n if isinstance(horizon_days, (int, float)) else [float(h) for h in horizon_days]
        if len(horizons) != n:
            raise ValueError(f"{len(horizons)} horizons for {n} nodules")
        if any(not math.isfinite(h) or h <= 0 for h in horizons):
            raise ValueError(f"horizon_days must be positive, got {horizons}")
        priors = list(priors) if priors is not None else [None] * n
        if len(priors) != n:
            raise ValueError(f"{len(priors)} priors for {n} nodules")

        half_mm = self.cfg.patch * self.cfg.spacing_mm / 2.0 + 2.0 * self.cfg.spacing_mm
        prepared, natives = [], []
        for nod, prior in zip(nodules, priors):
            img, msk, start = _crop_around(current, nod, half_mm)
            images = {"baseline_image": img, "baseline_mask": msk}
            if prior is not None:
                p_img, p_msk, _ = _crop_around(prior.volume, prior.nodule, half_mm)
                shift = _ras_centroid(msk) - _ras_centroid(p_msk)
                images["history_image"], images["history_mask"] = _shift_to(p_img, shift), _shift_to(p_msk, shift)
            prepared.append(prepare_pair(images, self.cfg))
            natives.append((msk, start))

        def stack(key: str) -> torch.Tensor:
            return torch.stack([p[key].as_tensor() if key in p else torch.zeros_like(p["baseline_image"].as_tensor()) for p in prepared])

        base = {k: stack(k) for k in ("baseline_image", "baseline_mask", "history_image", "history_mask")}
        has_hist = torch.tensor([1.0 if pr is not None else 0.0 for pr in priors])
        days_before = torch.tensor([float(pr.days_before) if pr is not None else 0.0 for pr in priors])
        interval = torch.tensor(horizons)
        k = len(self.flips)
        inputs = {key: torch.cat([t.flip(f) if f else t for f in self.flips]) for key, t in base.items()}
        with torch.no_grad():
            out = self.model(
                inputs["baseline_image"].to(self.device), inputs["baseline_mask"].to(self.device),
                interval.repeat(k).to(self.device), inputs["history_image"].to(self.device),
                inputs["history_mask"].to(self.device), has_hist.repeat(k).to(self.device),
                days_before.repeat(k).to(self.device), with_image=False,  # the forecast needs only the mask
            )
        masks = out.mask.cpu().reshape(k, n, *out.mask.shape[1:])
        masks = torch.stack([masks[j].flip(f) if f else masks[j] for j, f in enumerate(self.flips)])  # undo flips
        base_sum = base["baseline_mask"].sum(dim=(1, 2, 3, 4)).clamp(min=1e-6)
        ratios = masks.sum(dim=(2, 3, 4, 5)) / base_sum[None]  # (k, n)
        mean_mask = masks.mean(dim=0)

        results = []
        for i, nod in enumerate(nodules):
            r = ratios[:, i]
            v = nod.volume_mm3
            vols = (v * r.mean().item(), v * r.min().item(), v * r.max().item())
            d = [nod.mean_diameter_mm * (x / v) ** (1.0 / 3.0) if v > 0 else 0.0 for x in vols]
            mask, offset = self._to_current_grid(mean_mask[i], prepared[i]["affine"], natives[i], current.hu.shape)
            results.append(Forecast(
                horizon_days=int(round(horizons[i])), volume_mm3=vols[0], volume_low_mm3=vols[1],
                volume_high_mm3=vols[2], mean_diameter_mm=d[0], mean_diameter_low_mm=d[1],
                mean_diameter_high_mm=d[2], model_version=self.model_version, mask=mask, mask_offset=offset,
            ))
        return results

    @staticmethod
    def _to_current_grid(pred: torch.Tensor, affine: torch.Tensor, native: tuple[MetaTensor, np.ndarray],
                         vol_shape: tuple[int, ...]) -> tuple[np.ndarray | None, tuple[int, int, int]]:
        """Soft mask on the model grid → boolean mask cropped to its box in the volume, and offset."""
        dst, start = native
        src = MetaTensor(pred, affine=affine)
        back = ResampleToMatch()(src, dst, mode="bilinear", padding_mode="zeros")
        zyx = np.asarray(back[0]).transpose(2, 1, 0) > 0.5  # MONAI (x, y, z) → (z, y, x)
        # keep the part inside the volume
        lo = np.maximum(-start, 0)
        hi = np.minimum(np.asarray(vol_shape) - start, np.asarray(zyx.shape))
        clipped = np.zeros_like(zyx)
        clipped[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = zyx[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        idx = np.argwhere(clipped)
        if idx.size == 0:
            return None, (0, 0, 0)
        a, b = idx.min(axis=0), idx.max(axis=0) + 1
        mask = clipped[a[0]:b[0], a[1]:b[1], a[2]:b[2]].copy()
        off = tuple(int(x) for x in (start + a))
        return mask, off  # type: ignore[return-value]
