"""``pu-nnunet trainer-path``: the folder for nnUNet_extTrainer, in which nnU-Net's own lookup
finds this package's trainer classes."""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pu_nnunet.cli import main
from pu_nnunet.trainers import EXT_TRAINER_DIR, with_trainer_folder


def test_prints_the_folder_where_nnunet_finds_the_package_trainers(capsys):
    assert main(["trainer-path"]) == 0
    printed = capsys.readouterr().out
    assert printed == EXT_TRAINER_DIR + "\n"
    folder = Path(printed.strip())
    # nnU-Net imports every module there at each lookup: only the re-export module
    assert folder.is_absolute() and [p.name for p in folder.glob("*.py")] == ["pu_nnunet_trainers.py"]

    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPURe

    # the call nnunetv2.utilities.find_objects makes for each nnUNet_extTrainer folder (its walk
    # of nnU-Net's own trainers first costs ~30 s here; the end-to-end tests run all of it)
    with contextlib.redirect_stdout(io.StringIO()):
        found = recursive_find_python_class(str(folder), "nnUNetTrainerPURe", None, base_folder=str(folder),
                                            verbose=False, cleanup_imports_from_base_folder=True)
    assert found is nnUNetTrainerPURe  # the package's own class, not a second copy


def test_answers_without_importing_torch():
    code = ("import sys; from pu_nnunet.cli import main; code = main(['trainer-path']); "
            "sys.exit(3 if 'torch' in sys.modules else code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8")
    assert (done.returncode, done.stdout) == (0, EXT_TRAINER_DIR + "\n"), done.stderr


def test_takes_no_arguments(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["trainer-path", "extra"])
    assert caught.value.code == 2
    assert "unrecognized arguments: extra" in capsys.readouterr().err


@pytest.mark.parametrize("current, expected", [
    (None, [EXT_TRAINER_DIR]),
    ("", [EXT_TRAINER_DIR]),
    (os.pathsep.join(["/a", "/b"]), ["/a", "/b", EXT_TRAINER_DIR]),
    (os.pathsep.join(["/a", EXT_TRAINER_DIR, ""]), ["/a", EXT_TRAINER_DIR]),
])
def test_with_trainer_folder_keeps_the_users_folders_first(current, expected):
    assert with_trainer_folder(current).split(os.pathsep) == expected


def test_without_the_package_nnunet_reports_what_to_install():
    """A Python where pu_nnunet cannot be imported (the variable set, the package not installed):
    nnU-Net's lookup in the folder stops with one line naming `pip install pu-nnunet`, not with a
    bare ModuleNotFoundError."""
    code = ("import sys; sys.modules['pu_nnunet'] = None\n"  # every `import pu_nnunet` now fails
            "from nnunetv2.utilities.find_class_by_name import recursive_find_python_class\n"
            f"recursive_find_python_class({EXT_TRAINER_DIR!r}, 'nnUNetTrainerPURe', None, "
            f"base_folder={EXT_TRAINER_DIR!r}, cleanup_imports_from_base_folder=True)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8")
    assert done.returncode == 1
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: ") and "run `pip install pu-nnunet`" in last_line, done.stderr
    assert "ModuleNotFoundError" not in done.stderr
