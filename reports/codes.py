"""Coded concepts used by NoduleTrack's DICOM objects (SEG, TID 1500 SR, key images).

Standard codes come from CLINICAL.md ("Codes for the SR") and DICOM PS3.16. Where no standard code
exists (volume doubling time, growth, the growth model's predictions, a Fleischner recommendation)
we use a private coding scheme, ``99NDLTRK``; every SR that uses it declares it in its Coding Scheme
Identification Sequence (:data:`PRIVATE_SCHEME`), as PS3.3 C.12.1.1.3.1 requires for private
schemes.
"""

from __future__ import annotations

from pydicom.sr.coding import Code

from highdicom.coding_schemes import CodingSchemeIdentificationItem

# ----------------------------------------------------------------------------- private scheme

PRIVATE_DESIGNATOR = "99NDLTRK"
PRIVATE_SCHEME_NAME = "NoduleTrack private codes"
PRIVATE_SCHEME_VERSION = "1"


def private(value: str, meaning: str) -> Code:
    """A concept in NoduleTrack's private coding scheme."""
    return Code(value, PRIVATE_DESIGNATOR, meaning)


def coding_scheme_identification() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification Sequence item declaring :data:`PRIVATE_DESIGNATOR`."""
    return CodingSchemeIdentificationItem(
        designator=PRIVATE_DESIGNATOR,
        name=PRIVATE_SCHEME_NAME,
        version=PRIVATE_SCHEME_VERSION,
        responsible_organization="NoduleTrack project",
    )


# ----------------------------------------------------------------------------- findings, sites

NODULE = Code("27925004", "SCT", "Nodule")
LUNG = Code("39607008", "SCT", "Lung")
# CID 7150 category for a nodule segment (CID 7151 pairs "Nodule" with this category).
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")
CT_CHEST = Code("24627-2", "LN", "CT Chest")  # CID 100 procedure reported
IMAGING_MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 document level
# "Nothing found": the CAD SR wording (CID 6047) and a plain presence statement.
CAD_PROCESSING_SUMMARY = Code("111017", "DCM", "CAD Processing and Findings Summary")
ALL_SUCCEEDED_WITHOUT_FINDINGS = Code("111241", "DCM", "All algorithms succeeded; without findings")
ABSENT = Code("272519000", "SCT", "Absent")

# ----------------------------------------------------------------------------- measurements

VOLUME = Code("118565006", "SCT", "Volume")
LONG_AXIS = Code("103339001", "SCT", "Long axis")
SHORT_AXIS = Code("103340004", "SCT", "Short axis")
DIAMETER = Code("81827009", "SCT", "Diameter")
ATTENUATION = Code("112031", "DCM", "Attenuation Coefficient")
MEAN = Code("373098007", "SCT", "Mean")  # derivation (CID 7464)
MINIMUM = Code("255605001", "SCT", "Minimum")
MAXIMUM = Code("56851009", "SCT", "Maximum")
RECOMMENDED_FOLLOWUP_INTERVAL = Code("111055", "DCM", "Recommended Follow-up Interval")
RECOMMENDED_FOLLOWUP_DATE = Code("111054", "DCM", "Recommended Follow-up Date")
RECOMMENDED_FOLLOWUP = Code("111053", "DCM", "Recommended Follow-up")

# ----------------------------------------------------------------------------- units (UCUM)

UNIT_MM = Code("mm", "UCUM", "millimeter")
UNIT_MM3 = Code("mm3", "UCUM", "cubic millimeter")
UNIT_HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
UNIT_DAYS = Code("d", "UCUM", "day")
UNIT_MONTHS = Code("mo", "UCUM", "month")
UNIT_PERCENT = Code("%", "UCUM", "percent")

# ----------------------------------------------------------------------------- consistency (RadLex)

# No standard concept name for "consistency" is listed in CLINICAL.md: private name, RadLex values.
NODULE_CONSISTENCY = private("NT-CONS", "Nodule consistency")
CONSISTENCY_VALUES: dict[str, Code] = {
    "solid": Code("RID5741", "RADLEX", "Solid"),
    "part_solid": Code("RID46011", "RADLEX", "Part-solid"),
    "ground_glass": Code("RID46016", "RADLEX", "Ground-glass"),
}

# ----------------------------------------------------------------------------- Lung-RADS v2022

LUNG_RADS_CATEGORY = Code("1362105002", "SCT", "Lung-RADS category")
LUNG_RADS_VALUES: dict[str, Code] = {
    "0": Code("RID50135", "RADLEX", "Lung-RADS category 0"),
    "1": Code("RID50136", "RADLEX", "Lung-RADS category 1"),
    "2": Code("RID50137", "RADLEX", "Lung-RADS category 2"),
    "3": Code("RID50138", "RADLEX", "Lung-RADS category 3"),
    "4A": Code("RID50139", "RADLEX", "Lung-RADS category 4A"),
    "4B": Code("RID50140", "RADLEX", "Lung-RADS category 4B"),
    "4X": Code("RID50141", "RADLEX", "Lung-RADS category 4X"),
}
LUNG_RADS_S_MODIFIER = private("NT-LRS", "Lung-RADS S modifier (significant other finding)")


def lung_rads_value(category: str) -> Code:
    """RadLex value for a Lung-RADS category such as ``"4A"`` or ``"2S"`` (the S modifier is separate)."""
    base = category.strip().upper().removesuffix("S")
    if base not in LUNG_RADS_VALUES:
        raise ValueError(f"unknown Lung-RADS category {category!r}; expected one of {sorted(LUNG_RADS_VALUES)} (+ optional 'S')")
    return LUNG_RADS_VALUES[base]


# ----------------------------------------------------------------------------- private concepts

VOLUME_DOUBLING_TIME = private("NT-VDT", "Volume doubling time")
VOLUME_CHANGE_PCT = private("NT-VCHG", "Volume change since prior")
VDT_BAND = private("NT-VDTB", "Volume doubling time band")
VDT_BAND_VALUES: dict[str, Code] = {
    "<400": private("NT-VDTB1", "VDT < 400 days"),
    "400-600": private("NT-VDTB2", "VDT 400-600 days"),
    ">600": private("NT-VDTB3", "VDT > 600 days"),
    "no_growth": private("NT-VDTB4", "No growth"),
    "decreasing": private("NT-VDTB5", "Decreasing volume"),
}
INTERVAL_SINCE_PRIOR = private("NT-INT", "Interval since prior study")
PRIOR_VOLUME = private("NT-PVOL", "Volume at prior time point")
PRIOR_LONG_AXIS = private("NT-PLAX", "Long axis at prior time point")
PRIOR_SHORT_AXIS = private("NT-PSAX", "Short axis at prior time point")
PRIOR_MEAN_DIAMETER = private("NT-PDIA", "Mean diameter at prior time point")
PRIOR_STUDY_DATE = private("NT-PDATE", "Prior study date")
PREDICTED_VOLUME = private("NT-FVOL", "Predicted volume at forecast date")
PREDICTED_VOLUME_LOW = private("NT-FVOLL", "Predicted volume at forecast date, lower bound")
PREDICTED_VOLUME_HIGH = private("NT-FVOLH", "Predicted volume at forecast date, upper bound")
PREDICTED_DIAMETER = private("NT-FDIA", "Predicted mean diameter at forecast date")
PREDICTED_DIAMETER_LOW = private("NT-FDIAL", "Predicted mean diameter at forecast date, lower bound")
PREDICTED_DIAMETER_HIGH = private("NT-FDIAH", "Predicted mean diameter at forecast date, upper bound")
FORECAST_HORIZON = private("NT-FHOR", "Forecast horizon")
FORECAST_DATE = private("NT-FDATE", "Forecast date")
GROWTH_MODEL_VERSION = private("NT-MODEL", "Growth model version")
FLEISCHNER_RECOMMENDATION = private("NT-FLEI", "Fleischner 2017 recommendation")
VDT_RECOMMENDATION = private("NT-VDTREC", "Volumetric (VDT) recommendation")
GUIDELINE = private("NT-GUIDE", "Guideline applied")
GUIDELINE_CATEGORY = private("NT-GCAT", "Guideline category")
RATIONALE = private("NT-RAT", "Recommendation rationale")
FINDING_SUMMARY = private("NT-SUM", "Finding summary")
NODULE_STATUS = private("NT-STAT", "Nodule tracking status")
NODULE_STATUS_VALUES: dict[str, Code] = {
    "tracked": private("NT-STAT1", "Tracked from prior study"),
    "new": private("NT-STAT2", "New since prior study"),
    "resolved": private("NT-STAT3", "Resolved since prior study"),
}
REPLACED_INSTANCE = private("NT-REPL", "Earlier version of this result (replaced)")
PREDICTED_EXTENT = private("NT-PRED", "Predicted extent (AI prediction)")
