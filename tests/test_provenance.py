"""The provenance records every output carries (pu_nnunet/provenance.py)."""

import hashlib

import pu_nnunet
from pu_nnunet import provenance


def _model_folder(tmp_path, name="nnUNetTrainerPURe__nnUNetPlans__2d"):
    folder = tmp_path / name
    for fold, payload in ((0, b"weights zero"), (1, b"weights one")):
        (folder / f"fold_{fold}").mkdir(parents=True)
        (folder / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(payload)
    return folder


def test_model_record_names_the_model_and_hashes_each_checkpoint(tmp_path):
    record = provenance.model_record(_model_folder(tmp_path), [0, 1], "checkpoint_final.pth")
    assert (record["trainer"], record["plans"], record["configuration"]) == ("nnUNetTrainerPURe", "nnUNetPlans", "2d")
    assert record["folds"] == ["0", "1"]
    assert record["checkpoint_sha256"] == {"0": hashlib.sha256(b"weights zero").hexdigest(),
                                           "1": hashlib.sha256(b"weights one").hexdigest()}
    assert record["pu_nnunet"] == pu_nnunet.__version__


def test_same_model_names_what_differs_and_ignores_the_folder_path(tmp_path):
    a = provenance.model_record(_model_folder(tmp_path / "a"), [0], "checkpoint_final.pth")
    moved = provenance.model_record(_model_folder(tmp_path / "b"), [0], "checkpoint_final.pth")
    assert provenance.same_model(a, moved) == []
    (tmp_path / "b" / "nnUNetTrainerPURe__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth").write_bytes(b"x")
    retrained = provenance.model_record(tmp_path / "b" / "nnUNetTrainerPURe__nnUNetPlans__2d", [0],
                                        "checkpoint_final.pth")
    assert provenance.same_model(a, retrained) == ["checkpoint_sha256"]
    other = provenance.model_record(_model_folder(tmp_path / "c", "nnUNetTrainerPUReBaseline__nnUNetPlans__2d"),
                                    [0, 1], "checkpoint_best.pth")
    assert provenance.same_model(a, other) == ["trainer", "folds", "checkpoint", "checkpoint_sha256"]


def test_run_record_holds_versions_files_and_model(tmp_path):
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text('{"labels": {"background": 0}}')
    model = provenance.model_record(_model_folder(tmp_path), [0], "checkpoint_final.pth")
    record = provenance.run_record(device="cpu", files={"dataset.json": dataset_json, "splits": None},
                                   model=model, argv=["pu-nnunet", "evaluate"])
    assert record["command"] == ["pu-nnunet", "evaluate"]
    assert record["files"]["dataset.json"]["sha256"] == hashlib.sha256(dataset_json.read_bytes()).hexdigest()
    assert record["files"]["splits"] is None
    for name in ("nnunetv2", "torch", "dynamic-network-architectures", "SimpleITK"):
        assert record["libraries"][name], name
    assert record["code"]["pu_nnunet"] == pu_nnunet.__version__
    lines = "\n".join(provenance.short_form(record))
    assert "pu-nnunet " + pu_nnunet.__version__ in lines and "nnUNetTrainerPURe" in lines
    assert record["files"]["dataset.json"]["sha256"][:12] in lines


def test_weights_are_identified_by_content_so_a_resaved_checkpoint_is_the_same_model(tmp_path):
    """Issue 30, class 2: nnUNetv2_train --c on a finished model re-writes checkpoint_final.pth
    (new bytes, same weights); a compiled network's names carry _orig_mod."""
    import torch

    folder = tmp_path / "nnUNetTrainerPURe__nnUNetPlans__2d"
    (folder / "fold_0").mkdir(parents=True)
    path = folder / "fold_0" / "checkpoint_final.pth"
    weights = {"encoder.weight": torch.randn(4, 3), "encoder.scale": torch.tensor(2.0, dtype=torch.bfloat16)}
    torch.save({"network_weights": weights, "current_epoch": 5}, path)
    first = provenance.model_record(folder, [0], "checkpoint_final.pth")
    torch.save({"network_weights": {f"_orig_mod.{k}": v for k, v in weights.items()}, "current_epoch": 5,
                "optimizer_state": {"resaved": True}}, path)
    resaved = provenance.model_record(folder, [0], "checkpoint_final.pth")
    assert first["checkpoint_sha256"] != resaved["checkpoint_sha256"]
    assert first["weights_sha256"] == resaved["weights_sha256"] and provenance.same_model(first, resaved) == []
    torch.save({"network_weights": {**weights, "encoder.weight": weights["encoder.weight"] + 1e-6}}, path)
    retrained = provenance.model_record(folder, [0], "checkpoint_final.pth")
    assert provenance.same_model(first, retrained) == ["weights_sha256"]
    # a record from before weights were hashed is compared by the file
    older = {k: v for k, v in first.items() if k != "weights_sha256"}
    assert provenance.same_model(older, resaved) == ["checkpoint_sha256"]


def test_run_record_names_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert provenance.run_record()["working_directory"] == str(tmp_path)
