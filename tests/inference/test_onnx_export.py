"""``pu-nnunet export-onnx``: the exported graphs compute PyTorch's logits (tiny trained PURe and
baseline models, random and real preprocessed inputs), consist of standard ONNX operators,
accept other batch and spatial sizes, and bad model folders or options get one-line errors."""

import json
import math
import subprocess

import numpy as np
import pytest
import torch

from pu_nnunet.cli import main

onnx = pytest.importorskip("onnx", reason="export-onnx needs the onnx extra: pip install 'pu-nnunet[onnx]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="export-onnx needs the onnx extra: pip install 'pu-nnunet[onnx]'")

BASELINE_TRAINER = "nnUNetTrainerPUReBaseline_tiny"
# the stated tolerance: logits within 1e-3 + 1e-3 x |logit| of PyTorch's, argmax identical
ATOL = RTOL = 1e-3
# what the stable PU layer must export to (positivity, log, clip, conv, exp), and nothing custom
PU_OPERATORS = {"Softplus", "Log", "Clip", "Conv", "Exp"}


def model_folder(model, trainer):
    return model["fold"].parent.parent / f"{trainer}__nnUNetPlans__2d"


@pytest.fixture(scope="module")
def baseline_folder(tiny_trained_model):
    """The matched baseline trained through nnUNetv2_train on the same preprocessed data."""
    env = dict(tiny_trained_model["env"], nnUNet_n_proc_DA="0")
    result = subprocess.run([str(tiny_trained_model["bin"] / "nnUNetv2_train"), str(tiny_trained_model["dataset_id"]),
                             "2d", "0", "-tr", BASELINE_TRAINER, "-device", "cpu"], env=env, capture_output=True,
                            text=True, encoding="utf-8", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return model_folder(tiny_trained_model, BASELINE_TRAINER)


def real_inputs(model, multiples):
    """nnU-Net's preprocessed slices of a training case (z-scored CT), zero-padded to sizes the
    graph accepts: what the network sees in prediction."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    folder = next((model["root"] / "preprocessed").glob("Dataset*/nnUNetPlans_2d"))
    dataset = infer_dataset_class(str(folder))(str(folder))
    data = np.asarray(dataset.load_case(dataset.identifiers[0])[0])  # (c, z, y, x)
    slices = data[:, data.shape[1] // 2 - 1: data.shape[1] // 2 + 2].transpose(1, 0, 2, 3)
    pads = [(0, 0), (0, 0)] + [(0, math.ceil(n / m) * m - n) for n, m in zip(slices.shape[2:], multiples)]
    return torch.from_numpy(np.pad(slices, pads).astype(np.float32))


def torch_network(model_dir):
    from pu_nnunet.inference.model_folder import inspect_model_folder, load_predictor

    predictor = load_predictor(inspect_model_folder(model_dir, [0]), torch.device("cpu"))
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    return predictor.network.eval()


def assert_onnx_matches_torch(onnx_file, network, inputs):
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for x in inputs:
        with torch.no_grad():
            expected = network(x).numpy()
        got = session.run(["logits"], {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
        assert np.array_equal(got.argmax(1), expected.argmax(1)), f"argmax differs for input {tuple(x.shape)}"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["PURe", "baseline"])
def test_export_matches_pytorch_on_random_and_real_inputs(which, tiny_trained_model, baseline_folder, tmp_path):
    folder = model_folder(tiny_trained_model, tiny_trained_model["trainer"]) if which == "PURe" else baseline_folder
    metadata = _export(folder, tmp_path / "model.onnx")
    assert metadata["files"] == {"0": "model.onnx"}
    assert metadata["check"]["max_abs_logit_difference"] <= ATOL
    assert metadata["model"]["trainer"] == folder.name.split("__")[0]
    multiples = metadata["input"]["spatial_size_multiple_of"]
    patch = metadata["patch_size"]
    generator = torch.Generator().manual_seed(1)
    random_inputs = [torch.randn(3, 1, *patch, generator=generator),
                     torch.randn(1, 1, *[p + 2 * m for p, m in zip(patch, multiples)], generator=generator)]
    assert_onnx_matches_torch(tmp_path / "model.onnx", torch_network(folder),
                              random_inputs + [real_inputs(tiny_trained_model, multiples)])
    operators = {node.op_type for node in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert all(node_domain in ("", "ai.onnx") for node_domain in
               {node.domain for node in onnx.load(str(tmp_path / "model.onnx")).graph.node})
    if which == "PURe":
        assert PU_OPERATORS <= operators, operators
    else:
        assert not {"Log", "Exp", "Softplus"} & operators, operators


@pytest.mark.slow
def test_metadata_holds_what_prediction_needs(tiny_trained_model, tmp_path):
    folder = model_folder(tiny_trained_model, tiny_trained_model["trainer"])
    metadata = _export(folder, tmp_path / "m.onnx")
    plans = json.loads((folder / "plans.json").read_text())["configurations"]["2d"]
    assert metadata["patch_size"] == plans["patch_size"] and metadata["spacing"] == plans["spacing"]
    assert metadata["normalization_schemes"] == plans["normalization_schemes"] == ["CTNormalization"]
    assert metadata["foreground_intensity_properties_per_channel"]["0"]["percentile_99_5"] is not None
    assert metadata["labels"] == json.loads((folder / "dataset.json").read_text())["labels"]
    assert metadata["configuration"] == "2d" and metadata["sliding_window"]["tile_step_size"] == 0.5
    assert len(metadata["model"]["checkpoint_sha256"]["0"]) == 64
    assert metadata["sha256"] == {"0": __import__("hashlib").sha256((tmp_path / "m.onnx").read_bytes()).hexdigest()}


def _export(folder, output, *extra):
    assert main(["export-onnx", str(folder), "-o", str(output), *extra]) == 0
    return json.loads(output.with_suffix(".json").read_text())


def test_bad_model_folders_and_options_get_one_line_errors(model_stub, tmp_path, capsys):
    folder = model_stub  # every check below runs before the weights are loaded
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    cases = [
        ([str(tmp_path / "missing"), "-o", str(tmp_path / "a.onnx")], "model folder not found"),
        ([str(folder), "-o", str(tmp_path / "a.txt")], "must end in .onnx"),
        ([str(folder), "-o", str(tmp_path / "nowhere" / "a.onnx")], "does not exist"),
        ([str(folder), "-o", str(tmp_path / "a.onnx"), "-f", "3"], "checkpoint not found"),
        ([str(folder), "-o", str(tmp_path / "a.onnx"), "--chk", "checkpoint_best.pth"], "no checkpoint in"),
    ]
    for argv, message in cases:
        assert main(["export-onnx", *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("pu-nnunet export-onnx: error:") and message in err and "\n" not in err, err
    (tmp_path / "taken.onnx").write_bytes(b"someone else's file")
    assert main(["export-onnx", str(folder), "-o", str(tmp_path / "taken.onnx")]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "taken.onnx").read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]  # nothing half-written


def test_spatial_sizes_must_be_multiples_of_the_total_stride_per_axis():
    from pu_nnunet.inference.onnx_export import OnnxExportError, output_paths, total_strides
    from pathlib import Path

    assert total_strides({"strides": [[1, 1], [2, 2], [2, 1], [2, 2]]}, 2) == [8, 4]
    assert total_strides({"strides": [1, 2, 2]}, 3) == [4, 4, 4]
    with pytest.raises(OnnxExportError, match="do not have 3 axes"):
        total_strides({"strides": [[1, 1], [2, 2]]}, 3)
    assert output_paths(Path("m.onnx"), (0,)) == {"0": Path("m.onnx")}
    assert output_paths(Path("d/m.onnx"), (0, "all")) == {"0": Path("d/m.fold_0.onnx"), "all": Path("d/m.fold_all.onnx")}


# ``pu-nnunet predict --backend onnxruntime``: the export's networks inside nnU-Net's prediction

# segmentations of the two backends, per label: onnxruntime sums in another order, so a voxel
# whose two best classes tie to within the logit tolerance may flip (none did on the test model)
MIN_BACKEND_AGREEMENT_DICE = 0.999


@pytest.fixture(scope="module")
def pure_export(tiny_trained_model, tmp_path_factory):
    folder = model_folder(tiny_trained_model, tiny_trained_model["trainer"])
    output = tmp_path_factory.mktemp("pure_export") / "pure.onnx"
    _export(folder, output)
    return folder, output


def _labels_dice(a, b, label):
    x, y = a == label, b == label
    total = int(x.sum() + y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


@pytest.mark.slow
def test_onnxruntime_backend_gives_pytorchs_logits_and_segmentation(tiny_trained_model, pure_export, tmp_path):
    """Same preprocessed volume through the sliding window with each backend: logits within the
    export's tolerance, argmax identical wherever PyTorch's two best classes are not within it of
    each other; the written segmentations agree per label."""
    import SimpleITK as sitk

    from pu_nnunet.inference.model_folder import inspect_model_folder, load_predictor
    from pu_nnunet.inference.onnx_backend import OnnxRuntimeNetwork, use_onnxruntime
    from pu_nnunet.inference.sliding_window_2d import BatchedSlicePredictor

    folder, onnx_file = pure_export
    model = inspect_model_folder(folder, [0])
    volume = real_inputs(tiny_trained_model, [1, 1]).transpose(0, 1).contiguous()  # (c, z, y, x)
    with_torch = BatchedSlicePredictor(load_predictor(model, torch.device("cpu")), 2).predict_logits(volume)
    predictor = load_predictor(model, torch.device("cpu"))
    use_onnxruntime(predictor, model, onnx_file, threads=1)
    assert isinstance(predictor.network, OnnxRuntimeNetwork)
    with_onnx = BatchedSlicePredictor(predictor, 2).predict_logits(volume)
    np.testing.assert_allclose(with_onnx.float().numpy(), with_torch.float().numpy(), atol=ATOL * 10, rtol=RTOL)
    top2 = torch.topk(with_torch.float(), 2, dim=0).values
    clear = (top2[0] - top2[1]) > 2 * ATOL * 10
    assert clear.float().mean() > 0.99
    assert torch.equal(with_onnx.argmax(0)[clear], with_torch.argmax(0)[clear])

    images = tiny_trained_model["dataset"] / "imagesTs"
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        outputs[backend] = tmp_path / backend
        extra = ["--backend", "onnxruntime", "--onnx", str(onnx_file)] if backend == "onnxruntime" else []
        assert main(["predict", "-i", str(images), "-o", str(outputs[backend]), "-m", str(folder), "--device", "cpu",
                     *extra]) == 0
    record = json.loads((outputs["onnxruntime"] / "provenance.json").read_text())
    assert record["command"][record["command"].index("--backend") + 1] == "onnxruntime"
    labels = [v for v in json.loads((folder / "dataset.json").read_text())["labels"].values() if v != 0]
    for path in sorted(outputs["torch"].glob("*.nii.gz")):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs["onnxruntime"] / path.name)))
        for label in labels:
            assert _labels_dice(a, b, label) >= MIN_BACKEND_AGREEMENT_DICE, (path.name, label)


@pytest.mark.slow
def test_onnxruntime_backend_refuses_a_wrong_export_or_option(tiny_trained_model, pure_export, baseline_folder,
                                                              tmp_path, capsys):
    folder, onnx_file = pure_export
    baseline_onnx = tmp_path / "baseline.onnx"
    _export(baseline_folder, baseline_onnx)
    images = str(tiny_trained_model["dataset"] / "imagesTs")

    def refused(*argv, message):
        out = tmp_path / "out"
        assert main(["predict", "-i", images, "-o", str(out), "-m", str(folder), "--device", "cpu", *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("pu-nnunet predict: error:") and message in err and "\n" not in err, err
        assert not out.exists() or not list(out.glob("*.nii.gz"))  # nothing written

    refused("--backend", "onnxruntime", "--onnx", str(baseline_onnx), message="exported from another model")
    refused("--backend", "onnxruntime", message="needs --onnx")
    refused("--onnx", str(onnx_file), message="read by --backend onnxruntime only")
    refused("--backend", "onnxruntime", "--onnx", str(onnx_file), "--precision", "fp16", message="is float32")
    refused("--backend", "onnxruntime", "--onnx", str(tmp_path / "none.onnx"), message="not found")
    (tmp_path / "model.json").write_text("{}")
    refused("--backend", "onnxruntime", "--onnx", str(tmp_path / "model.json"), message="not the metadata")
    broken = tmp_path / "broken"
    broken.mkdir()
    metadata = json.loads(onnx_file.with_suffix(".json").read_text())
    (broken / "pure.json").write_text(json.dumps(metadata))
    (broken / "pure.onnx").write_bytes(onnx_file.read_bytes()[:1000])  # truncated copy
    refused("--backend", "onnxruntime", "--onnx", str(broken / "pure.onnx"), message="not the file exported")
    del metadata["sha256"]  # an export without hashes (the earlier format): no graph it cannot check runs
    (broken / "pure.json").write_text(json.dumps(metadata))
    refused("--backend", "onnxruntime", "--onnx", str(broken / "pure.onnx"), message="records no SHA-256 of fold 0")
    metadata["sha256"] = {"0": "0" * 64}
    metadata["files"] = {"0": "../pure.onnx"}  # a path out of the export's folder
    (broken / "pure.json").write_text(json.dumps(metadata))
    refused("--backend", "onnxruntime", "--onnx", str(broken / "pure.json"), message="is not a file name beside")
    swapped = tmp_path / "swapped"  # another model's network under this export's JSON
    swapped.mkdir()
    (swapped / "pure.json").write_text(onnx_file.with_suffix(".json").read_text())
    (swapped / "pure.onnx").write_bytes(baseline_onnx.read_bytes())
    refused("--backend", "onnxruntime", "--onnx", str(swapped / "pure.onnx"), message="not the file exported")
    refused("--backend", "onnxruntime", "--onnx", str(onnx_file.with_suffix(".ONNX")), message="not found")
    (swapped / "renamed.onnx").write_bytes(onnx_file.read_bytes())
    (swapped / "renamed.json").write_text(onnx_file.with_suffix(".json").read_text())
    refused("--backend", "onnxruntime", "--onnx", str(swapped / "renamed.onnx"), message="was it renamed?")
