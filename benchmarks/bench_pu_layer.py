"""PU layer vs a plain convolution of the same shape: time and activation memory.

Shapes are those of the PU layers nnU-Net's default planner would give PURe (PU blocks in the
deepest half of the encoder; the PU is a block's second conv: C -> C, 3x3(x3), stride 1):

    ct2d    2d plans for 512x512 CT slices: batch 12, patch 512x512, 8 stages
            32,64,128,256,512,512,512,512 -> PU stages 4-7: 512 channels at 32, 16, 8, 4 px
    rgb2d   2d plans for 256x256 RGB images: batch 49, patch 256x256, 7 stages
            32,64,128,256,512,512,512 -> PU stages 3 deepest (4-6): 512 channels at 16, 8, 4 px
    ct3d    3d_fullres plans for CT at 2.0x0.8x0.8 mm (median 100x512x512): batch 2, patch
            40x224x192, 6 stages 32,64,128,256,320,320 -> PU stages 3-5: 256 ch at 10x28x24,
            320 ch at 5x14x12 and 5x7x6

(these come from nnunetv2 2.8's ExperimentPlanner.get_plans_for_configuration at its default
8 GB target). The plans' batch is used unless --batch-fraction cuts it (CPU only). Keep the full
batch for 2-thread CPU runs on a shared machine: there every multithreaded op also pays a fixed
wait for the second thread (~8 ms measured here), which weighs on the PU's many small
elementwise ops and shrinks relative to the work as the batch grows.

Candidates per shape, timed interleaved (the order rotates every round) and repeated:
conv (nn.ConvNd, no bias), PU reference (autograd on the plain composition), PU fused (the
default path). Reported: median over rounds of the per-round ratio PU / conv, for forward +
backward (input requires grad, as an activation does) and for forward only (no_grad); and the
activation memory of one forward, i.e. the bytes saved for backward (distinct storages,
parameters left out) plus the output, as a ratio to the conv's. On CUDA (when present) the same
under fp16 autocast, with torch.cuda.max_memory_allocated as well.

    python benchmarks/bench_pu_layer.py                      # ~4-5 min on 2 busy CPU cores
    python benchmarks/bench_pu_layer.py --threads 1 --batch-fraction 0.25 --output benchmarks/results/pu_layer_threads1.json
    python benchmarks/bench_pu_layer.py --shapes ct2d --repeats 2 --batch-fraction 0.1   # a quick look
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch import nn

from pu_nnunet.product_units import ProductUnitConv
from pu_nnunet.product_units.autograd_memory import SavedTensorMeter

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CONV_OPS = {2: nn.Conv2d, 3: nn.Conv3d}

# (plans, stage, plan batch, channels, spatial size): see the module docstring for the derivation
SHAPES = {
    "ct2d": [("ct2d", s, 12, 512, (px, px)) for s, px in ((4, 32), (5, 16), (6, 8), (7, 4))],
    "rgb2d": [("rgb2d", s, 49, 512, (px, px)) for s, px in ((4, 16), (5, 8), (6, 4))],
    "ct3d": [("ct3d", 3, 2, 256, (10, 28, 24)), ("ct3d", 4, 2, 320, (5, 14, 12)), ("ct3d", 5, 2, 320, (5, 7, 6))],
}
CANDIDATES = ("conv", "pu_reference", "pu_fused")


# --- shared with bench_network.py ------------------------------------------------------------

def machine_info(device: torch.device) -> dict:
    cpu_model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = dict(cpu_model=cpu_model, logical_cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(), platform=platform.platform(),
                load_average_1_5_15min=[round(v, 2) for v in os.getloadavg()], device=str(device))
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(candidates: Dict[str, Callable[[], object]], repeats: int, warmup: int,
                      device: torch.device) -> Dict[str, Dict[str, List[float]]]:
    """Seconds per call of each candidate, round by round: A B C, B C A, C A B, ... (warm-up rounds dropped).

    Returns {"wall": {name: [...]}, "cpu": {name: [...]}}. The CPU time of the process (all its
    threads) is kept beside the wall time: on a machine shared with other jobs the wall time
    also counts the waits for a core, which land on whichever op is running, and with one
    thread the CPU time is free of them.
    """
    names = list(candidates)
    times = {"wall": {name: [] for name in names}, "cpu": {name: [] for name in names}}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            candidates[name]()
            synchronize(device)
            if round_index >= warmup:
                times["wall"][name].append(time.perf_counter() - wall)
                times["cpu"][name].append(time.process_time() - cpu)
    return times


def paired_ratio(times: Dict[str, List[float]], name: str, baseline: str) -> dict:
    """Median and range over rounds of time[name] / time[baseline] within the same round."""
    ratios = [a / b for a, b in zip(times[name], times[baseline])]
    return dict(median=statistics.median(ratios), min=min(ratios), max=max(ratios))


def elementwise_op_latency_ms(threads: int, numel: int = 3 * 512 * 8 * 8, calls: int = 30) -> float:
    """Median ms of one torch.exp over ``numel`` float32 elements with ``threads`` threads.

    A probe of the machine: where other jobs hold the cores, a multithreaded op waits for its
    second thread whatever its size, and a layer made of many small elementwise ops pays that
    wait per op.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    x, times = torch.randn(numel), []
    for _ in range(calls):
        start = time.perf_counter()
        torch.exp(x)
        times.append(time.perf_counter() - start)
    torch.set_num_threads(previous)
    return 1e3 * statistics.median(times)


