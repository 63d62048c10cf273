"""PU networks from plans alone (issue 28): ``pu-nnunet plans`` writes plans naming the PU
residual-encoder U-Net, with which nnU-Net's *stock* nnUNetTrainer builds, weight for weight, the
network nnUNetTrainerPURe builds from the source plans; and the matched baseline's plans, which
build nnUNetTrainerPUReBaseline's network with nnU-Net's own ResidualEncoderUNet."""

import json

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from pu_nnunet.cli import main
from pu_nnunet.trainers.pu_plans import PlansError, derived_plans, pu_options
from pu_nnunet.trainers.pure_trainers import (nnUNetTrainerPURe, nnUNetTrainerPURe_NoNonlinAfterAdd,
                                              nnUNetTrainerPURe_Unstabilised, nnUNetTrainerPUReBaseline)


def network(trainer, plans: dict, configuration: str = "2d"):
    torch.manual_seed(0)
    manager = PlansManager(plans)
    return trainer.build_network_architecture(manager, manager.get_configuration(configuration), 1, 3, True)


def assert_same_network(a, b):
    # the top module's class may differ (PUResidualEncoderUNet with no PU stage is ResidualEncoderUNet)
    assert [type(m).__name__ for m in a.modules()][1:] == [type(m).__name__ for m in b.modules()][1:]
    state_a, state_b = a.state_dict(), b.state_dict()
    assert list(state_a) == list(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


@pytest.mark.parametrize("plans_fixture", ["plain_plans", "resenc_plans"])
@pytest.mark.parametrize("trainer", [nnUNetTrainerPURe, nnUNetTrainerPURe_Unstabilised, nnUNetTrainerPURe_NoNonlinAfterAdd])
def test_the_stock_trainer_builds_the_pure_trainers_network_from_pu_plans(request, plans_fixture, trainer,
                                                                          one_torch_thread):
    plans = request.getfixturevalue(plans_fixture)
    options = pu_options(**trainer.pu_network_options())
    pu = derived_plans(plans, "PUPlans", options, "test")
    assert pu["configurations"]["2d"]["architecture"]["network_class_name"].endswith("PUResidualEncoderUNet")
    json.dumps(pu, allow_nan=False)  # what the plans file holds is plain JSON
    assert_same_network(network(nnUNetTrainer, pu), network(trainer, plans))
    baseline = derived_plans(plans, "PUPlansBaseline", None, "test")
    assert_same_network(network(nnUNetTrainer, baseline), network(nnUNetTrainerPUReBaseline, plans))
    assert type(network(nnUNetTrainer, baseline)).__name__ == "ResidualEncoderUNet"


def test_bottleneck_only_and_bad_placements(resenc_plans):
    pu = derived_plans(resenc_plans, "P", pu_options(pu_stages=[-1]), "test")
    built = network(nnUNetTrainer, pu)
    assert type(built.encoder.stages[-1].blocks[0]).__name__ == "PUBasicBlock"
    assert [type(s.blocks[0]).__name__ for s in built.encoder.stages[:-1]] == ["BasicBlockD"] * 4
    with pytest.raises(PlansError, match=r"test: configuration 2d: pu_stages \[9\] out of range"):
        derived_plans(resenc_plans, "P", pu_options(pu_stages=[9]), "test")
    other = json.loads(json.dumps(resenc_plans))
    other["configurations"]["2d"]["architecture"]["network_class_name"] = "my.Net"
    with pytest.raises(PlansError, match="configuration 2d: plans use my.Net"):
        derived_plans(other, "P", pu_options(), "test")


def test_the_command_writes_both_plans_beside_the_source_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys,
                                                                                  resenc_plans):
    folder = tmp_path / "Dataset218_X"
    folder.mkdir()
    (folder / "nnUNetResEncUNetMPlans.json").write_text(json.dumps(resenc_plans))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    argv = ["plans", "-d", "218", "-p", "nnUNetResEncUNetMPlans", "-o", "ResEncM_PURe", "--pu-stages", "3,-1"]
    assert main(argv) == 0
    assert "train with: nnUNetv2_train 218 CONFIGURATION FOLD -p ResEncM_PURe" in capsys.readouterr().out
    pu = json.loads((folder / "ResEncM_PURe.json").read_text())
    baseline = json.loads((folder / "ResEncM_PUReBaseline.json").read_text())
    assert (pu["plans_name"], baseline["plans_name"]) == ("ResEncM_PURe", "ResEncM_PUReBaseline")
    assert pu["configurations"]["2d"]["architecture"]["arch_kwargs"]["pu_stages"] == [3, -1]
    # the same preprocessed data
    assert pu["configurations"]["2d"]["data_identifier"] == resenc_plans["configurations"]["2d"]["data_identifier"]
    assert main(argv) == 1
    assert "ResEncM_PURe.json exists; pass --overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--pu-log-input-clip", "none"]) == 0
    assert json.loads((folder / "ResEncM_PURe.json").read_text())["configurations"]["2d"]["architecture"][
        "arch_kwargs"]["pu_log_input_clip"] is None
    assert main(["plans", "-d", "218", "-p", "nnUNetResEncUNetMPlans", "-o", "nnUNetResEncUNetMPlans"]) == 1
    assert "would replace the source plans" in capsys.readouterr().err
    assert main(["plans", "-d", "218", "-p", "nnUNetPlans", "-o", "X"]) == 1
    assert "nnUNetPlans.json: nnU-Net plans not found" in capsys.readouterr().err


