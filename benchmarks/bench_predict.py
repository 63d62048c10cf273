"""Prediction time of a 2d model: ``pu-nnunet predict`` vs ``nnUNetv2_predict``, same model and volumes.

By default it makes its own model, quickly: a synthetic CT dataset
(``generate_synthetic_ct``), nnU-Net's 2d plans (``nnUNetv2_plan_and_preprocess -c 2d``) and
``nnUNetTrainerPURe_tiny`` trained on the CPU (2 epochs of 10 iterations: the network has its
full planned size, so the timing is realistic; what it learned does not matter here). Or pass
``--model-dir`` and ``--images`` to time a trained model on your own volumes.

On the CPU, and on CUDA when torch sees a GPU, it times:

- the commands end to end, as subprocesses (start-up, reading, preprocessing, prediction,
  export all count, as a user sees them), with mirroring TTA on (every tool's default):
  nnU-Net runs ``nnUNetv2_predict_from_modelfolder -npp 1 -nps 1`` (one worker each way),
  pu-nnunet ``predict`` with PyTorch and with ``--backend onnxruntime`` (on the model exported
  once with ``export-onnx``, timed apart); each split into start-up, read + preprocess,
  sliding window and export (pu-nnunet's own step times; nnU-Net's steps timed in process);
- the sliding-window step alone, in this process, on each preprocessed volume: nnU-Net's
  ``predict_logits_from_preprocessed_data`` (one patch per forward pass) vs
  ``BatchedSlicePredictor.predict_logits`` (batch chosen by timing on a CPU), with each backend;
  its FLOPs and the fraction of the machine's float32 matmul throughput (measured in the run);
- with ``--cpu-optimise MODE``, also pu-nnunet's PyTorch path with that ``predict --cpu-optimise``
  (channels-last, frozen TorchScript, torch.compile; ``bench_predict_forward.py`` times the
  forward pass alone), end to end and in process;
- the opt-in modes that do less work (a TTA subset, no TTA, bf16 where the CPU has it) with
  their agreement Dice against the full-precision, full-TTA segmentation.

Both tools get the same torch threads (``nnUNet_def_n_proc`` = ``--threads``, which nnU-Net uses
as its cap). It reports the agreement Dice per label of pu-nnunet's segmentations with
nnU-Net's, prints a table and writes JSON.

    python benchmarks/bench_predict.py                                # 4 volumes of 32 x 128 x 128
    python benchmarks/bench_predict.py --cases 2 --shape 16 64 64     # quick run
    python benchmarks/bench_predict.py --model-dir M --images DIR     # your model and volumes
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_CASES = 4
# (z, y, x): a short stack at a realistic in-plane size for a CPU run of a few minutes
DEFAULT_SHAPE_ZYX = (32, 128, 128)
# volumes the tiny model trains on (nnU-Net's 5-fold split needs at least 5)
TRAINING_CASES = 6
NUM_ORGANS = 3
DATASET_ID = 981
TRAINER = "nnUNetTrainerPURe_tiny"
FOLD = "0"
BIN = Path(sys.executable).parent
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "predict.json"


def nnunet_env(root: Path, threads: int, **extra: str) -> dict:
    from pu_nnunet.trainers import EXT_TRAINER_VARIABLE, with_trainer_folder

    env = dict(os.environ, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_def_n_proc=str(threads), PYTHONUNBUFFERED="1",
               **{EXT_TRAINER_VARIABLE: with_trainer_folder(os.environ.get(EXT_TRAINER_VARIABLE))})
    env.pop("nnUNet_n_proc_DA", None)  # the planner fails with 0; training sets it
    env.update(extra)
    return env


def run(command: list[str], env: dict) -> float:
    """Runs a console script of this environment; returns its wall time in seconds."""
    return run_and_capture(command, env)[0]


def run_and_capture(command: list[str], env: dict) -> tuple[float, str]:
    """Runs a console script of this environment; returns its wall time in seconds and stdout."""
    started = time.perf_counter()
    result = subprocess.run([str(BIN / command[0]), *command[1:]], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed, result.stdout


# pu-nnunet predict's last line: "step times: model loading 5.0 s, read + preprocess 0.2 s, sliding
# window 49.1 s, export 0.2 s; waited 0.1 s for reading or export; cases 49.2 s wall"
STEP_TIME = re.compile(r"(?P<step>[a-z +]+?) (?P<seconds>[0-9.]+) s")


def parse_step_times(stdout: str) -> dict[str, float]:
    """pu-nnunet predict's step times, plus "start-up": what the wall time leaves (interpreter,
    imports, argument and input checks, records)."""
    line = next(line for line in stdout.splitlines() if line.startswith("step times: "))
    steps_part, waited_part, wall_part = line[len("step times: "):].split("; ")
    steps = {m["step"].strip(): float(m["seconds"]) for m in STEP_TIME.finditer(steps_part)}
    steps["waited"] = float(waited_part.split()[1])
    steps["cases wall"] = float(wall_part.split()[1])
    return steps


def make_model(root: Path, cases: int, shape_zyx: tuple[int, int, int], trainer: str = TRAINER) -> tuple[Path, Path, dict]:
    """Synthetic CT, 2d plans, a tiny trained PU model: (model folder, test images, seconds per step)."""
    from pu_nnunet.datasets.synthetic.ct import generate_synthetic_ct

    seconds = {}
    started = time.perf_counter()
    dataset = generate_synthetic_ct(root / "raw", DATASET_ID, num_cases=TRAINING_CASES + cases, num_test=cases,
                                    shape=shape_zyx, num_organs=NUM_ORGANS)
    seconds["generate"] = time.perf_counter() - started
    env = nnunet_env(root, threads=1)
    seconds["plan_and_preprocess"] = run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d",
                                          "-np", "1"], env)
    seconds["train"] = run(["nnUNetv2_train", str(DATASET_ID), "2d", FOLD, "-tr", trainer, "-device", "cpu"],
                           {**env, "nnUNet_n_proc_DA": "0"})
    model_dir = root / "results" / dataset.name / f"{trainer}__nnUNetPlans__2d"
    return model_dir, dataset / "imagesTs", seconds


NNUNET = "nnUNetv2_predict"
OURS = "pu-nnunet predict"
OURS_ONNX = "pu-nnunet predict, onnxruntime"


def ours_optimised(mode: str) -> str:
    return f"pu-nnunet predict, --cpu-optimise {mode}"


def time_commands(model_dir: Path, images: Path, work: Path, device: str, repeats: int, threads: int,
                  folds: list[str], onnx_file: Path | None, cpu_optimise: str | None = None) -> dict:
    """Wall seconds of the commands (each run into a fresh folder); returns times, pu-nnunet's step
    times (median over repeats) and output folders.

    The tools take turns (nnU-Net, pu-nnunet, nnU-Net, ...) so that a shared machine's changing
    load falls on all alike."""
    env = nnunet_env(work, threads)
    ours = ["pu-nnunet", "predict", "-i", str(images), "-m", str(model_dir), "-f", *folds, "--device", device]
    commands = {
        NNUNET: ["nnUNetv2_predict_from_modelfolder", "-i", str(images), "-m", str(model_dir),
                 "-f", *folds, "-device", device, "-npp", "1", "-nps", "1", "--disable_progress_bar"],
        OURS: ours,
    }
    if onnx_file is not None:
        commands[OURS_ONNX] = [*ours, "--backend", "onnxruntime", "--onnx", str(onnx_file)]
    if cpu_optimise is not None:
        commands[ours_optimised(cpu_optimise)] = [*ours, "--cpu-optimise", cpu_optimise]
    results = {tool: {"seconds": [], "steps": []} for tool in commands}
    for repeat in range(repeats):
        for index, (tool, command) in enumerate(commands.items()):
            out = work / f"{device}_{index}_{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            seconds, stdout = run_and_capture([*command, "-o", str(out)], env)
            results[tool]["seconds"].append(seconds)
            if tool != NNUNET:
                steps = parse_step_times(stdout)
                steps["start-up"] = seconds - steps["model loading"] - steps["cases wall"]
                results[tool]["steps"].append(steps)
            results[tool]["output"] = out
    for result in results.values():
        result["median_s"] = float(np.median(result["seconds"]))
        if result["steps"]:
            result["median_steps"] = {step: float(np.median([s[step] for s in result["steps"]]))
                                      for step in result["steps"][0]}
    return results


def export_onnx(model_dir: Path, work: Path, folds: list[str], threads: int) -> tuple[Path | None, float | None]:
    """``pu-nnunet export-onnx`` of the model (a one-off cost, reported apart); None without onnxruntime."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None, None
    output = work / "model.onnx"
    seconds = run(["pu-nnunet", "export-onnx", str(model_dir), "-f", *folds, "-o", str(output), "--overwrite"],
                  nnunet_env(work, threads))
    return output, seconds


