"""PURe vs its matched baseline at network level: parameters, FLOPs, memory, training and inference time.

Both networks are built by the trainers' own ``build_network_architecture`` (nnUNetTrainerPURe:
PU blocks in the deepest half of the encoder; nnUNetTrainerPUReBaseline: the same residual-
encoder U-Net with BasicBlockD everywhere) from plans dicts in nnU-Net's format, written below
as nnunetv2 2.8's default ExperimentPlanner produces them (8 GB target):

    ct2d    2d, 512x512 CT slices, 1 channel, 16 labels: batch 12, patch 512x512, 8 stages
            32..512 features, 3x3 kernels, strides 1,2,...,2, n_conv_per_stage 2 (-> 1 block)
    rgb2d   2d, 256x256 RGB images, 3 channels, 2 labels: batch 49, patch 256x256, 7 stages

Measured per network:
- parameters;
- FLOPs of one forward at the patch size (batch 1, deep supervision off as at inference):
  torch.utils.flop_counter.FlopCounterMode (convolutions and matmuls, 2 FLOPs per
  multiply-add; it counts no norm, activation, bias or residual add, in either network) plus,
  for each PU layer, its elementwise ops at 1 FLOP per element per op: softplus, +eps, log and
  the input clip on every input element (threshold: max and log), the output clip and exp on
  every output element. A PU's convolution is counted by FlopCounterMode like any other;
- peak training memory: on CPU the bytes autograd saves for backward in one training step
  (forward + loss; distinct storages, parameters left out), on CUDA torch.cuda.max_memory_allocated
  over a training step;
- training step time: zero_grad, forward, nnU-Net's loss (Dice + CE with its deep-supervision
  weights), backward, clip_grad_norm_(12), SGD step (lr 1e-2, momentum 0.99, nesterov), as
  nnUNetTrainer.train_step; CUDA adds fp16 autocast and a GradScaler as nnU-Net does;
- inference time per patch: forward of one patch under no_grad, deep supervision off.
The two networks are timed interleaved (A B, B A, ...) and the ratio is the median over rounds
of the per-round ratio. On CPU the training batch is cut (--train-batch) to keep a run short.

    python benchmarks/bench_network.py                       # ~4-5 min on 2 busy CPU cores
    python benchmarks/bench_network.py --plans rgb2d --repeats 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pu_layer import RESULTS_DIR, add_timing_arguments, finish_run, interleaved_times, machine_info, paired_ratio  # noqa: E402

from nnunetv2.training.loss.compound_losses import DC_and_CE_loss  # noqa: E402
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: E402

from pu_nnunet.product_units import ProductUnitConv  # noqa: E402
from pu_nnunet.product_units.autograd_memory import SavedTensorMeter  # noqa: E402
from pu_nnunet.product_units.positivity import positivity_mapping  # noqa: E402
from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPURe, nnUNetTrainerPUReBaseline  # noqa: E402

TRAINERS = {"baseline": nnUNetTrainerPUReBaseline, "pure": nnUNetTrainerPURe}
# nnUNetTrainer's optimiser and gradient clipping
INITIAL_LR, WEIGHT_DECAY, MOMENTUM, GRAD_CLIP_NORM = 1e-2, 3e-5, 0.99, 12

# name: (input channels, labels incl. background, plans' batch, patch, stages, CPU training batch)
PLANS = {
    "ct2d": dict(channels=1, labels=16, batch=12, patch=(512, 512), n_stages=8, cpu_train_batch=1,
                 spacing=(0.8, 0.8), normalization="CTNormalization"),
    "rgb2d": dict(channels=3, labels=2, batch=49, patch=(256, 256), n_stages=7, cpu_train_batch=2,
                  spacing=(1.0, 1.0), normalization="ZScoreNormalization"),
}
MAX_FEATURES_2D, BASE_FEATURES = 512, 32  # ExperimentPlanner.UNet_max_features_2d, UNet_base_num_features


def planner_2d_plans(name: str, spec: dict) -> dict:
    """A plans dict as nnunetv2 2.8's ExperimentPlanner writes it for a 2d configuration."""
    n = spec["n_stages"]
    arch_kwargs = {
        "n_stages": n, "features_per_stage": [min(MAX_FEATURES_2D, BASE_FEATURES * 2 ** i) for i in range(n)],
        "conv_op": "torch.nn.modules.conv.Conv2d", "kernel_sizes": [[3, 3]] * n,
        "strides": [[1, 1]] + [[2, 2]] * (n - 1), "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1),
        "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": f"Dataset999_{name}", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, *spec["spacing"]],
        "original_median_shape_after_transp": [100, *spec["patch"]], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"2d": {
            "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": spec["batch"], "patch_size": list(spec["patch"]),
            "median_image_size_in_voxels": [float(s) for s in spec["patch"]], "spacing": list(spec["spacing"]),
            "normalization_schemes": [spec["normalization"]] * spec["channels"],
            "use_mask_for_norm": [False] * spec["channels"],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": resampling, "resampling_fn_seg_kwargs": dict(resampling, is_seg=True, order=1),
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": dict(resampling, order=1),
            "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                             "arch_kwargs": arch_kwargs,
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0,
                     "percentile_99_5": 1.0, "std": 1.0} for c in range(spec["channels"])},
    }


