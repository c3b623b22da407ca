"""Growth-model training pairs rendered directly as small patches (no whole chest).

Each pair is one nodule seen at baseline and follow-up (and, for about half the pairs, an earlier
time point), each as its own patch: lung parenchyma with texture and a few vessels, the chest wall
for juxtapleural nodules, the nodule with partial-volume edges and its solid core, correlated
noise, and the patch centre off the nodule by a few mm (imperfect registration). Images are HU int16
NIfTI, masks uint8 NIfTI, listed in ``manifest.jsonl`` with the DESIGN.md growth-data contract::

    {"id", "baseline_image", "baseline_mask", "followup_image", "followup_mask", "interval_days",
     "history": [{"image", "mask", "days_before_baseline"}], "pattern", "consistency", ...}

Paths in the manifest are relative to the manifest's directory. Every growth pattern occurs
(``pattern`` cycles through them with the pair index, the rest is random per pair).
"""

from __future__ import annotations

import json
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from . import _kernels as K
from .patient import PATTERNS, PhantomNoduleTruth, _design_nodule, _fit_core, _stream
from .render import kernel_threads
from .shapes import blend_nodule, make_shape, occupancy_in_grid, random_rotation, volume_preserving_mask


def _nifti(path: Path, data: np.ndarray, origin_lps: np.ndarray, spacing: np.ndarray) -> None:
    """Write ``data`` (z, y, x) as NIfTI (x, y, z) with an RAS affine equivalent to the LPS grid."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [-origin_lps[0], -origin_lps[1], origin_lps[2]]
    img = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    nib.save(img, str(path))


def _pair(seed: int, i: int, patch_size: int, spacing_mm: float, vary_spacing: bool, history_fraction: float,
          noise_hu: float | None) -> dict[str, Any]:  # fmt: skip
    """Design and render one pair; returns arrays and metadata (written by the caller)."""
    rng = _stream(seed, "patch", i)
    pattern = PATTERNS[i % len(PATTERNS)]
    with_history = pattern == "new" or rng.random() < history_fraction
    interval = int(rng.integers(91, 731))
    days = [0, interval]
    if with_history:
        before = int(rng.integers(91, 731))
        days = [0, before, before + interval]
    base_idx = len(days) - 2
    change_at = base_idx if pattern == "new" else base_idx + 1
    nod = _design_nodule(rng, 0, days, pattern=pattern, change_at=change_at)
    # juxtapleural: a chest wall plane; perivascular: a vessel touching the nodule
    q = random_rotation(rng)
    nod.rotation = q
    n_wall = None
    if nod.location == "juxtapleural":
        n_wall = rng.standard_normal(3)
        n_wall[2] *= 0.3
        n_wall /= np.linalg.norm(n_wall)
        nod.shape, _ = make_shape(rng, nod.margin, flat_axis=q.T @ n_wall, avoid_dir=q.T @ n_wall)
    else:
        nod.shape, _ = make_shape(rng, nod.margin)
    _fit_core(rng, nod)
    present = [t for t in range(len(days)) if nod.present(t)]
    ref = present[0]
    tubes: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    centers: list[np.ndarray] = []
    if n_wall is not None:
        r_out = float(nod.shape.radius((q.T @ n_wall)[None])[0])
        gap = rng.uniform(-0.6, 0.2)
        wall_point = n_wall * (r_out * nod.scale(ref) + gap)
        for t in range(len(days)):
            centers.append(wall_point - n_wall * (r_out * nod.scale(t) + gap) if nod.present(t) else np.zeros(3))
    elif nod.location == "perivascular":
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis)
        perp = np.cross(axis, rng.standard_normal(3))
        perp /= np.linalg.norm(perp)
        r_v = rng.uniform(1.0, 3.0)
        r_in = float(nod.shape.radius((q.T @ -perp)[None])[0])
        base = -perp * (r_v + 0.85 * r_in * nod.scale(ref))
        tubes.append((base - axis * 60, base + axis * 60, r_v * 1.1, r_v * 0.9))
        for t in range(len(days)):
            centers.append(base + perp * (r_v + 0.85 * r_in * nod.scale(t)) if nod.present(t) else np.zeros(3))
    else:
        centers = [np.zeros(3) for _ in days]
    nod.centers = [c if nod.present(t) else None for t, c in enumerate(centers)]
    for _ in range(int(rng.integers(2, 7))):  # background vessels
        p = rng.uniform(-30, 30, 3)
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        r = rng.uniform(0.4, 2.0)
        tubes.append((p - d * 60, p + d * 60, r, r * rng.uniform(0.6, 1.0)))
    # the scene's parenchyma texture on a 2 mm grid covering every patch (offsets ≤ 3 mm, growth
    # shifts of juxtapleural/perivascular centres ≤ ~15 mm)
    half = patch_size * (1.5 if vary_spacing else spacing_mm) / 2.0 + 20.0
    n_tex = int(np.ceil(2.0 * half / 2.0)) + 2
    tex = ndi.gaussian_filter(rng.standard_normal((n_tex, n_tex, n_tex), dtype=np.float32), 1.2, mode="wrap", truncate=3.0)
    tex /= tex.std()
    tex_origin = np.full(3, -half)
    lung_hu = rng.uniform(-880.0, -820.0)
    lung_tex = rng.uniform(12.0, 28.0)
    wall_hu = rng.uniform(35.0, 60.0)
    if vary_spacing:
        px = rng.uniform(0.6, 1.0)
        spacing = np.array([px, px, float(rng.choice([0.625, 1.0, 1.25, 1.5]))])
    else:
        spacing = np.array([spacing_mm, spacing_mm, spacing_mm])
    sigma = noise_hu if noise_hu is not None else rng.uniform(10.0, 40.0)
    images: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for t in range(len(days)):
        focus = centers[t] if nod.present(t) else centers[ref]
        origin = focus + rng.uniform(-3.0, 3.0, 3) - spacing * (patch_size - 1) / 2.0
        images.append(_render_patch(nod, t, origin, spacing, patch_size, tubes, n_wall, centers, ref, tex,
                                    tex_origin, lung_hu, lung_tex, wall_hu, sigma, rng))  # fmt: skip
    return {"nod": nod, "days": days, "images": images, "spacing": spacing, "sigma": sigma}


def _render_patch(nod: PhantomNoduleTruth, t: int, origin: np.ndarray, spacing: np.ndarray, n: int, tubes: list,
                  n_wall: np.ndarray | None, centers: list[np.ndarray], ref: int, tex: np.ndarray,
                  tex_origin: np.ndarray, lung_hu: float,
                  lung_tex: float, wall_hu: float, sigma: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One time point's patch (HU float32), nodule mask (uint8) and its origin."""
    hu = np.empty((n, n, n), dtype=np.float32)
    K.sample_texture_grid(tex, tex_origin, 0.5, origin.astype(np.float64), spacing.astype(np.float64), hu)
    hu *= np.float32(lung_tex)
    hu += np.float32(lung_hu)
    if n_wall is not None:
        r_out = float(nod.shape.radius((nod.rotation.T @ n_wall)[None])[0])  # type: ignore[union-attr]
        wall_at = float(n_wall @ centers[ref]) + r_out * nod.scale(ref)
        ax = [(origin[i] + np.arange(n) * spacing[i]) * n_wall[i] for i in range(3)]
        d = (ax[2][:, None, None] + ax[1][None, :, None] + ax[0][None, None, :] - wall_at).astype(np.float32)
        inv = np.float32(1.0 / spacing[0])
        hu += np.clip(0.5 + d * inv, 0, 1) * (np.float32(-80.0) - hu)  # extrapleural fat
        hu += np.clip(0.5 + (d - 1.5) * inv, 0, 1) * (np.float32(wall_hu) - hu)  # muscle, intercostals
    if tubes:
        seg = np.array([[*a, *b, r0, r1] for a, b, r0, r1 in tubes], dtype=np.float64)
        vals = np.full(len(tubes), 40.0)
        modes = np.zeros(len(tubes), dtype=np.int64)
        K.paint_tubes_kernel(hu, seg, vals, modes, origin.astype(np.float64), spacing.astype(np.float64), float(spacing[0]))
    mask = np.zeros(hu.shape, dtype=np.uint8)
    if nod.present(t):
        s = nod.scale(t)
        outer = nod.shape.scaled(s)  # type: ignore[union-attr]
        q = nod.rotation
        L = np.zeros((3, 4))
        L[:, :3] = q.T @ np.diag(spacing)
        L[:, 3] = q.T @ (origin - centers[t])
        found = occupancy_in_grid(outer, L, hu.shape)
        if found is not None:
            occ, box = found
            view = hu[box]
            solid_outer = nod.consistency == "solid"
            blend_nodule(view, occ, nod.hu_solid if solid_outer else nod.hu_gg, lung_hu, solid_outer)
            mask[box][volume_preserving_mask(occ)] = 1
            if nod.consistency != "solid" and nod.core_fractions[t] > 0 and nod.core is not None:
                core = nod.core.scaled(nod.core_fractions[t] ** (1.0 / 3.0) * s)
                Lc = np.zeros((3, 4))
                Lc[:, :3] = nod.core_rotation.T @ L[:, :3]
                Lc[:, 3] = nod.core_rotation.T @ (L[:, 3] - nod.core_offset * s)
                found_c = occupancy_in_grid(core, Lc, hu.shape)
                if found_c is not None:
                    occ_c, box_c = found_c
                    view_c = hu[box_c]
                    blend_nodule(view_c, occ_c, nod.hu_solid, lung_hu, True)
    if sigma > 0:
        noise = ndi.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), (0.4, 0.8, 0.8), truncate=2.5)
        hu += noise * np.float32(sigma / max(float(noise.std()), 1e-6))
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), mask, origin


