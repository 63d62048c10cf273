"""The prepared GPU check: every CUDA code path of pu-nnunet in one unattended run, one table, one JSON.

A GPU is lent to this project rarely and briefly, so what must be verified on one is fixed here
rather than improvised (``scripts/gpu_check.sh`` wraps it with the set-up). On one GPU it runs:

1. ``pytest -m cuda`` (the CUDA tests; they skip with a reason on a CPU);
2. a synthetic CT dataset planned and preprocessed by nnU-Net for ``3d_fullres`` (nnU-Net's most
   used configuration);
3. nnU-Net's own training loop (``nnUNetTrainer.run_training``, so torch.compile and fp16 autocast
   with a GradScaler are nnU-Net's GPU defaults, untouched) for a fixed number of iterations, one
   fresh process per trainer: PURe, its matched baseline and ``_Unstabilised``; per trainer the
   median step time after the first, the first step's extra time (compilation), peak GPU memory,
   graph breaks (``torch._dynamo.explain``) and non-finite losses; ratios PURe / baseline;
4. ``-num_gpus 2`` (DDP) training when two GPUs are present;
5. ``pu-nnunet predict`` of the PURe model on the GPU and on the CPU: time and Dice per label
   between the two segmentations;
6. ``benchmarks/bench_evaluation.py``: ``pu-nnunet evaluate`` on CUDA against nnU-Net's CPU
   evaluator on AMOS-sized label volumes.

``--dry-run`` runs the same steps on the CPU at toy sizes (no compile, no autocast: nnU-Net turns
both off there), so CI proves the plumbing; its figures say nothing about a GPU. Any failed step
makes the exit status 1 and is named in the table; the JSON keeps every step's output tail.

    python benchmarks/gpu_check.py                 # on a GPU machine: about 8 minutes on an H100
    python benchmarks/gpu_check.py --dry-run       # CPU, toy sizes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "benchmarks" / "results" / "gpu_check.json"
DATASET_ID, DATASET_NAME = 987, "GpuCheckCT"
CONFIGURATION = "3d_fullres"
TRAINERS = {"PURe": "nnUNetTrainerPURe", "baseline": "nnUNetTrainerPUReBaseline",
            "Unstabilised": "nnUNetTrainerPURe_Unstabilised"}
# the trainer whose model is predicted on GPU and CPU
PREDICTED = "PURe"
DDP_TRAINER = "nnUNetTrainerPURe_tiny"
# sizes: a GPU run large enough for 3d_fullres to tile real patches, a dry run as small as nnU-Net plans
SIZES = {
    "gpu": {"cases": 8, "test_cases": 2, "size": (64, 128, 128), "iterations": 30, "val_iterations": 2,
            "plans": "nnUNetPlans", "eval_cases": 4, "eval_shape": (512, 512, 150)},
    "dry": {"cases": 6, "test_cases": 1, "size": (16, 48, 48), "iterations": 2, "val_iterations": 1,
            "plans": "nnUNetPlansCPU", "eval_cases": 2, "eval_shape": (64, 64, 20)},
}
# per step wall-clock limits (s): the whole GPU run must stay inside one 10-minute device call
TIMEOUTS = {"pytest": 180, "dataset": 240, "train": 300, "ddp": 240, "predict": 240, "evaluation": 240}
# a step loss is "non-finite" when it is NaN or +-inf (fp16 overflow shows up as inf, then NaN)
OUTPUT_TAIL = 3000


def _env(workdir: Path) -> dict:
    """The study's environment for nnU-Net's commands, with nnU-Net's three folders in the scratch folder."""
    from pu_nnunet.study.execution.nnunet_commands import NNUNET_FOLDER_VARIABLES, nnunet_environment

    env = nnunet_environment(workdir)
    env.update({variable: str(workdir / variable) for variable in NNUNET_FOLDER_VARIABLES})
    return env


def _run(cmd: list[str], env: dict, timeout: int) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)
        return done.returncode, done.stdout, time.perf_counter() - start
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        return 124, out + f"\n[gpu_check] timed out after {timeout} s", time.perf_counter() - start


class Check:
    """One step's outcome: ok, figures, and the tail of what it printed."""

    def __init__(self, name: str):
        self.name, self.ok, self.figures, self.detail, self.seconds = name, False, {}, "", 0.0

    def as_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 1), "figures": self.figures,
                "detail": self.detail[-OUTPUT_TAIL:]}