def build(trainer, plans: dict, spec: dict, deep_supervision: bool) -> nn.Module:
    plans_manager = PlansManager(copy.deepcopy(plans))
    configuration = plans_manager.get_configuration("2d")
    return trainer.build_network_architecture(plans_manager, configuration, spec["channels"], spec["labels"],
                                              deep_supervision)


def nnunet_loss(spec: dict) -> nn.Module:
    """nnUNetTrainer._build_loss for label (not region) training with deep supervision."""
    loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    weights = np.array([1 / 2 ** i for i in range(spec["n_stages"] - 1)])
    weights[-1] = 0
    return DeepSupervisionWrapper(loss, weights / weights.sum())


def _targets(spec: dict, batch: int, device: torch.device) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    full = torch.randint(0, spec["labels"], (batch, 1, *spec["patch"]), generator=g).float()
    # one target per deep-supervision output: full resolution, then each stride-2 stage down
    return [full[..., ::2 ** i, ::2 ** i].contiguous().to(device) for i in range(spec["n_stages"] - 1)]


def pu_elementwise_flops(module: ProductUnitConv, in_numel: int, out_numel: int) -> int:
    """The PU's elementwise ops, 1 FLOP per element per op (see the module docstring)."""
    # pos(x) (its registered cost), the log, the input clip
    per_input = positivity_mapping(module.positivity).elementwise_ops + 1 + (module.log_input_clip is not None)
    per_output = 1 + (module.log_output_clip is not None)
    return per_input * in_numel + per_output * out_numel


def forward_flops(network: nn.Module, spec: dict) -> dict:
    pu_flops = []
    hooks = [m.register_forward_hook(lambda m, i, o: pu_flops.append(pu_elementwise_flops(m, i[0].numel(), o.numel())))
             for m in network.modules() if isinstance(m, ProductUnitConv)]
    x = torch.randn(1, spec["channels"], *spec["patch"])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(x)
    for h in hooks:
        h.remove()
    counted = counter.get_total_flops()
    return dict(flop_counter=counted, pu_elementwise=sum(pu_flops), total=counted + sum(pu_flops),
                pu_layers=len(pu_flops))


def training_step(network: nn.Module, optimizer, loss_fn, data, targets, scaler) -> None:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(data.device.type, dtype=torch.float16, enabled=scaler is not None):
        loss = loss_fn(network(data), targets)
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP_NORM)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP_NORM)
        scaler.step(optimizer)
        scaler.update()


def training_memory(network: nn.Module, loss_fn, data, targets, use_autocast: bool) -> dict:
    device = data.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    with SavedTensorMeter(exclude=list(network.parameters())) as meter, \
            torch.autocast(device.type, dtype=torch.float16, enabled=use_autocast):
        loss = loss_fn(network(data), targets)
    result = dict(saved_bytes=meter.saved_bytes, saved_tensors=meter.saved_tensors)
    loss.backward()
    network.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device) - before
    return result


