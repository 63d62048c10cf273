"""Two gloo ranks decide whether to stop with SaveOnSignal's agreement (trainers/preemption.py).

Run by tests/trainers/test_save_on_signal.py: ``python ddp_stop_agreement.py OUT_DIR``. Rank 1
alone receives SIGUSR1 (through the mixin's real handler) before iteration 3; each rank writes
OUT_DIR/rank{R}.json with the iterations at which it asked and the iteration at which it stopped.
nnU-Net's own DDP needs NCCL and GPUs; this runs the same collective on the CPU.
"""

import json
import os
import signal
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pu_nnunet.trainers.preemption import SaveOnSignal, TrainingStopped

SIGNALLED_RANK, SIGNAL_BEFORE_ITERATION, ITERATIONS = 1, 3, 6


class Ranked(SaveOnSignal):
    """The attributes of nnUNetTrainer that the stop check reads."""

    def __init__(self):
        self.is_ddp, self.device = True, torch.device("cpu")


def rank_main(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    trainer, stopped_at = Ranked(), None
    with trainer._stop_signals_handled():
        for iteration in range(ITERATIONS):
            if rank == SIGNALLED_RANK and iteration == SIGNAL_BEFORE_ITERATION:
                os.kill(os.getpid(), signal.SIGUSR1)
            try:
                trainer._check_stop("training")
            except TrainingStopped:
                stopped_at = iteration
                break
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump({"stopped_at": stopped_at, "own_signal": trainer._stop_signal}, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    mp.spawn(rank_main, args=(free_port, sys.argv[1]), nprocs=2)