def time_sliding_window(model_dir: Path, images: Path, device: str, threads: int, folds: list[str],
                        repeats: int, onnx_file: Path | None, cpu_optimise: str | None = None) -> dict:
    """Seconds of nnU-Net's and our sliding windows (PyTorch, and onnxruntime with ``onnx_file``)
    over all preprocessed volumes, in this process; and nnU-Net's read + preprocess and export.

    Each first predicts the first volume untimed (first calls are slow: kernels, allocator); then
    each volume is predicted ``repeats`` times by each, in alternating order. Reports the median
    over repeats of the total."""
    import torch
    from nnunetv2.configuration import default_num_processes
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    from pu_nnunet.inference.inputs import find_input_cases
    from pu_nnunet.devices import resolve_device
    from pu_nnunet.inference.model_folder import inspect_model_folder, load_predictor
    from pu_nnunet.inference.sliding_window_2d import BatchedSlicePredictor

    torch.set_num_threads(threads)
    model = inspect_model_folder(model_dir, folds)
    predictor = load_predictor(model, resolve_device(device))
    batched = BatchedSlicePredictor(predictor)
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    tools = [(NNUNET, predictor.predict_logits_from_preprocessed_data), (OURS, batched.predict_logits)]
    batched_onnx = None
    if onnx_file is not None:
        from pu_nnunet.inference.onnx_backend import use_onnxruntime

        onnx_predictor = load_predictor(model, resolve_device(device))
        use_onnxruntime(onnx_predictor, model, onnx_file, threads=min(default_num_processes, threads))
        batched_onnx = BatchedSlicePredictor(onnx_predictor)
        tools.append((OURS_ONNX, batched_onnx.predict_logits))
    batched_optimised = None
    if cpu_optimise is not None:
        from pu_nnunet.inference.cpu_optimise import use_cpu_optimisation

        optimised_predictor = load_predictor(model, resolve_device(device))
        use_cpu_optimisation(optimised_predictor, cpu_optimise)
        batched_optimised = BatchedSlicePredictor(optimised_predictor)
        tools.append((ours_optimised(cpu_optimise), batched_optimised.predict_logits))
    totals = {tool: [0.0] * repeats for tool, _ in tools}
    agreement = {tool: [] for tool, _ in tools[1:]}
    shapes = []
    # nnU-Net's other steps, timed in this process one after the other (its command overlaps
    # them with worker processes): reading + preprocessing and exporting each case
    nnunet_steps = {"read + preprocess": 0.0, "export": 0.0}
    export_dir = Path(tempfile.mkdtemp(prefix="bench_export_"))
    for index, case in enumerate(find_input_cases(images, len(model.channel_names))):
        started = time.perf_counter()
        data, _, properties = preprocessor.run_case([str(f) for f in case.channel_files], None,
                                                    predictor.plans_manager, predictor.configuration_manager,
                                                    model.dataset_json)
        nnunet_steps["read + preprocess"] += time.perf_counter() - started
        volume = torch.from_numpy(data)
        shapes.append(_padded_shape(volume.shape[1:], predictor.configuration_manager.patch_size))
        if index == 0:
            for _, function in tools:
                function(volume)
        logits = {}
        for repeat in range(repeats):
            for tool, function in (tools if repeat % 2 == 0 else tools[::-1]):
                if device == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                logits[tool] = function(volume)
                if device == "cuda":
                    torch.cuda.synchronize()
                totals[tool][repeat] += time.perf_counter() - started
        for tool in agreement:
            agreement[tool].append(float((logits[NNUNET].argmax(0) == logits[tool].argmax(0)).float().mean()))
        started = time.perf_counter()
        export_prediction_from_logits(logits[NNUNET].numpy(), properties, predictor.configuration_manager,
                                      predictor.plans_manager, model.dataset_json, str(export_dir / f"case_{index}"))
        nnunet_steps["export"] += time.perf_counter() - started
    shutil.rmtree(export_dir, ignore_errors=True)
    batch_sizes = {OURS: _batch_choice(batched)}
    if batched_onnx is not None:
        batch_sizes[OURS_ONNX] = _batch_choice(batched_onnx)
    if batched_optimised is not None:
        batch_sizes[ours_optimised(cpu_optimise)] = _batch_choice(batched_optimised)
    return {"seconds": {tool: float(np.median(values)) for tool, values in totals.items()},
            "seconds_per_repeat": totals, "batch_size": batch_sizes, "nnunet_steps": nnunet_steps,
            "patch_size": list(predictor.configuration_manager.patch_size),
            "argmax_agreement_min": {tool: min(values) for tool, values in agreement.items()},
            "work": sliding_window_flops(predictor, len(model.channel_names), shapes)}