def write_json(path: Path, payload: dict) -> None:
    # the package's one writer: strict (NaN -> null) and atomic (an interrupted run leaves the old file)
    from pu_nnunet.json_files import write_json as write_strict_json

    write_strict_json(path, payload)


def add_timing_arguments(parser, warmup_help: str = "untimed rounds first") -> None:
    """The options every timing benchmark here shares: threads, timed and untimed rounds."""
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (recorded)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help=warmup_help)


def finish_run(results: dict, output: Path, started: float) -> None:
    """Records the load at the end (timings under load say so) and the wall time, writes the JSON."""
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["wall_seconds"] = round(time.time() - started, 1)
    write_json(output, results)
    print(f"\nwrote {output} ({results['wall_seconds']} s)")


# --- this benchmark --------------------------------------------------------------------------

def _modules(ndim: int, channels: int, device: torch.device) -> Dict[str, nn.Module]:
    conv_op = CONV_OPS[ndim]
    return {"conv": conv_op(channels, channels, 3, padding=1, bias=False),
            "pu_reference": ProductUnitConv(conv_op, channels, channels, 3, implementation="reference"),
            "pu_fused": ProductUnitConv(conv_op, channels, channels, 3, implementation="fused")}


def _activation_memory(module: nn.Module, x: torch.Tensor, autocast_dtype) -> dict:
    """Bytes saved for backward by one forward (parameters left out) plus the output."""
    device = x.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        allocated_before = torch.cuda.memory_allocated(device)
    with SavedTensorMeter(exclude=list(module.parameters())) as meter, \
            torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        y = module(x)
    result = dict(saved_bytes=meter.saved_bytes, saved_tensors=meter.saved_tensors,
                  activation_bytes=meter.saved_bytes + meter.extra_bytes(y))
    if device.type == "cuda":
        result["cuda_peak_forward_bytes"] = torch.cuda.max_memory_allocated(device) - allocated_before
    del y
    return result


def bench_shape(plans: str, stage: int, plan_batch: int, channels: int, spatial: tuple, args,
                device: torch.device, autocast_dtype) -> dict:
    batch = max(1, math.ceil(plan_batch * args.batch_fraction)) if device.type == "cpu" else plan_batch
    ndim = len(spatial)
    modules = {name: m.to(device) for name, m in _modules(ndim, channels, device).items()}
    input_dtype = autocast_dtype or torch.float32  # under autocast the previous layer hands over 16 bits
    x = torch.randn(batch, channels, *spatial, device=device).to(input_dtype).requires_grad_()
    grad_y = torch.randn(batch, channels, *spatial, device=device).to(input_dtype)
    use_autocast = autocast_dtype is not None

    def train_step(module):
        def run():
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=use_autocast):
                y = module(x)
            y.backward(grad_y)
            x.grad = None
            module.zero_grad(set_to_none=True)
        return run

    def inference(module):
        def run():
            with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=use_autocast):
                module(x)
        return run

    fwd_bwd = interleaved_times({n: train_step(m) for n, m in modules.items()}, args.repeats, args.warmup, device)
    fwd = interleaved_times({n: inference(m) for n, m in modules.items()}, args.repeats, args.warmup, device)
    memory = {n: _activation_memory(m, x, autocast_dtype) for n, m in modules.items()}
    row = dict(plans=plans, stage=stage, batch=batch, plan_batch=plan_batch, channels=channels,
               spatial=list(spatial), conv_gflop_forward=2 * batch * channels * channels * 3 ** ndim
               * math.prod(spatial) / 1e9, candidates={})
    for name in CANDIDATES:
        entry = dict(fwd_bwd_median_s=statistics.median(fwd_bwd["wall"][name]),
                     fwd_median_s=statistics.median(fwd["wall"][name]),
                     memory=memory[name])
        entry["fwd_bwd_s"] = {clock: fwd_bwd[clock][name] for clock in fwd_bwd}
        entry["fwd_s"] = {clock: fwd[clock][name] for clock in fwd}
        if name != "conv":
            for clock in ("wall", "cpu"):
                entry[f"fwd_bwd_ratio_{clock}"] = paired_ratio(fwd_bwd[clock], name, "conv")
                entry[f"fwd_ratio_{clock}"] = paired_ratio(fwd[clock], name, "conv")
            entry["activation_memory_ratio"] = memory[name]["activation_bytes"] / memory["conv"]["activation_bytes"]
        row["candidates"][name] = entry
    print(f"  done {plans} stage {stage} ({batch}x{channels}x{spatial})", file=sys.stderr, flush=True)
    return row


