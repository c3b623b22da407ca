"""DICOM headers and files for phantom CT series (CT Image Storage, one file per axial slice).

Headers follow the CT Image IOD (Patient, General Study, Patient Study, General Series, Frame of
Reference, General Equipment, General Acquisition, General Image, Image Plane, Image Pixel, CT Image,
VOI LUT, SOP Common) closely enough that ``dciodvfy`` reports no error. Scanner details (vendor,
kernel, pixel representation) vary per study so that consumers meet more than one convention: some
series store unsigned values with intercept -1024, others signed values with intercept -1024 or 0.
Everything is derived from the seed: the same seed writes byte-identical files.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

UID_ROOT_TEXT = "noduletrack-phantom"

SCANNERS = (
    # manufacturer, model, software, kernels (sharp lung kernels first), pixel variant
    ("SIEMENS", "SOMATOM Definition AS+", "syngo CT VA48A", ("B70f", "I70f", "B60f", "B45f"), "unsigned"),
    ("GE MEDICAL SYSTEMS", "LightSpeed VCT", "07MW18.4", ("LUNG", "BONEPLUS", "BONE", "STANDARD"), "signed"),
    ("Philips", "iCT 256", "4.1.6", ("YC", "L", "YB", "C"), "signed0"),
    ("TOSHIBA", "Aquilion ONE", "V6.00ER008", ("FC52", "FC86", "FC51", "FC13"), "unsigned"),
)


_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:noduletrack:phantom")


def phantom_uid(*parts: object) -> str:
    """A deterministic ``2.25.`` UID (ISO/IEC 9834-8 name-based UUID) from the seed and the role.

    ``pydicom.uid.generate_uid(prefix=None, ...)`` ignores its entropy sources and returns a random
    UUID, so the name-based UUID is built here instead.
    """
    name = "/".join([UID_ROOT_TEXT, *[str(p) for p in parts]])
    return UID(f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}")


def _da(d: _dt.date) -> str:
    return d.strftime("%Y%m%d")


def _ds(v: float) -> str:
    """A DS value with at most 16 characters."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s[:16]


def stored_values(hu: np.ndarray, variant: str) -> tuple[np.ndarray, dict[str, Any]]:
    """HU int16 → stored pixel array and the Image Pixel / rescale attributes for ``variant``."""
    hu = np.clip(hu, -1024, 3071).astype(np.int16)
    if variant == "unsigned":  # 12 bits stored, value = HU + 1024
        return (hu.astype(np.int32) + 1024).astype(np.uint16), dict(
            BitsStored=12, HighBit=11, PixelRepresentation=0, RescaleIntercept="-1024"
        )
    if variant == "signed":  # signed 16 bits, value = HU + 1024
        return (hu.astype(np.int32) + 1024).astype(np.int16), dict(
            BitsStored=16, HighBit=15, PixelRepresentation=1, RescaleIntercept="-1024"
        )
    if variant == "signed0":  # signed 16 bits, value = HU
        return hu, dict(BitsStored=16, HighBit=15, PixelRepresentation=1, RescaleIntercept="0")
    raise ValueError(f"unknown pixel variant {variant!r}")