@pytest.mark.slow
def test_a_trainer_without_pu_code_trains_and_predicts_the_pu_network_from_pu_plans(tiny_trained_model, tmp_path):
    """A user's own short-schedule trainer (a plain nnUNetTrainer subclass, as nnU-Net's
    nnUNetTrainer_Xepochs variants are) trains the PU network from the plans alone, and
    pu-nnunet predict segments with it."""
    import subprocess
    import sys
    from pathlib import Path

    import nibabel

    folder = tmp_path / "my_trainers"
    folder.mkdir()
    (folder / "short.py").write_text(
        "import torch\n"
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class nnUNetTrainer_2iters(nnUNetTrainer):\n"
        "    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device('cuda')):\n"
        "        super().__init__(plans, configuration, fold, dataset_json, device)\n"
        "        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1, 2, 1\n")
    env = dict(tiny_trained_model["env"], nnUNet_results=str(tmp_path / "results"), nnUNet_n_proc_DA="0",
               nnUNet_extTrainer=str(folder), OMP_NUM_THREADS="1")
    bin_dir = Path(sys.executable).parent
    dataset_id = str(tiny_trained_model["dataset_id"])

    def run(*argv):
        done = subprocess.run([str(bin_dir / argv[0]), *argv[1:]], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    run("pu-nnunet", "plans", "-d", dataset_id, "-o", "TinyPURePlans", "--overwrite")
    run("nnUNetv2_train", dataset_id, "2d", "0", "-tr", "nnUNetTrainer_2iters", "-p", "TinyPURePlans", "-device", "cpu")
    model = tmp_path / "results" / tiny_trained_model["dataset"].name / "nnUNetTrainer_2iters__TinyPURePlans__2d"
    weights = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    reference = network(nnUNetTrainerPURe, json.loads(
        (tiny_trained_model["root"] / "preprocessed" / tiny_trained_model["dataset"].name / "nnUNetPlans.json")
        .read_text()))
    assert list(weights["network_weights"]) == list(reference.state_dict())  # nnUNetTrainerPURe's network
    out = tmp_path / "pred"
    run("pu-nnunet", "predict", "-i", str(tiny_trained_model["dataset"] / "imagesTs"), "-o", str(out), "-m",
        str(model), "-f", "0", "--device", "cpu", "--disable_tta")
    predicted = sorted(out.glob("*.nii.gz"))
    assert len(predicted) == 2 and nibabel.load(predicted[0]).shape == nibabel.load(
        sorted((tiny_trained_model["dataset"] / "imagesTs").glob("*.nii.gz"))[0]).shape
