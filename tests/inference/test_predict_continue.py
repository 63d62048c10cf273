"""``pu-nnunet predict --continue`` after an interrupted run, atomic outputs, and a plans file that
does not match the checkpoint (the shared tiny_trained_model fixture)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import SimpleITK as sitk

from pu_nnunet.cli import main
from pu_nnunet.inference.predict import predict

pytestmark = pytest.mark.slow


def model_folder(model):
    return model["fold"].parent


def _dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_interrupted_prediction_continues_with_the_missing_cases(tiny_trained_model, tmp_path, monkeypatch, capsys):
    from nnunetv2.inference import export_prediction

    images = tiny_trained_model["dataset"] / "imagesTs"
    cases = sorted(p.name.replace("_0000.nii.gz", ".nii.gz") for p in images.glob("*_0000.nii.gz"))
    assert len(cases) == 2
    out = tmp_path / "out"
    real_export = export_prediction.export_prediction_from_logits
    calls = []

    def interrupted_during_the_second_write(*args):
        calls.append(args[5])  # output_file_truncated
        real_export(*args)
        if len(calls) == 2:  # half the file is on disk when Ctrl-C arrives
            written = f"{args[5]}.nii.gz"
            with open(written, "r+b") as handle:
                handle.truncate(os.path.getsize(written) // 2)
            raise KeyboardInterrupt

    monkeypatch.setattr(export_prediction, "export_prediction_from_logits", interrupted_during_the_second_write)
    with pytest.raises(KeyboardInterrupt):
        predict(images, out, model_folder(tiny_trained_model), device="cpu", use_mirroring=False, log=lambda _: None)
    monkeypatch.undo()
    # every segmentation is complete or absent: the first is there (with the records of the model that
    # wrote it), the second and its temporary file are not
    assert sorted(p.name for p in out.iterdir()) == sorted([cases[0], "model_record.json", "provenance.json"])
    first = (out / cases[0]).stat().st_mtime_ns
    # a temporary file of a run that was killed outright (no clean-up possible) is removed
    stale = out / f".{cases[1][:-7]}.partial-{_dead_pid()}-0123abcd.nii.gz"
    stale.write_bytes(b"half")
    args = ["predict", "-i", str(images), "-o", str(out), "-m", str(model_folder(tiny_trained_model)), "--device",
            "cpu", "--disable_tta"]
    assert main(args) == 1
    assert "pass --overwrite to replace it or --continue to keep it and predict the rest" in capsys.readouterr().err
    assert main(args + ["--continue"]) == 0
    printed = capsys.readouterr().out
    assert "1 case(s) (1 already complete, kept)" in printed and "(kept 1 complete one(s))" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted([*cases, "dataset.json", "plans.json",
                                                             "model_record.json", "provenance.json"])
    assert (out / cases[0]).stat().st_mtime_ns == first
    second = sitk.ReadImage(str(out / cases[1]))
    assert second.GetSize() == sitk.ReadImage(str(images / cases[1].replace(".nii.gz", "_0000.nii.gz"))).GetSize()
    # nothing left to do: a third run predicts nothing and keeps both
    assert main(args + ["--continue"]) == 0
    assert "wrote 0 segmentation(s)" in capsys.readouterr().out


def test_a_damaged_output_is_predicted_again_by_continue(tiny_trained_model, tmp_path, capsys):
    image = sorted((tiny_trained_model["dataset"] / "imagesTs").glob("*_0000.nii.gz"))[0]
    out = tmp_path / "out"
    args = ["predict", "-i", str(image), "-o", str(out), "-m", str(model_folder(tiny_trained_model)), "--device",
            "cpu", "--disable_tta"]
    assert main(args) == 0
    target = out / image.name.replace("_0000", "")
    complete = target.read_bytes()
    target.write_bytes(complete[: len(complete) // 2])  # written by something else, cut short
    capsys.readouterr()
    assert main(args + ["--continue"]) == 0
    assert "wrote 1 segmentation(s)" in capsys.readouterr().out and target.read_bytes() == complete


def _set_n_stages(configuration):
    configuration["architecture"]["arch_kwargs"]["n_stages"] = 2


def _set_1d_patch(configuration):
    configuration["patch_size"] = [64]


@pytest.mark.parametrize("damage, expected", [
    (_set_n_stages, "{model}: cannot load the model (folds 0, checkpoint_final.pth; plans.json and checkpoint must "
                    "match): "),
    (_set_1d_patch, "{model}/plans.json: the trained configuration is inconsistent: patch_size [64], spacing "),
])
def test_plans_that_do_not_match_the_checkpoint(tiny_trained_model, tmp_path, capsys, damage, expected):
    model = tmp_path / "Dataset990_SynthCT" / model_folder(tiny_trained_model).name
    shutil.copytree(model_folder(tiny_trained_model), model)
    plans = json.loads((model / "plans.json").read_text())
    damage(plans["configurations"]["2d"])
    (model / "plans.json").write_text(json.dumps(plans))
    image = sorted((tiny_trained_model["dataset"] / "imagesTs").glob("*_0000.nii.gz"))[0]
    code = main(["predict", "-i", str(image), "-o", str(tmp_path / "out"), "-m", str(model), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("pu-nnunet predict: error: " + expected.format(model=model)), err
    assert not (tmp_path / "out").exists()


def test_save_probabilities_writes_nnunets_npz_and_pkl_and_continue_needs_them(tiny_trained_model, tmp_path, capsys):
    """As nnUNetv2_predict --save_probabilities: CASE.npz ("probabilities", one channel per label,
    summing to 1, argmax = the segmentation) and CASE.pkl beside CASE.nii.gz; a case whose
    probabilities are missing is not complete for --continue."""
    import numpy as np

    images = tiny_trained_model["dataset"] / "imagesTs"
    out = tmp_path / "out"
    args = ["predict", "-i", str(images), "-o", str(out), "-m", str(model_folder(tiny_trained_model)), "--device",
            "cpu", "--disable_tta", "--save_probabilities"]
    assert main(args) == 0
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
    assert sorted(p.name for p in out.glob("case_*")) == sorted(f"{c}{e}" for c in cases
                                                                 for e in (".nii.gz", ".npz", ".pkl"))
    probabilities = np.load(out / f"{cases[0]}.npz")["probabilities"]
    segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{cases[0]}.nii.gz")))
    labels = json.loads((out / "dataset.json").read_text())["labels"]
    assert probabilities.shape == (len(labels), *segmentation.shape)
    assert np.allclose(probabilities.sum(0), 1, atol=1e-3)
    assert np.array_equal(probabilities.argmax(0), segmentation)
    assert "--save_probabilities" in json.loads((out / "provenance.json").read_text())["command"]
    (out / f"{cases[1]}.npz").unlink()
    capsys.readouterr()
    assert main([*args, "--continue"]) == 0
    assert "kept 1 complete one(s)" in capsys.readouterr().out
    assert (out / f"{cases[1]}.npz").is_file()
