"""Evaluation time on AMOS-sized data: nnU-Net's compute_metrics_on_folder vs pu-nnunet evaluate.

Generates label volumes the size of AMOS CT scans (default 20 cases of 512 x 512 x 150 voxels,
16 labels with background), writes them as .nii.gz, and times on the same folders:

- reading every pair with nnU-Net's reader (a floor both evaluators pay),
- nnU-Net's ``compute_metrics_on_folder`` with ``--num-processes`` worker processes,
- ``evaluate_folders`` on the CPU (numpy) with the same number of processes, without and with
  the plots, without the boundary metrics (NSD, HD95: ``--no-boundary``), and on CUDA when
  torch sees a GPU.

It prints a table (seconds, ratio to nnU-Net) and writes JSON with the machine's description.
Also checks that both evaluators give the same Dice (largest absolute difference reported).

    python benchmarks/bench_evaluation.py                       # default size
    python benchmarks/bench_evaluation.py --cases 4 --shape 256 256 60   # quick run
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from pu_nnunet.json_files import write_json

# AMOS 2022 CT: 512 x 512 in-plane, typically 100-200 slices, 15 organs + background.
DEFAULT_CASES = 20
DEFAULT_SHAPE_XYZ = (512, 512, 150)
DEFAULT_LABELS = 16  # with background
# CT-like spacing (x, y, z) in mm, only for the volumes in ml.
SPACING_XYZ = (0.8, 0.8, 2.0)
# Each organ is absent from a case with this probability (AMOS: prostate/uterus, gall bladder
# after removal, cropped scans), so some cases are reference-empty for some labels.
ABSENT_PROBABILITY = 0.1
# The prediction is the reference shifted by this many voxels (z, y, x), plus one false blob.
PREDICTION_SHIFT = (1, 2, -2)
FALSE_BLOB_VOXELS = (4, 12, 12)
SEED = 0
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "evaluation.json"


def organ_volume(shape_zyx: tuple[int, int, int], n_labels: int, rng: np.random.Generator) -> np.ndarray:
    """Ellipsoidal 'organs' of random size and place; later labels overwrite earlier ones."""
    volume = np.zeros(shape_zyx, np.uint8)
    for label in range(1, n_labels):
        if rng.random() < ABSENT_PROBABILITY:
            continue
        radii = np.array([rng.uniform(0.05, 0.2) * d for d in shape_zyx])
        centre = np.array([rng.uniform(r, d - r) for r, d in zip(radii, shape_zyx)])
        low = np.maximum(np.floor(centre - radii).astype(int), 0)
        high = np.minimum(np.ceil(centre + radii).astype(int) + 1, shape_zyx)
        grids = np.ogrid[tuple(slice(a, b) for a, b in zip(low, high))]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
        volume[tuple(slice(a, b) for a, b in zip(low, high))][inside] = label
    return volume


def generate(folder: Path, cases: int, shape_xyz: tuple[int, int, int], n_labels: int) -> None:
    import SimpleITK as sitk

    rng = np.random.default_rng(SEED)
    shape_zyx = tuple(reversed(shape_xyz))
    for kind in ("ref", "pred"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for index in range(cases):
        ref = organ_volume(shape_zyx, n_labels, rng)
        pred = np.roll(ref, PREDICTION_SHIFT, axis=(0, 1, 2))
        corner = [rng.integers(0, d - s) for d, s in zip(shape_zyx, FALSE_BLOB_VOXELS)]
        pred[tuple(slice(c, c + s) for c, s in zip(corner, FALSE_BLOB_VOXELS))] = rng.integers(1, n_labels)
        for kind, array in (("ref", ref), ("pred", pred)):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(SPACING_XYZ)
            sitk.WriteImage(image, str(folder / kind / f"amos_{index:04d}.nii.gz"), True)
        print(f"  generated case {index + 1}/{cases}", flush=True)


def machine() -> dict:
    import torch

    memory_kb = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    cpu_name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), platform.processor())
    return {
        "platform": platform.platform(),
        "cpu": cpu_name,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kb / 2 ** 20, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "nnunetv2": importlib.metadata.version("nnunetv2"),
        # other users' load on a shared machine shows up in the timings
        "load_average_1_5_15_min": [round(v, 2) for v in os.getloadavg()],
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_rss_gib(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 2 ** 20, 2)  # ru_maxrss is in KiB on Linux


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def read_only(folder: Path) -> None:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    reader = SimpleITKIO()
    for path in sorted((folder / "ref").glob("*.nii.gz")):
        reader.read_seg(str(path))
        reader.read_seg(str(folder / "pred" / path.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES)
    parser.add_argument("--shape", type=int, nargs=3, default=DEFAULT_SHAPE_XYZ, metavar=("X", "Y", "Z"))
    parser.add_argument("--labels", type=int, default=DEFAULT_LABELS, help="label count with background")
    parser.add_argument("-np", "--num-processes", type=int, default=1)
    parser.add_argument("--data-dir", help="keep the generated data here (reused when present)")
    parser.add_argument("--output", default=str(RESULTS_FILE))
    args = parser.parse_args()

    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from pu_nnunet.evaluation import evaluate_folders

    work = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="bench_evaluation_"))
    labels = list(range(1, args.labels))
    machine_at_start = machine()
    try:
        if not (work / "ref").is_dir():
            print(f"generating {args.cases} cases of {args.shape} voxels in {work}", flush=True)
            generate(work, args.cases, tuple(args.shape), args.labels)
        rows = []
        seconds, _ = timed(lambda: read_only(work))
        rows.append(("read only (nnU-Net SimpleITKIO, 1 process)", seconds))
        print(f"  read only: {seconds:.2f} s", flush=True)
        seconds, theirs = timed(lambda: compute_metrics_on_folder(
            str(work / "ref"), str(work / "pred"), str(work / "nnunet_summary.json"), SimpleITKIO(), ".nii.gz",
            labels, None, args.num_processes))
        nnunet_seconds = seconds
        rows.append((f"nnU-Net compute_metrics_on_folder (np={args.num_processes})", seconds))
        print(f"  nnU-Net: {seconds:.2f} s", flush=True)
        devices = ["cpu"] + (["cuda"] if machine_at_start["cuda_available"] else [])
        ours = {}
        for device in devices:
            seconds, ours[device] = timed(lambda: evaluate_folders(
                work / "pred", work / "ref", work / f"ours_{device}", device=device, labels=labels,
                num_processes=args.num_processes, overwrite=True, plots=False))
            rows.append((f"pu-nnunet evaluate, {device} (np={args.num_processes})", seconds))
            print(f"  ours {device}: {seconds:.2f} s", flush=True)
        seconds, _ = timed(lambda: evaluate_folders(
            work / "pred", work / "ref", work / "ours_no_boundary", device="cpu", labels=labels,
            num_processes=args.num_processes, overwrite=True, plots=False, boundary=False))
        rows.append((f"pu-nnunet evaluate, cpu, no NSD/HD95 (np={args.num_processes})", seconds))
        print(f"  ours cpu without boundary metrics: {seconds:.2f} s", flush=True)
        seconds, _ = timed(lambda: evaluate_folders(
            work / "pred", work / "ref", work / "ours_plots", device="cpu", labels=labels,
            num_processes=args.num_processes, overwrite=True, plots=True))
        rows.append((f"pu-nnunet evaluate, cpu, with plots (np={args.num_processes})", seconds))

        theirs_dice = {(Path(c["prediction_file"]).name[: -len(".nii.gz")], label): c["metrics"][label]["Dice"]
                       for c in theirs["metric_per_case"] for label in labels}
        largest = 0.0
        for device, result in ours.items():
            for case in result["cases"]:
                for label in labels:
                    mine, nnunet = case["labels"][str(label)]["dice"], theirs_dice[(case["case"], label)]
                    if mine is None or np.isnan(nnunet):
                        assert mine is None and np.isnan(nnunet), (case["case"], label)
                    else:
                        largest = max(largest, abs(mine - nnunet))

        print(f"\n{'step':58s} {'seconds':>9s} {'nnU-Net / this':>15s}")
        for name, seconds in rows:
            print(f"{name:58s} {seconds:9.2f} {nnunet_seconds / seconds:15.2f}")
        print(f"largest |Dice ours - Dice nnU-Net| over cases and labels: {largest:.2e}")
        report = {
            "benchmark": "evaluation time, AMOS-sized generated label volumes",
            "machine": machine_at_start,
            "settings": {"cases": args.cases, "shape_xyz": list(args.shape), "labels_with_background": args.labels,
                         "num_processes": args.num_processes, "file_ending": ".nii.gz", "seed": SEED},
            "rows": [{"step": name, "seconds": round(seconds, 3), "nnunet_over_this": round(nnunet_seconds / seconds, 3)}
                     for name, seconds in rows],
            "largest_dice_difference": largest,
            "peak_memory_gib": {"this_process": peak_rss_gib(resource.RUSAGE_SELF),
                                "largest_child_process": peak_rss_gib(resource.RUSAGE_CHILDREN)},
        }
        write_json(args.output, report)
        print(f"wrote {args.output}")
    finally:
        if not args.data_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
