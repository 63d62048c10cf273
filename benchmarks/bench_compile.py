"""torch.compile'd PURe vs its compiled matched baseline, and what compiling buys each (training step).

On CUDA nnUNetTrainer compiles the network by default (``nnUNet_compile``), so a GPU user trains
the compiled PURe network. This script times nnUNetTrainer's training step (bench_network.py's
``training_step``: zero_grad, forward, Dice+CE loss with deep-supervision weights, backward,
clip_grad_norm_(12), SGD step; CUDA adds fp16 autocast and a GradScaler) for four candidates:

    baseline eager, PURe eager, baseline compiled, PURe compiled   (torch.compile, inductor)

built by the trainers' ``build_network_architecture`` from nnU-Net 2d plans (bench_network.py's
``PLANS``), the same initial weights for eager and compiled. The first call of a compiled network
compiles it (reported as compile seconds, untimed); then the four are timed interleaved
(A B C D, B C D A, ...) and each ratio is the median over rounds of the per-round ratio:
PURe/baseline compiled (the issue's target <= 1.05x), PURe/baseline eager, compiled/eager for each.

    python benchmarks/bench_compile.py                       # ct2d, CPU batch 1
    python benchmarks/bench_compile.py --plans rgb2d --repeats 5
Without a GPU the CUDA row is printed as "not measured".
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_network import PLANS, TRAINERS, INITIAL_LR, MOMENTUM, WEIGHT_DECAY, _targets, build, nnunet_loss, \
    planner_2d_plans, training_step  # noqa: E402
from bench_pu_layer import RESULTS_DIR, add_timing_arguments, finish_run, interleaved_times, machine_info, paired_ratio  # noqa: E402

CANDIDATES = [(net, mode) for mode in ("eager", "compiled") for net in TRAINERS]  # baseline, pure


def _name(net: str, mode: str) -> str:
    return f"{net}_{mode}"


def bench_plans(name: str, args, device: torch.device) -> dict:
    spec = PLANS[name]
    plans = planner_2d_plans(name, spec)
    on_cuda = device.type == "cuda"
    batch = spec["batch"] if on_cuda else (args.train_batch or spec["cpu_train_batch"])
    torch.manual_seed(0)
    eager = {k: build(t, plans, spec, True).to(device).train() for k, t in TRAINERS.items()}
    networks = {}
    for key, network in eager.items():
        networks[_name(key, "eager")] = network
        twin = copy.deepcopy(network)  # same initial weights, its own parameters and optimiser
        networks[_name(key, "compiled")] = torch.compile(twin)  # nnUNetTrainer: torch.compile(self.network)
    loss_fn = nnunet_loss(spec)
    data = torch.randn(batch, spec["channels"], *spec["patch"], device=device)
    targets = _targets(spec, batch, device)
    optimizers = {k: torch.optim.SGD(n.parameters(), INITIAL_LR, weight_decay=WEIGHT_DECAY, momentum=MOMENTUM,
                                     nesterov=True) for k, n in networks.items()}
    scalers = {k: torch.amp.GradScaler("cuda") if on_cuda else None for k in networks}

    def step(k):
        training_step(networks[k], optimizers[k], loss_fn, data, targets, scalers[k])

    compile_s = {}
    for key in TRAINERS:
        started = time.perf_counter()
        step(_name(key, "compiled"))  # compiles forward and backward
        if on_cuda:
            torch.cuda.synchronize(device)
        compile_s[key] = time.perf_counter() - started
        print(f"  compiled {name} {key} in {compile_s[key]:.1f} s", file=sys.stderr, flush=True)
    times = interleaved_times({k: (lambda k=k: step(k)) for k in networks}, args.repeats, args.warmup, device)
    row = dict(plans=name, patch=list(spec["patch"]), plan_batch=spec["batch"], train_batch=batch,
               compile_seconds=compile_s, train_step_s=times,
               train_step_median_s={k: statistics.median(v) for k, v in times["wall"].items()})
    wall, cpu = times["wall"], times["cpu"]
    row["ratios"] = {
        "pure_vs_baseline_compiled": paired_ratio(wall, "pure_compiled", "baseline_compiled"),
        "pure_vs_baseline_eager": paired_ratio(wall, "pure_eager", "baseline_eager"),
        "compiled_vs_eager_baseline": paired_ratio(wall, "baseline_compiled", "baseline_eager"),
        "compiled_vs_eager_pure": paired_ratio(wall, "pure_compiled", "pure_eager"),
        "pure_vs_baseline_compiled_cpu_time": paired_ratio(cpu, "pure_compiled", "baseline_compiled"),
    }
    print(f"  done {name}", file=sys.stderr, flush=True)
    return row


def _format_table(rows: list, title: str) -> str:
    header = f"{'plans':<6} {'net':<9} {'eager s':>8} {'compiled s':>11} {'compiled/eager':>15} {'compile s':>10}"
    lines = [title, header, "-" * len(header)]
    for row in rows:
        median, ratios = row["train_step_median_s"], row["ratios"]
        for key in TRAINERS:
            lines.append(f"{row['plans']:<6} {key:<9} {median[_name(key, 'eager')]:>8.3f} "
                         f"{median[_name(key, 'compiled')]:>11.3f} "
                         f"{ratios[f'compiled_vs_eager_{key}']['median']:>14.3f}x "
                         f"{row['compile_seconds'][key]:>10.1f}")
        lines.append(f"{row['plans']:<6} {'PURe/base':<9} {ratios['pure_vs_baseline_eager']['median']:>7.3f}x "
                     f"{ratios['pure_vs_baseline_compiled']['median']:>10.3f}x")
        c = ratios["pure_vs_baseline_compiled"]
        lines.append(f"       (train batch {row['train_batch']} of the plans' {row['plan_batch']}; compiled PURe/base "
                     f"range {c['min']:.3f}-{c['max']:.3f}, by CPU time "
                     f"{ratios['pure_vs_baseline_compiled_cpu_time']['median']:.3f}x)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", default="ct2d", help="comma-separated subset of " + ",".join(PLANS))
    add_timing_arguments(parser, "untimed rounds after compiling")
    parser.add_argument("--train-batch", type=int, default=None, help="CPU training batch (default per plans)")
    parser.add_argument("--no-cuda", action="store_true", help="measure on CPU even when CUDA is present")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "compile.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")

    started = time.time()
    results = dict(benchmark="bench_compile", machine=machine_info(device), torch=torch.__version__,
                   settings=dict(vars(args), output=str(args.output)),
                   rows=[bench_plans(name.strip(), args, device) for name in args.plans.split(",")])
    title = (f"{device.type.upper()} {'fp16 autocast' if device.type == 'cuda' else 'float32'}, {args.threads} "
             f"threads, {results['machine']['cpu_model']}; training step, median s; torch.compile (inductor)")
    print(_format_table(results["rows"], title))
    if device.type == "cpu":
        results["cuda"] = "not measured: " + ("--no-cuda" if args.no_cuda else "no CUDA device on this machine")
        print(f"CUDA: {results['cuda']}")
    finish_run(results, args.output, started)


if __name__ == "__main__":
    main()
