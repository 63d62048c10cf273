"""One writer per output (pu_nnunet/output_lock.py): every command that writes a folder or a file
holds its lock, and a second run into the same output is refused before any work, naming the
first run (pid, command, start time). The lock is the kernel's (flock), so a run killed with
SIGKILL leaves no stale lock.

On main before the lock (issue 30, class 3) two ``predict`` runs into one folder both ran; these
tests failed there (no pu_nnunet.output_lock, and the second run proceeded).
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pu_nnunet import cli
from pu_nnunet.output_lock import OutputLock, is_locked, lock_file_beside
from pu_nnunet.study.jobs import LOCK_FILE, run_lock
from pu_nnunet.study.errors import StudyError

# commands that write nothing, or (study) lock their folder themselves
NOT_OUTPUT_COMMANDS = {"trainer-path", "study"}


def _argv(command: str, tmp) -> list[str]:
    """A command line of each writing command; the inputs need not exist (the lock comes first)."""
    out = str(tmp / "out")
    return {
        "predict": ["predict", "-i", str(tmp / "in"), "-o", out, "-m", str(tmp / "model")],
        "evaluate": ["evaluate", str(tmp / "pred"), str(tmp / "ref"), "-o", out],
        "compare": ["compare", str(tmp / "a"), str(tmp / "b"), "-o", out],
        "robustness": ["robustness", "-m", f"A={tmp / 'model'}", "-i", str(tmp / "in"), "-r", str(tmp / "ref"),
                       "-o", out],
        "export-onnx": ["export-onnx", str(tmp / "model"), "-o", out + ".onnx"],
        "export-model": ["export-model", str(tmp / "model"), "-o", out + ".zip"],
        "transfer-weights": ["transfer-weights", str(tmp / "src.pth"), "--plans", str(tmp / "plans.json"), "-c", "2d",
                             "--to", "nnUNetTrainerPURe", "-o", out + ".pth"],
        "synth": ["synth", "ultrasound", "-d", "7"],
        "convert": ["convert", "busi", str(tmp / "download"), "-d", "8"],
        "demo": ["demo", "--workdir", out],
        "plans": ["plans", "-d", "9", "-o", "PUPlans"],
    }[command]


WRITING_COMMANDS = sorted(set(cli.COMMANDS) - NOT_OUTPUT_COMMANDS)


def test_every_command_but_the_listed_ones_declares_its_outputs():
    """The contract: a new command that writes is locked without code of its own, by declaring
    ``output_paths``; the list above names the exceptions."""
    import importlib

    declared = {name for name, module in cli.COMMANDS.items()
                if hasattr(importlib.import_module(module), "output_paths")}
    assert declared == set(WRITING_COMMANDS)


def _targets(argv: list[str]) -> list:
    args = cli.build_parser(cli.COMMANDS, only=argv[0]).parse_args(argv)
    return args._outputs(args)


@pytest.mark.parametrize("command", WRITING_COMMANDS)
def test_a_second_run_into_a_held_output_is_refused_naming_the_holder(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    (tmp_path / "preprocessed" / "Dataset009_Held").mkdir(parents=True)  # plans finds its dataset first
    argv = _argv(command, tmp_path)
    # the first output is held; a command writing several (plans) is refused on any one of them
    target, *others = _targets(argv)
    with OutputLock(lock_file_beside(target), target, command="pu-nnunet first run"):
        assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pu-nnunet {command}: error: ")
    assert "another run is writing here" in err
    assert f"pid {os.getpid()}" in err and "`pu-nnunet first run`" in err and "started 20" in err
    for path in (target, *others):
        assert not os.path.exists(path)  # refused before any work
        assert not lock_file_beside(path).exists()  # released with the lock


def test_a_released_lock_lets_the_next_run_in(tmp_path, capsys):
    argv = ["evaluate", str(tmp_path / "p"), str(tmp_path / "r"), "-o", str(tmp_path / "out")]
    with OutputLock(lock_file_beside(tmp_path / "out"), tmp_path / "out"):
        assert cli.main(argv) == 1
    assert "another run is writing here" in capsys.readouterr().err
    assert cli.main(argv) == 1  # past the lock: refused on its inputs now
    err = capsys.readouterr().err
    assert err.endswith(f"{tmp_path / 'r'}: reference folder not found\n")


def test_one_output_under_two_spellings_shares_one_lock(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    with OutputLock(lock_file_beside(tmp_path / "out"), tmp_path / "out"):
        assert cli.main(["evaluate", "p", "r", "-o", str(tmp_path / "link") + "/"]) == 1
    assert "another run is writing here" in capsys.readouterr().err


HOLDER = textwrap.dedent("""
    import sys, time
    from pu_nnunet.output_lock import locked_outputs
    with locked_outputs([sys.argv[1]], command="pu-nnunet predict -o held"):
        print("held", flush=True)
        time.sleep(120)
