"""The command line: ``pu-nnunet synth`` and ``pu-nnunet convert``, exit codes and messages."""

import json

from pu_nnunet.cli import main


def test_synth_commands(raw_root, capsys):
    assert main(["synth", "ct", "-d", "31", "--cases", "3", "--test-cases", "1", "--size", "6", "24", "24",
                 "--spacing", "2.5", "0.7", "0.7", "--organs", "2", "--seed", "4"]) == 0
    folder = raw_root / "Dataset031_SynthCT"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["synthetic"]["spacing_zyx"] == [2.5, 0.7, 0.7] and len(meta["labels"]) == 3
    assert "pu-nnunet convert install-splits -d 31" in capsys.readouterr().out
    assert main(["synth", "ultrasound", "-d", "32", "--cases", "6", "--test-cases", "3", "--size", "40", "48"]) == 0
    assert json.loads((raw_root / "Dataset032_SynthUS" / "dataset.json").read_text())["numTest"] == 3
    assert main(["synth", "ultrasound", "-d", "32"]) == 1
    assert "Dataset032_SynthUS already exists" in capsys.readouterr().err


def test_convert_command_and_errors(tmp_path, raw_root, layouts, capsys, monkeypatch):
    source = layouts.kvasir(tmp_path / "kvasir", count=5)
    assert main(["convert", "kvasir", str(source), "-d", "41", "-np", "1"]) == 0
    out = capsys.readouterr().out
    assert "training cases: 5" in out and "Dataset041_KvasirSEG" in out
    assert main(["convert", "kvasir", str(source), "-d", "41"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("pu-nnunet convert: error:") and "Traceback" not in error
    layouts.corrupt(source / "images" / "cju0003kvasir003.jpg")
    assert main(["convert", "kvasir", str(source), "-d", "41", "--overwrite"]) == 1
    assert "cju0003kvasir003.jpg: cannot be read as an image" in capsys.readouterr().err
    assert main(["convert", "kvasir", str(source), "-d", "41", "--overwrite", "--skip-bad"]) == 0
    assert "skipped 1 bad case(s)" in capsys.readouterr().out
    assert main(["convert", "busi", str(tmp_path / "nowhere"), "-d", "42"]) == 1
    assert "nowhere: source folder not found" in capsys.readouterr().err
    monkeypatch.delenv("nnUNet_raw")
    assert main(["convert", "kvasir", str(source), "-d", "43"]) == 1
    assert "nnUNet_raw is not set" in capsys.readouterr().err


def test_install_splits_command(raw_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    assert main(["synth", "ct", "-d", "33", "--cases", "3", "--test-cases", "1", "--size", "6", "24", "24"]) == 0
    assert main(["convert", "install-splits", "-d", "33"]) == 1
    assert "nnUNetv2_plan_and_preprocess -d 33" in capsys.readouterr().err
    (tmp_path / "pre" / "Dataset033_SynthCT").mkdir(parents=True)
    assert main(["convert", "install-splits", "-d", "33"]) == 0
    assert (tmp_path / "pre" / "Dataset033_SynthCT" / "splits_final.json").is_file()


def test_several_processes(tmp_path, raw_root, layouts):
    """-np 2 runs the same workers in spawned processes and writes the same dataset."""
    from pu_nnunet.datasets.converters.busi import convert_busi

    source = layouts.busi(tmp_path / "busi")
    one = convert_busi(source, 51, num_processes=1)
    two = convert_busi(source, 52, num_processes=2)
    files_one = sorted(p.relative_to(one.dataset_folder) for p in one.dataset_folder.rglob("*") if p.is_file())
    files_two = sorted(p.relative_to(two.dataset_folder) for p in two.dataset_folder.rglob("*") if p.is_file())
    assert files_one == files_two and len(files_one) == 2 * 13 + 3
    differing = [f for f in files_one if (one.dataset_folder / f).read_bytes() != (two.dataset_folder / f).read_bytes()]
    assert differing == []


def test_package_exports_resolve_lazily():
    import subprocess
    import sys

    code = ("import sys, pu_nnunet.datasets as d; assert 'numpy' not in sys.modules; "
            "print(sorted(n for n in d.__all__ if callable(getattr(d, n))) == sorted(d.__all__))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "True", result.stderr
