"""Prediction time of a 2d model: ``pu-nnunet predict`` vs ``nnUNetv2_predict``, same model and volumes.

By default it makes its own model, quickly: a synthetic CT dataset
(``generate_synthetic_ct``), nnU-Net's 2d plans (``nnUNetv2_plan_and_preprocess -c 2d``) and
``nnUNetTrainerPURe_tiny`` trained on the CPU (2 epochs of 10 iterations: the network has its
full planned size, so the timing is realistic; what it learned does not matter here). Or pass
``--model-dir`` and ``--images`` to time a trained model on your own volumes.

On the CPU, and on CUDA when torch sees a GPU, it times:

- the two commands end to end, as subprocesses (start-up, reading, preprocessing, prediction,
  export all count, as a user sees them), with mirroring TTA on (both tools' default);
  nnU-Net runs ``nnUNetv2_predict_from_modelfolder -npp 1 -nps 1`` (one worker each way);
- the sliding-window step alone, in this process, on each preprocessed volume: nnU-Net's
  ``predict_logits_from_preprocessed_data`` (one patch per forward pass) vs
  ``BatchedSlicePredictor.predict_logits`` (many): the part the batching changes.

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
    started = time.perf_counter()
    result = subprocess.run([str(BIN / command[0]), *command[1:]], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed


def make_model(root: Path, cases: int, shape_zyx: tuple[int, int, int]) -> tuple[Path, Path, dict]:
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
    seconds["train"] = run(["nnUNetv2_train", str(DATASET_ID), "2d", FOLD, "-tr", TRAINER, "-device", "cpu"],
                           {**env, "nnUNet_n_proc_DA": "0"})
    model_dir = root / "results" / dataset.name / f"{TRAINER}__nnUNetPlans__2d"
    return model_dir, dataset / "imagesTs", seconds


def time_commands(model_dir: Path, images: Path, work: Path, device: str, repeats: int, threads: int,
                  folds: list[str]) -> dict:
    """Wall seconds of both commands (each run into a fresh folder); returns times and output folders.

    The tools take turns (nnU-Net, pu-nnunet, nnU-Net, ...) so that a shared machine's changing
    load falls on both alike."""
    env = nnunet_env(work, threads)
    commands = {
        "nnUNetv2_predict": ["nnUNetv2_predict_from_modelfolder", "-i", str(images), "-m", str(model_dir),
                             "-f", *folds, "-device", device, "-npp", "1", "-nps", "1", "--disable_progress_bar"],
        "pu-nnunet predict": ["pu-nnunet", "predict", "-i", str(images), "-m", str(model_dir), "-f", *folds,
                              "--device", device],
    }
    results = {tool: {"seconds": []} for tool in commands}
    for repeat in range(repeats):
        for tool, command in commands.items():
            out = work / f"{device}_{tool.split()[0]}_{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            results[tool]["seconds"].append(run([*command, "-o", str(out)], env))
            results[tool]["output"] = out
    for result in results.values():
        result["median_s"] = float(np.median(result["seconds"]))
    return results


def time_sliding_window(model_dir: Path, images: Path, device: str, threads: int, folds: list[str],
                        repeats: int) -> dict:
    """Seconds of nnU-Net's and our sliding window over all preprocessed volumes, in this process.

    Both first predict the first volume untimed (first calls are slow: kernels, allocator); then
    each volume is predicted ``repeats`` times by each, in alternating order. Reports the median
    over repeats of the total."""
    import torch

    from pu_nnunet.inference.inputs import find_input_cases
    from pu_nnunet.devices import resolve_device
    from pu_nnunet.inference.model_folder import inspect_model_folder, load_predictor
    from pu_nnunet.inference.sliding_window_2d import BatchedSlicePredictor

    torch.set_num_threads(threads)
    model = inspect_model_folder(model_dir, folds)
    predictor = load_predictor(model, resolve_device(device))
    batched = BatchedSlicePredictor(predictor)
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    tools = [("nnUNetv2_predict", predictor.predict_logits_from_preprocessed_data),
             ("pu-nnunet predict", batched.predict_logits)]
    totals = {tool: [0.0] * repeats for tool, _ in tools}
    agreement = []
    shapes = []
    for index, case in enumerate(find_input_cases(images, len(model.channel_names))):
        data, _, _ = preprocessor.run_case([str(f) for f in case.channel_files], None, predictor.plans_manager,
                                           predictor.configuration_manager, model.dataset_json)
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
        agreement.append(float((logits["nnUNetv2_predict"].argmax(0) == logits["pu-nnunet predict"].argmax(0))
                               .float().mean()))
    return {"seconds": {tool: float(np.median(values)) for tool, values in totals.items()},
            "seconds_per_repeat": totals, "batch_size": batched.batch_size,
            "patch_size": list(predictor.configuration_manager.patch_size),
            "argmax_agreement_min": min(agreement), "work": sliding_window_flops(predictor, len(model.channel_names), shapes)}


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


def print_table(results: dict) -> None:
    print(f"\n{'device':7} {'tool':18} {'end to end s':>13} {'sliding window s':>17} {'GFLOP/s':>8} "
          f"{'of matmul':>9} {'speed-up (e2e / sw)':>20}")
    for device, result in results["devices"].items():
        e2e, window = result["end_to_end"], result["sliding_window"]["seconds"]
        work = result["sliding_window"]["work"]
        roof = result["matmul_gflops"]
        for tool in ("nnUNetv2_predict", "pu-nnunet predict"):
            ratio = ""
            if tool == "pu-nnunet predict":
                ratio = (f"{e2e['nnUNetv2_predict']['median_s'] / e2e[tool]['median_s']:.2f}x / "
                         f"{window['nnUNetv2_predict'] / window[tool]:.2f}x")
            rate = work["total_tflop"] * 1e3 / window[tool]
            print(f"{device:7} {tool:18} {e2e[tool]['median_s']:13.1f} {window[tool]:17.1f} {rate:8.1f} "
                  f"{rate / roof:9.0%} {ratio:>20}")
        print(f"{'':7} work: {work['total_tflop']:.2f} TFLOP ({work['per_patch_gflop']:.2f} GFLOP per patch x "
              f"{work['patches']} patches x {work['mirrored_passes']} mirrored passes); float32 "
              f"{MATMUL_SIZE}x{MATMUL_SIZE} matmul {roof:.1f} GFLOP/s (the 'of matmul' roof, same run)")
        for mode, timing in result["modes"].items():
            if "skipped" in timing:
                print(f"{'':7} mode {mode}: not run ({timing['skipped']})")
                continue
            rate = work["total_tflop"] * 1e3 * (2 ** len(timing["mirror_axes"])) / work["mirrored_passes"] \
                / timing["seconds"]
            print(f"{'':7} mode {mode:28} sliding window {timing['seconds']:7.1f} s, {rate:6.1f} GFLOP/s, agreement "
                  "Dice (min over cases) " + ", ".join(f"label {k} {v:.4f}" for k, v in timing["agreement_dice_min"].items()))
        print(f"{'':7} batch {result['sliding_window']['batch_size']} patches of "
              f"{result['sliding_window']['patch_size']}; agreement Dice per label (min / mean over cases): "
              + ", ".join(f"{name} {v['min']:.4f} / {v['mean']:.4f} ({v['nnunet_voxels']} voxels)"
                          for name, v in result["agreement_dice"].items()))


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
    args = parser.parse_args()
    if (args.model_dir is None) != (args.images is None):
        parser.error("--model-dir and --images go together")

    import torch

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "load_average_at_start": os.getloadavg(), "settings": {"threads": args.threads, "repeats": args.repeats,
                                                  "folds": args.folds, "tta": "mirroring (default of both)"}}
    try:
        if args.model_dir is None:
            model_dir, images, setup = make_model(work, args.cases, tuple(args.shape))
            results["settings"].update(made_model=True, trainer=TRAINER, cases=args.cases, shape_zyx=list(args.shape),
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
        for device in devices:
            end_to_end = time_commands(model_dir, images, work, device, args.repeats, args.threads, args.folds)
            window = time_sliding_window(model_dir, images, device, args.threads, args.folds, args.repeats)
            results["devices"][device] = {
                "matmul_gflops": matmul_gflops(args.threads, device),
                "modes": time_modes(model_dir, images, device, args.threads, args.folds),
                "end_to_end": {tool: {k: v for k, v in r.items() if k != "output"} for tool, r in end_to_end.items()},
                "sliding_window": window,
                "agreement_dice": agreement_dice(end_to_end["pu-nnunet predict"]["output"],
                                                 end_to_end["nnUNetv2_predict"]["output"], labels),
            }
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
