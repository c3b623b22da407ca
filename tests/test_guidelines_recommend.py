"""Study recommendation: guideline choice, most suspicious nodule, VDT escalation, forecasts, due date."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from inference.types import Forecast, NoduleMeasurement, TrackedNodule
from reports.guidelines import GuidelineInputError, NoduleInput, StudyContext, recommend
from reports.guidelines.recommend import ForecastPoint, forecast_statement

DAY = dt.date(2026, 11, 2)


def ctx(**kw) -> StudyContext:
    return StudyContext(study_date=DAY, **kw)


def test_summary_json_keys_and_types() -> None:
    rec = recommend([NoduleInput("Nodule 1", "solid", mean_diameter_mm=5.5)], ctx(risk="low", age_years=60))
    d = rec.to_dict()
    assert list(d) == ["guideline", "category", "followup_months_min", "followup_months_max", "due_date", "text"]
    assert d["guideline"] == "fleischner2017"
    assert (d["followup_months_min"], d["followup_months_max"]) == (6, 12)
    assert d["due_date"] == "2027-05-02"  # study date + 6 months
    json.dumps(rec.to_dict(include_nodules=True))  # JSON-ready
    assert "Nodule 1" in d["text"] and "rounded to 6 mm" in d["text"] and "Due date = study date" in d["text"]


def test_guideline_choice_screening_and_override() -> None:
    nodules = [NoduleInput("N1", "solid", mean_diameter_mm=7.0)]
    assert recommend(nodules, ctx(screening=True, baseline=True)).guideline == "lungrads2022"
    assert recommend(nodules, ctx(screening=False)).guideline == "fleischner2017"
    assert recommend(nodules, ctx(screening=False, guideline="lungrads2022")).guideline == "lungrads2022"
    # Fleischner forced on a screening study: not applicable, with the reason.
    r = recommend(nodules, ctx(screening=True, guideline="fleischner2017"))
    assert r.category == "not applicable" and "screening" in r.text and r.due_date is None


def test_most_suspicious_nodule_drives_lungrads() -> None:
    nodules = [
        NoduleInput("Nodule 1", "solid", mean_diameter_mm=5.0),
        NoduleInput("Nodule 2", "solid", mean_diameter_mm=9.0),
        NoduleInput("Nodule 3", "ground_glass", mean_diameter_mm=12.0),
    ]
    r = recommend(nodules, ctx(screening=True, baseline=True))
    assert r.category == "4A" and r.driver == "Nodule 2"
    assert (r.followup_months_min, r.followup_months_max) == (3, 3)
    assert r.due_date == dt.date(2027, 2, 2)
    assert "Nodule 1: 2" in r.text and "Nodule 3: 2" in r.text


def test_most_suspicious_nodule_drives_fleischner_with_multiple_rows() -> None:
    nodules = [
        NoduleInput("Nodule 1", "solid", mean_diameter_mm=4.0),
        NoduleInput("Nodule 2", "part_solid", mean_diameter_mm=10.0, solid_component_mm=7.0),
    ]
    r = recommend(nodules, ctx(risk="high"))
    assert r.driver == "Nodule 2" and "solid part" in r.category
    n1 = next(n for n in r.nodules if n.label == "Nodule 1")
    assert "multiple" in n1.result.category  # multiplicity comes from the number of nodules


def test_no_nodules() -> None:
    lr = recommend([], ctx(screening=True))
    assert lr.category == "1" and lr.followup_months_min == 12 and lr.due_date == dt.date(2027, 11, 2)
    fl = recommend([], ctx())
    assert fl.category == "no nodules" and fl.followup_months_min is None and fl.due_date is None


def test_s_modifier_from_study_context() -> None:
    r = recommend([NoduleInput("N1", "solid", mean_diameter_mm=7.0)], ctx(screening=True, baseline=True,
                                                                          significant_other_finding=True))
    assert r.category == "3S" and "unrelated to lung cancer" in r.text


def test_fast_vdt_escalates_lungrads_to_4x() -> None:
    n = NoduleInput("Nodule 1", "solid", mean_diameter_mm=7.0, prior_mean_diameter_mm=6.2,
                    volume_mm3=180.0, prior_volume_mm3=125.0, interval_days=90)
    r = recommend([n], ctx(screening=True))
    assert r.category == "4X" and r.nodules[0].escalated
    assert r.followup_months_min is None and r.due_date is None
    assert "doubling time < 400 days" in r.text and "VDT" in r.text


def test_fast_vdt_escalates_fleischner_to_3_months() -> None:
    n = NoduleInput("Nodule 1", "solid", mean_diameter_mm=7.0, volume_mm3=180.0, prior_volume_mm3=125.0, interval_days=90)
    r = recommend([n], ctx(risk="low"))
    assert (r.followup_months_min, r.followup_months_max) == (3, 3)
    assert r.due_date == dt.date(2027, 2, 2) and r.nodules[0].escalated


def test_vdt_below_400_within_measurement_error_does_not_escalate() -> None:
    n = NoduleInput("Nodule 1", "solid", mean_diameter_mm=7.0, volume_mm3=138.0, prior_volume_mm3=125.0, interval_days=30)
    r = recommend([n], ctx(risk="low"))
    assert r.nodules[0].vdt_days < 400 and not r.nodules[0].escalated
    assert (r.followup_months_min, r.followup_months_max) == (6, 12)


@pytest.mark.parametrize("vdt_days, escalated", [(399.9, True), (400.0, False), (600.0, False)])
def test_measured_vdt_given_without_volumes(vdt_days: float, escalated: bool) -> None:
    n = NoduleInput("Nodule 1", "solid", mean_diameter_mm=7.0, vdt_days=vdt_days)
    r = recommend([n], ctx(risk="low"))
    assert r.nodules[0].escalated is escalated


def test_forecast_crossing_a_threshold_is_stated() -> None:
    n = NoduleInput(
        "Nodule 1", "solid", mean_diameter_mm=7.0,
        forecast=(ForecastPoint(dt.date(2027, 3, 1), 7.6), ForecastPoint(dt.date(2027, 5, 1), 8.2),
                  ForecastPoint(dt.date(2027, 9, 1), 16.0)),
    )
    r = recommend([n], ctx(screening=True, baseline=True))  # 3: 6 months -> due 2027-05-02
    assert r.due_date == dt.date(2027, 5, 2)
    assert "Nodule 1 is predicted to reach 8.2 mm by 2027-05-01" in r.text
    assert "Lung-RADS 8 mm" in r.text
    assert "16.0" not in r.text  # after the follow-up date
    assert r.category == "3"  # a forecast informs, it does not change the category


def test_forecast_below_thresholds_is_not_stated() -> None:
    n = NoduleInput("Nodule 1", "solid", mean_diameter_mm=6.5, forecast=(ForecastPoint(dt.date(2027, 4, 1), 7.5),))
    r = recommend([n], ctx(screening=True, baseline=True))
    assert "predicted" not in r.text


def test_fleischner_forecast_uses_rounded_thresholds() -> None:
    n = NoduleInput("Nodule 1", "solid", mean_diameter_mm=4.0, forecast=(ForecastPoint(dt.date(2027, 6, 1), 5.5),))
    # No follow-up is scheduled (solid < 6 mm, low risk): every forecast point is checked.
    assert "reach 5.5 mm by 2027-06-01 (crossing the Fleischner 6 mm" in (forecast_statement(n, "fleischner2017", None) or "")
    n2 = NoduleInput("Nodule 1", "solid", mean_diameter_mm=4.0, forecast=(ForecastPoint(dt.date(2027, 6, 1), 5.4),))
    assert forecast_statement(n2, "fleischner2017", None) is None


def test_forecast_by_volume_when_no_diameter() -> None:
    n = NoduleInput("Nodule 1", "solid", volume_mm3=200.0, forecast=(ForecastPoint(dt.date(2027, 1, 1), volume_mm3=300.0),))
    assert "reach 300 mm³" in (forecast_statement(n, "lungrads2022", dt.date(2027, 2, 1)) or "")


@pytest.mark.parametrize(
    "study, months, due",
    [(dt.date(2026, 1, 31), 1, dt.date(2026, 2, 28)), (dt.date(2027, 11, 30), 3, dt.date(2028, 2, 29)),
     (dt.date(2026, 8, 31), 6, dt.date(2027, 2, 28)), (dt.date(2026, 5, 15), 12, dt.date(2027, 5, 15))],
)
def test_due_date_calendar_months(study: dt.date, months: int, due: dt.date) -> None:
    from reports.guidelines.recommend import _add_months

    assert _add_months(study, months) == due


def test_input_validation() -> None:
    with pytest.raises(GuidelineInputError, match="labels must be unique"):
        recommend([NoduleInput("A", "solid", mean_diameter_mm=5.0), NoduleInput("A", "solid", mean_diameter_mm=6.0)], ctx())
    with pytest.raises(GuidelineInputError, match="mean_diameter_mm or volume_mm3"):
        NoduleInput("A", "solid")
    with pytest.raises(GuidelineInputError, match="risk must be"):
        ctx(risk="medium")
    with pytest.raises(GuidelineInputError, match="Nodule 9: .*larger than"):
        recommend([NoduleInput("Nodule 9", "part_solid", mean_diameter_mm=5.0, solid_component_mm=6.0)], ctx())


def test_dict_nodules_accepted() -> None:
    r = recommend(
        [{"label": "N1", "consistency": "solid", "mean_diameter_mm": 9.0,
          "forecast": [{"date": "2027-01-15", "mean_diameter_mm": 15.5}]}],
        ctx(screening=True, baseline=True),
    )
    assert r.category == "4A" and "reach 15.5 mm by 2027-01-15" in r.text


def _measurement(d: float, volume: float) -> NoduleMeasurement:
    return NoduleMeasurement(
        center_mm=(-60.0, 10.0, -100.0), volume_mm3=volume, long_axis_mm=d + 0.5, short_axis_mm=d - 0.5,
        mean_diameter_mm=d, solid_component_mm=d, mean_hu=20.0, consistency="solid",
        long_axis_endpoints_mm=((0.0, 0.0, 0.0), (d, 0.0, 0.0)), long_axis_slice=10,
        mask=np.ones((2, 2, 2), dtype=bool), mask_offset=(0, 0, 0),
    )


def test_from_tracked_nodule_and_tracking_uid_for_the_sr() -> None:
    tracked = TrackedNodule(
        tracking_uid="1.2.3.4", tracking_id="Nodule 1", status="tracked",
        current=_measurement(9.0, 380.0), prior=_measurement(8.0, 268.0), interval_days=365, vdt_days=None,
        forecast=Forecast(horizon_days=90, volume_mm3=420.0, volume_low_mm3=400.0, volume_high_mm3=440.0,
                          mean_diameter_mm=9.3, mean_diameter_low_mm=9.1, mean_diameter_high_mm=9.5, model_version="t"),
    )
    n = NoduleInput.from_tracked(tracked, DAY)
    assert n.prior_volume_mm3 == 268.0 and n.forecast[0].date == DAY + dt.timedelta(days=90)
    r = recommend([n], ctx(screening=True))
    per = r.nodules[0]
    assert per.tracking_uid == "1.2.3.4" and per.category == r.category
    assert per.text and per.followup_months_min == r.followup_months_min



def test_prior_of_the_same_day_or_later_gives_no_interval() -> None:
    """A same-day (or later-dated) prior gives no interval to grow in: the nodule is assessed on its
    current size alone (the engine would otherwise reject it, interval > 0, and fail the study)."""
    for days in (0, -30):
        tracked = TrackedNodule(
            tracking_uid="1.2.3.4", tracking_id="Nodule 1", status="tracked",
            current=_measurement(9.0, 380.0), prior=_measurement(8.0, 268.0), interval_days=days, vdt_days=None,
        )
        n = NoduleInput.from_tracked(tracked, DAY)
        assert n.interval_days is None and n.prior_volume_mm3 is None
        assert recommend([n], ctx(screening=True)).category

def test_context_from_config_section_with_overrides() -> None:
    from dicom_node.config import GuidelineSection

    c = StudyContext.from_settings(GuidelineSection(screening_program=True, risk="high"), DAY, age_years=None)
    assert c.screening and c.risk == "high" and c.age_years is None and c.chosen_guideline == "lungrads2022"
    c2 = StudyContext.from_settings(GuidelineSection(), DAY, screening=True, guideline="fleischner2017", age_years=70)
    assert c2.chosen_guideline == "fleischner2017" and c2.age_years == 70


def test_study_recommendation_satisfies_the_sr_writer_protocol() -> None:
    from reports.sr import StudyRecommendationLike, _per_nodule

    n = NoduleInput("Nodule 1", "solid", mean_diameter_mm=9.0, tracking_uid="1.2.826.0.1.3680043.9.7")
    rec = recommend([n], ctx(screening=True, baseline=True))
    assert isinstance(rec, StudyRecommendationLike)
    per = _per_nodule(rec, "1.2.826.0.1.3680043.9.7")  # how the SR finds a nodule's own result
    assert per is not None and per.category == "4A" and per.guideline == "lungrads2022"
