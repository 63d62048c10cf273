"""Save-on-signal for nnU-Net trainers: a time limit or a preemption costs at most one epoch.

nnU-Net 2.8.1 (the newest release, checked 2026-12) installs no signal handler: SIGTERM kills
``nnUNetv2_train`` at once and ``checkpoint_latest.pth`` is only written every ``save_every``
(50) epochs. :class:`SaveOnSignal` (a mixin in front of ``nnUNetTrainer``) makes SIGUSR1,
SIGUSR2 (SLURM's ``--signal=...@SECONDS`` warning; submitit uses SIGUSR2), SIGTERM and SIGINT stop
training at the next iteration boundary and write ``checkpoint_latest.pth`` with nnU-Net's own
``save_checkpoint`` (network, optimizer, grad scaler, logger, epoch: what ``--c`` loads), then
exit with :data:`EXIT_SAVED_ON_SIGNAL`.

Mid-epoch, not epoch end: the checkpoint holds the weights and optimizer state at the iteration
the signal interrupted, and the epoch number of the epoch in progress. nnU-Net's ``--c`` restarts
that epoch from its first iteration (its learning rate is set per epoch), so at most one epoch's
iterations are replayed and no weight update is thrown away. Finishing the epoch instead would
need up to a whole epoch plus validation inside the warning time (on a large 3D dataset several
minutes), longer than the usual 1-2 minute warning. The logger's entries of the unfinished epoch
are dropped, so the restarted epoch logs as a normal one.

Start-up and the final validation are covered too. Under ``nnUNetv2_train`` the handlers are set
when the trainer is constructed (only the interpreter's and nnU-Net's imports before it keep the
default action): a signal before training began exits with the same code, nothing saved, nothing
changed. nnU-Net's final validation (``perform_actual_validation``, after ``run_training``) is
marked incomplete while it runs (pu_nnunet/nnunet_validation.py); a signal ends it at once, the
marker stays, so no reader takes the half-written folder for a finished one, and
``nnUNetv2_train ... --val`` does it again.

Every checkpoint nnU-Net writes through this trainer (latest, best, final) goes to a temporary
file first and is renamed into place: a second signal, or SIGKILL, while writing leaves the
previous file intact. Under DDP every rank agrees at each iteration whether any rank was
signalled (one all-reduce of a flag), so all ranks stop at the same iteration; only rank 0
writes (nnU-Net's ``save_checkpoint`` checks the rank) and every rank exits with the code.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Optional

# sysexits.h EX_TEMPFAIL ("temporary failure, the user is invited to retry"): distinct from 0,
# from nnU-Net's errors (1) and from death by a signal (128 + N); study executors requeue on it
EXIT_SAVED_ON_SIGNAL = 75
# SIGINT too: Ctrl-C on nnUNetv2_train saves as well; a second Ctrl-C aborts at once (the
# atomic write keeps the previous checkpoint whole)
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
# how long to wait for a killed data-augmentation worker to be reaped
WORKER_JOIN_S = 5
# the epoch-end checkpoint nnU-Net resumes from (nnUNetv2_train --c loads it first after _final)
LATEST_CHECKPOINT = "checkpoint_latest.pth"


def started_by_nnunet_train() -> bool:
    """Whether this process is nnU-Net's training command (or a DDP worker it spawned)."""
    return os.path.basename(sys.argv[0] if sys.argv else "").startswith(("nnUNetv2_train", "run_training"))


class TrainingStopped(BaseException):
    """Raised at an iteration boundary after a stop signal (a BaseException: nothing in nnU-Net's
    loop may swallow it)."""