def _write_pair(args: tuple) -> dict[str, Any]:
    out_dir, seed, i, patch_size, spacing_mm, vary_spacing, history_fraction, noise_hu = args
    res = _pair(seed, i, patch_size, spacing_mm, vary_spacing, history_fraction, noise_hu)
    nod: PhantomNoduleTruth = res["nod"]
    days: list[int] = res["days"]
    pid = f"S{seed}-{i:06d}"
    sub = Path("patches")
    (out_dir / sub).mkdir(parents=True, exist_ok=True)
    names = ["baseline", "followup"] if len(days) == 2 else ["history0", "baseline", "followup"]
    paths: dict[str, tuple[str, str]] = {}
    for name, (img, mask, origin) in zip(names, res["images"]):
        ip, mp = sub / f"{pid}_{name}_image.nii.gz", sub / f"{pid}_{name}_mask.nii.gz"
        _nifti(out_dir / ip, img, origin, res["spacing"])
        _nifti(out_dir / mp, mask, origin, res["spacing"])
        paths[name] = (str(ip), str(mp))
    b, f = len(days) - 2, len(days) - 1
    line: dict[str, Any] = {
        "id": pid,
        "baseline_image": paths["baseline"][0],
        "baseline_mask": paths["baseline"][1],
        "followup_image": paths["followup"][0],
        "followup_mask": paths["followup"][1],
        "interval_days": days[f] - days[b],
    }
    if len(days) == 3:
        line["history"] = [{"image": paths["history0"][0], "mask": paths["history0"][1], "days_before_baseline": days[b] - days[0]}]
    line.update(
        pattern=nod.pattern,
        consistency=nod.consistency_at(b) if nod.present(b) else None,
        followup_consistency=nod.consistency_at(f) if nod.present(f) else None,
        margin=nod.margin,
        location=nod.location,
        vdt_days=None if nod.vdt_days is None else round(nod.vdt_days, 1),
        baseline_volume_mm3=round(nod.volumes[b], 3),
        followup_volume_mm3=round(nod.volumes[f], 3),
        baseline_solid_volume_mm3=round(_solid_volume(nod, b), 3),
        followup_solid_volume_mm3=round(_solid_volume(nod, f), 3),
        spacing_mm=[round(float(x), 4) for x in res["spacing"]],
        noise_hu=round(float(res["sigma"]), 2),
    )
    return line


