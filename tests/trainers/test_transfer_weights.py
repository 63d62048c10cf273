"""``pu-nnunet transfer-weights``: a stock ResEnc, baseline or PURe checkpoint becomes a file that
nnU-Net's own ``load_pretrained_weights`` loads into the target trainer's network, with every
copied tensor equal to the source's; other architectures and plans are refused."""

import json
import re

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from pu_nnunet.cli import main
from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPURe, nnUNetTrainerPUReBaseline
from pu_nnunet.trainers.transfer_weights import (NETWORK_WEIGHTS_KEY, SEGMENTATION_HEAD_MARK, TRANSFER_RECORD_KEY,
                                                 build_network, target_spec)

DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2},
                "numTraining": 4, "file_ending": ".nii.gz"}
COUNTS = re.compile(r"copied (\d+) tensors, initialised (\d+), dropped (\d+) \(the target network has (\d+)\)")


def write_plans(folder, plans):
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON))
    return folder / "plans.json"


def save_checkpoint(path, trainer, plans_path):
    """A checkpoint as nnUNetTrainer.save_checkpoint writes it, of ``trainer``'s network with
    weights that differ from any fresh initialisation."""
    torch.manual_seed(1)
    network = build_network(trainer, target_spec(plans_path, "2d", plans_path.parent / "dataset.json"))
    with torch.no_grad():
        for value in network.state_dict().values():
            value.add_(torch.randn_like(value))
    torch.save({NETWORK_WEIGHTS_KEY: network.state_dict(), "trainer_name": trainer.__name__,
                "init_args": {"plans": json.loads(plans_path.read_text()), "configuration": "2d", "fold": 0}}, path)
    return network.state_dict()


