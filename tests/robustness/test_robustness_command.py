"""pu-nnunet robustness: bad input is one line; on a trained model the sweep writes its report and plot."""

import hashlib
import json

import pytest

from pu_nnunet.cli import main


def tree_hashes(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("extra, message", [
    (["-m", "PURe"], "expected NAME=MODEL_DIR"),
    (["-m", "PURe=/nonexistent/model", "--strengths", "gamma=1"], "leaves the image clean"),
    (["-m", "PURe=/nonexistent/model", "--strengths", "gamma=x"], "not a comma-separated list"),
    (["-m", "A=/x", "A=/y", "B=/z"], "the same number of runs"),
    (["-m", "PURe=/nonexistent/model"], "images folder not found"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    code = main(["robustness", "-i", str(tmp_path / "no_images"), "-r", str(tmp_path), "-o", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("pu-nnunet robustness: error:") and message in err and "\n" not in err
    assert not out.exists()


@pytest.mark.slow
def test_sweep_on_a_trained_model_writes_report_plot_and_paired_results(tiny_trained_model, tmp_path, capsys):
    model = tiny_trained_model["fold"].parent
    dataset = tiny_trained_model["dataset"]
    raw_before = tree_hashes(dataset)
    out = tmp_path / "robustness"
    # the same model under two names: every paired difference must be exactly zero
    argv = ["robustness", "-m", f"PURe={model}", f"PUReBaseline={model}", "-i", str(dataset / "imagesTs"),
            "-r", str(dataset / "labelsTs"), "-o", str(out), "--corruptions", "poisson", "gamma",
            "--strengths", "poisson=20", "gamma=3", "--device", "cpu", "--disable_tta"]
    assert main(argv) == 0
    for name in ("report.md", "robustness.json", "provenance.json", "plots/dice_vs_strength.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "robustness.json").read_text())
    conditions = [c["name"] for c in summary["conditions"]]
    assert conditions == ["clean", "poisson_20", "gamma_3"]
    assert summary["baseline"] == "PUReBaseline" and summary["trainers"] == ["PURe", "PUReBaseline"]
    for condition in conditions:
        dice = summary["paired"]["PURe"][condition]["pooled"]["dice"]
        assert dice["n"] > 0 and dice["mean_difference"] == 0.0
        assert summary["paired"]["PURe"][condition]["run_level"]["mean_difference"] == 0.0
        entry, twin = summary["per_trainer"]["PURe"][condition], summary["per_trainer"]["PUReBaseline"][condition]
        assert 0.0 <= entry["dice_mean"] <= 1.0
        # the same model: the same numbers, only compare's folder (vs clean) differs
        assert {**entry, "vs_clean": None} == {**twin, "vs_clean": None}
        assert (entry.get("vs_clean") or {}).get("dice") == (twin.get("vs_clean") or {}).get("dice")
    # the corruption reaches the network: strong shot noise changes the segmentations
    assert summary["per_trainer"]["PURe"]["poisson_20"]["dice_mean"] != summary["per_trainer"]["PURe"]["clean"]["dice_mean"]
    assert summary["per_trainer"]["PURe"]["poisson_20"]["vs_clean"]["dice"]["n"] == dice["n"]
    report = (out / "report.md").read_text()
    # the tables of a study's Robustness section (pu_nnunet/robustness/summary.py)
    assert "Against the baseline PUReBaseline" in report and "| PURe    | poisson_20 |" in report
    assert "change, pooled [95% bootstrap CI]" in report and "dice_vs_strength.png" in report
    record = json.loads((out / "provenance.json").read_text())
    assert set(record["models"]) == {"PURe_0", "PUReBaseline_0"} and record["model"] is None
    assert all(len(r["checkpoint_sha256"]["0"]) == 64 for r in record["models"].values())
    # nothing written into nnUNet_raw, corrupted inputs removed from OUT_DIR
    assert tree_hashes(dataset) == raw_before
    assert not (out / "inputs").exists()
    # a finished sweep is not overwritten without --overwrite
    capsys.readouterr()
    assert main(argv) == 1
    assert "robustness.json: the sweep is finished; pass --overwrite" in capsys.readouterr().err