def _worker_init() -> None:
    """One compute thread per worker process: the processes are the parallelism."""
    import numba

    numba.set_num_threads(1)


def _solid_volume(nod: PhantomNoduleTruth, t: int) -> float:
    if not nod.present(t):
        return 0.0
    if nod.consistency == "solid":
        return nod.volumes[t]
    return nod.volumes[t] * nod.core_fractions[t]


def generate_patch_pairs(
    out_dir: Path,
    n_pairs: int,
    seed: int,
    *,
    patch_size: int = 64,
    spacing_mm: float = 1.0,
    vary_spacing: bool = False,
    history_fraction: float = 0.5,
    noise_hu: float | None = None,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """Write ``n_pairs`` growth-model training pairs and ``manifest.jsonl``; return the manifest path.

    ``vary_spacing`` draws a per-pair anisotropic spacing (0.6–1.0 mm in-plane, 0.625–1.5 mm slices)
    instead of ``spacing_mm`` isotropic. ``workers`` > 1 renders pairs in that many processes.
    Deterministic per seed (pair ``i`` depends only on ``seed`` and ``i``).
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be at least 1, got {n_pairs}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if not 16 <= patch_size <= 256:
        raise ValueError(f"patch_size must be between 16 and 256, got {patch_size}")
    if not 0.2 <= spacing_mm <= 5.0:
        raise ValueError(f"spacing_mm must be between 0.2 and 5 mm, got {spacing_mm}")
    if not 0.0 <= history_fraction <= 1.0:
        raise ValueError(f"history_fraction must be in [0, 1], got {history_fraction}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(out_dir, seed, i, patch_size, spacing_mm, vary_spacing, history_fraction, noise_hu) for i in range(n_pairs)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_pairs, desc="patch pairs", unit="pair")
    lines: list[dict[str, Any]] = []
    if workers == 1:
        with kernel_threads():
            for job in jobs:
                lines.append(_write_pair(job))
                if bar:
                    bar.update()
    else:
        # spawn, not fork: numba's thread pool in this process does not survive a fork
        with get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
            for line in pool.imap(_write_pair, jobs, chunksize=4):
                lines.append(line)
                if bar:
                    bar.update()
    if bar:
        bar.close()
    manifest = out_dir / "manifest.jsonl"
    tmp = manifest.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tmp.replace(manifest)
    return manifest


__all__ = ["generate_patch_pairs"]
