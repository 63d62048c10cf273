"""Training stability, measured per run: non-finite losses and gradients, gradient-norm spikes,
skipped steps and the final loss, in ``fold_F/training_stability.json``.

Stable training is what PU-UNet's smooth positivity mapping and log-domain clipping are for, so
each run records whether it was: :class:`RecordsStability` (a mixin in front of
``nnUNetTrainer``) keeps the gradient norm nnU-Net's ``clip_grad_norm_`` already computes each
step (nnU-Net discards it) as a device tensor, so a step costs no host synchronisation beyond
nnU-Net's own ``loss.cpu()``; the epoch's norms come to the host once, at the epoch's end.

Counted per step:
- a non-finite loss;
- a non-finite gradient norm (some gradient is NaN or Inf). Under nnU-Net's GradScaler (CUDA,
  fp16 autocast) ``scaler.step`` then skips the update: a *skipped step*. Without a scaler (CPU,
  MPS) nnU-Net applies it: an *applied non-finite step*, after which the weights are NaN;
- a *spike*: a finite norm above :data:`SPIKE_FACTOR` times the median of the previous
  :data:`SPIKE_WINDOW` finite norms (from :data:`SPIKE_MIN_HISTORY` of them on);
- a *clipped step*: a norm above nnU-Net's clipping bound (:data:`NNUNET_CLIP_NORM`).

The file is written (atomically) with every checkpoint and at the end of training; a run resumed
with ``--c`` continues the counts of the checkpoint it resumes from.

Reduced precision on a CPU: nnU-Net trains under fp16 autocast (with a GradScaler) on CUDA and in
float32 elsewhere. ``PU_NNUNET_CPU_AUTOCAST=bf16`` runs the training steps on a CPU under bfloat16
autocast (CPUs have no fp16 autocast for convolutions; bf16 has fp32's range, so no scaler), the
closest a CPU gets to nnU-Net's GPU path for asking whether a PU variant diverges in low
precision; validation stays float32. The record says which (``autocast``).
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional

import numpy as np

from pu_nnunet.user_errors import UserInputError
from pu_nnunet.user_files import read_user_json

STABILITY_FILE = "training_stability.json"
STABILITY_FORMAT = "pu-nnunet-training-stability/1"
# a spike: a gradient norm more than 10x the running median (a loss spike in the usual sense
# moves the norm by an order of magnitude; ordinary batch-to-batch noise stays within ~3x)
SPIKE_FACTOR = 10.0
# running median over the last 100 finite steps (under half an nnU-Net epoch of 250 iterations)
SPIKE_WINDOW = 100
# the first steps of a run set the scale: no spike is called before 10 finite norms are known
SPIKE_MIN_HISTORY = 10
# nnUNetTrainer.train_step: torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
NNUNET_CLIP_NORM = 12.0
CPU_AUTOCAST_VARIABLE = "PU_NNUNET_CPU_AUTOCAST"
CPU_AUTOCAST_CHOICES = ("bf16",)


def cpu_autocast_dtype() -> Optional[str]:
    """``PU_NNUNET_CPU_AUTOCAST``: None (unset or empty) or "bf16"; anything else is refused."""
    value = os.environ.get(CPU_AUTOCAST_VARIABLE, "").strip().lower()
    if not value:
        return None
    if value not in CPU_AUTOCAST_CHOICES:
        raise ValueError(f"{CPU_AUTOCAST_VARIABLE}={value!r}: the CPU autocast can only be "
                         f"{', '.join(CPU_AUTOCAST_CHOICES)} (or unset for float32)")
    return value


def autocast_description(device_type: str) -> str:
    """What a training step runs under, as the record states it."""
    if device_type == "cuda":
        return "fp16 autocast (CUDA, nnU-Net's)"
    return "bf16 autocast (CPU)" if device_type == "cpu" and cpu_autocast_dtype() else "none (float32)"


class StabilityRecord:
    """The counts of one run, fed one epoch at a time (losses and gradient norms per step)."""

    def __init__(self, grad_scaler: bool):
        self.grad_scaler = grad_scaler
        self.epochs = self.steps = 0
        self.nonfinite_losses = self.nonfinite_grad_steps = self.spikes = self.clipped_steps = 0
        self.first_nonfinite_step: Optional[int] = None
        self.max_grad_norm: Optional[float] = None
        self.history: list[float] = []  # the last SPIKE_WINDOW finite norms
        self.epoch_loss: list[Optional[float]] = []  # mean of the finite step losses
        self.epoch_median_grad_norm: list[Optional[float]] = []
        self.last_loss: Optional[float] = None

    def add_epoch(self, losses: np.ndarray, grad_norms: np.ndarray) -> None:
        losses, grad_norms = np.asarray(losses, float).ravel(), np.asarray(grad_norms, float).ravel()
        if losses.shape != grad_norms.shape:
            raise ValueError(f"{losses.size} losses but {grad_norms.size} gradient norms in epoch {self.epochs}")
        for loss, norm in zip(losses.tolist(), grad_norms.tolist()):  # Python floats: JSON-ready
            finite_loss, finite_norm = math.isfinite(loss), math.isfinite(norm)
            self.nonfinite_losses += int(not finite_loss)
            self.nonfinite_grad_steps += int(not finite_norm)
            if (not finite_loss or not finite_norm) and self.first_nonfinite_step is None:
                self.first_nonfinite_step = self.steps
            if finite_norm:
                if len(self.history) >= SPIKE_MIN_HISTORY and norm > SPIKE_FACTOR * float(np.median(self.history)):
                    self.spikes += 1
                self.clipped_steps += int(norm > NNUNET_CLIP_NORM)
                self.max_grad_norm = norm if self.max_grad_norm is None else max(self.max_grad_norm, norm)
                self.history = (self.history + [norm])[-SPIKE_WINDOW:]
            if finite_loss:
                self.last_loss = float(loss)
            self.steps += 1
        finite_losses, finite_norms = losses[np.isfinite(losses)], grad_norms[np.isfinite(grad_norms)]
        self.epoch_loss.append(float(finite_losses.mean()) if finite_losses.size else None)
        self.epoch_median_grad_norm.append(float(np.median(finite_norms)) if finite_norms.size else None)
        self.epochs += 1

    def to_json(self) -> dict[str, Any]:
        skipped = self.nonfinite_grad_steps if self.grad_scaler else 0
        return {
            "format": STABILITY_FORMAT, "epochs": self.epochs, "steps": self.steps, "grad_scaler": self.grad_scaler,
            "nonfinite_losses": self.nonfinite_losses, "nonfinite_grad_steps": self.nonfinite_grad_steps,
            "skipped_steps": skipped, "applied_nonfinite_steps": self.nonfinite_grad_steps - skipped,
            "first_nonfinite_step": self.first_nonfinite_step, "grad_norm_spikes": self.spikes,
            "clipped_steps": self.clipped_steps, "max_grad_norm": self.max_grad_norm,
            "final_loss": self.epoch_loss[-1] if self.epoch_loss else None, "last_step_loss": self.last_loss,
            "epoch_loss": self.epoch_loss, "epoch_median_grad_norm": self.epoch_median_grad_norm,
            "definitions": {"spike": f"finite gradient norm > {SPIKE_FACTOR:g} x the median of the previous "
                                     f"{SPIKE_WINDOW} finite norms (from {SPIKE_MIN_HISTORY} on)",
                            "gradient norm": "total L2 norm before nnU-Net's clipping (unscaled under GradScaler)",
                            "final_loss": "mean training loss of the last epoch (finite steps)"},
            "running_norms": self.history,
        }

    @classmethod
    def from_json(cls, content: dict[str, Any]) -> "StabilityRecord":
        record = cls(bool(content["grad_scaler"]))
        record.epochs, record.steps = content["epochs"], content["steps"]
        record.nonfinite_losses, record.nonfinite_grad_steps = content["nonfinite_losses"], content["nonfinite_grad_steps"]
        record.spikes, record.clipped_steps = content["grad_norm_spikes"], content["clipped_steps"]
        record.first_nonfinite_step, record.max_grad_norm = content["first_nonfinite_step"], content["max_grad_norm"]
        record.epoch_loss, record.epoch_median_grad_norm = content["epoch_loss"], content["epoch_median_grad_norm"]
        record.last_loss, record.history = content["last_step_loss"], content["running_norms"]
        return record


def write_record(path: str, content: dict[str, Any]) -> None:
    """Strict and atomic (the package's one writer): a reader, or a resumed run, never sees half a file."""
    from pu_nnunet.json_files import write_json

    write_json(path, content)


class StabilityRecordError(UserInputError, ValueError):
    """A stability record that is not readable JSON holding an object; the message names the file."""


def read_record(path: str) -> Optional[dict[str, Any]]:
    """The record in a fold folder, or None when there is none (a run trained before it existed)."""
    if not os.path.isfile(path):
        return None
    # the one reader of user JSON (a fold folder may have been copied or received); bare NaN accepted
    # as in nnU-Net's own files of that folder
    return read_user_json(path, "stability record", dict, StabilityRecordError, allow_nan=True)


class RecordsStability:
    """Mixin for ``nnUNetTrainer`` subclasses: ``class T(SaveOnSignal, RecordsStability, nnUNetTrainer)``.

    ``train_step`` is nnU-Net 2.8.1's (``nnUNetTrainer.train_step``) with the gradient norm that
    its ``clip_grad_norm_`` returns kept; everything else is nnU-Net's own."""

    _stability: Optional[StabilityRecord] = None
    # the epoch a resumed run started a new record at (the stored one did not match its checkpoint)
    _stability_restarted_at: Optional[int] = None
    _epoch_grad_norms: Optional[list] = None  # this epoch's norms, device tensors

    def _stability_path(self) -> str:
        return os.path.join(self.output_folder, STABILITY_FILE)

    def on_train_start(self):
        cpu_autocast_dtype()  # a misspelt PU_NNUNET_CPU_AUTOCAST stops the run before its first step
        super().on_train_start()
        if self._stability is None:
            self._stability = StabilityRecord(grad_scaler=self.grad_scaler is not None)

    def load_checkpoint(self, filename_or_checkpoint):
        super().load_checkpoint(filename_or_checkpoint)
        stored = read_record(self._stability_path())
        # the record written with this checkpoint holds exactly its epochs; any other is not continued
        if stored is not None and stored.get("epochs") == self.current_epoch:
            self._stability = StabilityRecord.from_json(stored)
        elif stored is not None:
            self._stability_restarted_at = self.current_epoch

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._epoch_grad_norms = []

    def train_step(self, batch: dict) -> dict:
        import torch
        from nnunetv2.utilities.helpers import dummy_context
        from torch import autocast

        data, target = batch["data"], batch["target"]
        data = data.to(self.device, non_blocking=True)
        if isinstance(target, list):
            target = [i.to(self.device, non_blocking=True) for i in target]
        else:
            target = target.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            precision = autocast(self.device.type, enabled=True)
        elif self.device.type == "cpu" and cpu_autocast_dtype() == "bf16":  # PU_NNUNET_CPU_AUTOCAST (not nnU-Net's)
            precision = autocast("cpu", dtype=torch.bfloat16)
        else:
            precision = dummy_context()
        with precision:
            output = self.network(data)
            loss = self.loss(output, target)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), NNUNET_CLIP_NORM)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), NNUNET_CLIP_NORM)
            self.optimizer.step()
        if self._epoch_grad_norms is None:
            self._epoch_grad_norms = []
        self._epoch_grad_norms.append(norm.detach())  # stays on the device until the epoch ends
        return {"loss": loss.detach().cpu().numpy()}

    def on_train_epoch_end(self, train_outputs: list):
        super().on_train_epoch_end(train_outputs)
        import torch

        norms = torch.stack(self._epoch_grad_norms).float().cpu().numpy() if self._epoch_grad_norms else []
        self._stability.add_epoch(np.array([o["loss"] for o in train_outputs], float), norms)
        self._epoch_grad_norms = []

    def _write_stability(self, finished: bool) -> None:
        if self._stability is not None and self.local_rank == 0:
            write_record(self._stability_path(), {**self._stability.to_json(), "finished": finished,
                                                  "trainer": self.__class__.__name__,
                                                  "autocast": autocast_description(self.device.type),
                                                  "record_restarted_at_epoch": self._stability_restarted_at})

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        self._write_stability(finished=False)

    def on_train_end(self):
        super().on_train_end()
        self._write_stability(finished=True)