def _format_table(rows: List[dict], title: str) -> str:
    header = (f"{'shape':<28} {'conv f+b':>9} | {'ref f+b':>7} {'fused f+b':>9} {'(cpu)':>7} | {'ref fwd':>7} "
              f"{'fused fwd':>9} {'(cpu)':>7} | {'ref mem':>7} {'fused mem':>9}")
    lines = [title, header, "-" * len(header)]
    for row in rows:
        ref, fused = row["candidates"]["pu_reference"], row["candidates"]["pu_fused"]
        shape = f"{row['plans']} s{row['stage']} {row['batch']}x{row['channels']}x{'x'.join(map(str, row['spatial']))}"
        lines.append(f"{shape:<28} {row['candidates']['conv']['fwd_bwd_median_s'] * 1e3:>7.1f}ms | "
                     f"{ref['fwd_bwd_ratio_wall']['median']:>6.3f}x {fused['fwd_bwd_ratio_wall']['median']:>8.3f}x "
                     f"{fused['fwd_bwd_ratio_cpu']['median']:>6.3f}x | "
                     f"{ref['fwd_ratio_wall']['median']:>6.3f}x {fused['fwd_ratio_wall']['median']:>8.3f}x "
                     f"{fused['fwd_ratio_cpu']['median']:>6.3f}x | "
                     f"{ref['activation_memory_ratio']:>6.3f}x {fused['activation_memory_ratio']:>8.3f}x")
    lines.append("ratios PU / conv. time: median over rounds of the per-round ratio of wall time "
                 "((cpu): of process CPU time); mem: (bytes saved for backward + output) / conv's")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="ct2d,rgb2d,ct3d", help="comma-separated subset of " + ",".join(SHAPES))
    add_timing_arguments(parser)
    parser.add_argument("--batch-fraction", type=float, default=1.0,
                        help="CPU only: batch = ceil(plan batch x this); CUDA uses the plan batch")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA fp16-autocast part")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "pu_layer.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = [s for key in args.shapes.split(",") for s in SHAPES[key.strip()]]

    started = time.time()
    cpu = torch.device("cpu")
    results = dict(benchmark="bench_pu_layer", machine=machine_info(cpu),
                   settings=dict(vars(args), output=str(args.output)), cpu_float32=[], cuda_fp16_autocast=None)
    latency = {f"{n}_threads": round(elementwise_op_latency_ms(n), 3) for n in sorted({1, args.threads})}
    results["machine"]["exp_of_98304_floats_median_ms"] = latency
    print(f"one torch.exp over 3x512x8x8 floats: " + ", ".join(f"{v} ms with {k.replace('_', ' ')}"
                                                             for k, v in latency.items()))
    for shape in shapes:
        results["cpu_float32"].append(bench_shape(*shape, args, cpu, None))
    print(_format_table(results["cpu_float32"], f"CPU float32, {args.threads} threads, "
                                                f"{results['machine']['cpu_model']}"))

    if torch.cuda.is_available() and not args.no_cuda:
        gpu = torch.device("cuda")
        results["machine_cuda"] = machine_info(gpu)
        results["cuda_fp16_autocast"] = [bench_shape(*shape, args, gpu, torch.float16) for shape in shapes]
        print()
        print(_format_table(results["cuda_fp16_autocast"], f"CUDA fp16 autocast, {results['machine_cuda']['cuda_device']}"))
    else:
        results["cuda_note"] = "skipped: " + ("--no-cuda" if args.no_cuda else "no CUDA device on this machine")
        print(f"\nCUDA fp16 autocast: {results['cuda_note']}")
    finish_run(results, args.output, started)


if __name__ == "__main__":
    main()
