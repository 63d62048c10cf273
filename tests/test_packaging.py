"""Packaging: architectures/ and trainers/ at the repository root install as pu_nnunet.architectures
and pu_nnunet.trainers, in a wheel and in an editable install, without bare top-level modules."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# source folder -> the package path it installs as
MAPPED_FOLDERS = {"pu_nnunet": "pu_nnunet", "architectures": "pu_nnunet/architectures",
                  "trainers": "pu_nnunet/trainers"}
# a fresh interpreter's answer: where the trainer folder is, and whether bare modules import
PROBE = """
import importlib.util, os
from pu_nnunet.trainers import EXT_TRAINER_DIR
import pu_nnunet.architectures, pu_nnunet.trainers.pure_trainers
print(EXT_TRAINER_DIR)
print(os.path.isfile(os.path.join(EXT_TRAINER_DIR, "pu_nnunet_trainers.py")))
print(importlib.util.find_spec("trainers") is None, importlib.util.find_spec("architectures") is None)
"""


def _expected_modules() -> set[str]:
    expected = set()
    for folder, package_path in MAPPED_FOLDERS.items():
        for source in (REPO / folder).rglob("*.py"):
            relative = source.relative_to(REPO / folder)
            if folder == "pu_nnunet" and relative.parts[0] in ("architectures", "trainers"):
                continue
            expected.add(f"{package_path}/{relative.as_posix()}")
    return expected


def _probe(env_python: str, cwd: Path, pythonpath: str | None = None) -> list[str]:
    import os

    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    result = subprocess.run([env_python, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                            encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # build from a copy: a build/ folder left in the checkout can hold modules that moved away
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                "__pycache__", "pu_nnunet_demo", "benchmarks"))
    # --no-build-isolation: build with the environment's setuptools, no registry access needed
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(out), str(source)], capture_output=True, text=True, encoding="utf-8",
                            timeout=300)
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("pu_nnunet-*.whl")
    return built


def test_wheel_holds_every_module_under_pu_nnunet_only(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {n for n in names if n.endswith(".py")}
    missing = _expected_modules() - modules
    assert not missing, f"modules left out of the wheel (add their package to pyproject's packages): {missing}"
    assert "pu_nnunet/trainers/nnunet_ext/pu_nnunet_trainers.py" in modules
    assert "pu_nnunet/architectures/pu_residual_unet.py" in modules
    assert "pu_nnunet/trainers/pure_trainers.py" in modules
    top_level = {n.split("/")[0] for n in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"pu_nnunet"}


@pytest.mark.slow  # over 8 s on 2 cores: the full suite runs it, the quick lane does not
def test_installed_wheel_finds_trainer_folder_and_adds_no_bare_modules(wheel, tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                             "--target", str(site), str(wheel)], capture_output=True, text=True,
                            encoding="utf-8", timeout=300)
    assert result.returncode == 0, result.stderr
    assert not (site / "trainers").exists() and not (site / "architectures").exists()
    ext_dir, has_module, no_bare = _probe(sys.executable, cwd=tmp_path, pythonpath=str(site))[:3]
    assert Path(ext_dir) == site / "pu_nnunet" / "trainers" / "nnunet_ext"
    assert has_module == "True"
    assert no_bare == "True True"


@pytest.mark.slow  # over 8 s on 2 cores: the full suite runs it, the quick lane does not
def test_editable_install_maps_root_folders(tmp_path):
    # run outside the checkout, so nothing is imported from the working directory
    ext_dir, has_module, no_bare = _probe(sys.executable, cwd=tmp_path)[:3]
    assert Path(ext_dir) == REPO / "trainers" / "nnunet_ext"
    assert has_module == "True"
    assert no_bare == "True True"
    cli = subprocess.run([str(Path(sys.executable).parent / "pu-nnunet"), "trainer-path"], cwd=tmp_path,
                         capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert cli.returncode == 0 and Path(cli.stdout.strip()) == REPO / "trainers" / "nnunet_ext"


def test_checkpoint_import_paths_are_unchanged():
    # checkpoints name their trainer, and anything pickled names these modules: keep them stable
    from pu_nnunet.architectures import PUResidualEncoderUNet
    from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPURe, nnUNetTrainerPUReBaseline

    assert nnUNetTrainerPURe.__module__ == "pu_nnunet.trainers.pure_trainers"
    assert nnUNetTrainerPUReBaseline.__module__ == "pu_nnunet.trainers.pure_trainers"
    assert PUResidualEncoderUNet.__module__ == "pu_nnunet.architectures.pu_residual_unet"
