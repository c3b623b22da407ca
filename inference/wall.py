"""Is a segmented "nodule" a piece of the wall, the mediastinum or the heart cut out by the lung envelope?

Why such pieces reach the verification at all: the lung envelope (:mod:`inference.lung`, and the
finer one of :func:`inference.segmentation.segment_nodule`) is the aerated lung *closed* with a ball,
so that a nodule on the pleura lies inside it. But a closing takes in any tissue narrower than the
ball between two air regions, or pinched between them: the paratracheal tissue between the trachea
(air, connected to the lungs) and the lung, a thin mediastinum between both lungs, the heart border
where hilar vessels enter it. Region growing is confined to the envelope, so the envelope's edge cuts
a compact, dense, blob-like piece out of that tissue, and it passes every shape rule.

What tells the two apart is where the tissue *around* the segmented piece lies:

* a juxtapleural nodule bulges into the lung from one wall. Most of its surface faces the lung (a
  hemisphere on a flat wall: the base is 1/3 of its surface, a sphere touching the wall far less),
  and the tissue it touches lies on *one side* (the wall under its base, seen from its centre, and
  a corner of two walls still lies on one side);
* a piece of a wall, a septum or a junction lies *within* tissue: a large part of its surface
  borders tissue, and that tissue lies on opposite sides (the slab it was cut from goes on both ways).

Both are measured on a thin shell just outside the segmentation's half-maximum boundary: voxels
denser than halfway between this image's parenchyma and soft tissue (the segmentation's "solid"
threshold) are tissue (soft tissue, fat, vessel, wall — all far denser than aerated lung), the
others are lung, or the blurred fringe of a ground-glass lesion. These are geometric ratios at a
threshold derived from this image, so they do not depend on the scanner's HU calibration, noise or
resolution (the shell is a few voxels at any spacing, and at least one voxel across thick slices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from .morphology import edt

__all__ = ["TissueContact", "tissue_contact", "is_embedded", "SHELL_MM", "MIN_CONTACT", "MIN_OPPOSITE"]

SHELL_MM = 1.5  # shell just outside the half-maximum boundary: about two in-plane voxels, one blur width
# A hemisphere on a flat wall has 1/3 of its surface on the wall (the shell also reaches a little
# wall around the base's rim, ~0.37 for a 16 mm hemisphere); a lens-shaped piece as much inside the
# tissue as out of it, 1/2. Beyond 0.4 the piece is at least as much enclosed as a hemisphere.
MIN_CONTACT = 0.4
# Of the tissue it touches, the share on the far side (seen from the piece's centre, opposite the
# mean direction of contact). A bump on one wall (or in a corner of two) has ~0; a vessel running
# into a juxtapleural nodule adds only its small cross-section. A piece of a slab: up to 1/2.
MIN_OPPOSITE = 0.2


@dataclass(frozen=True)
class TissueContact:
    """Where the tissue around a segmented lesion lies (see the module docstring)."""

    contact: float  # fraction of the shell outside the mask that is tissue (0 = all lung, 1 = buried)
    opposite: float  # fraction of that tissue lying opposite the mean contact direction (0 = one side)


def tissue_contact(hu: np.ndarray, mask: np.ndarray, offset: tuple[int, int, int],
                   sampling: tuple[float, float, float], tissue_threshold_hu: float,
                   shell_mm: float = SHELL_MM) -> TissueContact:
    """Tissue around a segmented lesion.

    ``hu``: the whole volume (z, y, x); ``mask``: the lesion's half-maximum mask, a box placed at
    ``offset`` (z, y, x) in ``hu``; ``sampling``: voxel size (z, y, x) in mm;
    ``tissue_threshold_hu``: above it a voxel is tissue — halfway between this image's parenchyma
    and soft tissue (``NoduleSegmentation.solid_threshold_hu``), which fat, muscle, vessels and the
    heart all exceed, while the blurred fringe of a ground-glass lesion stays below it. The image
    is smoothed as the segmentation's thresholds are (~0.5 mm Gaussian), so noise does not count as
    tissue. A lesion without any tissue around it gets ``TissueContact(0, 0)``.
    """
    sp = np.asarray(sampling, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return TissueContact(0.0, 0.0)
    # crop: the mask's box, grown by the shell and the smoothing's reach
    grow = np.ceil((shell_mm + 1.5) / sp).astype(int) + 1
    off = np.asarray(offset, dtype=int)
    lo = np.maximum(off - grow, 0)
    hi = np.minimum(off + np.asarray(mask.shape) + grow, np.asarray(hu.shape))
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    s1 = ndi.gaussian_filter(np.asarray(hu[sl], dtype=np.float32), [0.5 / s for s in sp])
    m = np.zeros(s1.shape, dtype=bool)
    a = off - lo
    # (a mask box reaching past the volume's edge is clipped with it)
    src = tuple(slice(max(0, -x), min(n, s - x)) for x, n, s in zip(a, mask.shape, s1.shape))
    dst = tuple(slice(max(0, x), max(0, x) + (r.stop - r.start)) for x, r in zip(a, src))
    m[dst] = mask[src]
    if not m.any():
        return TissueContact(0.0, 0.0)
    # the shell reaches ``shell_mm`` but at least one voxel along every axis (thick slices: otherwise
    # it would hold no voxel above or below the lesion): distances in units of that reach
    reach = np.maximum(sp, shell_mm)
    dist = edt(~m, tuple(sp / reach))
    shell = (dist > 0) & (dist <= 1.0)
    n_shell = int(shell.sum())
    if n_shell == 0:
        return TissueContact(0.0, 0.0)
    tissue = shell & (s1 > tissue_threshold_hu)
    n_tissue = int(tissue.sum())
    if n_tissue == 0:
        return TissueContact(0.0, 0.0)
    centre = np.argwhere(m).mean(axis=0) * sp
    v = np.argwhere(tissue) * sp - centre
    u = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
    mean = u.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    # (contact all around, in balance: no one side; everything counts as opposite-ish)
    opposite = float(np.mean(u @ (mean / norm) < 0.0)) if norm > 1e-6 else 0.5
    return TissueContact(contact=n_tissue / n_shell, opposite=opposite)


def is_embedded(tc: TissueContact, *, min_contact: float = MIN_CONTACT,
                min_opposite: float = MIN_OPPOSITE) -> bool:
    """A piece of a wall, septum or junction rather than a nodule: much of its surface borders tissue
    (more than a hemispherical bump's) *and* that tissue lies on opposite sides of it."""
    return tc.contact >= min_contact and tc.opposite >= min_opposite
