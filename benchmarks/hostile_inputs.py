"""Every command tried as a hostile user would (issue 30's six classes): damaged, contradictory and
misplaced inputs, and concurrent or resumed runs. Prints a table (command, input, message, exit
code, whether that is the expected outcome) and writes benchmarks/results/hostile_inputs.json.

    python benchmarks/hostile_inputs.py --model MODEL_DIR --images IMAGES_DIR --labels LABELS_DIR

MODEL_DIR is any trained 2d model folder of this package's trainers with fold 0 (e.g. one of a
study's), IMAGES_DIR/LABELS_DIR a few of its held-out NIfTI cases (the first 4 are used). Nothing
given is modified: the model and the cases are copied into a scratch folder first.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULT_FILE = Path(__file__).resolve().parent / "results" / "hostile_inputs.json"
PU = str(Path(sys.executable).parent / "pu-nnunet")


class Probe:
    def __init__(self, work: Path):
        self.work, self.rows = work, []

    def run(self, klass: int, what: str, argv: list[str], expect_code: int | tuple, expect_text: str = "",
            env: dict | None = None) -> subprocess.CompletedProcess:
        started = time.perf_counter()
        done = subprocess.run([PU, *argv], capture_output=True, text=True, cwd=self.work, env=env or os.environ.copy(),
                              timeout=600)
        codes = expect_code if isinstance(expect_code, tuple) else (expect_code,)
        output = (done.stderr.strip() or done.stdout.strip()).splitlines()
        message = next((line for line in reversed(output) if "error" in line or "warning" in line),
                       output[-1] if output else "")
        ok = done.returncode in codes and expect_text in (done.stderr + done.stdout) and "Traceback" not in done.stderr
        self.rows.append({"class": klass, "command": argv[0], "input": what, "exit": done.returncode,
                          "message": message.replace(str(self.work) + "/", "").replace(str(self.work), "."),
                          "as_expected": ok, "seconds": round(time.perf_counter() - started, 1)})
        return done


def nifti_cases(images: Path, labels: Path, target: Path, n: int = 4) -> tuple[Path, Path]:
    (target / "imagesTs").mkdir(parents=True)
    (target / "labelsTs").mkdir(parents=True)
    for path in sorted(images.glob("*_0000.nii.gz"))[:n]:
        shutil.copy(path, target / "imagesTs" / path.name)
        case = path.name[: -len("_0000.nii.gz")]
        shutil.copy(labels / f"{case}.nii.gz", target / "labelsTs" / f"{case}.nii.gz")
    return target / "imagesTs", target / "labelsTs"


def truncated_copy(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--images", required=True, type=Path)
    parser.add_argument("--labels", required=True, type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    import SimpleITK as sitk
    import torch

    work = Path(tempfile.mkdtemp(prefix="pu_nnunet_hostile_"))
    probe = Probe(work)
    dataset = work / "Dataset952_Probe"
    model = dataset / args.model.name
    shutil.copytree(args.model, model, ignore=shutil.ignore_patterns("validation", "checkpoint_latest.pth"))
    images, labels = nifti_cases(args.images, args.labels, work / "raw")
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
    env_cpu = dict(os.environ, OMP_NUM_THREADS="1")

    # a clean prediction and evaluation to start from
    probe.run(0, "clean prediction (reference run)", ["predict", "-i", str(images), "-o", "pred", "-m", str(model),
                                                     "-f", "0", "--device", "cpu"], 0, env=env_cpu)
    probe.run(0, "clean evaluation (reference run)", ["evaluate", "pred", str(labels), "-o", "eval", "--device", "cpu",
                                                     "--no-plots"], 0, env=env_cpu)

    # --- class 1: the file scored is the file checked -------------------------------------------
    for side, folder in (("PRED", work / "pred"), ("REF", labels)):
        twin = folder / f"{cases[0]}.nii"
        shutil.copy(folder / f"{cases[0]}.nii.gz", work / "twin.nii.gz")
        with gzip.open(work / "twin.nii.gz") as source:
            twin.write_bytes(source.read())
        probe.run(1, f"evaluate: stale {cases[0]}.nii beside {cases[0]}.nii.gz in {side}",
                  ["evaluate", "pred", str(labels), "-o", f"eval_twin_{side}", "--device", "cpu", "--no-plots"], 1,
                  "another file of the same case", env_cpu)
        twin.unlink()
    upper = labels / f"{cases[1]}.NII"
    with gzip.open(labels / f"{cases[1]}.nii.gz") as source:
        upper.write_bytes(source.read())
    probe.run(1, "evaluate: .NII (upper case) twin in REF", ["evaluate", "pred", str(labels), "-o", "eval_twin_upper",
                                                             "--device", "cpu", "--no-plots"], 1,
              "another file of the same case", env_cpu)
    upper.unlink()
    twin_in = work / "twin_inputs"
    shutil.copytree(images, twin_in)
    with gzip.open(twin_in / f"{cases[0]}_0000.nii.gz") as source:
        (twin_in / f"{cases[0]}_0000.nii").write_bytes(source.read())
    probe.run(1, "predict: case_0000.nii beside case_0000.nii.gz in the input folder",
              ["predict", "-i", str(twin_in), "-o", "pred_twin", "-m", str(model), "-f", "0", "--device", "cpu"], 1,
              "", env_cpu)
    probe.run(1, "robustness: twin image in IMAGES_DIR",
              ["robustness", "-m", f"PURe={model}", "-i", str(twin_in), "-r", str(labels), "-o", "rob_twin",
               "--corruptions", "gamma", "--strengths", "gamma=2", "--device", "cpu"], 1, "", env_cpu)

    # --- class 2: every setting that shapes a segmentation is pinned ----------------------------
    partial = work / "pred_partial"
    one = work / "one_case"
    one.mkdir()
    shutil.copy(images / f"{cases[0]}_0000.nii.gz", one)
    probe.run(2, "predict one case (mirroring on) to continue from",
              ["predict", "-i", str(one), "-o", str(partial), "-m", str(model), "-f", "0", "--device", "cpu"], 0,
              env=env_cpu)
    base = ["predict", "-i", str(images), "-o", str(partial), "-m", str(model), "-f", "0", "--device", "cpu",
            "--continue"]
    probe.run(2, "predict --continue with --disable_tta", base + ["--disable_tta"], 1, "other prediction settings",
              env_cpu)
    probe.run(2, "predict --continue with --tta-axes 0", base + ["--tta-axes", "0"], 1, "other prediction settings",
              env_cpu)
    probe.run(2, "predict --continue with --precision bf16 (no bf16 kernels here)", base + ["--precision", "bf16"], 1,
              "", env_cpu)
    probe.run(2, "predict --continue with --chk checkpoint_best.pth", base + ["--chk", "checkpoint_best.pth"], 1,
              "checkpoint checkpoint_final.pth there, checkpoint_best.pth now", env_cpu)
    checkpoint_path = model / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    checkpoint["resaved_by"] = "nnUNetv2_train --c on a finished model"
    torch.save(checkpoint, checkpoint_path)
    probe.run(2, "predict --continue after checkpoint_final.pth was re-saved with the same weights", base, 0,
              "kept 1 complete", env_cpu)
    name = next(iter(checkpoint["network_weights"]))
    checkpoint["network_weights"][name] = checkpoint["network_weights"][name] + 0.01
    other_model = dataset / "other" / model.name
    shutil.copytree(model, other_model)
    torch.save(checkpoint, other_model / "fold_0" / "checkpoint_final.pth")
    probe.run(2, "predict --continue with other weights of the same trainer",
              ["predict", "-i", str(images), "-o", str(partial), "-m", str(other_model), "-f", "0", "--device", "cpu",
               "--continue"], 1, "weights_sha256", env_cpu)
    probe.run(2, "predict --overwrite into a folder of another model's cases not among the inputs",
              ["predict", "-i", str(one), "-o", "pred", "-m", str(other_model), "-f", "0", "--device", "cpu",
               "--overwrite"], 1, "not among the inputs", env_cpu)

    # --- class 3: one writer per output folder --------------------------------------------------
    many = work / "many_inputs"
    many.mkdir()
    for i in range(400):  # a run long enough to be caught in the act
        shutil.copy(images / f"{cases[i % len(cases)]}_0000.nii.gz", many / f"copy{i:03d}_0000.nii.gz")
    first = subprocess.Popen([PU, "predict", "-i", str(many), "-o", "pred_busy", "-m", str(model), "-f", "0",
                              "--device", "cpu"], cwd=work, env=env_cpu, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    time.sleep(6)
    probe.run(3, "a second predict into a folder another predict is writing",
              ["predict", "-i", str(images), "-o", "pred_busy", "-m", str(other_model), "-f", "0", "--device", "cpu"],
              1, "another run is writing here", env_cpu)
    probe.run(3, "evaluate into the folder a predict is writing",
              ["evaluate", "pred", str(labels), "-o", "pred_busy", "--device", "cpu", "--no-plots"], 1, "", env_cpu)
    first.send_signal(signal.SIGKILL)
    first.wait()
    probe.run(3, "predict again after the holder was killed (kill -9)",
              ["predict", "-i", str(images), "-o", "pred_busy", "-m", str(model), "-f", "0", "--device", "cpu",
               "--overwrite"], 0, env=env_cpu)

    # --- class 4: resumed work re-checks its model ----------------------------------------------
    rob_model = dataset / "rob" / model.name
    shutil.copytree(model, rob_model)
    rob_args = ["robustness", "-m", f"PURe={rob_model}", "-i", str(images), "-r", str(labels), "-o", "rob",
                "--corruptions", "gamma", "--strengths", "gamma=2", "--device", "cpu", "--disable_tta"]
    probe.run(4, "robustness sweep (to resume)", rob_args, 0, env=env_cpu)
    (work / "rob" / "robustness.json").unlink()  # as if interrupted before the end
    shutil.copy(other_model / "fold_0" / "checkpoint_final.pth", rob_model / "fold_0" / "checkpoint_final.pth")
    probe.run(4, "robustness resumed after the checkpoint was replaced", rob_args, 1, "began with other weights",
              env_cpu)
    validation = work / "validation"
    shutil.copytree(work / "pred", validation)
    (validation / ".validation_incomplete").write_text("")
    probe.run(4, "evaluate a validation folder whose final validation was stopped",
              ["evaluate", str(validation), str(labels), "-o", "eval_val", "--device", "cpu", "--no-plots"], 1,
              "", env_cpu)

    # --- class 6: options and contradictory inputs, checked before any work ---------------------
    strengths = [("gaussian=nan", "not a finite number"), ("gaussian=-0.1", "out of range"),
                 ("poisson=0", "poisson takes"), ("gamma=2,2", "given twice"), ("gamma=abc", "comma-separated")]
    for value, text in strengths:
        corruption = value.split("=")[0]
        probe.run(6, f"robustness --strengths {value}",
                  ["robustness", "-m", f"PURe={model}", "-i", str(images), "-r", str(labels), "-o", "rob_bad",
                   "--corruptions", corruption, "--strengths", value], 1, text, env_cpu)
    probe.run(6, "robustness --seed -3", ["robustness", "-m", f"PURe={model}", "-i", str(images), "-r", str(labels),
                                          "-o", "rob_bad", "--seed", "-3"], (1, 2), "", env_cpu)
    probe.run(6, "robustness -m ../escape=MODEL", ["robustness", "-m", f"../escape={model}", "-i", str(images), "-r",
                                                   str(labels), "-o", "rob_bad"], 1, "", env_cpu)
    probe.run(6, "robustness: one model folder under two names",
              ["robustness", "-m", f"PURe={model}", f"PUReBaseline={model}", "-i", str(images), "-r", str(labels),
               "-o", "rob_same", "--corruptions", "gamma", "--strengths", "gamma=2", "--device", "cpu"], (0, 1), "",
              env_cpu)
    probe.run(6, "export-model -o model.tar", ["export-model", str(model), "-o", "model.tar"], 1, ".zip", env_cpu)
    probe.run(6, "export-model -f 0 0", ["export-model", str(model), "-o", "m.zip", "-f", "0", "0"], 1, "twice",
              env_cpu)
    probe.run(6, "predict -f 0 0", ["predict", "-i", str(images), "-o", "p00", "-m", str(model), "-f", "0", "0"], 1,
              "twice", env_cpu)
    probe.run(6, "predict --batch-size 0", ["predict", "-i", str(images), "-o", "pb", "-m", str(model),
                                            "--batch-size", "0"], 1, "at least 1", env_cpu)
    probe.run(6, "predict --disable_tta --tta-axes 0", ["predict", "-i", str(images), "-o", "pt", "-m", str(model),
                                                        "--disable_tta", "--tta-axes", "0"], 1, "contradict", env_cpu)
    probe.run(6, "predict -i a folder that does not exist", ["predict", "-i", "nowhere", "-o", "pn", "-m",
                                                              str(model)], 1, "", env_cpu)
    named_wrong = dataset / "nnUNetTrainer__nnUNetPlans__2d"
    shutil.copytree(model, named_wrong)
    probe.run(6, "predict -m a folder holding another trainer's checkpoint",
              ["predict", "-i", str(images), "-o", "pw", "-m", str(named_wrong), "--device", "cpu"], 1,
              "the checkpoint was written by", env_cpu)
    damaged = work / "damaged_inputs"
    damaged.mkdir()
    truncated_copy(images / f"{cases[0]}_0000.nii.gz", damaged / f"{cases[0]}_0000.nii.gz")
    probe.run(6, "predict a truncated .nii.gz", ["predict", "-i", str(damaged), "-o", "pd", "-m", str(model),
                                                 "--device", "cpu"], 1, "truncated", env_cpu)
    nan_in = work / "nan_inputs"
    nan_in.mkdir()
    image = sitk.ReadImage(str(images / f"{cases[0]}_0000.nii.gz"), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array.flat[0] = np.nan
    nan_image = sitk.GetImageFromArray(array)
    nan_image.CopyInformation(image)
    sitk.WriteImage(nan_image, str(nan_in / f"{cases[0]}_0000.nii.gz"))
    probe.run(6, "predict an image holding NaN", ["predict", "-i", str(nan_in), "-o", "pnan", "-m", str(model),
                                                  "--device", "cpu"], 1, "NaN", env_cpu)
    bad_pred = work / "pred_truncated"
    shutil.copytree(work / "pred", bad_pred)
    truncated_copy(work / "pred" / f"{cases[0]}.nii.gz", bad_pred / f"{cases[0]}.nii.gz")
    probe.run(6, "evaluate a truncated prediction", ["evaluate", str(bad_pred), str(labels), "-o", "eval_trunc",
                                                     "--device", "cpu", "--no-plots"], 1, "truncated", env_cpu)
    probe.run(6, "evaluate PRED against itself", ["evaluate", "pred", "./pred/", "-o", "eval_self"], 1,
              "same folder", env_cpu)
    probe.run(6, "evaluate with the folders swapped (REF holds a model record)",
              ["evaluate", str(labels), "pred", "-o", "eval_swapped", "--device", "cpu", "--no-plots"], 1,
              "are the folders swapped?", env_cpu)
    probe.run(6, "evaluate swapped, --reference-is-a-prediction (agreement with another model)",
              ["evaluate", str(labels), "pred", "-o", "eval_agreement", "--device", "cpu", "--no-plots",
               "--reference-is-a-prediction"], 0, env=env_cpu)
    probe.run(6, "evaluate --min-size 0", ["evaluate", "pred", str(labels), "-o", "eval_k", "--min-size", "0"], 1,
              "", env_cpu)
    probe.run(6, "evaluate --nsd-tolerance -1", ["evaluate", "pred", str(labels), "-o", "eval_nsd",
                                                 "--nsd-tolerance", "-1"], (1, 2), "", env_cpu)
    probe.run(6, "evaluate into an existing evaluation without --overwrite",
              ["evaluate", "pred", str(labels), "-o", "eval", "--device", "cpu", "--no-plots"], 1, "", env_cpu)
    probe.run(6, "study run --robustness-strengths gaussian=nan",
              ["study", "run", "-o", "study_bad", "-d", "952", "--robustness", "--robustness-corruptions", "gaussian",
               "--robustness-strengths", "gaussian=nan"], 1, "not a finite number", env_cpu)
    probe.run(6, "study run --cpu-jobs 0", ["study", "run", "-o", "study_bad2", "-d", "952", "--cpu-jobs", "0"], 1,
              "--cpu-jobs", env_cpu)
    probe.run(6, "study run -tr with a misspelt trainer",
              ["study", "run", "-o", "study_bad3", "-d", "952", "-tr", "nnUNetTrainerPURe_tinny",
               "nnUNetTrainerPUReBaseline"], 1, "did you mean", env_cpu)
    nan_checkpoint = work / "nan.pth"
    weights = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    first_name = next(iter(weights["network_weights"]))
    weights["network_weights"][first_name] = weights["network_weights"][first_name] * float("nan")
    torch.save(weights, nan_checkpoint)
    probe.run(6, "transfer-weights of a checkpoint holding NaN",
              ["transfer-weights", str(nan_checkpoint), "--plans", str(model / "plans.json"), "-c", "2d", "-tr",
               "nnUNetTrainerPUReBaseline", "-o", "t.pth", "--dataset-json", str(model / "dataset.json")], 1,
              "NaN", env_cpu)
    resunet = json.loads((model / "plans.json").read_text())
    for config in resunet["configurations"].values():
        if "architecture" in config:
            config["architecture"]["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualUNet"
    (work / "resunet_plans.json").write_text(json.dumps(resunet))
    probe.run(6, "transfer-weights to plans of an architecture PU networks cannot mirror",
              ["transfer-weights", str(model / "fold_0" / "checkpoint_final.pth"), "--plans",
               str(work / "resunet_plans.json"), "-c", "2d", "-tr", "nnUNetTrainerPURe", "-o", "t2.pth",
               "--dataset-json", str(model / "dataset.json")], 1, "plans use", env_cpu)
    probe.run(6, "an unknown option", ["evaluate", "pred", str(labels), "-o", "e_unknown", "--thresholds", "0.5"], 2,
              "pu-nnunet evaluate: error: unrecognized arguments", env_cpu)
    probe.run(6, "--device tpu", ["predict", "-i", str(images), "-o", "ptpu", "-m", str(model), "--device", "tpu"], 2,
              "is not a device", env_cpu)

    rows = probe.rows
    print("| # | class | command | input | exit | as expected | message |")
    print("|---:|---:|---|---|---:|---|---|")
    for i, row in enumerate(rows, 1):
        message = row["message"].replace("|", "\\|")[:220]
        print(f"| {i} | {row['class']} | {row['command']} | {row['input']} | {row['exit']} | "
              f"{'yes' if row['as_expected'] else '**NO**'} | {message} |")
    RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
    from pu_nnunet.json_files import write_json

    write_json(RESULT_FILE, {"rows": rows, "model": args.model.name, "as_expected": sum(r["as_expected"] for r in rows),
                             "total": len(rows)})
    print(f"\n{sum(r['as_expected'] for r in rows)} of {len(rows)} as expected; wrote {RESULT_FILE}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"scratch kept: {work}")
    return 0 if all(r["as_expected"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
