"""Series selection and volume loading (issue 03, items 1–2), on small DICOM series written here."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from inference.series import SeriesSelectionError, is_lung_kernel, scan_series, select_series
from inference.volume import load_study, load_volume

CT = "1.2.840.10008.5.1.4.1.1.2"


def write_series(
    out: Path,
    hu: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (0.8, 0.8, 1.25),  # x, y, z
    origin: tuple[float, float, float] = (-100.0, -120.0, -50.0),
    iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    kernel: str = "B70f",
    description: str = "Lung 1.25",
    study_uid: str | None = None,
    series_uid: str | None = None,
    positions: list[float] | None = None,  # z offsets; default regular
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    compress: bool = False,
    study_date: str = "20250101",
    shuffle: bool = True,
) -> list[Path]:
    """Write ``hu`` (z, y, x) as a CT Image Storage series (slope 1, intercept −1024)."""
    out.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    row = np.asarray(iop[:3], float)
    col = np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    zs = positions if positions is not None else [k * spacing[2] for k in range(hu.shape[0])]
    paths = []
    order = np.random.default_rng(0).permutation(len(zs)) if shuffle else np.arange(len(zs))
    for n, k in enumerate(order):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CT
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CT
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientID = "TEST"
        ds.PatientName = "Test^Series"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate = study_date
        ds.SeriesDescription = description
        ds.ConvolutionKernel = kernel
        ds.ImageType = list(image_type)
        ds.InstanceNumber = int(k) + 1
        pos = np.asarray(origin, float) + normal * zs[k]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.ImageOrientationPatient = [str(v) for v in iop]
        ds.PixelSpacing = [str(spacing[1]), str(spacing[0])]
        ds.SliceThickness = str(spacing[2])
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.PixelData = (hu[min(k, hu.shape[0] - 1)].astype(np.int32) + 1024).clip(0, 65535).astype(np.uint16).tobytes()
        if compress:
            ds.compress(RLELossless)
        p = out / f"{series_uid[-8:]}_{n:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def _vol(nz: int = 20, n: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 400, size=(nz, n, n)).astype(np.int16)


def test_thinnest_lung_kernel_series_is_chosen_and_others_explained(tmp_path: Path) -> None:
    study = generate_uid()
    write_series(tmp_path, _vol(20), spacing=(0.8, 0.8, 2.5), kernel="B30f", description="thick soft", study_uid=study)
    soft = write_series(tmp_path, _vol(40), spacing=(0.8, 0.8, 1.25), kernel="B30f", description="thin soft",
                        study_uid=study)
    lung = write_series(tmp_path, _vol(40), spacing=(0.8, 0.8, 1.25), kernel="B70f", description="thin lung",
                        study_uid=study)
    write_series(tmp_path, _vol(1, 32), description="scout", study_uid=study, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    (tmp_path / "notes.txt").write_text("not dicom")
    sel = select_series(tmp_path)
    assert sel.chosen.description == "thin lung"
    assert sel.chosen.slice_spacing_mm == pytest.approx(1.25)
    assert sorted(sel.chosen.files) == sorted(lung)
    reasons = {c.description: c.rejected for c in sel.others}
    assert "localizer" in reasons["scout"]
    assert "preferred" in reasons["thin soft"]
    assert any("not DICOM" in r for _, r in sel.ignored_files)
    assert len(soft) == 40


@pytest.mark.parametrize(
    "kind, expected",
    [("gap", "gap"), ("duplicate", "duplicate"), ("mixed", "mixed orientation"), ("sagittal", "not axial")],
)
def test_bad_series_are_rejected_with_the_reason(tmp_path: Path, kind: str, expected: str) -> None:
    hu = _vol(20)
    if kind == "gap":
        pos = [k * 1.0 for k in range(10)] + [k * 1.0 + 3.0 for k in range(10, 20)]
        write_series(tmp_path, hu, positions=pos)
    elif kind == "duplicate":
        pos = [k * 1.0 for k in range(19)] + [18.0]
        write_series(tmp_path, hu, positions=pos)
    elif kind == "mixed":
        series = generate_uid()
        write_series(tmp_path / "a", hu[:10], series_uid=series, positions=[k * 1.0 for k in range(10)])
        write_series(tmp_path / "b", hu[10:], series_uid=series, iop=(1, 0, 0, 0, 0.995, -0.0998),
                     positions=[k * 1.0 + 10 for k in range(10)])
    else:
        write_series(tmp_path, hu, iop=(0, 1, 0, 0, 0, -1))
    with pytest.raises(SeriesSelectionError, match=expected):
        select_series(tmp_path)
    cands, _ = scan_series(tmp_path)
    assert all(c.rejected for c in cands)


def test_volume_geometry_hu_and_compressed_syntax(tmp_path: Path) -> None:
    hu = _vol(18, 24, seed=3)
    write_series(tmp_path / "raw", hu, spacing=(0.7, 0.75, 1.5), origin=(-10, 20, -30))
    write_series(tmp_path / "rle", hu, spacing=(0.7, 0.75, 1.5), origin=(-10, 20, -30), compress=True)
    for sub in ("raw", "rle"):
        vol = load_study(tmp_path / sub)
        assert vol.hu.dtype == np.int16
        np.testing.assert_array_equal(vol.hu, hu)
        g = vol.geometry
        assert g.spacing == pytest.approx((0.7, 0.75, 1.5))
        np.testing.assert_allclose(g.index_to_lps([[17, 2, 3]]), [[-10 + 3 * 0.7, 20 + 2 * 0.75, -30 + 17 * 1.5]])
        assert vol.study_date == dt.date(2025, 1, 1)
        assert len(vol.slice_datasets) == 18 and "PixelData" not in vol.slice_datasets[0]
        assert vol.sop_instance_uids == [d.SOPInstanceUID for d in vol.slice_datasets]


def test_jpeg_compressed_file_from_pydicom_data_decodes() -> None:
    """A real-world compressed CT-like file (JPEG 2000 lossless) through pylibjpeg."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small_jp2klossless.dcm")
    if path is None:
        pytest.skip("pydicom test data not available")
    ref = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    vol = load_volume([path])
    slope = 1.0
    np.testing.assert_array_equal(vol.hu[0], (ref * slope).astype(np.int16))


