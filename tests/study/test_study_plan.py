"""``pu-nnunet study plan``: the paired runs for 80 % power before anything is trained, from given
sds or a pilot study's spread, at the Holm level of the report's family."""

import json

import pytest

from pu_nnunet.cli import main
from pu_nnunet.evaluation.metrics.run_stats import plausible_sds, runs_for_power
from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.plan import plan_text


def test_plan_from_given_sds_and_a_family_from_trainers_and_labels(capsys):
    # 1 trainer against the baseline x (2 labels + foreground) = 3 tests: level 0.05 / 3, at least 7 runs
    assert main(["study", "plan", "--sd", "0", "0.02", "--mid", "0.01", "--trainers", "1", "--labels", "2"]) == 0
    out = capsys.readouterr().out
    assert "0.05 / 3 = 0.0167" in out and "fewer than 7 paired runs" in out
    rows = [line for line in out.splitlines() if line.startswith("| given")]
    assert rows[0].split("|")[3].strip() == "7"  # no between-run noise: the floor
    assert rows[1].split("|")[3].strip() == str(runs_for_power(0.01, 0.02, 3))


def test_plan_from_a_pilot_study_uses_its_sd_bounds_family_and_mid(tmp_path):
    entry = {"n_runs": 3, "sd": 0.0127}
    (tmp_path / "summary.json").write_text(json.dumps({
        "run_level": {"T": {"1": {"n_runs": 3, "sd": 0.05}, "foreground": entry}}, "planning": {"mid": 0.02}}))
    text = plan_text(str(tmp_path), None, None, None, None, None)
    assert "±0.02" in text and "0.05 / 2" in text
    for label, sd in plausible_sds(0.0127, 3):
        assert f"T: {label} (3 runs)" in text and str(runs_for_power(0.02, sd, 2)) in text


def test_plan_refuses_what_it_cannot_use(tmp_path):
    with pytest.raises(StudyError, match="needs between-run sds"):
        plan_text(None, None, None, None, None, None)
    with pytest.raises(StudyError, match="no run-level analysis"):
        plan_text(str(tmp_path), None, None, None, None, None)
    with pytest.raises(StudyError, match="--trainers and --labels go together"):
        plan_text(None, [0.01], None, None, 2, None)
    with pytest.raises(StudyError, match="cannot be negative"):
        plan_text(None, [-0.01], None, None, None, None)
