"""What every converter shares: running one worker per case (in-process or in a process pool,
with a progress bar), collecting bad cases, and the summary printed at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pu_nnunet.datasets.errors import BadCaseError, DatasetError, SourceLayoutError
from pu_nnunet.datasets.shared.splits import install_command
from pu_nnunet.user_errors import worker_pool

# how many bad files an error message lists before it says "and N more"
MAX_LISTED_BAD_FILES = 10


@dataclass(frozen=True)
class CaseJob:
    """One case to convert: everything a worker process needs (plain data, so it pickles).

    ``missing_image``: set for an annotation (``sources[0]``, a ``annotation_kind``) whose image
    is not there: every converter reports such a job as a bad case (:func:`orphan_job`)."""

    case_id: str
    part: str  # "Tr" (training) or "Ts" (test)
    sources: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    missing_image: str | None = None
    annotation_kind: str = "annotation"


def orphan_job(case_id: str, part: str, orphan: Path, expected_image: Path, kind: str) -> CaseJob:
    """A job that reports ``orphan`` (a ``kind``: mask, label) whose image is missing as a bad case."""
    return CaseJob(case_id, part, (str(orphan),), missing_image=str(expected_image), annotation_kind=kind)


def orphan_problem(job: CaseJob) -> None:
    """Raises the bad case of an orphan job; nothing for any other job."""
    if job.missing_image is not None:
        raise BadCaseError(job.sources[0], f"{job.annotation_kind} without its image {job.missing_image}")


@dataclass
class ConversionSummary:
    dataset_id: int
    dataset_folder: Path
    num_training: int
    num_test: int
    seconds: float
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"wrote {self.dataset_folder}",
                 f"  training cases: {self.num_training}, test cases: {self.num_test}, "
                 f"time: {self.seconds:.1f} s"]
        lines += [f"  {note}" for note in self.notes]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} bad case(s) (--skip-bad):")
            lines += [f"    {entry}" for entry in self.skipped]
        lines.append(f"  the split is in {self.dataset_folder / 'splits_final.json'}; after "
                     f"nnUNetv2_plan_and_preprocess, put it in place with")
        lines.append(f"    pu-nnunet convert install-splits -d {self.dataset_id}")
        lines.append(f"  or {install_command(self.dataset_folder)}")
        return "\n".join(lines)


def _run_one(worker: Callable[[CaseJob, Path], Any], job: CaseJob, out_folder: Path) -> tuple[str, Any, str | None]:
    # errors travel back as text: the pool would otherwise stop at the first one
    try:
        orphan_problem(job)  # an annotation without its image: a bad case for every converter
        return job.case_id, worker(job, out_folder), None
    except DatasetError as error:
        return job.case_id, None, str(error)


def _run_one_packed(arguments: tuple) -> tuple[str, Any, str | None]:
    return _run_one(*arguments)


def run_cases(worker: Callable[[CaseJob, Path], Any], jobs: Sequence[CaseJob], out_folder: Path,
              num_processes: int, skip_bad: bool, description: str) -> tuple[dict[str, Any], list[str]]:
    """Runs ``worker(job, out_folder)`` for every job; returns ({case_id: result}, skipped).

    A worker signals a bad case by raising ``BadCaseError`` (before writing anything). Without
    ``skip_bad`` every bad case is listed in one error; with it they are left out and listed.
    ``worker`` must be a module-level function so spawned processes can import it; a script that
    calls a converter with ``num_processes > 1`` needs the ``if __name__ == "__main__":`` guard.
    """
    from tqdm import tqdm

    if num_processes < 1:
        raise DatasetError(f"-np must be at least 1, got {num_processes}")
    check_unique_case_ids(jobs)
    arguments = [(worker, job, out_folder) for job in jobs]
    progress = dict(total=len(jobs), desc=description, unit="case", disable=None)
    if num_processes <= 1 or len(jobs) <= 1:
        outcomes = [_run_one_packed(a) for a in tqdm(arguments, **progress)]
    else:
        with worker_pool(min(num_processes, len(jobs))) as pool:
            outcomes = list(tqdm(pool.imap(_run_one_packed, arguments), **progress))
    results = {case: result for case, result, error in outcomes if error is None}
    bad = [error for _, _, error in outcomes if error is not None]
    if bad and not skip_bad:
        listed = "\n  ".join(bad[:MAX_LISTED_BAD_FILES])
        more = f"\n  ... and {len(bad) - MAX_LISTED_BAD_FILES} more" if len(bad) > MAX_LISTED_BAD_FILES else ""
        raise DatasetError(f"{len(bad)} bad case(s); fix them or pass --skip-bad to leave them out:\n"
                           f"  {listed}{more}")
    if not results:
        raise DatasetError("no case could be converted" + (f" (all {len(bad)} were bad)" if bad else ""))
    return results, bad


def check_unique_case_ids(jobs: Sequence[CaseJob]) -> None:
    """Two source files mapping to one case id (e.g. the same scan in a dataset's training and
    validation folders, or ``benign (1).png`` beside ``benign (01).png``) would overwrite each
    other and put the case into both sides of the split: refused, naming both."""
    first: dict[str, CaseJob] = {}
    clashes = []
    for job in jobs:
        if job.case_id in first:
            clashes.append(f"{first[job.case_id].sources[0]} and {job.sources[0]} both become case {job.case_id}")
        else:
            first[job.case_id] = job
    if clashes:
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise SourceLayoutError(f"{clashes[0]}{more}; each case must come from one file: remove or rename the "
                                "duplicate")


def timer() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


def require_source(source_dir: str | Path, required: Sequence[str], dataset: str) -> Path:
    """The source folder, checked to hold each of ``required`` (files or folders); a missing one
    raises a layout error naming it, with a hint when they sit one folder further down."""
    source = Path(source_dir)
    if not source.is_dir():
        raise SourceLayoutError(f"{source}: source folder not found (expected the extracted {dataset} download)")
    for name in required:
        if not (source / name).exists():
            nested = [p for p in sorted(source.iterdir()) if p.is_dir() and all((p / r).exists() for r in required)]
            hint = f"; found the {dataset} layout in {nested[0]}: pass that folder instead" if nested else ""
            raise SourceLayoutError(f"{source / name}: not found; a {dataset} source folder must contain "
                                    f"{', '.join(required)}{hint}")
    return source