def check_pytest_cuda(env: dict) -> Check:
    check = Check("pytest -m cuda")
    rc, out, check.seconds = _run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"],
                                  env, TIMEOUTS["pytest"])
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", out)}
    check.figures = counts
    check.ok = rc == 0 and counts.get("failed", 0) == 0 and not counts.get("error") and not counts.get("errors")
    check.detail = out
    return check


def make_dataset(env: dict, size: dict, dry_run: bool) -> Check:
    check = Check(f"synthetic CT, nnU-Net plan + preprocess {CONFIGURATION}")
    start = time.perf_counter()
    steps = [["pu-nnunet", "synth", "ct", "-d", str(DATASET_ID), "--name", DATASET_NAME, "--cases", str(size["cases"]),
              "--test-cases", str(size["test_cases"]), "--size", *map(str, size["size"]), "--overwrite"],
             ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", CONFIGURATION, "--verify_dataset_integrity"]]
    log = ""
    for cmd in steps:
        rc, out, _ = _run(cmd, env, TIMEOUTS["dataset"])
        log += f"$ {' '.join(cmd)}\n{out}\n"
        if rc != 0:
            check.detail, check.seconds = log, time.perf_counter() - start
            return check
    if dry_run:
        from pu_nnunet.study.cpu_plans import write_cpu_plans

        write_cpu_plans(Path(env["nnUNet_preprocessed"]) / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}", CONFIGURATION)
    check.ok, check.detail, check.seconds = True, log, time.perf_counter() - start
    return check


def probe_training(args) -> None:
    """In a fresh process: nnU-Net's training loop for a fixed number of iterations, timed per step."""
    import numpy as np
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    from pu_nnunet.evaluation.jsonio import write_json

    device = torch.device(args.device)
    trainer = get_trainer_from_args(str(DATASET_ID), CONFIGURATION, 0, args.trainer, args.plans, device=device)
    trainer.num_epochs = 1
    trainer.num_iterations_per_epoch = args.iterations
    trainer.num_val_iterations_per_epoch = args.val_iterations
    steps: list[tuple[float, float]] = []
    inner = trainer.train_step

    def timed_step(batch):
        start = time.perf_counter()
        out = inner(batch)  # ends in loss.cpu(): the step has finished on the device
        steps.append((time.perf_counter() - start, float(np.asarray(out["loss"]))))
        return out

    trainer.train_step = timed_step
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.run_training()
    network = getattr(trainer.network, "_orig_mod", trainer.network)
    compiled = network is not trainer.network
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    patch = trainer.configuration_manager.patch_size
    sample = torch.randn(1, trainer.num_input_channels, *patch, device=device)
    torch._dynamo.reset()
    with torch.no_grad():
        explanation = torch._dynamo.explain(network.eval())(sample)
    times = [t for t, _ in steps]
    losses = [loss for _, loss in steps]
    result = {
        "trainer": args.trainer, "device": str(device), "compiled": compiled,
        "autocast_fp16": device.type == "cuda", "iterations": len(steps),
        "first_step_s": times[0], "median_step_s": statistics.median(times[1:]) if len(times) > 1 else None,
        # the first step's extra time: torch.compile's compilation where the network is compiled, else warm-up
        "first_step_extra_s": times[0] - statistics.median(times[1:]) if len(times) > 1 else None,
        "peak_memory_gib": peak, "graph_breaks": int(explanation.graph_break_count),
        "non_finite_losses": int(sum(not np.isfinite(x) for x in losses)), "final_loss": losses[-1],
        "parameters": sum(p.numel() for p in network.parameters()), "patch_size": list(patch),
        "batch_size": trainer.configuration_manager.batch_size,
    }
    write_json(args.json, result)


def check_training(env: dict, name: str, trainer: str, size: dict, device: str, workdir: Path) -> Check:
    check = Check(f"train {name} ({trainer})")
    out_json = workdir / f"train_{name}.json"
    train_env = dict(env)
    if device == "cpu":
        train_env.setdefault("nnUNet_n_proc_DA", "0")  # one process: no augmentation workers on a toy run
    rc, out, check.seconds = _run([sys.executable, __file__, "--probe-train", trainer, "--device", device,
                                   "--plans", size["plans"], "--iterations", str(size["iterations"]),
                                   "--val-iterations", str(size["val_iterations"]), "--probe-json", str(out_json)],
                                  train_env, TIMEOUTS["train"])
    check.detail = out
    if rc == 0 and out_json.is_file():
        check.figures = json.loads(out_json.read_text())
        # a stabilised network must not produce a non-finite loss; _Unstabilised is measured, not judged
        check.ok = name == "Unstabilised" or check.figures["non_finite_losses"] == 0
        if not check.ok:
            check.detail += f"\n[gpu_check] {check.figures['non_finite_losses']} non-finite losses"
    return check


def check_ddp(env: dict, size: dict) -> Check:
    import torch

    check = Check("-num_gpus 2 (DDP)")
    if torch.cuda.device_count() < 2:
        check.ok, check.figures = True, {"skipped": f"{torch.cuda.device_count()} GPU(s): needs 2"}
        return check
    rc, out, check.seconds = _run(["nnUNetv2_train", str(DATASET_ID), CONFIGURATION, "0", "-tr", DDP_TRAINER,
                                   "-p", size["plans"], "-num_gpus", "2"], env, TIMEOUTS["ddp"])
    check.ok, check.detail = rc == 0, out
    return check


def _dice_per_label(a_dir: Path, b_dir: Path) -> dict:
    import numpy as np
    import SimpleITK as sitk

    result: dict[str, list[float]] = {}
    for a_file in sorted(a_dir.glob("*.nii.gz")):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(a_file)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(b_dir / a_file.name)))
        for label in sorted((set(np.unique(a)) | set(np.unique(b))) - {0}):
            x, y = a == label, b == label
            total = x.sum() + y.sum()
            result.setdefault(str(int(label)), []).append(1.0 if total == 0 else float(2 * (x & y).sum() / total))
    return {label: min(values) for label, values in result.items()}


