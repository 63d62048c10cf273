"""Trainers that save on a signal (trainers/preemption.py).

End to end (slow): ``nnUNetv2_train -tr nnUNetTrainerPURe_tiny`` on the tiny CT dataset of
tests/conftest.py, stopped in epoch 1 by SIGUSR1 (SLURM's warning) or by SIGTERM followed by a
burst of signals while it writes its checkpoint; the exit code, the checkpoint's epoch and log,
what ``--c`` loads (tensor by tensor) and the resumed run to its end. Fast: the atomic write
survives SIGKILL in the middle of writing.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pu_nnunet.trainers.preemption import EXIT_SAVED_ON_SIGNAL, atomic_torch_save
from pu_nnunet.user_files import PARTIAL_MARKER, _host_tag, stale_partial_entries

HERE = Path(__file__).parent
TRAINER = "nnUNetTrainerPURe_tiny"
# "within seconds" on a loaded 2-core machine: the iteration in progress, the save, the exit
STOP_WITHIN_S = 60


def _train(env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).parent / "nnUNetv2_train"), "990", "2d", "0", "-tr", TRAINER,
                             "-device", "cpu", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, encoding="utf-8")


def _stop_in_epoch_1(env: dict, first: int, burst: tuple = ()) -> dict:
    """Trains until epoch 1 has begun, sends ``first``; then ``burst`` signals every few ms until
    the process exits (they arrive while it saves). Returns exit code, output and timing."""
    proc = _train(env)
    output, sent = [], None
    try:
        for line in proc.stdout:
            output.append(line)
            if sent is None and "Epoch 1" in line:
                time.sleep(0.5)  # into the epoch's iterations
                proc.send_signal(first)
                sent = time.monotonic()
                break
        while burst and proc.poll() is None:
            for signum in burst:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    break
            time.sleep(0.005)
        output.extend(proc.stdout)
        code = proc.wait(timeout=STOP_WITHIN_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sent is not None, "training did not reach epoch 1:\n" + "".join(output)[-3000:]
    return dict(code=code, output="".join(output), seconds=time.monotonic() - sent)


def _resumed_state(env: dict) -> dict:
    result = subprocess.run([sys.executable, str(HERE / "resumed_state.py"), "990", "2d", "0", TRAINER], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fold(env: dict) -> Path:
    return Path(env["nnUNet_results"]) / "Dataset990_SynthCT" / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"


@pytest.fixture
def train_env(tiny_trained_model, tmp_path):
    # the tiny model's raw and preprocessed data; a results folder of this test's own
    return dict(tiny_trained_model["env"], nnUNet_results=str(tmp_path / "results"), nnUNet_n_proc_DA="0",
                PU_NNUNET_CPU_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _check_stopped_run(stopped: dict, env: dict, signal_name: str) -> dict:
    assert stopped["code"] == EXIT_SAVED_ON_SIGNAL, stopped["output"][-3000:]
    assert stopped["seconds"] < STOP_WITHIN_S
    # the first signal handled is recorded (several pending ones are handled in signal-number order)
    assert re.search(rf"({signal_name}): stopped in epoch 1", stopped["output"]), stopped["output"][-2000:]
    fold = _fold(env)
    assert not (fold / "checkpoint_final.pth").exists()
    assert not [p.name for p in fold.iterdir() if PARTIAL_MARKER in p.name]  # no temporary file left
    saved = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert saved["current_epoch"] == 1 and saved["trainer_name"] == TRAINER
    # the logger holds epoch 0 only: the restarted epoch 1 logs as a normal one
    assert {len(v) for v in saved["logging"].values()} == {1}
    # the weights are the mid-epoch ones, not epoch 0's (checkpoint_best.pth) unless no
    # iteration of epoch 1 had run yet
    best = torch.load(fold / "checkpoint_best.pth", map_location="cpu", weights_only=False)
    done = int(stopped["output"].split("after ")[1].split(" of ")[0])
    same = all(torch.equal(best["network_weights"][k], v) for k, v in saved["network_weights"].items())
    assert same == (done == 0)
    state = _resumed_state(env)
    assert state["start_epoch"] == 1 and state["saved_epoch"] == 1
    assert state["n_network_tensors"] > 0 and state["n_optimizer_states"] > 0
    assert state["differences"] == []
    print(f"\n{signal_name.split('|')[0]}: exit {stopped['code']} {stopped['seconds']:.1f} s after the signal; "
          f"{done} of 10 iterations of epoch 1 done, replayed on resume (epochs lost: {done / 10:.1f})")
    return state


@pytest.mark.slow
def test_sigusr1_mid_epoch_saves_the_epoch_and_resume_finishes(train_env):
    stopped = _stop_in_epoch_1(train_env, signal.SIGUSR1)
    _check_stopped_run(stopped, train_env, "SIGUSR1")
    resumed = _train(train_env, "--c")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    assert "Epoch 1" in output and "Epoch 0\n" not in output  # continued at epoch 1
    final = torch.load(_fold(train_env) / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 2 and {len(v) for v in final["logging"].values()} == {2}
    assert not (_fold(train_env) / "checkpoint_latest.pth").exists()  # nnU-Net removes it at the end
    # the stability record of the stopped epoch's checkpoint is continued, not restarted
    stability = json.loads((_fold(train_env) / "training_stability.json").read_text())
    assert (stability["epochs"], stability["steps"], stability["record_restarted_at_epoch"]) == (2, 20, None)


@pytest.mark.slow
def test_sigterm_then_signals_while_saving_leave_a_whole_checkpoint(train_env):
    stopped = _stop_in_epoch_1(train_env, signal.SIGTERM, burst=(signal.SIGUSR2, signal.SIGTERM, signal.SIGUSR1))
    _check_stopped_run(stopped, train_env, "SIGTERM|SIGUSR1|SIGUSR2")


def _write_slowly_and_get_killed(path: str, ready: str) -> None:
    """Child process: starts writing a large checkpoint atomically; the parent kills it mid-write."""
    def save(name):
        torch.save({"weights": torch.ones(64 * 2**20 // 4)}, name)  # 64 MiB, not yet renamed
        Path(ready).touch()
        time.sleep(60)  # still inside the save when the parent's SIGKILL arrives

    atomic_torch_save(save, path)


def test_an_atomic_checkpoint_survives_sigkill_while_writing(tmp_path):
    import multiprocessing

    path, ready = tmp_path / "checkpoint_latest.pth", tmp_path / "ready"
    torch.save({"weights": torch.zeros(3)}, path)
    proc = multiprocessing.get_context("spawn").Process(target=_write_slowly_and_get_killed,
                                                        args=(str(path), str(ready)))
    proc.start()
    deadline = time.monotonic() + 120
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert torch.equal(torch.load(path)["weights"], torch.zeros(3))  # the previous checkpoint, whole
    # the killed writer's, named by the package's one scheme (so every sweep knows it)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(f".checkpoint_latest.pth{PARTIAL_MARKER}{proc.pid}-{_host_tag()}-")
    assert stale_partial_entries(tmp_path) == [tmp_path / leftovers[0]]
    # the next write replaces it, removes the dead writer's partial file and leaves none of its own
    atomic_torch_save(lambda name: torch.save({"weights": torch.ones(2)}, name), str(path))
    assert torch.equal(torch.load(path)["weights"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.pth", "ready"]


@pytest.mark.slow
def test_ddp_ranks_stop_at_the_same_iteration_when_one_is_signalled(tmp_path):
    result = subprocess.run([sys.executable, str(HERE / "ddp_stop_agreement.py"), str(tmp_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["stopped_at"] for r in ranks] == [3, 3]  # the iteration rank 1 was signalled before
    assert ranks[0]["own_signal"] is None and ranks[1]["own_signal"] == signal.SIGUSR1


# --- outside the epochs (issue 30, class 5): start-up and nnU-Net's final validation ---------
# On main a signal there took the default action: SIGUSR2 in start-up exit 140, SIGTERM in the
# final validation exit 143 with a half-written validation folder that readers took as finished.

def _signal_on_line(command: list, env: dict, line_start: str, signum: int) -> tuple[int, str]:
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8")
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if line_start in line:
                proc.send_signal(signum)
                break
        output.extend(proc.stdout)
        code = proc.wait(timeout=STOP_WITHIN_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, "".join(output)


@pytest.mark.slow
def test_a_signal_in_start_up_exits_with_the_stop_code_and_writes_nothing(train_env):
    # "Using device" is printed while the trainer is constructed, before anything is trained
    code, output = _signal_on_line([str(Path(sys.executable).parent / "nnUNetv2_train"), "990", "2d", "0", "-tr",
                                    TRAINER, "-device", "cpu"], train_env, "Using device", signal.SIGUSR2)
    assert code == EXIT_SAVED_ON_SIGNAL, output[-3000:]
    assert "SIGUSR2: stopped before training began" in output
    assert not list(_fold(train_env).glob("checkpoint_*.pth"))


@pytest.mark.slow
def test_a_signal_in_the_final_validation_leaves_it_marked_and_val_finishes_it(tiny_trained_model, train_env,
                                                                               capsys):
    import shutil

    from pu_nnunet.cli import main
    from pu_nnunet.nnunet_validation import INCOMPLETE_MARKER

    fold = _fold(train_env)
    shutil.copytree(tiny_trained_model["fold"].parent, fold.parent)  # a finished model, its summary.json too
    validation = fold / "validation"
    assert (validation / "summary.json").is_file() and not (validation / INCOMPLETE_MARKER).exists()
    command = [str(Path(sys.executable).parent / "nnUNetv2_train"), "990", "2d", "0", "-tr", TRAINER, "-device",
               "cpu", "--val"]
    code, output = _signal_on_line(command, train_env, "predicting", signal.SIGTERM)
    assert code == EXIT_SAVED_ON_SIGNAL, output[-3000:]
    assert "SIGTERM: stopped in the final validation; checkpoint_final.pth is whole" in output
    assert (validation / INCOMPLETE_MARKER).is_file()  # the earlier summary.json stays, but is not taken
    labels = tiny_trained_model["dataset"] / "labelsTr"
    assert main(["evaluate", str(validation), str(labels), "-o", str(train_env["nnUNet_results"]) + "/eval"]) == 1
    assert "nnU-Net's final validation was stopped part-way" in capsys.readouterr().err
    finished = subprocess.run(command, env=train_env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:]
    assert (validation / "summary.json").is_file() and not (validation / INCOMPLETE_MARKER).exists()
