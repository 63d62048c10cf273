"""The network's forward pass as the CPU sliding window calls it, eager against PyTorch's inference options.

``pu-nnunet predict``'s PyTorch path reached 50 % of the float32 matmul rate in
``bench_predict.py`` where onnxruntime reached 69 % (RESULTS.md, "Prediction"). This times only
the forward pass of the same network, the tiny PURe 2d model of ``bench_predict.py`` (the
PURe residual encoder U-Net of nnU-Net's 2d plans for the synthetic CT: 6 stages of 32..512
features, 128x128 patch, 1 channel, 4 classes; 7.48 GFLOP per patch; random weights: the time
does not depend on them), at the batch sizes the predictor tries on a CPU
(``batch_tuning.CPU_CANDIDATES``), under ``torch.inference_mode`` as the predictor runs it, for:

- ``eager``: float32, contiguous (NCHW): today's path;
- ``channels-last``: network and input in ``torch.channels_last``;
- ``jit-freeze``: ``torch.jit.trace`` + ``torch.jit.freeze`` (oneDNN conv fusion, weights folded);
- ``jit-freeze-cl``: the same on a channels-last network and input;
- ``jit-freeze-ofi``: ``torch.jit.optimize_for_inference`` after the freeze (oneDNN layouts);
- ``compile``: ``torch.compile`` (inductor, C++ kernels on the CPU), ``dynamic=False``;
- ``compile-freezing``: the same with ``torch._inductor.config.freezing = True`` (weights
  constant-folded, convolutions prepacked for oneDNN).

The compiled variants are timed at ``--compile-batch-sizes`` only (default 4): each new input
shape compiles again, about 100 s on 2 loaded cores. Inductor's on-disk caches are off, so each
compile is a real one. The two compiled variants cannot share a process: dynamo reuses the graph
compiled for the first network for a second instance of the same class (it was 30x faster to
"compile" the second time, freezing unapplied), so ``compile-freezing`` runs in a run of its own
(``--variants eager compile-freezing``) and is not among the default variants.

All run in one process, alternating (variant order reversed every round), median of
``--repeats`` rounds per batch size, as wall time and as the process's CPU time (on a shared
machine the wall time swings with the other jobs' load; the CPU time much less, though it
counts OpenMP threads spinning while they wait for each other). Each variant's build time
(trace, freeze, and the first call of each batch size: oneDNN's kernel choice, inductor's
compile) is reported apart. Each output is compared with eager's on the same input: the maximum
absolute logit difference and the share of voxels whose argmax agrees.

    python benchmarks/bench_predict_forward.py                 # ~6 min on 2 busy cores (compile: 2.5)
    python benchmarks/bench_predict_forward.py --variants eager compile-freezing
    python benchmarks/bench_predict_forward.py --variants eager jit-freeze --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_network import build, planner_2d_plans  # noqa: E402
from bench_pu_layer import RESULTS_DIR, finish_run, machine_info  # noqa: E402

from pu_nnunet.inference.batch_tuning import CPU_CANDIDATES  # noqa: E402
from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPURe  # noqa: E402

# bench_predict.py's model: nnU-Net's 2d plans for its 32x128x128 synthetic CT (3 organs)
SPEC = dict(channels=1, labels=4, batch=12, patch=(128, 128), n_stages=6, spacing=(0.8, 0.8),
            normalization="CTNormalization")
COMPILED = ("compile", "compile-freezing")
VARIANTS = ("eager", "channels-last", "jit-freeze", "jit-freeze-cl", "jit-freeze-ofi", "compile",
            "compile-freezing")
RESULTS_FILE = RESULTS_DIR / "predict_forward.json"


def _traced(network: torch.nn.Module, example: torch.Tensor, optimise: bool) -> torch.nn.Module:
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(network, example))
        return torch.jit.optimize_for_inference(frozen) if optimise else frozen


def _compiled(network: torch.nn.Module, freezing: bool) -> Callable:
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    compiled = torch.compile(network, backend="inductor", dynamic=False)

    def forward(x):
        # freezing is read when a graph compiles, i.e. on the first call of each input shape
        with inductor_config.patch(freezing=freezing, fx_graph_cache=False), \
                functorch_config.patch(enable_autograd_cache=False):
            return compiled(x)
    return forward


def build_variant(name: str, network: torch.nn.Module, example: torch.Tensor) -> tuple[Callable, bool]:
    """(forward, whether its input is channels-last); ``network`` is left as it is."""
    import copy

    if name == "eager":
        return network, False
    if name == "channels-last":
        return copy.deepcopy(network).to(memory_format=torch.channels_last), True
    if name == "jit-freeze":
        return _traced(network, example, optimise=False), False
    if name == "jit-freeze-cl":
        cl = copy.deepcopy(network).to(memory_format=torch.channels_last)
        return _traced(cl, example.to(memory_format=torch.channels_last), optimise=False), True
    if name == "jit-freeze-ofi":
        return _traced(network, example, optimise=True), False
    if name == "compile":
        return _compiled(copy.deepcopy(network), freezing=False), False
    if name == "compile-freezing":
        return _compiled(copy.deepcopy(network), freezing=True), False
    raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS,
                        default=[v for v in VARIANTS if v not in ("jit-freeze-cl", "compile-freezing")],
                        help="default: all but jit-freeze-cl (no faster than channels-last alone in a first "
                             "run) and compile-freezing (a run of its own, see above)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(CPU_CANDIDATES))
    parser.add_argument("--compile-batch-sizes", type=int, nargs="+", default=[4],
                        help="batch sizes of the compiled variants (each compiles again)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per batch size (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the predictor's cap on 2 cores)")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    args = parser.parse_args()
    if set(COMPILED) <= set(args.variants):
        parser.error("compile and compile-freezing cannot share a run (dynamo reuses the first one's graph): "
                     "time them in two runs")
    started_run = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    network = build(nnUNetTrainerPURe, planner_2d_plans("SynthCT", SPEC), SPEC, deep_supervision=False).eval()
    shape = (SPEC["channels"], *SPEC["patch"])
    # CT-like preprocessed intensities (z-scored): roughly standard normal
    compiled_sizes = set(args.compile_batch_sizes) if set(COMPILED) & set(args.variants) else set()
    sizes = sorted(set(args.batch_sizes) | compiled_sizes)
    inputs = {b: torch.randn(b, *shape, generator=torch.Generator().manual_seed(b)) for b in sizes}
    results = {"machine": machine_info(torch.device("cpu")), "settings": {**vars(args), "output": str(args.output),
               "network": type(network).__name__, "patch": list(SPEC["patch"])},
               "variants": {}}
    print(f"load average at start {os.getloadavg()}")

    forwards: Dict[str, tuple] = {}
    with torch.inference_mode():
        reference = {b: network(x) for b, x in inputs.items()}
    for name in args.variants:
        build_started = time.perf_counter()
        try:
            forward, channels_last = build_variant(name, network, inputs[sizes[0]])
        except Exception as error:  # noqa: BLE001 - report and go on with the other variants
            results["variants"][name] = {"failed": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            print(f"{name}: build failed: {results['variants'][name]['failed']}")
            continue
        build_s = time.perf_counter() - build_started
        record = {"build_s": build_s, "first_call_s": {}, "max_abs_logit_diff": {}, "argmax_agreement": {},
                  "batch_sizes": args.compile_batch_sizes if name in COMPILED else args.batch_sizes}
        # the first call per batch size: oneDNN kernel choice, inductor's compile
        with torch.inference_mode():
            for b in record["batch_sizes"]:
                x = inputs[b]
                x = x.to(memory_format=torch.channels_last) if channels_last else x
                first = time.perf_counter()
                try:
                    y = forward(x)
                except Exception as error:  # noqa: BLE001 - report and go on with the other variants
                    record["failed"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                    break
                record["first_call_s"][str(b)] = time.perf_counter() - first
                record["max_abs_logit_diff"][str(b)] = float((y - reference[b]).abs().max())
                record["argmax_agreement"][str(b)] = float((y.argmax(1) == reference[b].argmax(1)).float().mean())
        results["variants"][name] = record
        if "failed" in record:
            print(f"{name}: first call failed: {record['failed']}")
            continue
        forwards[name] = (forward, channels_last)
        record["seconds"] = {str(b): [] for b in record["batch_sizes"]}
        record["cpu_seconds"] = {str(b): [] for b in record["batch_sizes"]}
        print(f"{name}: built in {build_s:.1f} s, first calls {record['first_call_s']}", flush=True)

    names = list(forwards)
    with torch.inference_mode():
        for repeat in range(args.repeats):
            for name in (names if repeat % 2 == 0 else names[::-1]):
                forward, channels_last = forwards[name]
                record = results["variants"][name]
                for b in record["batch_sizes"]:
                    x = inputs[b].to(memory_format=torch.channels_last) if channels_last else inputs[b]
                    started, started_cpu = time.perf_counter(), time.process_time()
                    forward(x)
                    record["seconds"][str(b)].append(time.perf_counter() - started)
                    record["cpu_seconds"][str(b)].append(time.process_time() - started_cpu)
    for name in names:
        record = results["variants"][name]
        record["ms_per_patch"] = {b: 1e3 * statistics.median(s) / int(b) for b, s in record["seconds"].items()}
        record["cpu_ms_per_patch"] = {b: 1e3 * statistics.median(s) / int(b) for b, s in record["cpu_seconds"].items()}
    print_table(results, sizes)
    finish_run(results, args.output, started_run)
    print(f"load average at end {os.getloadavg()}")


def print_table(results: dict, batch_sizes) -> None:
    """ms per patch (wall, median) per batch size; then CPU ms per patch at the best batch, the
    ratios to eager at each one's best batch size (> 1: faster than eager), build time, agreement."""
    eager = results["variants"].get("eager", {})
    header = (f"{'variant':17} " + " ".join(f"{'b' + str(b) + ' ms/patch':>13}" for b in batch_sizes)
              + f" {'best vs eager':>13} {'CPU ms/patch':>12} {'CPU vs eager':>12} {'build s':>8} "
              f"{'max |dlogit|':>12} {'argmax agree':>12}")
    print("\n" + header)

    def best(record, key):
        return min(record[key].values())

    for name, record in results["variants"].items():
        if "failed" in record:
            print(f"{name:17} failed: {record['failed']}")
            continue
        ms = record["ms_per_patch"]
        wall_ratio = f"{best(eager, 'ms_per_patch') / best(record, 'ms_per_patch'):.2f}x" if eager else "-"
        cpu_ratio = f"{best(eager, 'cpu_ms_per_patch') / best(record, 'cpu_ms_per_patch'):.2f}x" if eager else "-"
        print(f"{name:17} " + " ".join(f"{ms[str(b)]:13.1f}" if str(b) in ms else f"{'-':>13}" for b in batch_sizes)
              + f" {wall_ratio:>13} {best(record, 'cpu_ms_per_patch'):12.1f} {cpu_ratio:>12}"
              f" {record['build_s'] + sum(record['first_call_s'].values()):8.1f}"
              f" {max(record['max_abs_logit_diff'].values()):12.2e} {min(record['argmax_agreement'].values()):12.6f}")


if __name__ == "__main__":
    main()
