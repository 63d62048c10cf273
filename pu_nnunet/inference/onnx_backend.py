"""``pu-nnunet predict --backend onnxruntime``: the network's forward pass in onnxruntime.

Everything around the network stays nnU-Net's (reading, preprocessing, the sliding window, the
mirroring TTA, the export), so only the logits' last bits can change: the exported graph computes
the same operators, summed in onnxruntime's order (checked at export time to within
:data:`~pu_nnunet.inference.onnx_export.LOGIT_ATOL`). On a CPU onnxruntime's convolutions were
faster than PyTorch's in ``benchmarks/bench_predict.py``.

The export (``pu-nnunet export-onnx``) is tied to its model folder by the model record in its
JSON: trainer, plans, configuration, folds, checkpoint and each checkpoint's SHA-256 must match
the folder given with ``-m``, so an export of other weights is refused, not silently used.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from pu_nnunet.inference.errors import PredictionError
from pu_nnunet.provenance import model_record, same_model, sha256_file

BACKENDS = ("torch", "onnxruntime")
EXPORT_FORMAT = "pu-nnunet onnx export 1"
# nnU-Net's predictors switch folds with network.load_state_dict(list_of_parameters[i]); for the
# onnxruntime network each fold's "parameters" are this one-key dict naming the fold
FOLD_KEY = "onnxruntime fold"
# ``model.fold_3.onnx``: one fold of a multi-fold export
FOLD_FILE = re.compile(r"^(?P<stem>.+)\.fold_[^.]+$")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def metadata_path(onnx: str | Path) -> Path:
    """The export's JSON for ``--onnx``: the JSON itself, ``model.onnx`` -> ``model.json``, or
    ``model.fold_0.onnx`` -> ``model.json``."""
    path = Path(onnx)
    if path.suffix.lower() == ".json":
        return path
    if path.suffix.lower() != ".onnx":
        raise PredictionError(f"{path}: --onnx takes the .onnx file written by pu-nnunet export-onnx or the .json "
                              "written beside it")
    match = FOLD_FILE.match(path.stem)
    return path.with_name(f"{match['stem'] if match else path.stem}.json")


def read_export_metadata(onnx: str | Path) -> tuple[Path, dict]:
    from pu_nnunet.user_files import read_user_json

    given = Path(onnx)
    if given.suffix.lower() == ".onnx" and not given.is_file():
        link = f" (a broken link to {os.readlink(given)})" if given.is_symlink() else ""
        raise PredictionError(f"{given}: not found{link}")
    path = metadata_path(onnx)
    if not path.is_file():
        raise PredictionError(f"{path}: not found; --onnx needs the JSON that pu-nnunet export-onnx writes beside "
                              "the .onnx file")
    metadata = read_user_json(path, "ONNX export metadata", dict, PredictionError)
    if metadata.get("format") != EXPORT_FORMAT or not isinstance(metadata.get("files"), dict) \
            or not isinstance(metadata.get("model"), dict):
        raise PredictionError(f"{path}: not the metadata of a pu-nnunet ONNX export (format "
                              f"{metadata.get('format')!r}, expected {EXPORT_FORMAT!r})")
    _check_export_files(path, metadata)
    if given.suffix.lower() == ".onnx" and given.name not in metadata["files"].values():
        raise PredictionError(f"{given}: not one of the files of its export {path} "
                              f"({', '.join(metadata['files'].values())}); was it renamed?")
    return path, metadata


def _check_export_files(path: Path, metadata: dict) -> None:
    """The export names its ONNX files beside the JSON (plain names, never ``../`` or a folder),
    and records the SHA-256 of each: without it any graph under the name would run (exports by
    pu-nnunet before the hashes were recorded are refused; export again)."""
    hashes = metadata.get("sha256")
    for fold, name in metadata["files"].items():
        if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name \
                or "\\" in name:
            raise PredictionError(f"{path}: fold {fold}'s file {name!r} is not a file name beside the JSON; export "
                                  "the model folder again with pu-nnunet export-onnx")
        digest = hashes.get(fold) if isinstance(hashes, dict) else None
        if not (isinstance(digest, str) and SHA256_HEX.fullmatch(digest)):
            raise PredictionError(f"{path}: records no SHA-256 of fold {fold}'s ONNX file {name} (an export by an "
                                  "earlier pu-nnunet, or an edited JSON), so the graph under that name cannot be "
                                  "checked; export the model folder again with pu-nnunet export-onnx")


def exported_graph_hashes(onnx: str | Path) -> dict[str, str]:
    """The SHA-256 of each fold's ONNX file, as the export records them (checked against the
    files before a session opens): what a prediction with this export ran."""
    return dict(read_export_metadata(onnx)[1]["sha256"])


def exported_folds(onnx: str | Path) -> list[str]:
    """The folds an export holds (the default folds of a prediction with it)."""
    return list(read_export_metadata(onnx)[1]["files"])


def check_export_matches(metadata_file: Path, metadata: dict, model) -> None:
    """The export must hold the networks of the model folder's weights, for the folds predicted."""
    record = model_record(model.path, model.folds, model.checkpoint)
    exported = dict(metadata["model"])
    missing = [fold for fold in record["folds"] if fold not in metadata["files"]]
    if missing:
        raise PredictionError(f"{metadata_file}: the export holds folds {', '.join(metadata['files'])}, not "
                              f"{', '.join(missing)}; export them (pu-nnunet export-onnx -f ...) or choose -f")
    # compare only the folds predicted: an export of folds 0-4 serves a prediction with fold 0
    exported["folds"] = record["folds"]
    for key in ("checkpoint_sha256", "weights_sha256"):  # the latter absent from earlier exports
        if key in metadata["model"]:
            exported[key] = {fold: (metadata["model"].get(key) or {}).get(fold) for fold in record["folds"]}
    differing = same_model(exported, record)
    if differing:
        details = "; ".join(f"{name} {exported.get(name)} in the export, {record.get(name)} in {model.path}"
                            for name in differing)
        raise PredictionError(f"{metadata_file}: exported from another model ({details}); export this model "
                              "folder again with pu-nnunet export-onnx")


