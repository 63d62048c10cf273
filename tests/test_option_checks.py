"""Options of the newest commands are checked before any work, and every refusal is one
``pu-nnunet CMD: error: ...`` line (issue 30, class 6): robustness strengths, seed, model names,
folders and folds, the baseline; transfer-weights' source and a full disk; export-model's file
name, licence and folds; an ONNX export's file names and hashes; evaluate of a folder against
itself. On main each of these ran (a traceback after the clean predictions, NaN in the record, a
zip under a .tar name, a graph nobody checked) or passed without a word; these tests failed there.
"""

import json
import resource
import signal

import pytest
import torch

from pu_nnunet.cli import main


def fake_model(folder, folds=(0,)):
    """What the checks read of a model folder (no weights: every test here stops before them)."""
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1},
                                                     "file_ending": ".nii.gz"}))
    (folder / "plans.json").write_text(json.dumps({"configurations": {"2d": {}}}))
    for fold in folds:
        (folder / f"fold_{fold}").mkdir()
        (folder / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"")
    return folder


@pytest.fixture
def sweep(tmp_path):
    images, labels = tmp_path / "imagesTs", tmp_path / "labelsTs"
    images.mkdir()
    labels.mkdir()
    (images / "case_0000.nii.gz").write_bytes(b"")
    return {"base": ["robustness", "-i", str(images), "-r", str(labels), "-o", str(tmp_path / "out")],
            "a": fake_model(tmp_path / "a", folds=(0, 1)), "b": fake_model(tmp_path / "b", folds=(0,)),
            "out": tmp_path / "out"}


def one_line_error(capsys, command: str, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"pu-nnunet {command}: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("extra, message", [
    (["--strengths", "gaussian=nan"], "gaussian=nan: gaussian nan: not a finite number"),
    (["--strengths", "gaussian=-0.1"], "gaussian -0.1: out of range, gaussian takes 0 to 100"),
    (["--strengths", "poisson=0"], "poisson 0: out of range"),
    (["--strengths", "resolution=1e6"], "resolution 1e+06: out of range, resolution takes 1 to 64"),
    (["--strengths", "bias=1e300"], "bias 1e+300: out of range"),
    (["--strengths", "gamma=inf"], "gamma inf: not a finite number"),
    (["--strengths", "gamma=2,2"], "a strength is given twice"),
    (["--seed", "-3"], "--seed: seed -3: expected a non-negative integer"),
])
def test_robustness_refuses_bad_strengths_and_seeds_before_any_work(sweep, capsys, extra, message):
    code = main([*sweep["base"], "-m", f"PUReBaseline={sweep['a']}", *extra])
    assert message in one_line_error(capsys, "robustness", code)
    assert not sweep["out"].exists()


@pytest.mark.parametrize("name", ["..", "../escape", "a/b", ".hidden", "", "x y"])
def test_robustness_model_names_cannot_leave_the_output_folder(sweep, capsys, name):
    code = main([*sweep["base"], "-m", f"{name}={sweep['a']}"])
    err = one_line_error(capsys, "robustness", code)
    assert ("must be letters, digits" in err) or ("expected NAME=MODEL_DIR" in err and name == "")
    assert not sweep["out"].exists() and not (sweep["out"].parent / "escape").exists()


def test_robustness_pairs_only_what_can_be_paired(sweep, capsys):
    a, b = sweep["a"], sweep["b"]
    checks = [
        (["-m", f"PURe={a}", f"PURe={a}", f"PUReBaseline={b}", f"PUReBaseline={a}"], f"{a} is given twice as PURe"),
        (["-m", f"PURe={a}", f"Other={b}"], "no NAME contains 'baseline'; pass --baseline NAME"),
        (["-m", f"Baseline1={a}", f"Baseline2={b}"], "several NAMEs contain 'baseline' (Baseline1, Baseline2)"),
        (["-m", f"PURe={a}", f"PUReBaseline={b}"], "folds [0, 1], but its pair PUReBaseline"),
        (["-m", f"PURe={a}", f"PUReBaseline={b}", "-f", "0", "0"], "-f 0 0: fold 0 is given twice"),
    ]
    for extra, message in checks:
        code = main([*sweep["base"], *extra])
        assert message in one_line_error(capsys, "robustness", code), extra
        assert not sweep["out"].exists()


def test_robustness_warns_when_one_folder_has_two_names(sweep, capsys):
    """A model paired with itself is a check of the sweep (differences zero by construction):
    allowed, but said."""
    main([*sweep["base"], "-m", f"PURe={sweep['b']}", f"PUReBaseline={sweep['b']}", "--seed", "-1"])
    err = capsys.readouterr().err
    assert f"warning: --model: {sweep['b']} is both PURe and PUReBaseline" in err