""")


def test_a_lock_held_by_another_process_is_refused_and_freed_by_its_death(tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_locked(lock_file_beside(out))
        assert cli.main(["compare", "a", "b", "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"pid {holder.pid} " in err and "`pu-nnunet predict -o held`" in err
        os.kill(holder.pid, signal.SIGKILL)  # no clean-up runs: the lock file stays, the lock does not
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert lock_file_beside(out).exists() and not is_locked(lock_file_beside(out))
    cli.main(["compare", "a", "b", "-o", str(out)])
    assert "another run is writing here" not in capsys.readouterr().err


def test_the_study_lock_is_the_same_mechanism_inside_the_study_folder(tmp_path):
    with run_lock(tmp_path):
        assert is_locked(tmp_path / LOCK_FILE)
        with pytest.raises(StudyError, match=rf"{tmp_path}: another run is writing here \(pid {os.getpid()} "):
            with run_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_FILE).exists() and not is_locked(tmp_path / LOCK_FILE)


def test_a_name_at_the_file_system_limit_gets_a_lock_name_that_fits(tmp_path):
    from pu_nnunet.output_lock import MAX_NAME_BYTES, lock_file_beside

    long_target = tmp_path / ("x" * 250)
    lock = lock_file_beside(long_target)
    assert lock.parent == tmp_path and len(lock.name.encode()) <= MAX_NAME_BYTES
    assert lock == lock_file_beside(long_target) != lock_file_beside(tmp_path / ("y" * 250))


def _dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


@pytest.mark.parametrize("command", ["evaluate", "export-onnx", "transfer-weights", "plans"])
def test_a_command_first_sweeps_the_temporaries_killed_runs_left_where_it_writes(command, tmp_path, monkeypatch,
                                                                                 capsys):
    """Issue 28: one temporary-name scheme, swept at start: where each command writes (inside an
    output folder, beside an output file), a dead process's temporaries of this machine go, with
    a warning; a live one's and another machine's (its PIDs mean nothing here) stay."""
    from pu_nnunet.user_files import PARTIAL_MARKER, _host_tag

    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    (tmp_path / "preprocessed" / "Dataset009_Held").mkdir(parents=True)
    argv = _argv(command, tmp_path)
    args = cli.build_parser(cli.COMMANDS, only=argv[0]).parse_args(argv)
    target = Path(_targets(argv)[0])
    folder = target.parent if args._output_files else target
    folder.mkdir(parents=True, exist_ok=True)
    dead = folder / f".x.json{PARTIAL_MARKER}{_dead_pid()}-{_host_tag()}-0123abcd"
    legacy = folder / f".y.nii.gz{PARTIAL_MARKER}{_dead_pid()}-0123abcd.nii.gz"  # PID-TOKEN, before hosts
    kept = [folder / f".x.json{PARTIAL_MARKER}{os.getpid()}-{_host_tag()}-0123abcd",
            folder / f".x.json{PARTIAL_MARKER}{_dead_pid()}-{'0' * 8 if _host_tag() != '0' * 8 else '1' * 8}-0123abcd"]
    for path in (dead, legacy, *kept):
        path.write_text("{")
    assert cli.main(argv) == 1  # the inputs do not exist: refused after the sweep
    err = capsys.readouterr().err
    assert not dead.exists() and not legacy.exists() and all(path.exists() for path in kept)
    assert f"pu-nnunet {command}: warning: {dead}: removed a temporary file left behind by an earlier run" in err
