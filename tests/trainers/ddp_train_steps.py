"""A few DistributedDataParallel training steps of PURe networks in 2 CPU processes (gloo backend).

Run by tests/trainers/test_ddp.py as a script (spawned workers import it by path):

    python ddp_train_steps.py PLANS_JSON OUT_DIR

Each rank builds nnUNetTrainerPURe's network from the plans (softplus, then threshold
positivity), wraps it as nnUNetTrainer does with ``-num_gpus N`` (SyncBatchNorm conversion, DDP),
trains a few steps on its own batches with nnU-Net's loss, optimiser and gradient clipping, and
writes OUT_DIR/rank{R}.pt: the final parameters per positivity and the parameters that got no
gradient in any step.
"""

import json
import socket
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

WORLD_SIZE = 2
STEPS = 3
NUM_CLASSES = 3
POSITIVITIES = ("softplus", "threshold")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _network_and_loss(plans: dict, positivity: str):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPURe

    trainer = type("Trainer", (nnUNetTrainerPURe,), {"pu_positivity": positivity})
    manager = PlansManager(plans)
    configuration = manager.get_configuration("2d")
    network = trainer.build_network_architecture(manager, configuration, 1, NUM_CLASSES, True)
    loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": True, "ddp": True}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    weights = np.array([1 / 2 ** i for i in range(len(configuration.pool_op_kernel_sizes))])
    # nnUNetTrainer._build_loss under DDP without compile: a tiny weight instead of 0, which would
    # leave the lowest segmentation head without a gradient
    weights[-1] = 1e-6
    return network, DeepSupervisionWrapper(loss, weights / weights.sum())


def _worker(rank: int, plans: dict, out_dir: str, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        result = {}
        patch = plans["configurations"]["2d"]["patch_size"]
        for positivity in POSITIVITIES:
            torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
            network, loss_fn = _network_and_loss(plans, positivity)
            network = DDP(torch.nn.SyncBatchNorm.convert_sync_batchnorm(network))
            optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, weight_decay=3e-5, nesterov=True)
            without_gradient = set()
            for step in range(STEPS):
                generator = torch.Generator().manual_seed(100 * step + rank)  # each rank its own batch
                x = torch.randn(2, 1, *patch, generator=generator)
                target = torch.randint(0, NUM_CLASSES, (2, 1, *patch), generator=generator).float()
                targets = [target[..., ::2 ** i, ::2 ** i] for i in range(3)]
                optimizer.zero_grad(set_to_none=True)
                loss_fn(network(x), targets).backward()
                without_gradient |= {n for n, p in network.module.named_parameters() if p.grad is None}
                torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
                optimizer.step()
            result[positivity] = dict(
                parameters={n: p.detach().clone() for n, p in network.module.named_parameters()},
                without_gradient=sorted(without_gradient),
                pu_layers=sum(type(m).__name__ == "ProductUnitConv" for m in network.modules()))
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def main() -> None:
    plans = json.loads(Path(sys.argv[1]).read_text())
    mp.spawn(_worker, args=(plans, sys.argv[2], _free_port()), nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    main()