def check_prediction(env: dict, size: dict, device: str, workdir: Path) -> Check:
    check = Check(f"predict {PREDICTED} on {device} vs cpu")
    model = (Path(env["nnUNet_results"]) / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
             / f"{TRAINERS[PREDICTED]}__{size['plans']}__{CONFIGURATION}")
    images = Path(env["nnUNet_raw"]) / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}" / "imagesTs"
    seconds, log = {}, ""
    for where in dict.fromkeys([device, "cpu"]):
        out_dir = workdir / f"pred_{where.replace(':', '')}"
        cmd = ["pu-nnunet", "predict", "-i", str(images), "-o", str(out_dir), "-m", str(model), "-f", "0",
               "--device", where, "--overwrite"]
        rc, out, seconds[where] = _run(cmd, env, TIMEOUTS["predict"])
        log += f"$ {' '.join(cmd)}\n{out}\n"
        if rc != 0:
            check.detail, check.seconds = log, sum(seconds.values())
            return check
    gpu_dir, cpu_dir = workdir / f"pred_{device.replace(':', '')}", workdir / "pred_cpu"
    dice = _dice_per_label(gpu_dir, cpu_dir)
    check.figures = {"seconds": seconds, "agreement_dice_min_per_label": dice}
    check.ok, check.detail, check.seconds = bool(dice), log, sum(seconds.values())
    if not dice:
        check.detail += "\n[gpu_check] no label in either segmentation"
    return check


