"""Growth manifest loader: precise rejection of bad lines, and the fixed model grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.growth.data import GrowthConfig, ManifestError, array_to_metatensor, load_pair, prepare_pair, read_manifest
from tests.growth_synth import make_pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("gpairs"), 3, seed=7)


def _rewrite(manifest: Path, out: Path, edit) -> Path:
    rec = json.loads(manifest.read_text().splitlines()[0])
    for k in ("baseline_image", "baseline_mask", "followup_image", "followup_mask"):
        rec[k] = str(manifest.parent / rec[k])
    rec.pop("history", None)
    edit(rec)
    path = out / "m.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    return path


def test_reads_valid_manifest(pairs: Path) -> None:
    recs = read_manifest(pairs)
    assert len(recs) == 3
    assert recs[0].history and not recs[1].history
    assert recs[0].pattern == "growing"
    assert recs[0].baseline_image.is_file()


def test_missing_key_named(pairs: Path, tmp_path: Path) -> None:
    m = _rewrite(pairs, tmp_path, lambda r: r.pop("followup_mask"))
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: missing key\(s\) 'followup_mask'"):
        read_manifest(m)


def test_missing_file_named(pairs: Path, tmp_path: Path) -> None:
    m = _rewrite(pairs, tmp_path, lambda r: r.update(baseline_image=str(tmp_path / "nope.nii.gz")))
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: 'baseline_image' file not found: .*nope\.nii\.gz"):
        read_manifest(m)


def test_shape_mismatch_named(pairs: Path, tmp_path: Path) -> None:
    small = sitk.GetImageFromArray(np.zeros((5, 6, 7), dtype=np.uint8))
    sitk.WriteImage(small, str(tmp_path / "small_mask.nii.gz"))
    m = _rewrite(pairs, tmp_path, lambda r: r.update(followup_mask=str(tmp_path / "small_mask.nii.gz")))
    with pytest.raises(ManifestError, match=r"followup_mask shape \(7, 6, 5\) does not match followup_image shape \(40, 40, 40\)"):
        read_manifest(m)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(interval_days=-3), r"'interval_days' must be a positive number of days, got -3"),
        (lambda r: r.update(interval_days="365"), r"'interval_days' must be a positive number of days, got '365'"),
        (lambda r: r.update(history=[{"image": r["baseline_image"], "mask": r["baseline_mask"]}]),
         r"history\[0\]: missing key\(s\) 'days_before_baseline'"),
        (lambda r: r.update(baseline_image="x.png"), r"'baseline_image' 'x\.png' is not NIfTI or MetaImage"),
    ],
)
def test_bad_values_named(pairs: Path, tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        read_manifest(_rewrite(pairs, tmp_path, edit))


def test_not_json_and_empty(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1,\n')
    with pytest.raises(ManifestError, match=r"bad\.jsonl:1: not valid JSON"):
        read_manifest(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ManifestError, match="no pairs"):
        read_manifest(empty)


def test_pair_on_model_grid(pairs: Path) -> None:
    """Anisotropic 1.2×1.2×1.5 mm input → 1 mm isotropic 48³ patch centred on the nodule, window [0, 1]."""
    cfg = GrowthConfig()
    rec = read_manifest(pairs)[0]
    s = load_pair(rec, cfg)
    for k in ("baseline_image", "baseline_mask", "followup_image", "followup_mask", "history_image"):
        assert tuple(s[k].shape) == (1, 48, 48, 48), k
    img = s["baseline_image"].numpy()
    assert img.min() >= 0.0 and img.max() <= 1.0
    m = s["baseline_mask"][0].numpy()
    centroid = np.array([(g * m).sum() / m.sum() for g in np.indices(m.shape)])
    assert np.all(np.abs(centroid - 23.5) <= 1.0), centroid
    # the resampled soft mask keeps the physical volume (spheres: 1 mm³ voxels now)
    src = sitk.GetArrayFromImage(sitk.ReadImage(str(rec.baseline_mask)))
    true_mm3 = float(src.sum()) * 1.2 * 1.2 * 1.5
    assert abs(float(m.sum()) - true_mm3) / true_mm3 < 0.03
    assert float(s["has_history"]) == 1.0 and float(s["days_before"]) > 0
    assert float(read_manifest(pairs)[1].interval_days) > 0


def test_cli_rejects_bad_manifest(pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dicom_node.cli import main

    m = _rewrite(pairs, tmp_path, lambda r: r.pop("interval_days"))
    assert main(["train", "growth", "--manifest", str(m), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "missing key(s) 'interval_days'" in capsys.readouterr().err
    assert main(["evaluate", "growth", "--manifest", str(tmp_path / "absent.jsonl")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert not (tmp_path / "o" / "weights.pt").exists()


def test_mask_with_its_own_geometry() -> None:
    """A mask sharing its image's grid is resampled with it; one written on another grid (here shifted
    by 3 mm) is resampled by its own header, so the nodule lands where the mask says it is."""
    cfg = GrowthConfig(patch=24)
    hu = np.full((30, 30, 30), -850.0, dtype=np.float32)
    mask = np.zeros((30, 30, 30), dtype=np.float32)
    mask[12:18, 12:18, 12:18] = 1.0
    sp, d = (1.0, 1.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    same = prepare_pair({"baseline_image": array_to_metatensor(hu, (0, 0, 0), sp, d),
                         "baseline_mask": array_to_metatensor(mask, (0, 0, 0), sp, d),
                         "followup_image": array_to_metatensor(hu, (0, 0, 0), sp, d),
                         "followup_mask": array_to_metatensor(mask, (0, 0, 0), sp, d)}, cfg)
    moved = prepare_pair({"baseline_image": array_to_metatensor(hu, (0, 0, 0), sp, d),
                          "baseline_mask": array_to_metatensor(mask, (0, 0, 0), sp, d),
                          "followup_image": array_to_metatensor(hu, (0, 0, 0), sp, d),
                          "followup_mask": array_to_metatensor(mask, (3.0, 0, 0), sp, d)}, cfg)  # LPS x + 3 mm

    def centroid(t) -> np.ndarray:
        m = t[0].numpy()
        return np.array([(g * m).sum() / m.sum() for g in np.indices(m.shape)])

    assert np.allclose(centroid(same["followup_mask"]), centroid(same["baseline_mask"]), atol=1e-4)
    shift = centroid(moved["followup_mask"]) - centroid(moved["baseline_mask"])
    assert np.allclose(np.abs(shift), [3.0, 0.0, 0.0], atol=0.05), shift  # MONAI index i = LPS x (sign: RAS flip)
    assert abs(float(moved["followup_mask"].sum()) - 216.0) < 1.0