def atomic_torch_save(save, filename: str) -> None:
    """Calls ``save(temporary_name)`` and renames the result to ``filename``: readers (and a
    resumed run) see the old file or the complete new one, never half a file."""
    from pu_nnunet.user_files import temporaries_of, temporary_name

    partial = str(temporary_name(filename))  # the package's one scheme: .NAME.partial-PID-HOST-TOKEN
    try:
        save(partial)
        if not os.path.isfile(partial):  # not rank 0, or checkpointing disabled: nothing written
            return
        for stale in temporaries_of(filename):
            # left by a writer killed mid-write (SIGKILL runs no cleanup), here or on the node that
            # ran this training before a requeue: one training at a time writes a fold's checkpoints
            if stale.name != os.path.basename(partial):
                stale.unlink(missing_ok=True)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())  # on disk before the rename makes it the checkpoint
        os.replace(partial, filename)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


class SaveOnSignal:
    """Mixin for ``nnUNetTrainer`` subclasses (``class T(SaveOnSignal, nnUNetTrainer)``)."""

    _stop_signal: Optional[int] = None
    _handler_owner_pid: Optional[int] = None
    _iteration_in_epoch = 0
    _handlers_from_start = False
    _in_final_validation = False

    def __init__(self, *args, **kwargs):
        # nnUNetv2_train: from the trainer's construction on (start-up, checkpoint loading, the
        # final validation), not only inside run_training; a signal in start-up killed it
        # (SIGUSR2: exit 140). Elsewhere (a trainer built inside another program, a test) the
        # handlers are set around run_training only, so that program keeps its own
        if started_by_nnunet_train() and threading.current_thread() is threading.main_thread():
            self._handler_owner_pid = os.getpid()
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._on_stop_signal)
            self._handlers_from_start = True
        super().__init__(*args, **kwargs)

    # --- the signal handler: only records the signal (safe at any point, also while saving) ---
    def _on_stop_signal(self, signum, frame) -> None:
        if os.getpid() != self._handler_owner_pid:
            # a forked data-augmentation worker inherited the handler. A scheduler signals every
            # process of the job at once: the worker must outlive the training's last iteration
            # (the training process stops its workers after saving), but not its training
            # process: an orphaned worker keeps the default behaviour
            if signum in (signal.SIGTERM, signal.SIGINT) and os.getppid() != self._handler_owner_pid:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        if self._stop_signal is None:
            self._stop_signal = signum
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self._in_final_validation:
            # nnU-Net's validation loop has no hook per case; what it wrote is marked incomplete
            self._in_final_validation = False
            raise TrainingStopped("the final validation")

    @contextmanager
    def _stop_signals_handled(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        self._handler_owner_pid = os.getpid()
        if self._handlers_from_start:
            previous = {}  # set at construction, kept until the process ends
        else:
            previous = {signum: signal.signal(signum, self._on_stop_signal) for signum in STOP_SIGNALS}
        try:
            yield
        except SystemExit:
            # stopping after the save: more signals of a burst (a scheduler, a user pressing
            # Ctrl-C twice) must not kill the process on its way out and replace exit code 75
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
            raise
        else:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop_requested(self) -> bool:
        asked = self._stop_signal is not None
        if getattr(self, "is_ddp", False):
            import torch  # here: the module stays cheap to import for the study driver

            # every rank must leave the loop at the same iteration, or the others wait forever
            # in the next collective; one tiny all-reduce per iteration
            flag = torch.tensor([1 if asked else 0], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            asked = bool(flag.item())
        return asked

    def _check_stop(self, where: str) -> None:
        if self._stop_requested():
            raise TrainingStopped(where)

    # --- nnU-Net's hooks ---------------------------------------------------------------------
    def on_epoch_start(self):
        self._iteration_in_epoch = 0
        self._check_stop("before the epoch")
        super().on_epoch_start()

    def train_step(self, batch: dict) -> dict:
        self._check_stop("training")
        self._iteration_in_epoch += 1
        return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        self._check_stop("validation")
        return super().validation_step(batch)

    def save_checkpoint(self, filename: str) -> None:
        atomic_torch_save(super().save_checkpoint, filename)

    def run_training(self):
        with self._stop_signals_handled():
            if self._stop_requested():  # during start-up: nothing trained in this process, nothing to save
                self._exit_stopped("before training began (start-up or checkpoint loading); nothing to save, "
                                   "the checkpoints on disk are as they were; run the same command again")
            try:
                super().run_training()
            except TrainingStopped as stopped:
                self._save_stopped_epoch(str(stopped))
                self._stop_data_workers()
                # the checkpoint is on disk: spare the exit the interpreter's final garbage
                # collection over torch's objects (about 10 s of a loaded 2-core machine)
                gc.freeze()
                sys.exit(EXIT_SAVED_ON_SIGNAL)

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation, marked incomplete until its summary.json is written
        (pu_nnunet/nnunet_validation.py); a stop signal ends it at once with the exit code of a
        stop, and ``nnUNetv2_train ... --val`` (or ``--c``) does it again."""
        from batchgenerators.utilities.file_and_folder_operations import join

        from pu_nnunet.nnunet_validation import mark_complete, mark_incomplete

        folder = join(self.output_folder, "validation")
        writer = getattr(self, "local_rank", 0) == 0
        with self._stop_signals_handled():
            if writer:
                mark_incomplete(folder, "written by nnU-Net's final validation; removed once summary.json is written")
            try:
                if self._stop_requested():
                    raise TrainingStopped("before the final validation")
                self._in_final_validation = True
                super().perform_actual_validation(save_probabilities)
            except TrainingStopped as stopped:
                self._in_final_validation = False
                self._stop_data_workers()
                self._exit_stopped(f"in {stopped}; checkpoint_final.pth is whole, {folder} is incomplete (marked); "
                                   "finish it with nnUNetv2_train ... --val")
            finally:
                self._in_final_validation = False
            if writer:
                mark_complete(folder)

    def _exit_stopped(self, what: str) -> None:
        name = signal.Signals(self._stop_signal).name if self._stop_signal else "a signal on another rank"
        self.print_to_log_file(f"{name}: stopped {what}; exit code {EXIT_SAVED_ON_SIGNAL}", also_print_to_console=True)
        gc.freeze()  # as after a save: spare the exit the final garbage collection
        sys.exit(EXIT_SAVED_ON_SIGNAL)

    def _stop_data_workers(self) -> None:
        """Ends nnU-Net's data-augmentation worker processes (they ignore the stop signals while
        this process lives, see _on_stop_signal); they hold nothing to save."""
        for loader in (getattr(self, "dataloader_train", None), getattr(self, "dataloader_val", None)):
            processes = list(getattr(loader, "_processes", None) or [])
            if hasattr(loader, "_finish"):
                # batchgenerators' own shutdown (as nnU-Net's on_train_end): the workers see its
                # abort event and exit, its result thread ends without "workers no longer alive"
                loader._finish(timeout=WORKER_JOIN_S)
            for process in processes:
                if process.is_alive():
                    process.kill()
                    process.join(timeout=WORKER_JOIN_S)

    def _save_stopped_epoch(self, where: str) -> None:
        from batchgenerators.utilities.file_and_folder_operations import join

        epoch = self.current_epoch
        name = signal.Signals(self._stop_signal).name if self._stop_signal else "a signal on another rank"
        # the unfinished epoch's log entries go, so the restarted epoch logs as a normal one
        for values in self.logger.get_checkpoint().values():
            if isinstance(values, list):
                del values[epoch:]
        # nnU-Net stores current_epoch + 1 (the next epoch to run): store the epoch in progress
        self.current_epoch = epoch - 1
        try:
            self.save_checkpoint(join(self.output_folder, LATEST_CHECKPOINT))
        finally:
            self.current_epoch = epoch
        self.print_to_log_file(
            f"{name}: stopped in epoch {epoch} ({where}) after {self._iteration_in_epoch} of "
            f"{self.num_iterations_per_epoch} training iterations; saved {LATEST_CHECKPOINT}; resume with "
            f"nnUNetv2_train ... --c (epoch {epoch} restarts); exit code {EXIT_SAVED_ON_SIGNAL}",
            also_print_to_console=True)
