"""The demo: the study preset ``demo`` run in a work folder through the study's public API
(pu_nnunet/study/api.py, the only part of the study it uses).

synthetic CT -> nnU-Net plan/preprocess -> train PURe and its matched baseline -> predict the
held-out volumes (pu-nnunet predict) -> evaluate per 3D case -> compare; each step is reused
when already done. There is one pipeline, the study runner's: the demo only chooses its
settings and reads the results for its closing table. Progress goes to the
``pu_nnunet.study`` logger (``pu-nnunet demo`` shows it; a library user may silence it).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pu_nnunet.datasets.shared.raw_folder import dataset_folder_name
from pu_nnunet.evaluation.compare import load_evaluation
from pu_nnunet.study import api

PRESET = api.preset("demo")
# the two runs compared (PURe first), with nnU-Net's trainer names
RUNS = dict(zip(("PURe", "Baseline"), PRESET["trainers"]))
CONFIGURATION = PRESET["configuration"]
FOLD = PRESET["folds"][0]
SYNTHETIC = PRESET["synthetic"]


@dataclass
class DemoSettings:
    workdir: Path
    device: str = "cpu"
    dataset_id: int = PRESET["dataset_id"]
    dataset_name: str = SYNTHETIC["name"]
    num_cases: int = SYNTHETIC["num_cases"]
    num_test: int = SYNTHETIC["num_test"]
    shape: tuple[int, int, int] = tuple(SYNTHETIC["shape"])
    spacing: tuple[float, float, float] = tuple(SYNTHETIC["spacing"])
    num_organs: int = SYNTHETIC["num_organs"]
    seed: int = SYNTHETIC["seed"]
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
        synthetic = {"name": settings.dataset_name, "num_cases": settings.num_cases, "num_test": settings.num_test,
                     "shape": list(settings.shape), "spacing": list(settings.spacing),
                     "num_organs": settings.num_organs, "seed": settings.seed}
        self.study = api.create_study(self.workdir, settings.dataset_id, configuration=CONFIGURATION,
                                      plans=PRESET["plans"], trainers=[first, second], baseline=second, folds=[FOLD],
                                      repeats=1, synthetic=synthetic, preset="demo")
        self.folder = api.StudyFolder(self.workdir)
        self.raw = self.study.raw_dataset()
        self.preprocessed = self.study.preprocessed_dataset()
        self.results = self.study.results_root(0) / settings.dataset_folder_name

    def job(self, name: str) -> api.Job:
        (job,) = [job for job in api.study_jobs(self.study) if job.trainer == self.s.runs[name]]
        return job

    def fold_folder(self, trainer: str) -> Path:
        return self.study.model_folder(trainer, 0) / f"fold_{FOLD}"

    def remove_previous_run(self) -> None:
        """--fresh: remove what earlier demo runs wrote (and only that)."""
        for path in (self.raw, self.preprocessed, self.results, *self.folder.written()):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def run(self) -> dict:
        self.workdir.mkdir(parents=True, exist_ok=True)
        api.save_study(self.study)  # the demo's settings are the study; a changed setting replaces it
        outcome = api.run_study(self.study, devices=[self.s.device], echo=self.echo_jobs)
        for name in self.s.runs:
            state = api.job_state(self.study, self.job(name))
            if state["state"] != api.DONE:
                raise api.StepFailed(f"{self.job(name).name} failed: {state.get('error')}; "
                                     f"full log: {state.get('log')}")
        evaluations, timings = {}, {}
        for name in self.s.runs:
            job = self.job(name)
            state = api.job_state(self.study, job)
            evaluations[name] = load_evaluation(self.folder.evaluation(job))[0]
            for step in ("train", "predict"):
                if state.get(f"{step}_s") is not None:
                    timings[f"{step}_{name}"] = state[f"{step}_s"]
        first, second = self.s.runs
        comparison = outcome.report["paired"][self.s.runs[first]]
        return dict(first=evaluations[first], second=evaluations[second], comparison=comparison, timings=timings,
                    report=outcome.report)
