"""pu-nnunet demo (the study preset "demo", run through the study's public API): the whole pipeline
with the short test schedules, and its closing table's parameter count."""

import json
import logging

import pytest


@pytest.mark.slow
def test_demo_pipeline_runs_end_to_end_and_reuses_finished_steps(tmp_path, monkeypatch, caplog):
    from pu_nnunet.demo.pipeline import Demo, DemoSettings
    from pu_nnunet.demo.summary import format_summary

    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    settings = DemoSettings(workdir=tmp_path / "demo", dataset_id=991, num_cases=8, num_test=2, shape=(16, 48, 48),
                            num_organs=2, runs={"PURe": "nnUNetTrainerPURe_tiny",
                                                "Baseline": "nnUNetTrainerPUReBaseline_tiny"})
    demo = Demo(settings)
    result = demo.run()
    folder = demo.folder
    assert folder.path == tmp_path / "demo"
    for name in ("PURe", "Baseline"):
        assert len(list(folder.predictions(demo.job(name)).glob("*.nii.gz"))) == 2
        metrics = json.loads((folder.evaluation(demo.job(name)) / "metrics.json").read_text())
        assert metrics["n_reference_cases"] == 2 and metrics["missing_predictions"] == []
        assert (demo.fold_folder(settings.runs[name]) / "checkpoint_final.pth").is_file()
    assert (folder.comparisons / "PURe_tiny_vs_PUReBaseline_tiny" / "report.md").is_file()
    assert folder.report.is_file() and json.loads(folder.study_file.read_text())["preset"] == "demo"
    assert result["first"]["settings"]["pred_dir"].endswith("nnUNetTrainerPURe_tiny__fold_0__repeat_0/predictions")
    assert set(result["timings"]) == {"train_PURe", "train_Baseline", "predict_PURe", "predict_Baseline"}
    assert result["comparison"]["n_cases_compared"] == 2

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pu_nnunet.study"):
        again = Demo(settings).run()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("reusing" in m for m in messages) == 2  # the dataset and the preprocessed data
    assert sum("done before" in m for m in messages) == 2  # both jobs (training, prediction, evaluation)
    assert again["first"]["aggregates"]["foreground"]["dice_mean"] == result["first"]["aggregates"]["foreground"][
        "dice_mean"]
    assert again["timings"] == result["timings"]
    summary = format_summary(again, demo)
    assert "foreground (all organs)" in summary and "nnUNetTrainerPUReBaseline_tiny" in summary


def test_parameter_count_from_a_checkpoint_counts_each_tensor_once(tmp_path, plain_plans):
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from pu_nnunet.demo.summary import count_parameters
    from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPUReBaseline

    manager = PlansManager(plain_plans)
    network = nnUNetTrainerPUReBaseline.build_network_architecture(manager, manager.get_configuration("2d"), 1, 3)
    torch.save({"network_weights": network.state_dict()}, tmp_path / "checkpoint.pth")
    # the state dict lists the encoder twice and every conv twice; the count must not
    assert count_parameters(tmp_path / "checkpoint.pth") == sum(p.numel() for p in network.parameters())


def test_fresh_removes_what_the_demo_wrote_and_only_that(tmp_path, monkeypatch):
    from pu_nnunet.demo.pipeline import Demo, DemoSettings

    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(variable, raising=False)
    demo = Demo(DemoSettings(workdir=tmp_path))
    written = [demo.raw, demo.preprocessed, demo.results, demo.folder.runs, demo.folder.comparisons]
    for folder in written:
        (folder / "x").mkdir(parents=True)
    for file in (demo.folder.study_file, demo.folder.report, demo.folder.lock):
        file.write_text("{}")
    (tmp_path / "nnUNet_raw" / "Dataset001_Other").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    demo.remove_previous_run()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "nnUNet_preprocessed", "nnUNet_raw", "nnUNet_raw/Dataset001_Other", "nnUNet_results", "notes.txt"]