def test_transfer_weights_refuses_nan_weights(tmp_path, capsys):
    source = tmp_path / "diverged.pth"
    torch.save({"network_weights": {"encoder.w": torch.ones(3), "decoder.w": torch.tensor([1.0, float("nan")])}},
               source)
    code = main(["transfer-weights", str(source), "--plans", str(tmp_path / "plans.json"), "-c", "2d", "--to",
                 "nnUNetTrainerPURe", "-o", str(tmp_path / "out.pth")])
    assert "tensor decoder.w holds NaN or infinite values" in one_line_error(capsys, "transfer-weights", code)
    assert not (tmp_path / "out.pth").exists()


def test_transfer_weights_on_a_full_disk_is_an_os_error_naming_the_file(tmp_path):
    """A file size limit stands in for a full disk: the write fails part-way (torch.save's own
    writer raised a bare RuntimeError there, printed as a traceback)."""
    from pu_nnunet.trainers.transfer_weights import Transfer, save_pretrained_weights
    from pu_nnunet.user_errors import describe_os_error

    path = tmp_path / "w.pth"
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        with pytest.raises(OSError) as raised:
            save_pretrained_weights(Transfer(weights={"w": torch.zeros(10_000)}), {}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert describe_os_error(raised.value) == f"{path}: file too large (file size limit reached)"
    assert list(tmp_path.iterdir()) == []  # no partial file left


def test_export_model_checks_name_and_folds_before_the_export(tmp_path, capsys):
    model = fake_model(tmp_path / "Dataset001_X" / "T__P__2d", folds=(0, 1))
    code = main(["export-model", str(model), "-o", str(tmp_path / "model.tar")])
    assert "model.tar: the model is a zip file; give a name ending in .zip" in one_line_error(capsys, "export-model",
                                                                                               code)
    code = main(["export-model", str(model), "-o", str(tmp_path / "model.zip"), "-f", "1", "0", "1"])
    assert "-f 1 0 1: fold 1 is given twice" in one_line_error(capsys, "export-model", code)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset001_X"]


def test_a_multi_line_licence_cannot_reshape_the_model_card():
    from pu_nnunet.sharing.model_card import NO_LICENCE, licence_text

    assert licence_text("CC BY 4.0") == "CC BY 4.0"
    assert licence_text("  \n ") == NO_LICENCE
    licence = "# MIT\n\n| a | b |\n```\nend"
    assert licence_text(licence) == "````text\n# MIT\n\n| a | b |\n```\nend\n````"


def test_an_onnx_export_json_must_name_files_beside_it_and_their_hashes(tmp_path):
    from pu_nnunet.inference.errors import PredictionError
    from pu_nnunet.inference.onnx_backend import EXPORT_FORMAT, read_export_metadata

    (tmp_path / "m.onnx").write_bytes(b"graph")
    metadata = {"format": EXPORT_FORMAT, "files": {"0": "m.onnx"}, "model": {}}
    (tmp_path / "m.json").write_text(json.dumps(metadata))  # the earlier format: no sha256
    with pytest.raises(PredictionError, match="records no SHA-256 of fold 0's ONNX file m.onnx"):
        read_export_metadata(tmp_path / "m.onnx")
    for name in ("../m.onnx", "sub/m.onnx", "..", "", None):
        (tmp_path / "m.json").write_text(json.dumps({**metadata, "files": {"0": name}, "sha256": {"0": "a" * 64}}))
        with pytest.raises(PredictionError, match="is not a file name beside the JSON"):
            read_export_metadata(tmp_path / "m.json")
    (tmp_path / "m.json").write_text(json.dumps({**metadata, "sha256": {"0": "a" * 64}}))
    assert read_export_metadata(tmp_path / "m.onnx")[1]["files"] == {"0": "m.onnx"}


@pytest.mark.parametrize("second", ["same", "trailing slash", "symlink"])
def test_evaluate_refuses_a_folder_scored_against_itself(tmp_path, capsys, second):
    folder = tmp_path / "labels"
    folder.mkdir()
    (tmp_path / "link").symlink_to(folder)
    other = {"same": str(folder), "trailing slash": f"{folder}/", "symlink": str(tmp_path / "link")}[second]
    code = main(["evaluate", str(folder), other, "-o", str(tmp_path / "out")])
    assert "PRED_DIR and REF_DIR are the same folder" in one_line_error(capsys, "evaluate", code)
    assert not (tmp_path / "out").exists()