def _batch_choice(batched) -> dict:
    """The batch size used and, when timed, the seconds per patch of each size tried."""
    tuner = batched.tuner
    return {"chosen": batched.batch_size, "timed": tuner is not None,
            "seconds_per_patch": {str(k): v for k, v in (tuner.measurements() if tuner else {}).items()}}


def _padded_shape(shape, patch_size) -> tuple[int, ...]:
    """The volume size nnU-Net tiles: each axis padded up to the patch size (pad_nd_image)."""
    leading = len(shape) - len(patch_size)
    return tuple(shape[:leading]) + tuple(max(s, p) for s, p in zip(shape[leading:], patch_size))


def time_modes(model_dir: Path, images: Path, device: str, threads: int, folds: list[str]) -> dict:
    """pu-nnunet's opt-in modes that do less work: seconds of the sliding window over all volumes
    and the agreement Dice per label of each mode's segmentation (argmax of the logits, in the
    preprocessed grid) with the full-precision, full-TTA one."""
    import torch

    from pu_nnunet.devices import resolve_device
    from pu_nnunet.inference.inputs import find_input_cases
    from pu_nnunet.inference.model_folder import inspect_model_folder, load_predictor
    from pu_nnunet.inference.precision import check_precision, restrict_mirror_axes
    from pu_nnunet.inference.errors import PredictionError
    from pu_nnunet.inference.sliding_window_2d import BatchedSlicePredictor

    torch.set_num_threads(threads)
    model = inspect_model_folder(model_dir, folds)
    predictor = load_predictor(model, resolve_device(device))
    full_axes = tuple(predictor.allowed_mirroring_axes or ())
    modes = {"full TTA, default precision": ("auto", full_axes), f"TTA axis {full_axes[-1]} only": ("auto", full_axes[-1:]),
             "no TTA": ("auto", ()), "bf16, full TTA": ("bf16", full_axes)}
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    volumes = [torch.from_numpy(preprocessor.run_case([str(f) for f in case.channel_files], None,
                                                      predictor.plans_manager, predictor.configuration_manager,
                                                      model.dataset_json)[0])
               for case in find_input_cases(images, len(model.channel_names))]
    labels = range(1, predictor.label_manager.num_segmentation_heads)
    results, reference = {}, None
    for mode, (precision, axes) in modes.items():
        try:
            check_precision(precision, predictor.device, is_2d=True)
        except PredictionError as why:
            results[mode] = {"skipped": str(why)}
            continue
        predictor.allowed_mirroring_axes, predictor.use_mirroring = full_axes, True
        restrict_mirror_axes(predictor, list(axes))
        batched = BatchedSlicePredictor(predictor, precision=precision)
        batched.predict_logits(volumes[0])  # warm-up
        started, segmentations = time.perf_counter(), []
        for volume in volumes:
            segmentations.append(batched.predict_logits(volume).argmax(0).numpy())
        seconds = time.perf_counter() - started
        reference = reference or segmentations
        results[mode] = {"seconds": seconds, "precision": precision, "mirror_axes": list(axes),
                         "agreement_dice_min": {str(label): min(dice(a, b, label) for a, b in zip(segmentations, reference))
                                                for label in labels},
                         "agreement_dice_mean": {str(label): float(np.mean([dice(a, b, label) for a, b in
                                                                            zip(segmentations, reference)]))
                                                 for label in labels}}
    return results


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = int(x.sum() + y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


def agreement_dice(ours: Path, theirs: Path, labels: dict[str, int]) -> dict:
    """Per foreground label: min and mean over cases of Dice(pu-nnunet, nnUNetv2_predict)."""
    import SimpleITK as sitk

    per_label = {name: [] for name, value in labels.items() if value != 0}
    # a label neither tool predicts agrees trivially: its voxel count says how much was compared
    voxels = dict.fromkeys(per_label, 0)
    for reference in sorted(theirs.glob("*.nii.gz")):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(ours / reference.name)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(reference)))
        for name in per_label:
            per_label[name].append(dice(a, b, labels[name]))
            voxels[name] += int((b == labels[name]).sum())
    return {name: {"min": min(values), "mean": float(np.mean(values)), "cases": len(values),
                   "nnunet_voxels": voxels[name]} for name, values in per_label.items()}


