"""``noduletrack guideline`` run as the real console command (subprocess), JSON lines in and out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NODULETRACK = Path(sys.executable).parent / "noduletrack"

LINES = [
    {"id": "fl-5.5", "guideline": "fleischner2017",
     "input": {"consistency": "solid", "mean_diameter_mm": 5.5, "multiplicity": "single", "risk": "low"}},
    {"id": "lr-5.9", "guideline": "lungrads2022", "input": {"consistency": "solid", "mean_diameter_mm": 5.9, "baseline": True}},
    {"id": "lr-6.0", "guideline": "lungrads2022", "input": {"consistency": "solid", "mean_diameter_mm": 6.0, "baseline": True}},
    {"id": 4, "guideline": "vdt", "input": {"volume_mm3": 100, "prior_volume_mm3": 200, "interval_days": 300}},
    {"id": 5, "guideline": "vdt", "input": {"volume_mm3": 200, "prior_volume_mm3": 100, "interval_days": 300}},
    {"id": "young", "guideline": "fleischner2017", "input": {"age_years": 30, "consistency": "solid"}},
    {"id": "lr-4xs", "guideline": "lungrads2022",
     "input": {"consistency": "solid", "mean_diameter_mm": 9.0, "baseline": True, "margins": "spiculated",
               "significant_other_finding": True}},
]


def run(stdin: str | bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
    return subprocess.run([str(NODULETRACK), "guideline", *args], input=data, capture_output=True, timeout=60)


def as_lines(objs: list) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def test_console_command_exists() -> None:
    assert NODULETRACK.exists(), "install the project (make venv) so that the console script exists"


def test_contract_fields_and_worked_examples() -> None:
    proc = run(as_lines(LINES))
    assert proc.returncode == 0, proc.stderr.decode()
    out = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert [o["id"] for o in out] == [o["id"] for o in LINES]
    fl, lr59, lr60, shrink, grow, young, lr4x = out
    for key in ("applicable", "reason", "rounded_diameter_mm", "recommendation", "followup_months_min",
                "followup_months_max", "optional"):
        assert key in fl
    assert fl["rounded_diameter_mm"] == 6 and (fl["followup_months_min"], fl["followup_months_max"]) == (6, 12)
    assert fl["applicable"] is True and fl["optional"] is False
    for key in ("category", "management", "followup_months_min", "followup_months_max", "growth"):
        assert key in lr59
    assert lr59["category"] == "2" and lr60["category"] == "3"
    assert grow["vdt_days"] == 300.0 and grow["vdt_band"] == "<400" and grow["significant_growth"] is True
    assert grow["volume_change_pct"] == 100.0
    assert shrink["vdt_days"] is None and shrink["vdt_band"] == "decreasing"
    assert young["applicable"] is False and "35" in young["reason"]
    assert lr4x["category"] == "4XS" and lr4x["followup_months_min"] is None
    assert all("rationale" in o and "Source:" in o["rationale"] for o in out)


def test_bad_line_in_the_middle_is_answered_in_band_and_the_rest_still_answered() -> None:
    bad = [
        '{"id": "unknown-guideline", "guideline": "brock", "input": {}}',
        '{"id": "neg", "guideline": "lungrads2022", "input": {"consistency": "solid", "mean_diameter_mm": -3}}',
        '{"id": "missing", "guideline": "fleischner2017", "input": {"consistency": "solid", "mean_diameter_mm": 7}}',
        '{"id": "typo", "guideline": "vdt", "input": {"volume": 100}}',
        '{"id": "nan", "guideline": "vdt", "input": {"volume_mm3": NaN, "prior_volume_mm3": 1, "interval_days": 1}}',
        '{"id": "no-input", "guideline": "vdt"}',
        'this is not json',
        '[1, 2]',
    ]
    good = as_lines(LINES[:2]).splitlines()
    text = "\n".join([good[0], *bad, "", good[1]]) + "\n"  # a blank line is skipped
    proc = run(text)
    assert proc.returncode == 2  # some line had an error; every line was still answered
    out = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert len(out) == 2 + len(bad)
    assert out[0]["id"] == "fl-5.5" and "error" not in out[0]
    assert out[-1]["id"] == "lr-5.9" and out[-1]["category"] == "2"
    errors = {o["id"]: o["error"] for o in out[1:-1] if o["id"] is not None}
    assert "unknown guideline 'brock'" in errors["unknown-guideline"]
    assert "mean_diameter_mm must be > 0" in errors["neg"]
    assert "multiplicity is required" in errors["missing"]
    assert "unknown input field 'volume'" in errors["typo"]
    assert "finite number" in errors["nan"]
    assert "missing input" in errors["no-input"]
    nulls = [o["error"] for o in out[1:-1] if o["id"] is None]
    assert any("not valid JSON" in e for e in nulls) and any("JSON object" in e for e in nulls)
    assert all(e.startswith("line ") for e in [*errors.values(), *nulls])


def test_output_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    text = as_lines(LINES) + '{"id": "bad", "guideline": "vdt", "input": {}}\n'
    first = run(text)
    second = run(text)
    assert first.stdout == second.stdout and first.stdout
    # Same bytes when read from a file with --input.
    path = tmp_path / "in.jsonl"
    path.write_text(text, encoding="utf-8")
    third = run(b"", "--input", str(path))
    assert third.stdout == first.stdout
    assert b"\r" not in first.stdout and first.stdout.endswith(b"\n")


def test_unreadable_input_file_exits_1(tmp_path: Path) -> None:
    proc = run(b"", "--input", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 1 and b"cannot read input" in proc.stderr


def test_help_mentions_contract_and_exit_codes() -> None:
    proc = subprocess.run([str(NODULETRACK), "guideline", "--help"], capture_output=True, timeout=60)
    assert proc.returncode == 0
    text = proc.stdout.decode()
    assert "fleischner2017" in text and "Exit codes" in text and "--input" in text


def test_id_is_echoed_unchanged() -> None:
    ids = ["a", 7, 2.5, None, "ünïcode"]
    text = as_lines([{"id": i, "guideline": "lungrads2022", "input": {"finding_type": "exam"}} for i in ids])
    proc = run(text)  # one process for all: each start imports the whole CLI
    assert [json.loads(line)["id"] for line in proc.stdout.decode("utf-8").splitlines()] == ids