def test_lung_kernel_names() -> None:
    for k in ("B70f", "LUNG", "Br64", "YC", "FC52", "BONEPLUS"):
        assert is_lung_kernel(k), k
    for k in ("B30f", "STANDARD", "SOFT", "Br40", "FC08"):
        assert not is_lung_kernel(k), k


def test_no_ct_at_all_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(SeriesSelectionError, match="no CT image series"):
        select_series(tmp_path)


@pytest.mark.parametrize("variant", ["signed", "stored12", "implicit", "trailing_padding"])
def test_slices_read_from_the_file_tail_match_pydicom(tmp_path: Path, variant: str) -> None:
    """Uncompressed slices are read straight from the end of the file when their Pixel Data is the
    last element (volume._raw_frame); every other layout falls back to pydicom. Both give the same HU."""
    from pydicom.uid import ImplicitVRLittleEndian

    from inference.volume import load_volume

    hu = _vol(16, 16, seed=5)
    hu[0, 0, 0] = -1024  # the lowest stored value (0 unsigned)
    paths = write_series(tmp_path / "s", hu, shuffle=False)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        if variant == "signed":
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = "0"
            ds.PixelData = hu[k].astype("<i2").tobytes()
        elif variant == "stored12":  # values need 11 bits; 12 stored, 4 high bits free
            ds.BitsStored, ds.HighBit = 12, 11
        elif variant == "implicit":
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:  # an element after Pixel Data: the tail is not the pixel data
            ds.DataSetTrailingPadding = b"\0" * 8
        ds.save_as(p, enforce_file_format=True, implicit_vr=variant == "implicit", little_endian=True)
    vol = load_study(tmp_path / "s")  # headers from the series scan: the file-tail path where it applies
    np.testing.assert_array_equal(vol.hu, hu)
    reference = load_volume(sorted(paths))  # pydicom decodes every file
    np.testing.assert_array_equal(vol.hu, reference.hu)