# the machine's float32 matmul throughput is measured on square matrices of this size: large
# enough for the BLAS kernels to reach their peak, small enough to take about a second
MATMUL_SIZE = 2048
MATMUL_REPEATS = 5


def matmul_gflops(threads: int, device: str) -> float:
    """Best of a few float32 ``MATMUL_SIZE``-square matmuls, in GFLOP/s: the roof the sliding window
    is measured against (a convolution network cannot run faster than the matmul kernels)."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    best = float("inf")
    for _ in range(MATMUL_REPEATS + 1):  # the first call is a warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * MATMUL_SIZE ** 3 / best / 1e9


def sliding_window_flops(predictor, num_channels: int, volume_shapes: list[tuple[int, ...]]) -> dict:
    """FLOPs of the sliding window over the given preprocessed volumes: one network forward of a
    patch (torch's FlopCounterMode: convolutions and matmuls, 2 FLOPs per multiply-add) times the
    patches nnU-Net's tiling cuts, times the mirrored passes of the TTA."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    patch = list(predictor.configuration_manager.patch_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        predictor.network(torch.zeros(1, num_channels, *patch))
    per_patch = counter.get_total_flops()
    patches = sum(len(predictor._internal_get_sliding_window_slicers(shape)) for shape in volume_shapes)
    mirrors = 2 ** len(predictor.allowed_mirroring_axes or ()) if predictor.use_mirroring else 1
    return {"per_patch_gflop": per_patch / 1e9, "patches": patches, "mirrored_passes": mirrors,
            "total_tflop": per_patch * patches * mirrors / 1e12}


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "nnunetv2": importlib.metadata.version("nnunetv2"),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def step_breakdown(result: dict, tool: str) -> dict[str, float]:
    """End-to-end seconds split into start-up, read + preprocess, sliding window and export.

    pu-nnunet: its own step times (busy seconds; reading and export overlap the sliding window,
    "start-up" is the rest of the wall time). nnU-Net: the same steps timed in this process one
    after the other; its command overlaps them in worker processes, so "start-up and rest" is its
    wall time minus their sum and may hide some of them."""
    e2e = result["end_to_end"][tool]
    if tool == NNUNET:
        steps = result["sliding_window"]["nnunet_steps"]
        window = result["sliding_window"]["seconds"][NNUNET]
        return {"start-up": e2e["median_s"] - steps["read + preprocess"] - window - steps["export"],
                "read + preprocess": steps["read + preprocess"], "sliding window": window, "export": steps["export"]}
    steps = e2e["median_steps"]
    return {"start-up": steps["start-up"] + steps["model loading"], "read + preprocess": steps["read + preprocess"],
            "sliding window": steps["sliding window"], "export": steps["export"]}


def print_table(results: dict) -> None:
    header = (f"{'device':7} {'tool':31} {'e2e s':>6} {'start-up':>8} {'read+pre':>8} {'window':>7} {'export':>7} "
              f"{'window in-proc s':>16} {'GFLOP/s':>8} {'of matmul':>9} {'batch':>5} {'e2e / window vs nnU-Net':>24} "
              "agreement Dice vs nnU-Net (min over cases)")
    print("\n" + header)
    for device, result in results["devices"].items():
        e2e, window = result["end_to_end"], result["sliding_window"]["seconds"]
        work = result["sliding_window"]["work"]
        roof = result["matmul_gflops"]
        for tool in window:
            ratio, agreement, batch = "", "", "1"
            if tool != NNUNET:
                ratio = f"{e2e[NNUNET]['median_s'] / e2e[tool]['median_s']:.2f}x / {window[NNUNET] / window[tool]:.2f}x"
                agreement = ", ".join(f"{name} {v['min']:.4f}" for name, v in result["agreement_dice"][tool].items())
                batch = str(result["sliding_window"]["batch_size"][tool]["chosen"])
            steps = step_breakdown(result, tool)
            rate = work["total_tflop"] * 1e3 / window[tool]
            print(f"{device:7} {tool:31} {e2e[tool]['median_s']:6.1f} {steps['start-up']:8.1f} "
                  f"{steps['read + preprocess']:8.1f} {steps['sliding window']:7.1f} {steps['export']:7.1f} "
                  f"{window[tool]:16.1f} {rate:8.1f} {rate / roof:9.0%} {batch:>5} {ratio:>24} {agreement}")
        print(f"{'':7} work: {work['total_tflop']:.2f} TFLOP ({work['per_patch_gflop']:.2f} GFLOP per patch x "
              f"{work['patches']} patches x {work['mirrored_passes']} mirrored passes); float32 "
              f"{MATMUL_SIZE}x{MATMUL_SIZE} matmul {roof:.1f} GFLOP/s (the 'of matmul' roof, same run)")
        for tool, choice in result["sliding_window"]["batch_size"].items():
            if choice["timed"]:
                print(f"{'':7} {tool}: batch chosen by timing, ms per patch "
                      + ", ".join(f"batch {k} {v * 1e3:.0f}" for k, v in choice["seconds_per_patch"].items()))
        for mode, timing in result["modes"].items():
            if "skipped" in timing:
                print(f"{'':7} mode {mode}: not run ({timing['skipped']})")
                continue
            rate = work["total_tflop"] * 1e3 * (2 ** len(timing["mirror_axes"])) / work["mirrored_passes"] \
                / timing["seconds"]
            means = timing.get("agreement_dice_mean", {})
            print(f"{'':7} mode {mode:28} sliding window {timing['seconds']:7.1f} s, {rate:6.1f} GFLOP/s, agreement "
                  "Dice (min / mean over cases) " + ", ".join(f"label {k} {v:.4f} / {means.get(k, float('nan')):.4f}"
                                                            for k, v in timing["agreement_dice_min"].items()))
        if result.get("onnx_export_s") is not None:
            print(f"{'':7} export-onnx (once per model, not in the times above): {result['onnx_export_s']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="trained 2d model folder (default: make a tiny one)")
    parser.add_argument("--images", type=Path, help="volumes to predict (needed with --model-dir)")
    parser.add_argument("--folds", nargs="+", default=[FOLD], help="folds to use (default 0)")
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES, help="volumes to predict when making a model")
    parser.add_argument("--shape", type=int, nargs=3, default=DEFAULT_SHAPE_ZYX, metavar=("Z", "Y", "X"))
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each command, and predictions of each volume in process (median reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads for both tools")
    parser.add_argument("--workdir", type=Path, help="keep the dataset, model and outputs here")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    parser.add_argument("--trainer", default=TRAINER,
                        help=f"trainer of the model made (default {TRAINER}: 20 iterations, enough for timing; "
                             "nnUNetTrainerPURe_demo, 240 iterations, segments well enough for the modes' "
                             "agreement Dice to mean something)")
    parser.add_argument("--no-onnx", action="store_true", help="leave out the onnxruntime backend")
    parser.add_argument("--cpu-optimise", choices=("channels-last", "freeze", "compile"),
                        help="also time pu-nnunet predict --cpu-optimise MODE (CPU only)")
    args = parser.parse_args()
    if (args.model_dir is None) != (args.images is None):
        parser.error("--model-dir and --images go together")

    import torch

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "load_average_at_start": os.getloadavg(), "settings": {"threads": args.threads, "repeats": args.repeats,
                                                  "folds": args.folds, "tta": "mirroring (default of both)",
                                                  "cpu_optimise": args.cpu_optimise}}
    try:
        if args.model_dir is None:
            model_dir, images, setup = make_model(work, args.cases, tuple(args.shape), args.trainer)
            results["settings"].update(made_model=True, trainer=args.trainer, cases=args.cases, shape_zyx=list(args.shape),
                                       setup_seconds=setup)
        else:
            model_dir, images = args.model_dir, args.images
            results["settings"].update(made_model=False)
        results["settings"].update(model_dir=str(model_dir), images=str(images))
        labels = json.loads((model_dir / "dataset.json").read_text())["labels"]
        plans = json.loads((model_dir / "plans.json").read_text())
        architecture = plans["configurations"]["2d"]["architecture"]
        results["settings"]["network"] = {"plans_class": architecture["network_class_name"],
                                          "features_per_stage": architecture["arch_kwargs"]["features_per_stage"]}
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        results["devices"] = {}
        onnx_file, onnx_seconds = (None, None) if args.no_onnx else export_onnx(model_dir, work, args.folds,
                                                                                args.threads)
        for device in devices:
            # onnxruntime's CPU package runs on the CPU only
            device_onnx = onnx_file if device == "cpu" else None
            # --cpu-optimise is refused on a GPU
            optimise = args.cpu_optimise if device == "cpu" else None
            end_to_end = time_commands(model_dir, images, work, device, args.repeats, args.threads, args.folds,
                                       device_onnx, optimise)
            window = time_sliding_window(model_dir, images, device, args.threads, args.folds, args.repeats,
                                         device_onnx, optimise)
            results["devices"][device] = {
                "matmul_gflops": matmul_gflops(args.threads, device),
                "modes": time_modes(model_dir, images, device, args.threads, args.folds),
                "end_to_end": {tool: {k: v for k, v in r.items() if k != "output"} for tool, r in end_to_end.items()},
                "sliding_window": window,
                "agreement_dice": {tool: agreement_dice(end_to_end[tool]["output"], end_to_end[NNUNET]["output"],
                                                        labels) for tool in end_to_end if tool != NNUNET},
                "onnx_export_s": onnx_seconds if device_onnx else None,
            }
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_at_end"] = os.getloadavg()
    print_table(results)
    print(f"load average (1, 5, 15 min) at the start {results['load_average_at_start']}, "
          f"at the end {results['load_average_at_end']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
