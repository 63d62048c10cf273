"""Provenance: which model, code, data and library versions made an output.

Two records, both plain JSON-ready dicts:

- the *model record* (:func:`model_record`): trainer, plans, configuration, folds, checkpoint
  file name and the SHA-256 of each fold's checkpoint. ``pu-nnunet predict`` writes it into its
  output folder (``--continue`` compares it), the study writes it beside each run's outputs,
  evaluate/compare/report copy it, and ``export-model`` puts it in the model card.
- the *run record* (:func:`run_record`): pu-nnunet's version and git commit, the libraries'
  versions, the command line, the device, hashes of the files that define the data (dataset.json,
  plans, split) and the model record when a model was involved.

:func:`short_form` turns a run record into the few lines a report.md shows.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping

import pu_nnunet

# distributions whose versions decide what a result is (pip names)
RECORDED_LIBRARIES = ("nnunetv2", "torch", "dynamic-network-architectures", "SimpleITK", "numpy", "scipy")
# the file name every output folder of this package keeps its run record in
RUN_RECORD_FILE = "provenance.json"
# the file name pu-nnunet predict keeps the model record in (inside its output folder)
MODEL_RECORD_FILE = "model_record.json"
_HASH_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks: checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def git_commit() -> dict | None:
    """The checkout pu-nnunet runs from (commit, uncommitted changes), or None for an installed wheel."""
    package_dir = Path(pu_nnunet.__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(package_dir), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        # a wheel unpacked inside some other repository is not "our" checkout
        if not (Path(top) / "pu_nnunet" / "__init__.py").is_file():
            return None
        commit = subprocess.run(["git", "-C", top, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", top, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "uncommitted_changes": dirty}


def code_record() -> dict:
    """pu-nnunet's version, and its git commit when it runs from a checkout."""
    return {"pu_nnunet": pu_nnunet.__version__, "git": git_commit()}


def library_versions(names: Iterable[str] = RECORDED_LIBRARIES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def file_record(path: str | Path | None) -> dict | None:
    """Path and SHA-256 of a file that defines the data or the model; None when there is none."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        return {"path": str(path), "sha256": None}
    return {"path": str(path.resolve()), "sha256": sha256_file(path)}


def split_model_folder_name(name: str) -> tuple[str, str, str] | None:
    """``Trainer__Plans__Configuration`` -> its three parts, as nnU-Net names result folders."""
    parts = name.split("__")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


# nnU-Net stores the network's state_dict under this key of checkpoint_*.pth
CHECKPOINT_WEIGHTS_KEY = "network_weights"
# prefixes a compiled (torch.compile) or DDP-wrapped network adds to its parameter names
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def weights_sha256(path: str | Path) -> str | None:
    """A hash of a checkpoint's network weights by content: parameter names, dtypes, shapes and
    values, not the file's bytes. ``nnUNetv2_train --c`` on a finished model re-saves
    checkpoint_final.pth with the same weights (a new file hash, the same model); None when the
    file holds no nnU-Net network weights."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # unreadable: the file hash still identifies it, and loading reports the problem
        return None
    weights = checkpoint.get(CHECKPOINT_WEIGHTS_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(weights, Mapping):
        return None
    digest = hashlib.sha256()
    named = {}
    for name, tensor in weights.items():
        for prefix in _WRAPPER_PREFIXES:
            name = name[len(prefix):] if name.startswith(prefix) else name
        named[name] = tensor
    for name in sorted(named):
        tensor = named[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # the raw bytes, any dtype (bfloat16 has no numpy twin): the flat tensor seen as bytes
        digest.update(tensor.flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_record(model_dir: str | Path, folds: Iterable[int | str], checkpoint: str) -> dict:
    """Which weights a model folder provides: identifies a model across machines (hashes, not paths).

    Trainer, plans and configuration come from the folder name (nnU-Net's convention); the
    checkpoint's own claims are checked against them when the model is loaded
    (:mod:`pu_nnunet.inference.model_folder`). ``weights_sha256`` identifies each fold's weights
    by content (:func:`weights_sha256`), ``checkpoint_sha256`` the file.
    """
    model_dir = Path(model_dir)
    trainer, plans, configuration = split_model_folder_name(model_dir.name) or (None, None, None)
    hashes, weights = {}, {}
    for fold in folds:
        path = model_dir / f"fold_{fold}" / checkpoint
        hashes[str(fold)] = sha256_file(path) if path.is_file() else None
        weights[str(fold)] = weights_sha256(path) if path.is_file() else None
    return {
        "model_folder": str(model_dir.resolve()),
        "trainer": trainer,
        "plans": plans,
        "configuration": configuration,
        "folds": [str(fold) for fold in folds],
        "checkpoint": checkpoint,
        "checkpoint_sha256": hashes,
        "weights_sha256": weights,
        "pu_nnunet": pu_nnunet.__version__,
    }


def same_model(a: Mapping, b: Mapping) -> list[str]:
    """The fields in which two model records differ (the folder path is not one: models move).

    The weights are compared by content where both records have it (a re-saved checkpoint with the
    same weights is the same model); a record written before ``weights_sha256`` existed is compared
    by the checkpoint file's hash."""
    fields = ["trainer", "plans", "configuration", "folds", "checkpoint"]
    by_content = _complete(a.get("weights_sha256")) and _complete(b.get("weights_sha256"))
    fields.append("weights_sha256" if by_content else "checkpoint_sha256")
    return [name for name in fields if a.get(name) != b.get(name)]


def _complete(hashes) -> bool:
    return isinstance(hashes, Mapping) and bool(hashes) and all(hashes.values())


def run_record(device: str | None = None, files: Mapping[str, str | Path | None] | None = None,
               model: Mapping | None = None, argv: list[str] | None = None) -> dict:
    """Everything a reader needs to check two results are comparable (see the module docstring)."""
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv if argv is None else argv),
        # relative paths in the command are relative to it
        "working_directory": os.getcwd(),
        "device": device,
        "code": code_record(),
        "libraries": library_versions(),
        "files": {name: file_record(path) for name, path in (files or {}).items()},
        "model": dict(model) if model is not None else None,
    }


def short_form(record: Mapping) -> list[str]:
    """Markdown bullet lines for report.md: code, libraries, device, model and data hashes."""
    code = record.get("code") or {}
    git = code.get("git") or {}
    commit = git.get("commit")
    code_text = f"pu-nnunet {code.get('pu_nnunet')}"
    if commit:
        code_text += f" (git {commit[:12]}{', uncommitted changes' if git.get('uncommitted_changes') else ''})"
    libraries = ", ".join(f"{name} {version}" for name, version in (record.get("libraries") or {}).items()
                          if version is not None)
    lines = [f"- code: {code_text}", f"- libraries: {libraries}"]
    if record.get("device"):
        lines.append(f"- device: {record['device']}")
    model = record.get("model")
    if model:
        hashes = ", ".join(f"fold {fold} {digest[:12] if digest else 'missing'}"
                           for fold, digest in (model.get("checkpoint_sha256") or {}).items())
        lines.append(f"- model: {model.get('trainer')} / {model.get('plans')} / {model.get('configuration')}, "
                     f"{model.get('checkpoint')} ({hashes})")
    for name, entry in (record.get("files") or {}).items():
        if entry:
            digest = entry.get("sha256")
            lines.append(f"- {name}: sha256 {digest[:12] if digest else 'missing'} ({entry.get('path')})")
    if record.get("created"):
        lines.append(f"- created: {record['created']}")
    return lines