def transfer(capsys, source, plans_path, trainer, output):
    code = main(["transfer-weights", str(source), "--plans", str(plans_path), "--configuration", "2d",
                 "--to", trainer, "-o", str(output)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def loaded_by_nnunet(trainer, plans_path, weights_file):
    """The target trainer's network after nnU-Net's own -pretrained_weights loader."""
    network = build_network(trainer, target_spec(plans_path, "2d", plans_path.parent / "dataset.json"))
    load_pretrained_weights(network, str(weights_file))
    return network.state_dict()


def check_transfer(out, source, target, written):
    """The counts printed are the networks' and every copied tensor equals the source's."""
    copied, initialised, dropped, total = map(int, COUNTS.search(out).groups())
    record = written[TRANSFER_RECORD_KEY]
    assert (copied, initialised, dropped) == tuple(map(len, (record["copied"], record["initialised"],
                                                             record["dropped"])))
    assert total == len(target) == copied + initialised and copied + dropped == len(source)
    for key in record["copied"]:
        assert torch.equal(target[key], source[key]), key
    for key in record["initialised"]:
        # a fresh initialisation, not the source's values
        assert key not in source or SEGMENTATION_HEAD_MARK in key or not torch.equal(target[key], source[key])
    return record


def test_stock_resenc_checkpoint_starts_pure_and_the_copied_tensors_are_the_sources(tmp_path, capsys, resenc_plans):
    plans_path = write_plans(tmp_path, resenc_plans)
    source = save_checkpoint(tmp_path / "resenc.pth", nnUNetTrainer, plans_path)
    code, out, err = transfer(capsys, tmp_path / "resenc.pth", plans_path, "nnUNetTrainerPURe", tmp_path / "pure.pth")
    assert code == 0, err
    target = loaded_by_nnunet(nnUNetTrainerPURe, plans_path, tmp_path / "pure.pth")
    record = check_transfer(out, source, target, torch.load(tmp_path / "pure.pth", weights_only=False))
    # what stays untransferred is exactly the PU blocks' own tensors and the segmentation heads
    assert all(".pu." in key or ".norm2." in key or SEGMENTATION_HEAD_MARK in key for key in record["initialised"])
    assert any(".pu." in key for key in record["initialised"])
    assert all(".conv2." in key or SEGMENTATION_HEAD_MARK in key for key in record["dropped"])
    assert any(key.startswith("encoder.stem.") for key in record["copied"])
    assert "(nnUNetTrainer) -> nnUNetTrainerPURe" in out


def test_pure_to_baseline_and_back(tmp_path, capsys, plain_plans):
    """PURe -> baseline -> PURe on nnU-Net's default plans: everything outside the PU blocks
    survives both steps; nnU-Net's loader accepts both files."""
    plans_path = write_plans(tmp_path, plain_plans)
    pure = save_checkpoint(tmp_path / "pure.pth", nnUNetTrainerPURe, plans_path)
    code, out, err = transfer(capsys, tmp_path / "pure.pth", plans_path, "nnUNetTrainerPUReBaseline",
                              tmp_path / "baseline.pth")
    assert code == 0, err
    baseline = loaded_by_nnunet(nnUNetTrainerPUReBaseline, plans_path, tmp_path / "baseline.pth")
    check_transfer(out, pure, baseline, torch.load(tmp_path / "baseline.pth", weights_only=False))

    code, out, err = transfer(capsys, tmp_path / "baseline.pth", plans_path, "nnUNetTrainerPURe",
                              tmp_path / "pure_again.pth")
    assert code == 0, err
    again = loaded_by_nnunet(nnUNetTrainerPURe, plans_path, tmp_path / "pure_again.pth")
    record = check_transfer(out, baseline, again, torch.load(tmp_path / "pure_again.pth", weights_only=False))
    outside_pu = [key for key in record["copied"] if ".conv2." not in key]
    assert outside_pu and all(torch.equal(again[key], pure[key]) for key in outside_pu)


def test_source_of_another_architecture_is_refused(tmp_path, capsys, plain_plans):
    """A stock nnUNetTrainer on default plans is a PlainConvUNet: nothing of the encoder maps."""
    plans_path = write_plans(tmp_path, plain_plans)
    save_checkpoint(tmp_path / "plain.pth", nnUNetTrainer, plans_path)
    code, out, err = transfer(capsys, tmp_path / "plain.pth", plans_path, "nnUNetTrainerPURe", tmp_path / "out.pth")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "another architecture or other plans" in err and "encoder.stem" in err
    assert not (tmp_path / "out.pth").exists() and list(tmp_path.glob(".out.pth*")) == []


def test_source_of_other_plans_is_refused(tmp_path, capsys, resenc_plans):
    source_folder, target_folder = tmp_path / "source", tmp_path / "target"
    source_folder.mkdir(), target_folder.mkdir()
    save_checkpoint(tmp_path / "resenc.pth", nnUNetTrainer, write_plans(source_folder, resenc_plans))
    resenc_plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["features_per_stage"] = [16, 32, 64, 64, 64]
    code, _, err = transfer(capsys, tmp_path / "resenc.pth", write_plans(target_folder, resenc_plans),
                            "nnUNetTrainerPURe", tmp_path / "out.pth")
    assert code == 1 and "differ in shape" in err and "[8, 1, 3, 3] in the source, [16, 1, 3, 3]" in err, err
    assert not (tmp_path / "out.pth").exists()


def test_bad_inputs_are_one_line_errors_and_nothing_is_overwritten(tmp_path, capsys, resenc_plans):
    plans_path = write_plans(tmp_path, resenc_plans)
    save_checkpoint(tmp_path / "resenc.pth", nnUNetTrainer, plans_path)
    data = (tmp_path / "resenc.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "exists.pth").write_bytes(b"keep me")
    cases = {
        "truncated.pth": (dict(source=tmp_path / "truncated.pth"), "not a readable PyTorch checkpoint"),
        "missing.pth": (dict(source=tmp_path / "missing.pth"), "checkpoint not found"),
        "trainer": (dict(trainer="nnUNetTrainerNoSuch"), "--to nnUNetTrainerNoSuch: no such nnU-Net trainer"),
        "exists": (dict(output=tmp_path / "exists.pth"), "already exists; pass --overwrite"),
    }
    for name, (override, message) in cases.items():
        arguments = {**dict(source=tmp_path / "resenc.pth", trainer="nnUNetTrainerPURe", output=tmp_path / "new.pth"),
                     **override}
        code, _, err = transfer(capsys, arguments["source"], plans_path, arguments["trainer"], arguments["output"])
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (name, err)
    assert (tmp_path / "exists.pth").read_bytes() == b"keep me" and not (tmp_path / "new.pth").exists()
    torch.save({"something": 1}, tmp_path / "other.pth")
    code, _, err = transfer(capsys, tmp_path / "other.pth", plans_path, "nnUNetTrainerPURe", tmp_path / "new.pth")
    assert code == 1 and "not an nnU-Net checkpoint (no 'network_weights'" in err
    code, _, err = main(["transfer-weights", str(tmp_path / "resenc.pth"), "--plans", str(plans_path),
                         "--configuration", "3d_fullres", "--to", "nnUNetTrainerPURe", "-o",
                         str(tmp_path / "new.pth")]), None, capsys.readouterr().err
    assert code == 1 and "no configuration '3d_fullres' (the plans have 2d)" in err


def test_plans_the_pu_network_cannot_mirror_are_one_line_naming_the_plans(tmp_path, capsys, resenc_plans):
    """Issue 28: UnsupportedPlansError is a user error (it printed a 28-line traceback)."""
    source_plans = write_plans(tmp_path, resenc_plans)
    source = tmp_path / "source.pth"
    save_checkpoint(source, nnUNetTrainerPUReBaseline, source_plans)
    other = tmp_path / "other"
    other.mkdir()
    plans = json.loads(json.dumps(resenc_plans))
    plans["configurations"]["2d"]["architecture"]["network_class_name"] = \
        "dynamic_network_architectures.architectures.unet.ResidualUNet"
    plans_path = write_plans(other, plans)
    code, _, err = transfer(capsys, source, plans_path, "nnUNetTrainerPURe", tmp_path / "out.pth")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"pu-nnunet transfer-weights: error: {plans_path}: plans use "
                          "dynamic_network_architectures.architectures.unet.ResidualUNet"), err
    assert not (tmp_path / "out.pth").exists()
