"""The demo: synthetic CT -> nnU-Net plan/preprocess -> train PURe and its matched baseline ->
predict held-out volumes (pu-nnunet predict) -> evaluate per 3D case -> compare, each step reused when already done."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pu_nnunet.datasets.shared.raw_folder import dataset_folder_name
from pu_nnunet.demo.cpu_plans import CPU_PLANS, write_cpu_plans
from pu_nnunet.demo.nnunet_runner import nnunet_environment, run_logged

# the two runs compared (PURe first), with nnU-Net's trainer names
RUNS = {"PURe": "nnUNetTrainerPURe_demo", "Baseline": "nnUNetTrainerPUReBaseline_demo"}
CONFIGURATION = "2d"
FOLD = 0


@dataclass
class DemoSettings:
    workdir: Path
    device: str = "cpu"
    dataset_id: int = 900
    dataset_name: str = "SynthCT"
    # 16 training (of which nnU-Net's fold 0 validates on 4) and 6 held-out volumes of 32 slices
    num_cases: int = 22
    num_test: int = 6
    shape: tuple[int, int, int] = (32, 64, 64)
    spacing: tuple[float, float, float] = (3.0, 0.8, 0.8)
    num_organs: int = 3
    seed: int = 0
    # run name -> nnU-Net trainer; tests swap in the _tiny schedules
    runs: dict = field(default_factory=lambda: dict(RUNS))

    @property
    def dataset_folder_name(self) -> str:
        return dataset_folder_name(self.dataset_id, self.dataset_name)


class Demo:
    def __init__(self, settings: DemoSettings):
        self.s = settings
        self.workdir = settings.workdir
        self.env = nnunet_environment(self.workdir)
        self.raw = Path(self.env["nnUNet_raw"]) / settings.dataset_folder_name
        self.preprocessed = Path(self.env["nnUNet_preprocessed"]) / settings.dataset_folder_name
        self.results = Path(self.env["nnUNet_results"]) / settings.dataset_folder_name
        self.logs = self.workdir / "logs"
        self.timings_file = self.workdir / "timings.json"
        self.timings = json.loads(self.timings_file.read_text()) if self.timings_file.exists() else {}

    # --- bookkeeping ---------------------------------------------------------------------
    def _done(self, step: str, seconds: float) -> None:
        self.timings[step] = round(seconds, 1)
        self.timings_file.parent.mkdir(parents=True, exist_ok=True)
        self.timings_file.write_text(json.dumps(self.timings, indent=2))

    def _say(self, message: str) -> None:
        print(f"[pu-nnunet demo] {message}", flush=True)

    def remove_previous_run(self) -> None:
        """--fresh: remove what earlier demo runs wrote (and only that)."""
        for folder in (self.raw, self.preprocessed, self.results, self.workdir / "predictions",
                       self.workdir / "evaluation", self.workdir / "comparison", self.logs):
            if folder.exists():
                shutil.rmtree(folder)
        self.timings_file.unlink(missing_ok=True)
        self.timings = {}

    # --- steps ---------------------------------------------------------------------------
    def generate_dataset(self) -> None:
        if (self.raw / "dataset.json").is_file():
            self._say(f"1/6 synthetic CT dataset: reusing {self.raw}")
            return
        from pu_nnunet.datasets.synthetic.ct import generate_synthetic_ct

        self._say(f"1/6 generating the synthetic CT dataset ({self.s.num_cases} volumes of {self.s.shape})")
        start = time.perf_counter()
        generate_synthetic_ct(self.raw.parent, self.s.dataset_id, name=self.s.dataset_name,
                              num_cases=self.s.num_cases, num_test=self.s.num_test, seed=self.s.seed,
                              shape=self.s.shape, spacing=self.s.spacing, num_organs=self.s.num_organs)
        self._done("generate", time.perf_counter() - start)

    def plan_and_preprocess(self) -> None:
        plans = self.preprocessed / f"{CPU_PLANS}.json"
        if plans.is_file() and (self.preprocessed / f"nnUNetPlans_{CONFIGURATION}").is_dir():
            self._say(f"2/6 nnU-Net plans and preprocessed data: reusing {self.preprocessed}")
            return
        self._say("2/6 nnUNetv2_plan_and_preprocess (2d configuration)")
        start = time.perf_counter()
        run_logged(["nnUNetv2_plan_and_preprocess", "-d", str(self.s.dataset_id), "-c", CONFIGURATION, "-np",
                    self.env["nnUNet_def_n_proc"], "--verify_dataset_integrity"], self.env,
                   self.logs / "plan_and_preprocess.log", "plan and preprocess")
        write_cpu_plans(self.preprocessed, CONFIGURATION)
        self._done("plan_and_preprocess", time.perf_counter() - start)

    def fold_folder(self, trainer: str) -> Path:
        return self.results / f"{trainer}__{CPU_PLANS}__{CONFIGURATION}" / f"fold_{FOLD}"

    def train(self, name: str, trainer: str, step: int) -> None:
        fold = self.fold_folder(trainer)
        if (fold / "checkpoint_final.pth").is_file():
            self._say(f"{step}/6 training {name}: reusing {fold}")
            return
        resume = (fold / "checkpoint_latest.pth").is_file()
        self._say(f"{step}/6 nnUNetv2_train {trainer} ({'resuming' if resume else 'on ' + self.s.device})")
        from pu_nnunet.trainers import pure_trainers

        env = dict(self.env)
        if self.s.device == "cpu":
            # augmentation in the training process: worker processes only compete for the cores
            env["nnUNet_n_proc_DA"] = "0"
        command = ["nnUNetv2_train", str(self.s.dataset_id), CONFIGURATION, str(FOLD), "-tr", trainer, "-p", CPU_PLANS,
                   "-device", self.s.device] + (["--c"] if resume else [])
        start = time.perf_counter()
        run_logged(command, env, self.logs / f"train_{name}.log", f"train {name} (epochs)",
                   progress_pattern=r"Epoch time",
                   progress_total=getattr(pure_trainers, trainer).schedule_num_epochs)
        self._done(f"train_{name}", time.perf_counter() - start)

    def prediction_folder(self, name: str) -> Path:
        return self.workdir / "predictions" / name

    def predict(self, name: str, trainer: str) -> None:
        out = self.prediction_folder(name)
        n_cases = len(list((self.raw / "imagesTs").glob("*_0000.nii.gz")))
        if out.is_dir() and len(list(out.glob("*.nii.gz"))) == n_cases:
            self._say(f"5/6 predictions of {name}: reusing {out}")
            return
        # pu-nnunet predict: nnU-Net's preprocessing, sliding window, mirroring and export, with
        # many slices per forward pass (agrees with nnUNetv2_predict, see tests/inference)
        self._say(f"5/6 pu-nnunet predict {trainer} on the {n_cases} held-out volumes")
        start = time.perf_counter()
        run_logged(["pu-nnunet", "predict", "-i", str(self.raw / "imagesTs"), "-o", str(out),
                    "-m", str(self.fold_folder(trainer).parent), "-f", str(FOLD), "--device", self.s.device,
                    "--overwrite"], self.env, self.logs / f"predict_{name}.log", f"predict {name} (cases)",
                   progress_pattern=r"^\[\d+/\d+\]", progress_total=n_cases)
        self._done(f"predict_{name}", time.perf_counter() - start)

    def evaluate_and_compare(self) -> tuple[dict, dict, dict]:
        """Scores both runs against labelsTs; returns (first run, second run, comparison)."""
        from pu_nnunet.evaluation import compare_evaluations, evaluate_folders

        self._say("6/6 evaluating per 3D case and comparing PURe with its baseline")
        device = "cuda" if self.s.device == "cuda" else "cpu"
        evaluations = {}
        for name in self.s.runs:
            evaluations[name] = evaluate_folders(
                self.prediction_folder(name), self.raw / "labelsTs", self.workdir / "evaluation" / name,
                device=device, images=self.raw / "imagesTs", dataset_json=self.raw / "dataset.json", overwrite=True)
        first, second = self.s.runs
        # the baseline goes first so that the report's differences read PURe - baseline
        comparison = compare_evaluations(self.workdir / "evaluation" / second, self.workdir / "evaluation" / first,
                                         self.workdir / "comparison", names=(second, first), overwrite=True)
        return evaluations[first], evaluations[second], comparison

    def run(self) -> dict:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.generate_dataset()
        self.plan_and_preprocess()
        for step, (name, trainer) in enumerate(self.s.runs.items(), start=3):
            self.train(name, trainer, step)
        for name, trainer in self.s.runs.items():
            self.predict(name, trainer)
        first, second, comparison = self.evaluate_and_compare()
        return dict(first=first, second=second, comparison=comparison, timings=self.timings)
