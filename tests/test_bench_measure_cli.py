"""``python -m bench measure`` refuses a speed run of no repetitions (it reports the median of them)."""

from __future__ import annotations

import pytest

from bench.measure import main


def test_zero_repeats_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--no-speed", "--repeats", "0"])  # refused before the minutes of accuracy
    assert exit_info.value.code == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err
