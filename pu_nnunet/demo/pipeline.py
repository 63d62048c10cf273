"""The demo: the study preset ``demo`` (pu_nnunet/study) run in a work folder.

synthetic CT -> nnU-Net plan/preprocess -> train PURe and its matched baseline -> predict the
held-out volumes (pu-nnunet predict) -> evaluate per 3D case -> compare; each step is reused
when already done. There is one pipeline, the study runner's: the demo only chooses its
settings and reads the results for its closing table. Progress goes to the
``pu_nnunet.study`` logger (``pu-nnunet demo`` shows it; a library user may silence it).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pu_nnunet.datasets.shared.raw_folder import dataset_folder_name
from pu_nnunet.evaluation.compare import load_evaluation
from pu_nnunet.study.jobs import DONE, JOBS_DIR, Job, LOCK_FILE, RUNS_DIR, read_state, run_folder
from pu_nnunet.study.execution.nnunet_commands import StepFailed
from pu_nnunet.study.presets import DEMO_DATASET_ID, DEMO_SYNTHETIC, PRESETS
from pu_nnunet.study.report.study_report import COMPARISONS_DIR, PLOTS_DIR, REPORT_FILE, SUMMARY_FILE
from pu_nnunet.study.spec import STUDY_FILE, Study, save_study, study_paths

log = logging.getLogger("pu_nnunet.study")

# the two runs compared (PURe first), with nnU-Net's trainer names
RUNS = dict(zip(("PURe", "Baseline"), PRESETS["demo"]["trainers"]))
CONFIGURATION = PRESETS["demo"]["configuration"]
FOLD = PRESETS["demo"]["folds"][0]


@dataclass
class DemoSettings:
    workdir: Path
    device: str = "cpu"
    dataset_id: int = DEMO_DATASET_ID
    dataset_name: str = DEMO_SYNTHETIC["name"]
    num_cases: int = DEMO_SYNTHETIC["num_cases"]
    num_test: int = DEMO_SYNTHETIC["num_test"]
    shape: tuple[int, int, int] = tuple(DEMO_SYNTHETIC["shape"])
    spacing: tuple[float, float, float] = tuple(DEMO_SYNTHETIC["spacing"])
    num_organs: int = DEMO_SYNTHETIC["num_organs"]
    seed: int = DEMO_SYNTHETIC["seed"]
    # run name -> nnU-Net trainer; tests swap in the _tiny schedules
    runs: dict = field(default_factory=lambda: dict(RUNS))

    @property
    def dataset_folder_name(self) -> str:
        return dataset_folder_name(self.dataset_id, self.dataset_name)


class Demo:
    def __init__(self, settings: DemoSettings, echo_jobs: bool = False):
        self.s = settings
        self.workdir = Path(settings.workdir)
        self.echo_jobs = echo_jobs  # show each job's own progress (nnU-Net's epochs) in this terminal
        first, second = settings.runs.values()
        preset = PRESETS["demo"]
        synthetic = {"name": settings.dataset_name, "num_cases": settings.num_cases, "num_test": settings.num_test,
                     "shape": list(settings.shape), "spacing": list(settings.spacing),
                     "num_organs": settings.num_organs, "seed": settings.seed}
        self.study = Study(dataset_id=settings.dataset_id, configuration=CONFIGURATION, plans=preset["plans"],
                           trainers=[first, second], baseline=second, folds=[FOLD], repeats=1, synthetic=synthetic,
                           paths=study_paths(self.workdir), preset="demo")
        self.raw = self.study.raw_dataset()
        self.preprocessed = self.study.preprocessed_dataset()
        self.results = self.study.results_root(0) / settings.dataset_folder_name
        self.logs = self.workdir / RUNS_DIR

    def job(self, name: str) -> Job:
        return Job(self.s.runs[name], FOLD, 0)

    def fold_folder(self, trainer: str) -> Path:
        return self.study.model_folder(trainer, 0) / f"fold_{FOLD}"

    def remove_previous_run(self) -> None:
        """--fresh: remove what earlier demo runs wrote (and only that)."""
        for folder in (self.raw, self.preprocessed, self.results, self.workdir / RUNS_DIR,
                       self.workdir / JOBS_DIR, self.workdir / COMPARISONS_DIR, self.workdir / PLOTS_DIR,
                       self.workdir / "logs"):
            if folder.exists():
                shutil.rmtree(folder)
        for name in (STUDY_FILE, REPORT_FILE, SUMMARY_FILE, LOCK_FILE):
            (self.workdir / name).unlink(missing_ok=True)

    def run(self) -> dict:
        from pu_nnunet.study.execution.local import LocalExecutor
        from pu_nnunet.study.execution.runner import run_study

        self.workdir.mkdir(parents=True, exist_ok=True)
        save_study(self.study)  # the demo's settings are the study; a changed setting replaces it
        executor = LocalExecutor(["cuda:0" if self.s.device == "cuda" else "cpu"], echo=self.echo_jobs)
        outcome = run_study(self.study, executor)
        for name in self.s.runs:
            state = read_state(self.workdir, self.job(name))
            if state["state"] != DONE:
                raise StepFailed(f"{self.job(name).name} failed: {state.get('error')}; full log: {state.get('log')}")
        evaluations, timings = {}, {}
        for name in self.s.runs:
            job = self.job(name)
            state = read_state(self.workdir, job)
            evaluations[name] = load_evaluation(run_folder(self.workdir, job) / "evaluation")[0]
            for step in ("train", "predict"):
                if state.get(f"{step}_s") is not None:
                    timings[f"{step}_{name}"] = state[f"{step}_s"]
        first, second = self.s.runs
        comparison = outcome.report["paired"][self.s.runs[first]]
        return dict(first=evaluations[first], second=evaluations[second], comparison=comparison, timings=timings,
                    report=outcome.report)
