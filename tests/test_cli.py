"""The ``pu-nnunet`` dispatcher and the one error wrapper around every subcommand: argument
errors, user and OS errors as one line on stderr, Ctrl-C and SIGTERM (also with worker pools)."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pu_nnunet import cli
from pu_nnunet.user_errors import EXIT_INTERRUPTED, EXIT_TERMINATED, UserInputError, run_command

PU_NNUNET = str(Path(sys.executable).parent / "pu-nnunet")


def test_no_command_and_unknown_command_are_argument_errors(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "the following arguments are required: COMMAND" in captured.err
    with pytest.raises(SystemExit) as stop:
        cli.main(["frobnicate"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'frobnicate'" in err and "evaluate" in err  # the full list of commands is shown


def test_demo_argument_errors_go_to_stderr(tmp_path, capsys):
    for argv, fragment in ((["demo", "--device", "tpu"], "argument --device: 'tpu' is not a device"),
                           (["demo", "--epochs", "3"], "unrecognized arguments: --epochs 3")):
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        captured = capsys.readouterr()
        assert stop.value.code == 2 and captured.out == "" and fragment in captured.err
    # a device nnU-Net's own commands cannot take: one line, before anything is written
    assert cli.main(["demo", "--device", "cuda:1", "--workdir", str(tmp_path / "demo")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("pu-nnunet demo: error: --device 'cuda:1': this command runs nnU-Net's own commands")
    assert not (tmp_path / "demo").exists()


def test_compare_refuses_two_runs_with_one_name(tmp_path, capsys):
    code = cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out"),
                     "--names", "A", "A"])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.err == "pu-nnunet compare: error: the two runs need different names, got 'A' twice\n"
    assert not (tmp_path / "out").exists()


@pytest.fixture
def command_module(tmp_path, monkeypatch):
    """A subcommand added to the dispatcher the way every real one is (module with HELP,
    add_arguments, run): it gets the error wrapper without code of its own."""
    (tmp_path / "failing_command.py").write_text(textwrap.dedent('''
        import errno, os
        from pu_nnunet.user_errors import UserInputError
        HELP = "fails the way it is told to"
        def add_arguments(parser):
            parser.add_argument("how")
        def run(args):
            if args.how == "user":
                raise UserInputError("/data/x.json: not what it should be")
            if args.how == "disk-full":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/metrics.json")
            if args.how == "too-long":
                open("/tmp/" + "n" * 300, "w")
            if args.how == "interrupt":
                raise KeyboardInterrupt
            if args.how == "bug":
                raise ZeroDivisionError("a bug keeps its traceback")
            return 0
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "failing", "failing_command")
    monkeypatch.delenv("PU_NNUNET_DEBUG", raising=False)


@pytest.mark.parametrize("how, code, expected", [
    ("user", 1, "pu-nnunet failing: error: /data/x.json: not what it should be\n"),
    ("disk-full", 1, "pu-nnunet failing: error: /data/out/metrics.json: no space left on the device\n"),
    ("too-long", 1, f"pu-nnunet failing: error: /tmp/{'n' * 300}: file name too long\n"),
    ("interrupt", EXIT_INTERRUPTED, "pu-nnunet failing: interrupted (Ctrl-C); partial output was removed\n"),
])
def test_every_subcommand_reports_errors_as_one_line(command_module, capsys, how, code, expected):
    assert cli.main(["failing", how]) == code
    captured = capsys.readouterr()
    assert captured.err == expected and captured.out == ""


def test_debug_shows_the_traceback_and_bugs_keep_theirs(command_module, capsys):
    assert cli.main(["failing", "user", "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("pu-nnunet failing: error: /data/x.json: not what it should be\n")
    with pytest.raises(ZeroDivisionError):
        cli.main(["failing", "bug"])


def test_warnings_become_one_line_each(capsys):
    import warnings

    def warn_twice():
        warnings.warn("first thing to know")
        warnings.warn("first thing to know")  # shown each time: the user asked for this run
        warnings.warn("a library's note to its developers", FutureWarning)
        return 0

    assert run_command("x", warn_twice) == 0
    assert capsys.readouterr().err == "pu-nnunet x: warning: first thing to know\n" * 2


POOL_SCRIPT = '''
import os, signal, sys, time
from pu_nnunet.user_errors import run_command, worker_pool

def slow(index):
    os.write(1, f"working {os.getpid()}\\n".encode())  # one write: the two workers' lines never interleave
    time.sleep(60)

def job():
    with worker_pool(2) as pool:
        pool.map(slow, range(2))

if __name__ == "__main__":
    # as in a terminal: a test runner started in the background hands SIGINT down ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(run_command("pool", job))
'''


@pytest.mark.parametrize("how", ["ctrl-c to the process group", "sigterm to the main process"])
def test_interrupting_a_worker_pool_prints_one_line(tmp_path, how):
    """Ctrl-C reaches every process of the terminal's group: the workers must leave it to the
    parent (no traceback per worker); SIGTERM reaches the parent only, which ends the pool."""
    script = tmp_path / "pool_job.py"
    script.write_text(POOL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert all(line.startswith("working ") for line in lines), (lines, proc.poll(), proc.stderr.read())
        workers = [int(line.split()[1]) for line in lines]
        if how.startswith("ctrl-c"):
            # the workers first, with time to print what they would: a terminal's Ctrl-C reaches
            # them as it reaches the parent, and the parent's clean-up must not race them
            for worker in workers:
                os.kill(worker, signal.SIGINT)
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    expected = "Ctrl-C" if how.startswith("ctrl-c") else "SIGTERM"
    assert proc.returncode == (EXIT_INTERRUPTED if expected == "Ctrl-C" else EXIT_TERMINATED)
    assert err == f"pu-nnunet pool: interrupted ({expected}); partial output was removed\n"


def test_os_errors_without_a_file_name_get_the_path_being_written(tmp_path, capsys):
    from pu_nnunet.user_errors import naming_the_path

    def write_on_a_full_disk():
        with naming_the_path(tmp_path / "out"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    assert run_command("x", write_on_a_full_disk) == 1
    assert capsys.readouterr().err == f"pu-nnunet x: error: {tmp_path / 'out'}: no space left on the device\n"


def test_user_errors_subclass_the_one_base():
    from pu_nnunet.datasets.errors import DatasetError
    from pu_nnunet.evaluation.errors import EvaluationError
    from pu_nnunet.inference.errors import PredictionError

    assert all(issubclass(error, UserInputError) for error in (DatasetError, EvaluationError, PredictionError))


def _parsed(*argv):
    from pu_nnunet.cli import COMMANDS, build_parser

    return build_parser(COMMANDS, only=argv[0]).parse_args(list(argv))


def test_nnunets_spellings_are_accepted_as_aliases():
    """Issue 28: a user of nnUNetv2_predict/train types -chk, -device, -tr, -f, --continue_prediction, --c."""
    predict = ["predict", "-i", "in", "-o", "out", "-m", "model"]
    args = _parsed(*predict, "-chk", "checkpoint_best.pth", "-device", "cpu", "--continue_prediction")
    assert (args.chk, args.device, args.continue_prediction) == ("checkpoint_best.pth", "cpu", True)
    assert _parsed(*predict, "--c").continue_prediction is True
    study = _parsed("study", "run", "-o", "s", "-tr", "nnUNetTrainerPURe", "nnUNetTrainerPUReBaseline", "-f", "0", "1")
    assert (study.trainers, study.folds) == (["nnUNetTrainerPURe", "nnUNetTrainerPUReBaseline"], [0, 1])
    assert _parsed("transfer-weights", "src.pth", "--plans", "p.json", "-c", "2d", "-tr", "nnUNetTrainerPURe", "-o",
                   "o.pth").trainer == "nnUNetTrainerPURe"
    assert _parsed("evaluate", "pred", "ref", "-o", "out", "-device", "cpu").device == "cpu"


def test_an_unknown_argument_prints_the_subcommands_usage(capsys):
    from pu_nnunet.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["study", "run", "-o", "s", "--bogus"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert err.startswith("usage: pu-nnunet study run ") and err.rstrip().endswith(
        "pu-nnunet study run: error: unrecognized arguments: --bogus"), err
    with pytest.raises(SystemExit):
        main(["evaluate", "pred", "ref", "-o", "out", "--xx"])
    assert capsys.readouterr().err.rstrip().endswith("pu-nnunet evaluate: error: unrecognized arguments: --xx")
