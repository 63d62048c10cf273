"""study run --robustness without nnU-Net runs: the sweep's settings in study.json, what contradicts
them, bad input as one line, the TOML table, and which images a validation-mode job sweeps."""

import argparse
import json

import numpy as np
import pytest
import SimpleITK as sitk

from pu_nnunet.cli import main
from pu_nnunet.robustness.errors import RobustnessError
from pu_nnunet.study.cli_study import add_arguments, resolve_study
from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.spec import load_study

GAUSSIAN = ["--robustness", "--robustness-corruptions", "gaussian", "--robustness-strengths", "gaussian=0.1"]


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["run", *argv])


@pytest.fixture
def study_dir(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    (tmp_path / "nnUNet_raw" / "Dataset302_KvasirSEG").mkdir(parents=True)
    return tmp_path / "study"


def test_the_sweep_is_stored_added_without_reconfigure_and_changed_only_with_it(study_dir):
    out = str(study_dir)
    assert resolve_study(parse("-d", "302", "-o", out))[0].robustness is None
    # added to a stored study: no contradiction (it only adds work)
    study, _ = resolve_study(parse(*GAUSSIAN, "-o", out))
    expected = {"strengths": {"gaussian": [0.1]}, "seed": 0, "mirroring": True, "keep_inputs": False}
    assert study.robustness == expected and json.loads((study_dir / "study.json").read_text())["robustness"] == expected
    assert resolve_study(parse("-o", out))[0].robustness == expected  # resumed without flags: kept
    assert resolve_study(parse("--repeats", "1", "-o", out))[0].robustness == expected  # other flags keep it too
    # keeping the corrupted images changes no result: not a contradiction
    assert resolve_study(parse(*GAUSSIAN, "--robustness-keep-inputs", "-o", out))[0].robustness["keep_inputs"]
    with pytest.raises(StudyError, match=r"contradict .*robustness: stored .*'gaussian': \[0\.1\].*\[0\.2\]"):
        resolve_study(parse(*GAUSSIAN[:-1], "gaussian=0.2", "-o", out))
    with pytest.raises(StudyError, match=r"robustness: stored .* requested none"):
        resolve_study(parse("--no-robustness", "-o", out))
    with pytest.raises(StudyError, match=r"robustness: stored .*'mirroring': True.*'mirroring': False"):
        resolve_study(parse(*GAUSSIAN, "--robustness-disable-tta", "-o", out))
    assert load_study(study_dir).robustness["strengths"] == {"gaussian": [0.1]}
    changed, _ = resolve_study(parse(*GAUSSIAN[:-1], "gaussian=0.2", "--robustness-seed", "7", "--reconfigure",
                                     "-o", out))
    assert changed.robustness == {**expected, "strengths": {"gaussian": [0.2]}, "seed": 7}
    assert resolve_study(parse("--no-robustness", "--reconfigure", "-o", out))[0].robustness is None
    # every corruption at pu-nnunet robustness's default strengths
    everything = resolve_study(parse("-d", "302", "--robustness", "-o", str(study_dir.parent / "all")))[0].robustness
    assert list(everything["strengths"]) == ["poisson", "gaussian", "bias", "gamma", "resolution"]
    assert everything["strengths"]["poisson"] == [1000.0, 100.0, 10.0]


@pytest.mark.parametrize("argv, message", [
    (["--robustness-seed", "1"], "--robustness-seed needs --robustness"),
    (["--robustness", "--robustness-strengths", "gaussian=-1"], "gaussian -1: out of range, gaussian takes 0 to 100"),
    # issue 30: NaN was stored in study.json, oversized values and negative seeds met numpy in the sweep
    (["--robustness", "--robustness-strengths", "gaussian=nan"], "gaussian=nan: gaussian nan: not a finite number"),
    (["--robustness", "--robustness-strengths", "poisson=inf"], "poisson inf: not a finite number"),
    (["--robustness", "--robustness-strengths", "resolution=1e9"], "resolution 1e+09: out of range"),
    (["--robustness", "--robustness-strengths", "gamma=0.5,0.5"], "a strength is given twice"),
    (["--robustness", "--robustness-seed", "-1"], "seed -1: expected a non-negative integer"),
    (["--robustness", "--robustness-corruptions", "gamma", "--robustness-strengths", "gamma=1"],
     "--robustness-strengths gamma=1: gamma 1: leaves the image clean"),
    (["--robustness", "--robustness-corruptions", "gamma", "--robustness-strengths", "poisson=10"],
     "--robustness-strengths poisson=10: expected CORRUPTION=S1,S2,... with CORRUPTION one of gamma"),
    (["--robustness", "--robustness-strengths", "bias=x"], "'x' is not a comma-separated list of numbers"),
])
def test_bad_sweep_flags_are_one_line_and_write_nothing(study_dir, capsys, argv, message):
    assert main(["study", "run", "-d", "302", *argv, "-o", str(study_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pu-nnunet study: error:") and message in err and "\n" not in err, err
    assert not (study_dir / "study.json").exists()


def test_a_toml_robustness_table_sets_the_sweep(study_dir):
    config = study_dir.parent / "study.toml"
    config.write_text('dataset = 302\n[robustness]\ncorruptions = ["gaussian", "gamma"]\n'
                      'strengths = { gaussian = [0.05, 0.1] }\nseed = 3\nmirroring = false\n')
    study, _ = resolve_study(parse("--config", str(config), "-o", str(study_dir)))
    assert study.robustness == {"strengths": {"gaussian": [0.05, 0.1], "gamma": [0.5, 1.5, 2.5]}, "seed": 3,
                                "mirroring": False, "keep_inputs": False}
    config.write_text("dataset = 302\nrobustness = true\n")
    assert len(resolve_study(parse("--config", str(config), "-o", str(study_dir.parent / "b")))[0]
               .robustness["strengths"]) == 5
    config.write_text('dataset = 302\n[robustness]\nstrength = { gaussian = [0.1] }\n')
    with pytest.raises(RobustnessError, match=r"study.toml: unknown key\(s\) \['strength'\] in \[robustness\]"):
        resolve_study(parse("--config", str(config), "-o", str(study_dir.parent / "c")))
    study_json = study_dir / "study.json"
    content = json.loads(study_json.read_text())
    content["robustness"]["strengths"] = {"blur": [1.0]}
    study_json.write_text(json.dumps(content))
    with pytest.raises(RobustnessError, match="robustness: unknown corruption 'blur'"):
        load_study(study_dir)


def test_a_validation_mode_job_sweeps_its_fold_validation_cases_only(tmp_path):
    """--held-out validation: the job's sweep reads the fold's validation cases of imagesTr, copied
    (clean) or corrupted into its scratch folder; imagesTr itself is only read."""
    from pu_nnunet.robustness.sweep import CLEAN, Condition, condition_inputs
    from pu_nnunet.study.spec import Study

    raw = tmp_path / "raw" / "Dataset302_KvasirSEG"
    for case in ("c1", "c2", "c3"):
        (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(np.arange(64, dtype=np.float32).reshape(1, 8, 8)),
                        str(raw / "imagesTr" / f"{case}_0000.nii.gz"))
    (tmp_path / "pre" / raw.name).mkdir(parents=True)
    (tmp_path / "pre" / raw.name / "splits_final.json").write_text(json.dumps(
        [{"train": ["c1", "c2"], "val": ["c3"]}, {"train": ["c2", "c3"], "val": ["c1"]}]))
    study = Study(dataset_id=302, folds=[0, 1], paths={"study_dir": str(tmp_path / "s"),
                                                       "nnUNet_raw": str(tmp_path / "raw"),
                                                       "nnUNet_preprocessed": str(tmp_path / "pre"),
                                                       "nnUNet_results": str(tmp_path / "res")})
    images, labels, cases = study.held_out_cases(1, "validation")  # fold 1
    assert (images, labels, cases) == (raw / "imagesTr", raw / "labelsTr", ["c1"])
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    scratch = tmp_path / "scratch"
    clean = condition_inputs(images, scratch, Condition(None, None), 0, "", cases)
    noisy = condition_inputs(images, scratch, Condition("gaussian", 0.1), 0, "", cases)
    assert clean == scratch / CLEAN and noisy == scratch / "gaussian_0.1"
    assert sorted(p.name for p in noisy.glob("*.nii.gz")) == sorted(p.name for p in clean.glob("*.nii.gz")) == [
        "c1_0000.nii.gz"]
    assert (clean / "c1_0000.nii.gz").read_bytes() == before["c1_0000.nii.gz"]
    noise = sitk.GetArrayFromImage(sitk.ReadImage(str(noisy / "c1_0000.nii.gz"))) - np.arange(64).reshape(1, 8, 8)
    assert 0.05 * 63 < noise.std() < 0.2 * 63  # sd 0.1 of the intensity range
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before
    # test mode's clean condition is the images folder itself
    assert condition_inputs(images, scratch, Condition(None, None), 0, "") == images