def check_evaluation(env: dict, size: dict, workdir: Path) -> Check:
    check = Check("evaluate on the device vs nnU-Net's CPU evaluator")
    out_json = workdir / "evaluation.json"
    rc, out, check.seconds = _run([sys.executable, str(REPO / "benchmarks" / "bench_evaluation.py"),
                                   "--cases", str(size["eval_cases"]), "--shape", *map(str, size["eval_shape"]),
                                   "--data-dir", str(workdir / "evaluation_data"), "--output", str(out_json)],
                                  env, TIMEOUTS["evaluation"])
    check.detail = out
    if rc == 0 and out_json.is_file():
        content = json.loads(out_json.read_text())
        check.figures = {"rows": content.get("rows"), "largest_dice_difference": content.get("largest_dice_difference")}
        check.ok = content.get("largest_dice_difference") == 0.0
    return check


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def summary_table(checks: list[Check], trainings: dict[str, Check]) -> str:
    lines = ["| step | ok | s | figures |", "|---|---|---:|---|"]
    for check in checks:
        shown = {k: v for k, v in check.figures.items() if k not in ("rows",)}
        lines.append(f"| {check.name} | {'yes' if check.ok else 'FAILED'} | {check.seconds:.1f} | "
                     f"{json.dumps(shown, default=str)[:300]} |")
    pure, base = trainings.get("PURe"), trainings.get("baseline")
    if pure and base and pure.figures and base.figures:
        lines += ["", "| PURe / baseline | ratio |", "|---|---:|"]
        for key in ("median_step_s", "peak_memory_gib", "first_step_extra_s", "parameters"):
            ratio = _ratio(pure.figures.get(key), base.figures.get(key))
            lines.append(f"| {key} | {'n/a' if ratio is None else f'{ratio:.3f}'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: checks the plumbing only")
    parser.add_argument("--device", default="cuda", help="the GPU to check (default cuda)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a fresh one under /tmp)")
    parser.add_argument("--output", default=None, help=f"the JSON (default {RESULTS_FILE.relative_to(REPO)}; "
                                                       "a dry run writes into the work folder)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("pytest", "ddp", "predict", "evaluation"),
                        help="steps to leave out")
    # the per-trainer training probe runs in a child process of this script
    parser.add_argument("--probe-train", help=argparse.SUPPRESS)
    parser.add_argument("--probe-json", help=argparse.SUPPRESS)
    parser.add_argument("--plans", help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--val-iterations", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_train:
        args.trainer, args.json = args.probe_train, args.probe_json
        probe_training(args)
        return 0

    import torch

    device = "cpu" if args.dry_run else args.device
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: error: torch sees no CUDA GPU (torch.cuda.is_available() is False); "
              "run with --dry-run to check the plumbing on a CPU", file=sys.stderr)
        return 2
    size = SIZES["dry" if args.dry_run else "gpu"]
    workdir = Path(args.workdir) if args.workdir else Path(f"/tmp/pu_nnunet_gpu_check_{os.getpid()}")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    output = Path(args.output) if args.output else (workdir / "gpu_check.json" if args.dry_run else RESULTS_FILE)
    env = _env(workdir)
    started = time.perf_counter()
    machine = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
               "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
               "cpu_count": os.cpu_count(), "dry_run": args.dry_run, "device": device}
    print(f"[gpu_check] {json.dumps(machine)}", flush=True)
    checks: list[Check] = []
    trainings: dict[str, Check] = {}

    def step(function, *step_args) -> Check:
        try:
            check = function(*step_args)
        except Exception:  # a broken step is reported and the others still run
            check = Check(getattr(function, "__name__", "step"))
            check.detail = traceback.format_exc()
        checks.append(check)
        print(f"[gpu_check] {check.name}: {'ok' if check.ok else 'FAILED'} ({check.seconds:.1f} s)", flush=True)
        if not check.ok:
            print(check.detail[-OUTPUT_TAIL:], flush=True)
        return check

    if "pytest" not in args.skip:
        step(check_pytest_cuda, env)
    dataset = step(make_dataset, env, size, args.dry_run)
    if dataset.ok:
        for name, trainer in TRAINERS.items():
            trainings[name] = step(check_training, env, name, trainer, size, device, workdir)
        if "ddp" not in args.skip and not args.dry_run:
            step(check_ddp, env, size)
        if "predict" not in args.skip and trainings[PREDICTED].ok:
            step(check_prediction, env, size, device, workdir)
    if "evaluation" not in args.skip:
        step(check_evaluation, env, size, workdir)
    from pu_nnunet.evaluation.jsonio import write_json

    table = summary_table(checks, trainings)
    failed = [c.name for c in checks if not c.ok]
    result = {"machine": machine, "wall_s": round(time.perf_counter() - started, 1), "ok": not failed,
              "failed": failed, "checks": [c.as_dict() for c in checks], "table": table}
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json(output, result)
    print(table)
    print(f"[gpu_check] {'all steps passed' if not failed else 'FAILED: ' + ', '.join(failed)}; "
          f"{result['wall_s']} s; JSON: {output}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