def series_headers(
    *,
    patient: dict[str, Any],
    study: dict[str, Any],
    rows: int,
    cols: int,
    pixel_mm: float,
    slice_mm: float,
    positions: np.ndarray,
    sop_uids: list[str],
) -> list[Dataset]:
    """One header-only dataset per slice (array z order; InstanceNumber 1 = the most superior)."""
    nz = positions.shape[0]
    _, pix = stored_values(np.zeros(1), study["pixel_variant"])
    base_meta = dict(
        SpecificCharacterSet="ISO_IR 100",
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        SOPClassUID=CTImageStorage,
        StudyDate=_da(study["date"]),
        SeriesDate=_da(study["date"]),
        AcquisitionDate=_da(study["date"]),
        ContentDate=_da(study["date"]),
        StudyTime=study["time"],
        SeriesTime=study["time"],
        AccessionNumber=study["accession"],
        Modality="CT",
        Manufacturer=study["manufacturer"],
        InstitutionName="NoduleTrack Phantom Hospital",
        ReferringPhysicianName="",
        StationName="PHANTOMCT01",
        StudyDescription="CT CHEST",
        SeriesDescription=study["series_description"],
        ManufacturerModelName=study["model"],
        PatientName=patient["name"],
        PatientID=patient["patient_id"],
        IssuerOfPatientID=patient["issuer"],
        PatientBirthDate=_da(patient["birth_date"]),
        PatientSex=patient["sex"],
        PatientAge=study["age"],
        BodyPartExamined="CHEST",
        SliceThickness=_ds(slice_mm),
        KVP=_ds(study["kvp"]),
        SpacingBetweenSlices=_ds(slice_mm),
        DataCollectionDiameter="500",
        SoftwareVersions=study["software"],
        ReconstructionDiameter=_ds(pixel_mm * cols),
        GantryDetectorTilt="0",
        TableHeight=_ds(study["table_height"]),
        RotationDirection="CW",
        ExposureTime=str(int(study["exposure_time_ms"])),
        XRayTubeCurrent=str(int(study["tube_current_ma"])),
        Exposure=str(int(study["exposure_mas"])),
        FilterType="BODY FILTER",
        ConvolutionKernel=study["kernel"],
        PatientPosition="HFS",
        StudyInstanceUID=study["study_uid"],
        SeriesInstanceUID=study["series_uid"],
        StudyID=study["study_id"],
        SeriesNumber=str(study["series_number"]),
        AcquisitionNumber="1",
        ImageOrientationPatient=["1", "0", "0", "0", "1", "0"],
        FrameOfReferenceUID=study["for_uid"],
        PositionReferenceIndicator="",
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        Rows=rows,
        Columns=cols,
        PixelSpacing=[_ds(pixel_mm), _ds(pixel_mm)],
        BitsAllocated=16,
        BitsStored=pix["BitsStored"],
        HighBit=pix["HighBit"],
        PixelRepresentation=pix["PixelRepresentation"],
        WindowCenter=["-600", "40"],
        WindowWidth=["1500", "400"],
        WindowCenterWidthExplanation=["LUNG", "MEDIASTINUM"],
        RescaleIntercept=pix["RescaleIntercept"],
        RescaleSlope="1",
        RescaleType="HU",
    )
    base = Dataset()
    for key, value in base_meta.items():
        setattr(base, key, value)
    base.ContentTime = study["time"]
    base.AcquisitionTime = study["time"]
    out: list[Dataset] = []
    for k in range(nz):
        # a new dict over the shared, never-mutated elements of ``base``; per-slice elements are new
        ds = Dataset(dict(base.items()))
        ds.add_new(0x00080018, "UI", sop_uids[k])  # SOPInstanceUID
        ds.add_new(0x00200013, "IS", str(nz - k))  # InstanceNumber: 1 = the most superior slice
        ds.add_new(0x00200032, "DS", [_ds(float(v)) for v in positions[k]])  # ImagePositionPatient
        ds.add_new(0x00201041, "DS", _ds(float(positions[k, 2])))  # SliceLocation
        out.append(ds)
    return out


def _encode(elem: Any, little: bool = True) -> bytes:
    """One data element in Explicit VR Little Endian."""
    fp = DicomBytesIO()
    fp.is_little_endian = little
    fp.is_implicit_VR = False
    write_data_element(fp, elem, encodings=["latin_1"])
    return fp.getvalue()


def write_slices(headers: list[Dataset], hu: np.ndarray, variant: str, out_dir: Path) -> list[Path]:
    """Write ``CT000001.dcm``… (file number = InstanceNumber) with Explicit VR Little Endian.

    Why not ``Dataset.save_as`` per file: encoding ~70 identical elements 300 times dominated the
    time. Elements shared by every slice (the same objects, see :func:`series_headers`) are encoded
    once; per file only the slice's own elements, the file meta and the pixels are. The bytes are
    the same as pydicom writes (checked by the tests through dciodvfy and a pixel round trip).
    ``headers`` are not modified.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stored, _ = stored_values(hu, variant)
    cache: dict[int, tuple[int, bytes]] = {}  # id(element) → (tag, encoded)
    paths: list[Path] = []
    for k, header in enumerate(headers):
        parts: list[tuple[int, bytes]] = []
        for elem in header.elements():
            key = id(elem)
            hit = cache.get(key)
            if hit is None:
                hit = (int(elem.tag), _encode(elem))
                if len(cache) < 4096:
                    cache[key] = hit
            parts.append(hit)
        pixel = stored[k].tobytes()
        parts.append((0x7FE00010, b"\xe0\x7f\x10\x00OW\x00\x00" + len(pixel).to_bytes(4, "little") + pixel))
        parts.sort(key=lambda item: item[0])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = header.SOPClassUID
        meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "NODULETRACK"
        fp = DicomBytesIO()
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        path = out_dir / f"CT{int(header.InstanceNumber):06d}.dcm"
        with open(path, "wb") as f:
            f.write(fp.getvalue())
            for _, data in parts:
                f.write(data)
        paths.append(path)
    return paths


def write_slices_pydicom(headers: list[Dataset], hu: np.ndarray, variant: str, out_dir: Path) -> list[Path]:
    """Reference writer: plain ``Dataset.save_as`` per slice (slow; used to check the fast one)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stored, _ = stored_values(hu, variant)
    paths: list[Path] = []
    for k, header in enumerate(headers):
        ds = Dataset(dict(header.items()))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = header.SOPClassUID
        meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "NODULETRACK"
        ds.file_meta = meta
        ds.add_new(0x7FE00010, "OW", stored[k].tobytes())  # PixelData
        path = out_dir / f"CT{int(header.InstanceNumber):06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