def _sessions(metadata_file: Path, metadata: dict, folds, threads: int, device: torch.device) -> dict:
    try:
        import onnxruntime
    except ImportError:
        raise PredictionError('--backend onnxruntime needs onnxruntime: pip install "pu-nnunet[onnx]"') from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise PredictionError("--backend onnxruntime --device cuda needs onnxruntime with CUDA "
                                  "(pip install onnxruntime-gpu); this one has "
                                  f"{', '.join(onnxruntime.get_available_providers())}")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    options = onnxruntime.SessionOptions()
    # the same thread cap as PyTorch's path (nnUNet_def_n_proc), so that the two compare fairly
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions = {}
    recorded = metadata.get("sha256") or {}
    for fold in folds:
        path = metadata_file.with_name(metadata["files"][str(fold)])
        if not path.is_file():
            raise PredictionError(f"{path}: fold {fold}'s ONNX file, named in {metadata_file}, is missing")
        if sha256_file(path) != recorded[str(fold)]:
            raise PredictionError(f"{path}: not the file exported with {metadata_file} (its SHA-256 differs from the "
                                  "one recorded there): export the model folder again")
        try:
            sessions[str(fold)] = onnxruntime.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise PredictionError(f"{path}: onnxruntime cannot load it: {reason}") from None
    return sessions


class OnnxRuntimeNetwork(torch.nn.Module):
    """Stands in for the network inside nnU-Net's predictor: ``forward`` runs the current fold's
    onnxruntime session; ``load_state_dict({FOLD_KEY: fold})`` switches the fold, as loading
    that fold's weights does for the PyTorch network."""

    def __init__(self, sessions: dict, input_name: str, output_name: str, torch_network: torch.nn.Module):
        super().__init__()
        self.sessions = sessions
        self.input_name, self.output_name = input_name, output_name
        self.fold = next(iter(sessions))
        # the PyTorch network of the same plans: its feature map size sets the memory budget
        self._torch_network = [torch_network]  # in a list: not a submodule, its weights are not used

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.fold = str(state_dict[FOLD_KEY])

    def compute_conv_feature_map_size(self, patch_size):
        return self._torch_network[0].compute_conv_feature_map_size(patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        logits = self.sessions[self.fold].run([self.output_name], {self.input_name: array})[0]
        return torch.from_numpy(logits).to(x.device)


def use_onnxruntime(predictor, model, onnx: str | Path, threads: int) -> None:
    """Replaces the predictor's PyTorch network with the export's onnxruntime sessions."""
    metadata_file, metadata = read_export_metadata(onnx)
    check_export_matches(metadata_file, metadata, model)
    sessions = _sessions(metadata_file, metadata, model.folds, threads, predictor.device)
    network = predictor.network
    plain = getattr(network, "_orig_mod", network)
    predictor.network = OnnxRuntimeNetwork(sessions, metadata["input"]["name"], metadata["output"]["name"], plain)
    predictor.list_of_parameters = [{FOLD_KEY: str(fold)} for fold in model.folds]

