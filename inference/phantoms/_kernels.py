"""Compiled (numba) inner loops of the phantom renderer.

Why compiled: a 300-slice 512² study is 79 M voxels, and the chest has a dozen tissue surfaces,
each needing a distance evaluation and a partial-volume blend per voxel. As numpy expressions that
is thousands of full-volume temporaries (tens of seconds); as one fused per-voxel loop that can skip
whatever a voxel cannot touch (air outside the body, ribs far from the wall) it is about a second.

The anatomy is a flat float64 parameter vector (order = ``PARAM_NAMES``) so that the kernels stay
plain functions of arrays. Distances are signed (negative inside) and approximately Euclidean;
``_occ`` turns one into a box-filtered partial-volume fraction over one pixel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

PARAM_NAMES = (
    "body_a", "body_b", "back_flat", "fat_t", "muscle_t", "rib_t", "rib_h", "rib_period", "rib_drop",
    "rib_phase", "med_w", "apex_z", "apex_c", "apex_k", "dome_z", "dome_h", "dome_tilt", "heart_cx",
    "heart_cy", "heart_cz", "heart_rx", "heart_ry", "heart_rz", "spine_y", "spine_r", "disc_period",
    "disc_h", "sternum_z", "hu_fat", "hu_muscle", "hu_med", "hu_liver", "hu_lung", "lung_gravity",
    "lung_tex", "hu_heart", "hu_bone", "hu_cortex",
)  # fmt: skip
BODY_A, BODY_B, BACK_FLAT, FAT_T, MUSCLE_T, RIB_T, RIB_H, RIB_PERIOD, RIB_DROP = 0, 1, 2, 3, 4, 5, 6, 7, 8
RIB_PHASE, MED_W, APEX_Z, APEX_C, APEX_K, DOME_Z, DOME_H, DOME_TILT, HEART_CX = 9, 10, 11, 12, 13, 14, 15, 16, 17
HEART_CY, HEART_CZ, HEART_RX, HEART_RY, HEART_RZ, SPINE_Y, SPINE_R, DISC_PERIOD = 18, 19, 20, 21, 22, 23, 24, 25
DISC_H, STERNUM_Z, HU_FAT, HU_MUSCLE, HU_MED, HU_LIVER, HU_LUNG, LUNG_GRAVITY = 26, 27, 28, 29, 30, 31, 32, 33
LUNG_TEX, HU_HEART, HU_BONE, HU_CORTEX = 34, 35, 36, 37
assert len(PARAM_NAMES) == 38


@njit(cache=True, fastmath=True)
def _occ(d: float, inv_ramp: float) -> float:
    v = 0.5 - d * inv_ramp
    if v <= 0.0:
        return 0.0
    if v >= 1.0:
        return 1.0
    return v


@njit(cache=True, fastmath=True)
def body_distance(p, x, y):
    ia = 1.0 / p[BODY_A]
    ib = 1.0 / p[BODY_B]
    xs = x * ia
    ys = y * ib
    q = math.sqrt(xs * xs + ys * ys)
    g = math.sqrt((xs * ia) ** 2 + (ys * ib) ** 2)
    d = (q - 1.0) * q / max(g, 1e-6)
    return max(d, y - p[BACK_FLAT])


@njit(cache=True, fastmath=True)
def dome_height(p, x, y):
    bx = (abs(x) - 0.45 * p[BODY_A]) / (0.55 * p[BODY_A])
    by = (y + 0.1 * p[BODY_B]) / (0.8 * p[BODY_B])
    bump = max(1.0 - bx * bx - by * by, 0.0)
    return p[DOME_Z] + p[DOME_H] * bump + p[DOME_TILT] * x + 0.12 * y


@njit(cache=True, fastmath=True)
def heart_distance(p, x, y, z):
    a = (x - p[HEART_CX]) / p[HEART_RX]
    b = (y - p[HEART_CY]) / p[HEART_RY]
    c = (z - p[HEART_CZ]) / p[HEART_RZ]
    return (math.sqrt(a * a + b * b + c * c) - 1.0) * min(p[HEART_RX], min(p[HEART_RY], p[HEART_RZ]))


@njit(cache=True, fastmath=True)
def lung_distance(p, x, y, z):
    """Signed distance-like function of both lungs (negative inside)."""
    d_cav = body_distance(p, x, y) + p[FAT_T] + p[MUSCLE_T]
    ax = abs(x)
    d = d_cav + 1.5
    d = max(d, p[MED_W] - ax)
    d = max(d, z - p[APEX_Z] + p[APEX_K] * ((ax - p[APEX_C]) ** 2 + (y - 10.0) ** 2))
    d = max(d, dome_height(p, x, y) - z)
    d = max(d, 3.0 - heart_distance(p, x, y, z))
    return d


@njit(cache=True, fastmath=True)
def texture_at(tex, to, tinv, x, y, z):
    """Trilinear sample of the (z, y, x) texture grid with origin ``to`` and 1/step ``tinv``."""
    nz, ny, nx = tex.shape
    fx = min(max((x - to[0]) * tinv, 0.0), nx - 1.001)
    fy = min(max((y - to[1]) * tinv, 0.0), ny - 1.001)
    fz = min(max((z - to[2]) * tinv, 0.0), nz - 1.001)
    i = int(fx)
    j = int(fy)
    k = int(fz)
    wx = fx - i
    wy = fy - j
    wz = fz - k
    c00 = tex[k, j, i] * (1 - wx) + tex[k, j, i + 1] * wx
    c01 = tex[k, j + 1, i] * (1 - wx) + tex[k, j + 1, i + 1] * wx
    c10 = tex[k + 1, j, i] * (1 - wx) + tex[k + 1, j, i + 1] * wx
    c11 = tex[k + 1, j + 1, i] * (1 - wx) + tex[k + 1, j + 1, i + 1] * wx
    return (c00 * (1 - wy) + c01 * wy) * (1 - wz) + (c10 * (1 - wy) + c11 * wy) * wz


@njit(cache=True, fastmath=True)
def voxel_hu(p, tex, to, tinv, x, y, z, inv):
    """HU of the anatomy at one point (anatomy mm), painted back to front with PV ramps."""
    d_body = body_distance(p, x, y)
    if d_body * inv >= 0.5:
        return -1000.0
    t = texture_at(tex, to, tinv, x, y, z)
    hu = -1000.0
    hu += _occ(d_body, inv) * (p[HU_FAT] + 8.0 * t - hu)
    d_mus = d_body + p[FAT_T]
    if d_mus * inv >= 0.5:
        return hu
    hu += _occ(d_mus, inv) * (p[HU_MUSCLE] + 6.0 * t - hu)
    d_in = d_mus + p[MUSCLE_T]
    # ribs: a band beneath the muscle, periodic along an anteriorly descending axis
    d_rr = abs(d_in - 0.5 * p[RIB_T]) - 0.5 * p[RIB_T]
    if d_rr * inv < 0.5:
        zr = z + p[RIB_DROP] * (y - p[BODY_B]) / (2.0 * p[BODY_B]) - p[RIB_PHASE]
        per = p[RIB_PERIOD]
        ph = zr - per * math.floor(zr / per) - 0.5 * per
        d_rib = max((abs(ph) - 0.5 * p[RIB_H]) * 0.8, d_rr)
        if d_rib * inv < 0.5:
            if y < -0.55 * p[BODY_B] and abs(x) < 0.35 * p[BODY_A]:
                rv = 110.0  # costal cartilage
            elif d_rib > -1.3:
                rv = p[HU_CORTEX]
            else:
                rv = p[HU_BONE]
            hu += _occ(d_rib, inv) * (rv - hu)
    if d_in * inv < 0.5:
        d_dome = dome_height(p, x, y) - z
        inner = p[HU_MED] + 20.0 * t
        inner += _occ(-d_dome, inv) * (p[HU_LIVER] + 5.0 * t - inner)
        hu += _occ(d_in, inv) * (inner - hu)
        # sternum: anterior midline bone above the xiphoid
        ys = y - (-p[BODY_B] + p[FAT_T] + p[MUSCLE_T] * 0.5)
        d_st = max(math.sqrt((x / 16.0) ** 2 + (ys / 7.0) ** 2) * 7.0 - 7.0, p[STERNUM_Z] - z)
        if d_st * inv < 0.5:
            hu += _occ(d_st, inv) * ((p[HU_CORTEX] if d_st > -1.3 else p[HU_BONE]) - hu)
        d_heart = heart_distance(p, x, y, z)
        ax = abs(x)
        d_l = d_in + 1.5
        d_l = max(d_l, p[MED_W] - ax)
        d_l = max(d_l, z - p[APEX_Z] + p[APEX_K] * ((ax - p[APEX_C]) ** 2 + (y - 10.0) ** 2))
        d_l = max(d_l, d_dome)
        d_l = max(d_l, 3.0 - d_heart)
        if d_l * inv < 0.5:
            lung = p[HU_LUNG] + p[LUNG_GRAVITY] * 0.5 * (y / p[BODY_B]) + p[LUNG_TEX] * t
            hu += _occ(d_l, inv) * (lung - hu)
        if d_heart * inv < 0.5:
            hu += _occ(d_heart, inv) * (p[HU_HEART] + 4.0 * t - hu)
    # spine: vertebral body (cortex, cancellous bone, discs), neural arch, canal
    dy = y - p[SPINE_Y]
    if abs(x) < p[SPINE_R] + 25.0 and abs(dy) < p[SPINE_R] + 40.0:
        d_vb = math.sqrt(x * x + dy * dy) - p[SPINE_R]
        if d_vb * inv < 0.5:
            per = p[DISC_PERIOD]
            dph = abs(z - per * math.floor(z / per) - 0.5 * per)
            if dph < 0.5 * p[DISC_H]:
                vv = 85.0
            elif d_vb > -1.5:
                vv = p[HU_CORTEX]
            else:
                vv = p[HU_BONE] + 40.0 * t
            hu += _occ(d_vb, inv) * (vv - hu)
        dcy = y - (p[SPINE_Y] + p[SPINE_R] + 9.0)
        rc = math.sqrt(x * x + dcy * dcy)
        d_arch = max(rc - 15.0, 7.0 - rc)
        if d_arch * inv < 0.5:
            hu += _occ(d_arch, inv) * ((p[HU_CORTEX] if rc > 13.0 else p[HU_BONE]) - hu)
        if rc - 7.0 < 0.5 / inv:
            hu += _occ(rc - 7.0, inv) * (15.0 - hu)
    return hu


@njit(cache=True, parallel=True, fastmath=True)
def render_anatomy_kernel(p, tex, to, tinv, A, out, ramp_mm, z_sub):
    """Fill ``out`` (nz, ny, nx) with anatomy HU; ``A`` (3×4) maps voxel (x, y, z, 1) → anatomy mm.

    ``z_sub`` > 1 averages that many samples across the slice thickness, so that surfaces crossing
    a thick slice are partial-volume blended in z too (the in-plane ramp handles x and y).
    """
    nz, ny, nx = out.shape
    inv = 1.0 / ramp_mm
    ia = 1.0 / p[BODY_A]
    ib = 1.0 / p[BODY_B]
    grow = 1.0 + 3.0 * ramp_mm / min(p[BODY_A], p[BODY_B])
    for k in prange(nz):
        for j in range(ny):
            # the body is a z-independent ellipse: find the columns of this row that can touch it
            # (union over the z sub-samples) and fill the rest with air without evaluating
            lo = nx
            hi = -1
            for s in range(z_sub):
                kz = k + (s + 0.5) / z_sub - 0.5
                bx = (A[0, 1] * j + A[0, 2] * kz + A[0, 3]) * ia
                by = (A[1, 1] * j + A[1, 2] * kz + A[1, 3]) * ib
                ax = A[0, 0] * ia
                ay = A[1, 0] * ib
                qa = ax * ax + ay * ay
                qb = 2.0 * (bx * ax + by * ay)
                qc = bx * bx + by * by - grow * grow
                disc = qb * qb - 4.0 * qa * qc
                if disc >= 0.0 and qa > 0.0:
                    sq = math.sqrt(disc)
                    i1 = int(math.floor((-qb - sq) / (2.0 * qa))) - 1
                    i2 = int(math.ceil((-qb + sq) / (2.0 * qa))) + 1
                    lo = min(lo, max(i1, 0))
                    hi = max(hi, min(i2, nx - 1))
            for i in range(nx):
                if i < lo or i > hi:
                    out[k, j, i] = -1000.0
                    continue
                acc = 0.0
                for s in range(z_sub):
                    kz = k + (s + 0.5) / z_sub - 0.5
                    x = A[0, 0] * i + A[0, 1] * j + A[0, 2] * kz + A[0, 3]
                    y = A[1, 0] * i + A[1, 1] * j + A[1, 2] * kz + A[1, 3]
                    z = A[2, 0] * i + A[2, 1] * j + A[2, 2] * kz + A[2, 3]
                    acc += voxel_hu(p, tex, to, tinv, x, y, z, inv)
                out[k, j, i] = acc / z_sub


@njit(cache=True, fastmath=True)
def lung_distance_points(p, pts):
    out = np.empty(pts.shape[0])
    for n in range(pts.shape[0]):
        out[n] = lung_distance(p, pts[n, 0], pts[n, 1], pts[n, 2])
    return out


@njit(cache=True, fastmath=True)
def cavity_distance_points(p, pts):
    """Signed distance to the inner surface of the chest wall (the pleural cavity)."""
    out = np.empty(pts.shape[0])
    for n in range(pts.shape[0]):
        out[n] = body_distance(p, pts[n, 0], pts[n, 1]) + p[FAT_T] + p[MUSCLE_T] + 1.5
    return out


@njit(cache=True, fastmath=True)
def anatomy_hu_points(p, tex, to, tinv, pts, ramp_mm):
    out = np.empty(pts.shape[0], dtype=np.float32)
    for n in range(pts.shape[0]):
        out[n] = voxel_hu(p, tex, to, tinv, pts[n, 0], pts[n, 1], pts[n, 2], 1.0 / ramp_mm)
    return out


@njit(cache=True, fastmath=True)
def paint_tubes_kernel(hu, seg, hu_val, mode, origin, sp, ramp_mm):
    """Paint tapered segments (LPS rows: ax ay az bx by bz r0 r1) into ``hu`` (z, y, x) in order.

    mode 0 = "max" (never darkens; vessels), 1 = "paint" (replace; airway lumen, aorta). Slices of
    one segment are painted serially: segments are small and their order matters.
    """
    nz, ny, nx = hu.shape
    inv = 1.0 / ramp_mm
    for s in range(seg.shape[0]):
        ax, ay, az, bx, by, bz, r0, r1 = seg[s, 0], seg[s, 1], seg[s, 2], seg[s, 3], seg[s, 4], seg[s, 5], seg[s, 6], seg[s, 7]
        rm = max(r0, r1) + max(1.5 * ramp_mm, sp[2])
        i0 = max(int(math.floor((min(ax, bx) - rm - origin[0]) / sp[0])), 0)
        i1 = min(int(math.ceil((max(ax, bx) + rm - origin[0]) / sp[0])) + 1, nx)
        j0 = max(int(math.floor((min(ay, by) - rm - origin[1]) / sp[1])), 0)
        j1 = min(int(math.ceil((max(ay, by) + rm - origin[1]) / sp[1])) + 1, ny)
        k0 = max(int(math.floor((min(az, bz) - rm - origin[2]) / sp[2])), 0)
        k1 = min(int(math.ceil((max(az, bz) + rm - origin[2]) / sp[2])) + 1, nz)
        if i0 >= i1 or j0 >= j1 or k0 >= k1:
            continue
        ex, ey, ez = bx - ax, by - ay, bz - az
        l2 = max(ex * ex + ey * ey + ez * ez, 1e-9)
        v = hu_val[s]
        for k in range(k0, k1):
            pz = origin[2] + k * sp[2] - az
            for j in range(j0, j1):
                py = origin[1] + j * sp[1] - ay
                for i in range(i0, i1):
                    px = origin[0] + i * sp[0] - ax
                    t = (px * ex + py * ey + pz * ez) / l2
                    t = min(max(t, 0.0), 1.0)
                    dx = px - t * ex
                    dy = py - t * ey
                    dz = pz - t * ez
                    dn = math.sqrt(dx * dx + dy * dy + dz * dz)
                    d = dn - (r0 + (r1 - r0) * t)
                    # ramp = the voxel's extent along the direction away from the axis (thick
                    # slices blur a vessel over neighbouring slices instead of missing it)
                    if dn > 1e-9:
                        w = ramp_mm * math.sqrt(dx * dx + dy * dy) / dn + sp[2] * abs(dz) / dn
                    else:
                        w = ramp_mm
                    w = max(w, ramp_mm)
                    if d >= 0.5 * w:
                        continue
                    o = _occ(d, 1.0 / w)
                    cur = hu[k, j, i]
                    new = cur + o * (v - cur)
                    if mode[s] == 0:
                        if new > cur:
                            hu[k, j, i] = new
                    else:
                        hu[k, j, i] = new


# ---------------------------------------------------------------------------------------------
# star-shaped nodules: radius tables over (θ, φ), 181 × 360 nodes (1° steps), φ wraps


@njit(cache=True, fastmath=True)
def table_lookup(table, theta, phi):
    """Bilinear ``r(θ, φ)`` from a (N_THETA, N_PHI) table; θ clamped to [0, π], φ wrapped."""
    nt, nphi = table.shape
    t = theta * ((nt - 1) / math.pi)
    if t < 0.0:
        t = 0.0
    if t > nt - 1.000001:
        t = nt - 1.000001
    i0 = int(t)
    wt = t - i0
    p = phi * (nphi / (2.0 * math.pi))
    p = p - nphi * math.floor(p / nphi)
    j0 = int(p)
    wp = p - j0
    if j0 >= nphi:
        j0 = 0
    j1 = j0 + 1
    if j1 >= nphi:
        j1 = 0
    a = table[i0, j0] * (1.0 - wp) + table[i0, j1] * wp
    b = table[i0 + 1, j0] * (1.0 - wp) + table[i0 + 1, j1] * wp
    return a * (1.0 - wt) + b * wt


@njit(cache=True, fastmath=True)
def _radius_at(table, x, y, z, rho):
    theta = math.acos(min(max(z / max(rho, 1e-12), -1.0), 1.0))
    phi = math.atan2(y, x)
    return table_lookup(table, theta, phi)


@njit(cache=True, parallel=True, fastmath=True)
def occupancy_kernel(table, lo_t, hi_t, r_min, r_max, L, hd, ss, out):
    """Partial-volume occupancy of a star shape on a voxel box (see ``shapes.occupancy``).

    ``L`` (3×4) maps box index (x, y, z, 1) to local mm; ``hd`` bounds the distance from a voxel
    centre to any point of the voxel; ``lo_t``/``hi_t`` bound the radius over the angular extent of a
    voxel, so only voxels straddling the surface are supersampled (``ss``³ points).
    """
    nz, ny, nx = out.shape
    inv_ss3 = 1.0 / (ss * ss * ss)
    for k in prange(nz):
        for j in range(ny):
            for i in range(nx):
                x = L[0, 0] * i + L[0, 1] * j + L[0, 2] * k + L[0, 3]
                y = L[1, 0] * i + L[1, 1] * j + L[1, 2] * k + L[1, 3]
                z = L[2, 0] * i + L[2, 1] * j + L[2, 2] * k + L[2, 3]
                rho = math.sqrt(x * x + y * y + z * z)
                if rho - hd >= r_max:
                    out[k, j, i] = 0.0
                    continue
                if rho + hd <= r_min:
                    out[k, j, i] = 1.0
                    continue
                theta = math.acos(min(max(z / max(rho, 1e-12), -1.0), 1.0))
                phi = math.atan2(y, x)
                if rho + hd <= table_lookup(lo_t, theta, phi):
                    out[k, j, i] = 1.0
                    continue
                if rho - hd >= table_lookup(hi_t, theta, phi):
                    out[k, j, i] = 0.0
                    continue
                cnt = 0
                for a in range(ss):
                    oa = (a + 0.5) / ss - 0.5
                    for b in range(ss):
                        ob = (b + 0.5) / ss - 0.5
                        for c in range(ss):
                            oc = (c + 0.5) / ss - 0.5
                            sx = x + L[0, 0] * oa + L[0, 1] * ob + L[0, 2] * oc
                            sy = y + L[1, 0] * oa + L[1, 1] * ob + L[1, 2] * oc
                            sz = z + L[2, 0] * oa + L[2, 1] * ob + L[2, 2] * oc
                            r2 = math.sqrt(sx * sx + sy * sy + sz * sz)
                            if r2 <= _radius_at(table, sx, sy, sz, r2):
                                cnt += 1
                out[k, j, i] = cnt * inv_ss3


@njit(cache=True, fastmath=True)
def star_moments(table, over):
    """(volume, first moment x, y, z) of the interpolated star shape, midpoint quadrature."""
    nt, nphi = table.shape
    n_t = (nt - 1) * over
    n_p = nphi * over
    dt = math.pi / n_t
    dp = 2.0 * math.pi / n_p
    vol = 0.0
    mx = 0.0
    my = 0.0
    mz = 0.0
    for a in range(n_t):
        th = (a + 0.5) * dt
        st = math.sin(th)
        ct = math.cos(th)
        for b in range(n_p):
            ph = (b + 0.5) * dp
            r = table_lookup(table, th, ph)
            r3 = r * r * r
            w = st * dt * dp
            vol += r3 / 3.0 * w
            m = r3 * r / 4.0 * w
            mx += m * st * math.cos(ph)
            my += m * st * math.sin(ph)
            mz += m * ct
    return vol, mx, my, mz


@njit(cache=True, fastmath=True)
def contains_points(table, pts):
    out = np.empty(pts.shape[0], dtype=np.bool_)
    for n in range(pts.shape[0]):
        x, y, z = pts[n, 0], pts[n, 1], pts[n, 2]
        rho = math.sqrt(x * x + y * y + z * z)
        out[n] = rho <= _radius_at(table, x, y, z, rho)
    return out


@njit(cache=True, fastmath=True)
def sample_texture_grid(tex, to, tinv, origin, spacing, out):
    """``out[k, j, i]`` = trilinear texture at ``origin + (i, j, k)·spacing`` (axis-aligned grid)."""
    nz, ny, nx = out.shape
    for k in range(nz):
        z = origin[2] + k * spacing[2]
        for j in range(ny):
            y = origin[1] + j * spacing[1]
            for i in range(nx):
                out[k, j, i] = texture_at(tex, to, tinv, origin[0] + i * spacing[0], y, z)


@njit(cache=True)
def phi_window_minmax(lo, hi, windows, out_lo, out_hi):
    """Per θ row, min of ``lo`` / max of ``hi`` over a wrapped φ window of half-width ``windows[i]``."""
    nt, nphi = lo.shape
    for i in range(nt):
        w = windows[i]
        if 2 * w + 1 >= nphi:
            mn = lo[i].min()
            mx = hi[i].max()
            for j in range(nphi):
                out_lo[i, j] = mn
                out_hi[i, j] = mx
            continue
        for j in range(nphi):
            mn = lo[i, j]
            mx = hi[i, j]
            for d in range(-w, w + 1):
                jj = (j + d) % nphi
                if lo[i, jj] < mn:
                    mn = lo[i, jj]
                if hi[i, jj] > mx:
                    mx = hi[i, jj]
            out_lo[i, j] = mn
            out_hi[i, j] = mx


@njit(cache=True, parallel=True, fastmath=True)
def add_noise_quantise(hu, bank, picks, shifts, flips, out):
    """``out`` (int16) = round(hu + shifted/flipped bank slice), clipped to [-1024, 3071].

    Slice ``k`` adds ``bank[picks[k]]`` circularly shifted by ``shifts[k]`` and flipped per the bits
    of ``flips[k]`` (1 = rows, 2 = columns): cheap, and no two neighbouring slices share a pattern.
    """
    nz, ny, nx = hu.shape
    by, bx = bank.shape[1], bank.shape[2]
    for k in prange(nz):
        b = picks[k]
        sy = shifts[k, 0]
        sx = shifts[k, 1]
        fy = (flips[k] & 1) != 0
        fx = (flips[k] & 2) != 0
        for j in range(ny):
            jj = (j + sy) % by
            if fy:
                jj = by - 1 - jj
            row = bank[b, jj]
            ii = sx % bx
            for i in range(nx):
                # ii = (i + sx) mod bx, advanced without a division per voxel
                v = hu[k, j, i] + (row[bx - 1 - ii] if fx else row[ii])
                ii += 1
                if ii == bx:
                    ii = 0
                v = math.floor(v + 0.5)
                if v < -1024.0:
                    v = -1024.0
                elif v > 3071.0:
                    v = 3071.0
                out[k, j, i] = np.int16(v)


@njit(cache=True, fastmath=True)
def _normalise3(v):
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    if n < 1e-12:
        return v
    return v / n


@njit(cache=True, fastmath=True)
def _cross3(a, b):
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


@njit(cache=True, fastmath=True)
def grow_tree_kernel(p, root, d0, o0, radius, max_segments, uni, nrm, with_airways):
    """Breadth-first vessel tree in the lungs (see ``anatomy._grow_tree``); randoms are pre-drawn.

    ``uni`` (n, 6) uniforms and ``nrm`` (n, 18) standard normals, one row per queue entry processed.
    Returns (vessel segments (k, 8): p0, p1, r0, r1; airway segments (m, 8): p0, p1, lumen r, wall).
    """
    cap = 2 * max_segments + 4
    qp = np.zeros((cap, 3))
    qd = np.zeros((cap, 3))
    qo = np.zeros((cap, 3))
    qr = np.zeros(cap)
    qdepth = np.zeros(cap, dtype=np.int64)
    head = 0
    tail = 1
    qp[0] = root
    qd[0] = _normalise3(d0)
    qo[0] = o0
    qr[0] = radius
    segs = np.zeros((max_segments, 8))
    air = np.zeros((max_segments, 8))
    n_seg = 0
    n_air = 0
    row = 0
    while head < tail and n_seg < max_segments and row < uni.shape[0]:
        pp = qp[head].copy()
        d = qd[head].copy()
        o = qo[head].copy()
        r = qr[head]
        depth = qdepth[head]
        head += 1
        u = uni[row]
        g = nrm[row]
        row += 1
        length = min(max(r * (7.0 + 5.0 * u[0]), 4.0), 28.0)
        r_end = r * (0.88 + 0.09 * u[1])
        ok = False
        q = pp + d * length
        for attempt in range(5):
            q = pp + d * length
            if depth == 0 or lung_distance(p, q[0], q[1], q[2]) < -(r_end + 1.5):
                ok = True
                break
            d = _normalise3(d + 0.7 * g[3 * attempt : 3 * attempt + 3])
            length *= 0.7
        if not ok or length < 2.0:
            continue
        segs[n_seg, 0:3] = pp
        segs[n_seg, 3:6] = q
        segs[n_seg, 6] = r
        segs[n_seg, 7] = r_end
        n_seg += 1
        if with_airways and r >= 1.2:
            o = _normalise3(o - (o[0] * d[0] + o[1] * d[1] + o[2] * d[2]) * d)
            r_air = 0.8 * r
            wall = max(0.5, 0.2 * r_air)
            off = o * (r + r_air + wall + 0.4)
            air[n_air, 0:3] = pp + off
            air[n_air, 3:6] = q + off
            air[n_air, 6] = r_air
            air[n_air, 7] = wall
            n_air += 1
        if r_end < 0.5 or tail + 2 > cap:
            continue
        lam = 0.08 + 0.37 * u[2]
        r1 = r_end * (1.0 - lam) ** (1.0 / 3.0)
        r2 = r_end * lam ** (1.0 / 3.0)
        plane = _normalise3(_cross3(d, g[15:18]))
        outward = _normalise3(q - root + 1e-6)
        a1 = 0.15 + 0.25 * u[3]
        a2 = -(0.6 + 0.5 * u[4])
        for c in range(2):
            rr = r1 if c == 0 else r2
            ang = a1 if c == 0 else a2
            nd = _normalise3(math.cos(ang) * d + math.sin(ang) * plane + 0.2 * outward)
            qp[tail] = q
            qd[tail] = nd
            qo[tail] = o
            qr[tail] = rr
            qdepth[tail] = depth + 1
            tail += 1
    return segs[:n_seg], air[:n_air]
