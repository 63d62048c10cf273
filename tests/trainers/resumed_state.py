"""What ``nnUNetv2_train ... --c`` loads, compared tensor by tensor with the checkpoint file.

Run by tests/trainers/test_save_on_signal.py in its own process (nnU-Net reads its folder
variables when first imported):

    python resumed_state.py DATASET_ID CONFIGURATION FOLD TRAINER

Builds the trainer with nnU-Net's own ``get_trainer_from_args`` and ``maybe_load_checkpoint``
(the functions ``nnUNetv2_train --c`` calls), and prints one JSON line: the epoch the trainer
will start at, the file it loaded, and every network and optimizer entry that differs from
``checkpoint_latest.pth`` (an empty list when the resumed state is the saved one).
"""

import json
import os
import sys

import torch


def differences(a, b, where: str) -> list[str]:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu()))
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(map(str, set(a) ^ set(b)))}"]
        return [d for key in a for d in differences(a[key], b[key], f"{where}.{key}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def main(dataset_id: str, configuration: str, fold: str, trainer_name: str) -> None:
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    torch.set_num_threads(1)
    trainer = get_trainer_from_args(dataset_id, configuration, int(fold), trainer_name, "nnUNetPlans",
                                    device=torch.device("cpu"))
    maybe_load_checkpoint(trainer, True, False, None)
    saved = torch.load(os.path.join(trainer.output_folder, "checkpoint_latest.pth"), map_location="cpu",
                       weights_only=False)
    found = differences(trainer.network.state_dict(), saved["network_weights"], "network")
    found += differences(trainer.optimizer.state_dict(), saved["optimizer_state"], "optimizer")
    print(json.dumps({"start_epoch": trainer.current_epoch, "saved_epoch": saved["current_epoch"],
                      "n_network_tensors": len(saved["network_weights"]),
                      "n_optimizer_states": len(saved["optimizer_state"]["state"]), "differences": found}))


if __name__ == "__main__":
    main(*sys.argv[1:])
