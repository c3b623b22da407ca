"""``python -m bench growth``: growth-model inference cost on CPU, against the two baselines.

Prints a table of median milliseconds per nodule (batched) for

* the full pipeline forecast (crop around each nodule, MONAI resampling to the model grid, the
  network with 2 test-time flips (as is + mirrored, all nodules and flips in one forward pass, mask
  only: the forecast does not need the predicted image), mapping the predicted mask back to the
  study grid);
* the network alone, one pass and with the 2 flips (prepared patches, batched; image and mask), and
  the mask-only pass the forecast uses;
* the copy baseline (no computation beyond reading the current mask) and the exponential baseline
  (volume-rate fit + isotropic warp of the baseline patch);

and quotes the training time of the shipped weights from their training metrics
(``inference/growth/mt_nognet_train_metrics.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from inference.growth.evaluate import exponential_baseline
from inference.growth.forecast import GrowthForecaster, PriorPatch, default_weights_path
from inference.types import CTVolume, NoduleMeasurement, VolumeGeometry


def _study(radii_mm: Sequence[float], rng: np.random.Generator, spacing=(0.7, 0.7, 1.25)) -> tuple[CTVolume, list[NoduleMeasurement]]:
    """A noisy lung-density slab with lobulated nodules 40 mm apart (one per radius)."""
    n = len(radii_mm)
    cols = int(np.ceil(np.sqrt(n)))
    rows_ = int(np.ceil(n / cols))
    pitch = 40.0
    shape = (int(48 / spacing[2]), int(rows_ * pitch / spacing[1]) + 1, int(cols * pitch / spacing[0]) + 1)
    hu = np.full(shape, -850.0, dtype=np.float32) + rng.normal(0, 30, shape).astype(np.float32)
    geo = VolumeGeometry(origin=(0.0, 0.0, 0.0), spacing=spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), shape=shape)
    nodules = []
    for k, rad in enumerate(radii_mm):
        c_mm = np.array([24.0, (k // cols + 0.5) * pitch, (k % cols + 0.5) * pitch]) + rng.uniform(-2, 2, 3)  # z, y, x
        half = np.ceil(1.3 * rad / np.asarray(spacing)[::-1]).astype(int) + 1
        c_idx = np.round(c_mm / np.asarray(spacing)[::-1]).astype(int)
        a = c_idx - half
        zz, yy, xx = np.indices(tuple(2 * half + 1), dtype=np.float64)
        dz, dy, dx = (zz + a[0]) * spacing[2] - c_mm[0], (yy + a[1]) * spacing[1] - c_mm[1], (xx + a[2]) * spacing[0] - c_mm[2]
        r = np.sqrt(dz**2 + dy**2 + dx**2)
        mask = r <= rad * (1 + 0.15 * np.sin(3 * np.arctan2(dy, dx)))
        box = hu[a[0]:a[0] + mask.shape[0], a[1]:a[1] + mask.shape[1], a[2]:a[2] + mask.shape[2]]
        box[mask] = 30 + rng.normal(0, 30, int(mask.sum()))
        d = 2 * rad
        nodules.append(NoduleMeasurement(
            center_mm=tuple(float(x) for x in c_mm[::-1]), volume_mm3=float(mask.sum()) * geo.voxel_volume_mm3,
            long_axis_mm=d, short_axis_mm=d, mean_diameter_mm=d, solid_component_mm=d, mean_hu=30.0,
            consistency="solid", long_axis_endpoints_mm=((0, 0, 0), (0, 0, 0)), long_axis_slice=int(c_idx[0]),
            mask=mask, mask_offset=tuple(int(x) for x in a)))
    ct = CTVolume(hu=hu.astype(np.int16), geometry=geo, study_instance_uid="1", series_instance_uid="2",
                  frame_of_reference_uid="3", sop_instance_uids=[])
    return ct, nodules


def _median_ms(fn: Callable[[], object], repeats: int, per: int) -> tuple[float, float]:
    """Median (wall, process CPU) milliseconds per item. CPU time is what a busy shared machine
    distorts least; wall time is what a caller waits."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000.0 / per)
        cpu.append((time.process_time() - c) * 1000.0 / per)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench growth", description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodules", type=int, default=8, help="nodules per batch (default 8)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repetitions (median reported)")
    ap.add_argument("--weights", default=None, help="weights file (default: shipped)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    n = args.nodules

    radii = rng.uniform(2.5, 9.0, n)
    cur, nodules = _study(radii, rng)
    prior_ct, prior_nodules = _study(radii * 0.85, rng, spacing=(0.8, 0.8, 1.0))
    priors = [PriorPatch(prior_ct, prior_nodules[i], days_before=300.0) if i % 2 == 0 else None for i in range(n)]
    fc = GrowthForecaster(args.weights)
    fc1 = GrowthForecaster(args.weights, tta=False)

    def full(f: GrowthForecaster) -> Callable[[], object]:
        return lambda: f.forecast(cur, nodules, 365, priors)

    rows: list[tuple[str, tuple[float, float]]] = []
    rows.append(("forecast, full pipeline, 2 flips", _median_ms(full(fc), args.repeats, n)))
    rows.append(("forecast, full pipeline, no TTA", _median_ms(full(fc1), args.repeats, n)))

    # prepared patches: network alone vs baselines
    g = fc.cfg.patch
    bimg = torch.rand(n, 1, g, g, g) * 0.2
    bmask = torch.zeros(n, 1, g, g, g)
    bmask[:, :, g // 2 - 4:g // 2 + 4, g // 2 - 4:g // 2 + 4, g // 2 - 4:g // 2 + 4] = 1
    hmask = torch.zeros_like(bmask)
    hmask[:, :, g // 2 - 3:g // 2 + 3, g // 2 - 3:g // 2 + 3, g // 2 - 3:g // 2 + 3] = 1
    batch = {"baseline_image": bimg, "baseline_mask": bmask, "history_image": bimg, "history_mask": hmask,
             "has_history": torch.ones(n), "days_before": torch.full((n,), 200.0), "interval_days": torch.full((n,), 365.0)}

    def net(k: int, with_image: bool = True) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                rep = {key: (v.repeat(k, *([1] * (v.dim() - 1)))) for key, v in batch.items()}
                return fc.model(rep["baseline_image"], rep["baseline_mask"], rep["interval_days"], rep["history_image"],
                                rep["history_mask"], rep["has_history"], rep["days_before"], with_image=with_image)
        return run

    rows.append(("network only, 1 pass", _median_ms(net(1), args.repeats, n)))
    rows.append(("network only, 2 flips", _median_ms(net(2), args.repeats, n)))
    rows.append(("network only, 2 flips, mask only", _median_ms(net(2, with_image=False), args.repeats, n)))
    rows.append(("copy baseline", _median_ms(lambda: [bm.clone() for bm in bmask], args.repeats, n)))
    rows.append(("exponential baseline (fit + warp)", _median_ms(lambda: exponential_baseline(batch), args.repeats, n)))

    print(f"growth model inference on CPU ({torch.get_num_threads()} threads), {n} nodules per batch, "
          f"patch {g}³ at {fc.cfg.spacing_mm} mm, median of {args.repeats}")
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    print(f"(load average at the end: {load}; CPU ms counts both threads)")
    print(f"{'method':<38}{'wall ms/nodule':>16}{'CPU ms/nodule':>15}")
    print("-" * 69)
    for name, (wall, cpu) in rows:
        print(f"{name:<38}{wall:>16.1f}{cpu:>15.1f}")
    weights_path = Path(args.weights) if args.weights else default_weights_path()
    metrics_path = weights_path.with_name(weights_path.stem + "_train_metrics.json")
    if metrics_path.is_file():
        m = json.loads(metrics_path.read_text())
        cpu = m.get("train_cpu_seconds")
        print(f"\ntraining (from {metrics_path.name}): {m['step']} steps, batch {m['options']['batch_size']}, "
              f"{m['pairs']} pairs: {m['train_seconds'] / 60:.1f} min wall"
              + (f", {cpu / 60:.1f} min CPU" if cpu else "") + f" on {m['device']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
