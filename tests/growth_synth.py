"""Tiny synthetic nodule pairs for the growth-model unit tests (spheres in noisy lung; not phantoms).

The project's phantom generator (``inference.phantoms``) makes the real training data; these few
spheres only exercise the loader, loss and training loop quickly and with known answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def _write(arr: np.ndarray, spacing: tuple[float, float, float], path: Path, origin=(0.0, 0.0, 0.0)) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def sphere_volume(shape: tuple[int, int, int], spacing: tuple[float, float, float], radius_mm: float,
                  rng: np.random.Generator, hu: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """(HU int16, mask uint8) of a sphere centred in a noisy lung-density box; spacing is (x, y, z)."""
    zz, yy, xx = np.indices(shape, dtype=np.float64)
    c = (np.asarray(shape) - 1) / 2.0
    r = np.sqrt(((zz - c[0]) * spacing[2]) ** 2 + ((yy - c[1]) * spacing[1]) ** 2 + ((xx - c[2]) * spacing[0]) ** 2)
    mask = r <= radius_mm
    hu_arr = np.full(shape, -850.0) + rng.normal(0, 25, shape)
    hu_arr[mask] = hu + rng.normal(0, 25, int(mask.sum()))
    return hu_arr.astype(np.int16), mask.astype(np.uint8)


def make_pairs(out: Path, n: int, seed: int, shape=(40, 40, 40), spacing=(1.2, 1.2, 1.5)) -> Path:
    """``n`` sphere pairs (growing, stable, shrinking), every other one with a history time point."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    patterns = ["growing", "stable", "shrinking"]
    for i in range(n):
        pattern = patterns[i % 3]
        r0 = float(rng.uniform(4.0, 7.0))
        interval = float(rng.uniform(90, 365))
        factor = {"growing": 1.0 + interval / 600.0, "stable": 1.0, "shrinking": 1.0 - interval / 1500.0}[pattern]
        rec = {"id": f"s{seed}_{i}", "interval_days": interval, "pattern": pattern}
        for tag, radius in (("baseline", r0), ("followup", r0 * factor)):
            hu, mask = sphere_volume(shape, spacing, radius, rng)
            _write(hu, spacing, out / f"{rec['id']}_{tag}.nii.gz")
            _write(mask, spacing, out / f"{rec['id']}_{tag}_mask.nii.gz")
            rec[f"{tag}_image"] = f"{rec['id']}_{tag}.nii.gz"
            rec[f"{tag}_mask"] = f"{rec['id']}_{tag}_mask.nii.gz"
        if i % 2 == 0:
            before = float(rng.uniform(90, 365))
            hfactor = {"growing": 1.0 / (1.0 + before / 600.0), "stable": 1.0, "shrinking": 1.0 / (1.0 - before / 1500.0)}[pattern]
            hu, mask = sphere_volume(shape, spacing, r0 * hfactor, rng)
            _write(hu, spacing, out / f"{rec['id']}_hist.nii.gz")
            _write(mask, spacing, out / f"{rec['id']}_hist_mask.nii.gz")
            rec["history"] = [{"image": f"{rec['id']}_hist.nii.gz", "mask": f"{rec['id']}_hist_mask.nii.gz",
                               "days_before_baseline": before}]
        lines.append(json.dumps(rec))
    manifest = out / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
