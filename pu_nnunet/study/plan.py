"""``pu-nnunet study plan``: the paired runs a study needs, before anything is trained.

The same computation as the report's run-level power column
(:func:`pu_nnunet.evaluation.metrics.run_stats.power_plan`): the paired runs at which the two-sided
sign-flip test at the Holm worst-case level alpha / m reaches 80 % power against the minimal
important difference, for between-run sds given by the user or taken from a pilot study (each
trainer's foreground sd and its 80 % and 95 % upper confidence bounds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.run_stats import DEFAULT_MID, plausible_sds, power_plan
from pu_nnunet.evaluation.report.markdown import number, table
from pu_nnunet.user_files import read_user_json
from pu_nnunet.study.errors import StudyError

# where a pilot study keeps its run-level analysis: the report's summary, or a re-report's file
PILOT_FILES = (("summary.json", "run_level"), ("run_level.json", "run_level"))


def pilot_analysis(study_dir: Path) -> tuple[dict[str, Any], Optional[float]]:
    """(trainer -> label -> run-level entry, the study's mid or None) of a pilot study folder."""
    for name, key in PILOT_FILES:
        path = study_dir / name
        if path.is_file():
            content = read_user_json(path, name, error=StudyError)
            if isinstance(content, dict) and content.get(key):
                return content[key], (content.get("planning") or {}).get("mid")
    raise StudyError(f"{study_dir}: no run-level analysis (summary.json or run_level.json with 'run_level'); "
                     "run `pu-nnunet study report` on a study with a baseline and at least two paired runs first")


def plan_text(study_dir: Optional[str], sds: Optional[Sequence[float]], mid: Optional[float],
              family_size: Optional[int], trainers: Optional[int], labels: Optional[int]) -> str:
    if study_dir is None and not sds:
        raise StudyError("study plan needs between-run sds: --sd SD [SD ...] or a pilot STUDY_DIR")
    if (trainers is None) != (labels is None):
        raise StudyError("--trainers and --labels go together (family = trainers x (labels + 1 foreground))")
    named: list[tuple[str, float]] = [("given", float(sd)) for sd in sds or []]
    pilot_family = None
    if study_dir is not None:
        analysis, pilot_mid = pilot_analysis(Path(study_dir))
        mid = mid if mid is not None else pilot_mid
        pilot_family = sum(1 for by_key in analysis.values() for _ in by_key.values())
        for trainer, by_key in analysis.items():
            entry = by_key.get(FOREGROUND)
            if entry and entry.get("sd") is not None:
                named += [(f"{trainer}: {label} ({entry['n_runs']} runs)", value)
                          for label, value in plausible_sds(entry["sd"], entry["n_runs"])]
        if not named:
            raise StudyError(f"{study_dir}: no foreground run-level sd (fewer than two paired runs)")
    if any(value < 0 for _, value in named):
        raise StudyError(f"a between-run sd cannot be negative: {[v for _, v in named]}")
    mid = DEFAULT_MID if mid is None else mid
    if not 0 < mid < 1:
        raise StudyError(f"--mid must lie between 0 and 1 (Dice), got {mid}")
    if family_size is None:
        family_size = trainers * (labels + 1) if trainers is not None else pilot_family or 1
    if family_size < 1:
        raise StudyError(f"the family size must be at least 1, got {family_size}")
    plan = power_plan(mid, named, family_size)
    rows = [[row["sd_from"], number(row["sd"]), "more than searched" if row["runs"] is None else row["runs"]]
            for row in plan["by_sd"]]
    return "\n".join([
        f"Paired runs for {plan['power']:.0%} power to detect a true difference of ±{mid:g} (Dice) with the "
        f"two-sided sign-flip test at the Holm worst-case level {plan['alpha']} / {family_size} = "
        f"{plan['level']:.3g}. The test cannot reach that level with fewer than {plan['fewest_runs_for_level']} "
        f"paired runs (its smallest p is 2 / 2^runs).", "",
        table(["between-run sd from", "sd", "paired runs"], rows)])