def bench_plans(name: str, args, device: torch.device) -> dict:
    spec = PLANS[name]
    plans = planner_2d_plans(name, spec)
    on_cuda = device.type == "cuda"
    batch = spec["batch"] if on_cuda else (args.train_batch or spec["cpu_train_batch"])
    torch.manual_seed(0)
    train_nets = {k: build(t, plans, spec, True).to(device).train() for k, t in TRAINERS.items()}
    infer_nets = {k: build(t, plans, spec, False).to(device).eval() for k, t in TRAINERS.items()}
    loss_fn = nnunet_loss(spec)
    data = torch.randn(batch, spec["channels"], *spec["patch"], device=device)
    targets = _targets(spec, batch, device)
    patch = torch.randn(1, spec["channels"], *spec["patch"], device=device)

    row = dict(plans=name, patch=list(spec["patch"]), plan_batch=spec["batch"], train_batch=batch, networks={})
    for key, net in infer_nets.items():
        row["networks"][key] = dict(parameters=sum(p.numel() for p in net.parameters()),
                                    pu_layers=sum(isinstance(m, ProductUnitConv) for m in net.modules()),
                                    flops=forward_flops(net.cpu(), spec))
        net.to(device)
    for key, net in train_nets.items():
        row["networks"][key]["training_memory"] = training_memory(net, loss_fn, data, targets, on_cuda)

    optimizers = {k: torch.optim.SGD(n.parameters(), INITIAL_LR, weight_decay=WEIGHT_DECAY, momentum=MOMENTUM,
                                     nesterov=True) for k, n in train_nets.items()}
    scalers = {k: torch.amp.GradScaler("cuda") if on_cuda else None for k in train_nets}
    train_times = interleaved_times(
        {k: (lambda k=k: training_step(train_nets[k], optimizers[k], loss_fn, data, targets, scalers[k]))
         for k in train_nets}, args.repeats, args.warmup, device)

    def infer(net):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=on_cuda):
            net(patch)

    infer_times = interleaved_times({k: (lambda n=n: infer(n)) for k, n in infer_nets.items()},
                                    args.repeats, args.warmup, device)
    for key in TRAINERS:
        row["networks"][key].update(
            train_step_s={clock: train_times[clock][key] for clock in train_times},
            inference_s={clock: infer_times[clock][key] for clock in infer_times},
            train_step_median_s=statistics.median(train_times["wall"][key]),
            inference_median_s=statistics.median(infer_times["wall"][key]))
    base, pure = row["networks"]["baseline"], row["networks"]["pure"]
    memory_key = "cuda_max_memory_allocated_bytes" if on_cuda else "saved_bytes"
    row["pure_vs_baseline"] = dict(
        parameters_change_percent=100 * (pure["parameters"] / base["parameters"] - 1),
        flops_change_percent=100 * (pure["flops"]["total"] / base["flops"]["total"] - 1),
        training_memory_ratio=pure["training_memory"][memory_key] / base["training_memory"][memory_key],
        train_step_ratio=paired_ratio(train_times["wall"], "pure", "baseline"),
        train_step_ratio_cpu=paired_ratio(train_times["cpu"], "pure", "baseline"),
        inference_ratio=paired_ratio(infer_times["wall"], "pure", "baseline"),
        inference_ratio_cpu=paired_ratio(infer_times["cpu"], "pure", "baseline"))
    print(f"  done {name}", file=sys.stderr, flush=True)
    return row


def _format_table(rows: List[dict], title: str, memory_key: str) -> str:
    header = (f"{'plans':<6} {'net':<9} {'params':>11} {'GFLOP/fwd':>10} {'train MiB':>10} {'step s':>8} "
              f"{'infer s':>8}")
    lines = [title, header, "-" * len(header)]
    for row in rows:
        for key in TRAINERS:
            n = row["networks"][key]
            lines.append(f"{row['plans']:<6} {key:<9} {n['parameters']:>11,} {n['flops']['total'] / 1e9:>10.3f} "
                         f"{n['training_memory'][memory_key] / 2 ** 20:>10.1f} {n['train_step_median_s']:>8.3f} "
                         f"{n['inference_median_s']:>8.3f}")
        c = row["pure_vs_baseline"]
        lines.append(f"{row['plans']:<6} {'PURe/base':<9} {c['parameters_change_percent']:>+10.4f}% "
                     f"{c['flops_change_percent']:>+9.4f}% {c['training_memory_ratio']:>9.3f}x "
                     f"{c['train_step_ratio']['median']:>7.3f}x {c['inference_ratio']['median']:>7.3f}x")
        lines.append(f"       (train batch {row['train_batch']} of the plans' {row['plan_batch']}; "
                     f"{row['networks']['pure']['pu_layers']} PU layers; step ratio range "
                     f"{c['train_step_ratio']['min']:.3f}-{c['train_step_ratio']['max']:.3f}, by CPU time "
                     f"{c['train_step_ratio_cpu']['median']:.3f}x; inference range "
                     f"{c['inference_ratio']['min']:.3f}-{c['inference_ratio']['max']:.3f}, by CPU time "
                     f"{c['inference_ratio_cpu']['median']:.3f}x)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", default="ct2d,rgb2d", help="comma-separated subset of " + ",".join(PLANS))
    add_timing_arguments(parser)
    parser.add_argument("--train-batch", type=int, default=None,
                        help="CPU training batch (default per plans: " +
                             ", ".join(f"{k} {v['cpu_train_batch']}" for k, v in PLANS.items()) + ")")
    parser.add_argument("--no-cuda", action="store_true", help="measure on CPU even when CUDA is present")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "network.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")

    started = time.time()
    results = dict(benchmark="bench_network", machine=machine_info(device), settings=dict(vars(args), output=str(
        args.output)), rows=[bench_plans(name.strip(), args, device) for name in args.plans.split(",")])
    if device.type == "cpu":
        results["cuda_note"] = "CPU run: " + ("--no-cuda" if args.no_cuda else "no CUDA device on this machine")
    memory_key = "cuda_max_memory_allocated_bytes" if device.type == "cuda" else "saved_bytes"
    title = (f"{device.type.upper()} {'fp16 autocast' if device.type == 'cuda' else 'float32'}, "
             f"{args.threads} threads, {results['machine']['cpu_model']}; train MiB = "
             f"{'max_memory_allocated' if device.type == 'cuda' else 'bytes saved for backward'} at the train batch")
    print(_format_table(results["rows"], title, memory_key))
    finish_run(results, args.output, started)


if __name__ == "__main__":
    main()
