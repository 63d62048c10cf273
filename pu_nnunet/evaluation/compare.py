"""``compare_evaluations``: two evaluate outputs on the same references, case by case.

Two evaluations are compared only when they scored the same reference set: the same cases, the
same reference files (hashes; reference voxel counts for evaluations written before the hashes),
the same dataset.json and split file. Otherwise the comparison is refused naming the difference,
unless ``allow_different_references`` (``--allow-different-references``): then the shared cases
are compared and the report says so. Labels scored by only one evaluation are not compared (nor
the foreground, which then merges different labels); the report names them. Differences are
B - A: positive Dice and NSD differences favour B, positive HD95 and false-positive-rate
differences count against B.

NSD and HD95 are compared when both evaluations hold them at the same NSD tolerances; an
evaluation made before boundary metrics (or with ``--no-boundary``) is still read, and the
boundary statistics are then left out with a note (``boundary_note``). NSD is paired over the
cases whose reference has the label (as Dice); HD95 over the cases where it is defined in both
runs (reference and both predictions non-empty).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

from pu_nnunet.evaluation.errors import EvaluationError
from pu_nnunet.evaluation.output_folder import check_output_dir, replaced_outputs
from pu_nnunet.evaluation.report.evaluation_outputs import METRICS_FILE, PLOTS_DIR, REPORT_FILE
from pu_nnunet.evaluation.jsonio import read_json, write_json
from pu_nnunet.evaluation.evaluate import METRICS_FORMAT
from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND, UNKNOWN_CLASS, has_boundary
from pu_nnunet.evaluation.metrics.paired_stats import paired_flags, paired_scores
from pu_nnunet.evaluation.run_records import reference_differences
from pu_nnunet.provenance import RUN_RECORD_FILE, run_record

COMPARISON_FILE = "comparison.json"
PAIRED_CSV_FILE = "per_case_paired.csv"
COMPARE_OUTPUTS = (COMPARISON_FILE, PAIRED_CSV_FILE, REPORT_FILE, PLOTS_DIR, RUN_RECORD_FILE)
COMPARISON_FORMAT = "pu-nnunet-comparison/1"
# the source name of an evaluation handed over as a dict (the study's pooled runs)
IN_MEMORY = "(in memory)"
SCORES = ("dice", "iou")
# Compared when both evaluations hold them (see the module docstring).
BOUNDARY_SCORES = ("nsd", "hd95")
# what compare reads of each case's label entry in metrics.json
CASE_LABEL_FIELDS = {"dice", "iou", "n_ref", "ref_empty", "false_positive", "false_negative"}


def load_evaluation(source: str | Path | dict) -> tuple[dict[str, Any], str]:
    """An evaluate output folder, its metrics.json, or the dict evaluate_folders returned."""
    if isinstance(source, dict):
        return source, IN_MEMORY
    path = Path(source)
    if path.is_dir():
        path = path / METRICS_FILE
    content = read_json(path, "evaluation metrics", dict)
    _check_metrics_layout(content, path)
    return content, str(path.resolve())


def _check_metrics_layout(content: dict, path: Path) -> None:
    """What compare reads from a metrics.json, checked up front so a damaged or foreign file is
    named instead of failing half-way with a KeyError."""
    problem = None
    if content.get("format") not in (None, METRICS_FORMAT):
        problem = f"format {content.get('format')!r}, expected {METRICS_FORMAT!r}"
    elif not isinstance(content.get("cases"), list) or not isinstance(content.get("labels"), list):
        problem = "no \"cases\" and \"labels\" lists"
    elif not isinstance(content.get("missing_predictions"), list) or not isinstance(content.get("label_names"), dict):
        problem = "no \"missing_predictions\" list or \"label_names\" object"
    elif not isinstance(content.get("settings"), dict) or "min_size" not in content["settings"]:
        problem = "no \"settings\" with \"min_size\""
    else:
        keys = {str(label) for label in content["labels"]} | {FOREGROUND}
        for case in content["cases"]:
            if (not isinstance(case, dict) or not isinstance(case.get("case"), str)
                    or not isinstance(case.get("labels"), dict) or not keys <= set(case["labels"])
                    or not all(isinstance(case["labels"][key], dict) and CASE_LABEL_FIELDS <= set(case["labels"][key])
                               for key in keys)):
                problem = f"a malformed case entry {str(case)[:80]}"
                break
    if problem is not None:
        raise EvaluationError(f"{path}: not a complete pu-nnunet evaluate metrics.json ({problem})")


def _common_cases(a: dict, b: dict, names: tuple[str, str]) -> tuple[list[str], list[str], list[str]]:
    cases_a = {c["case"] for c in a["cases"]}
    cases_b = {c["case"] for c in b["cases"]}
    common, only_a, only_b = sorted(cases_a & cases_b), sorted(cases_a - cases_b), sorted(cases_b - cases_a)
    if not common:
        raise EvaluationError(f"evaluations {names[0]} and {names[1]} share no case")
    for name, only in ((names[0], only_a), (names[1], only_b)):
        if only:
            warnings.warn(f"{len(only)} case(s) only in {name} are not compared: {', '.join(only[:10])}")
    return common, only_a, only_b


def _label_keys(a: dict, b: dict, names: tuple[str, str]) -> tuple[list[str], dict[str, list[str]]]:
    """(compared label keys, labels not compared per run). With different label sets only the
    shared labels are compared; the foreground is not, since each run's merges other labels."""
    keys_a = [str(label) for label in a["labels"]]
    keys_b = [str(label) for label in b["labels"]]
    common = [key for key in keys_a if key in keys_b]
    not_compared = {names[0]: [k for k in keys_a if k not in keys_b], names[1]: [k for k in keys_b if k not in keys_a]}
    if not common:
        raise EvaluationError(f"evaluations {names[0]} (labels {keys_a}) and {names[1]} (labels {keys_b}) share no "
                              "label")
    if any(not_compared.values()):
        warnings.warn(f"the evaluations scored different labels; compared: {common} (not the foreground); not "
                      f"compared: {names[0]} {not_compared[names[0]]}, {names[1]} {not_compared[names[1]]}")
        return common, not_compared
    return common + [FOREGROUND], not_compared


def _check_same_references(pairs: list[tuple[dict, dict]], keys: list[str]) -> None:
    for case_a, case_b in pairs:
        for key in keys:
            if case_a["labels"][key]["n_ref"] != case_b["labels"][key]["n_ref"]:
                raise EvaluationError(f"case {case_a['case']}, label {key}: the reference has "
                                      f"{case_a['labels'][key]['n_ref']} voxels in one evaluation and "
                                      f"{case_b['labels'][key]['n_ref']} in the other; not the same references")


def _boundary_scores(a: dict, b: dict, names: tuple[str, str]) -> tuple[tuple[str, ...], str | None]:
    """(the boundary scores both evaluations allow comparing, why the others are left out or None)."""
    for name, evaluation in zip(names, (a, b)):
        if not has_boundary(record for case in evaluation["cases"] for record in case["labels"].values()):
            return (), (f"NSD and HD95 are not compared: evaluation {name} has none (made before boundary metrics "
                        "or with --no-boundary)")
    tolerances = [(e.get("settings") or {}).get("nsd_tolerance") for e in (a, b)]
    if tolerances[0] and tolerances[1] and tolerances[0] != tolerances[1]:
        return ("hd95",), (f"NSD is not compared: the evaluations used different NSD tolerances ({names[0]} "
                           f"{tolerances[0]}, {names[1]} {tolerances[1]}); HD95 is")
    return BOUNDARY_SCORES, None


def _group_statistics(pairs: list[tuple[dict, dict]], keys: list[str], scores: tuple[str, ...] = SCORES
                      ) -> dict[str, Any]:
    stats = {}
    for key in keys:
        entries = [(a["labels"][key], b["labels"][key]) for a, b in pairs]
        scored = [(x, y) for x, y in entries if not x["ref_empty"]]
        empty = [(x, y) for x, y in entries if x["ref_empty"]]
        stats[key] = {score: paired_scores([x[score] for x, _ in scored], [y[score] for _, y in scored])
                      for score in scores if score != "hd95"}
        if "hd95" in scores:
            defined = [(x["hd95"], y["hd95"]) for x, y in scored if x["hd95"] is not None and y["hd95"] is not None]
            stats[key]["hd95"] = paired_scores([x for x, _ in defined], [y for _, y in defined])
        # case ids carry the run when runs were pooled: the flags are then clustered by image
        ids = [a["case"] for a, b in pairs if a["labels"][key]["ref_empty"]]
        stats[key]["false_positive"] = paired_flags([x["false_positive"] for x, _ in empty],
                                                    [y["false_positive"] for _, y in empty], case_ids=ids)
        stats[key]["false_negative"] = paired_flags([x["false_negative"] for x, _ in scored],
                                                    [y["false_negative"] for _, y in scored])
    return stats


def _write_paired_csv(pairs: list[tuple[dict, dict]], keys: list[str], names: tuple[str, str], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "class", "label", f"dice_{names[0]}", f"dice_{names[1]}", "dice_difference",
                         f"false_positive_{names[0]}", f"false_positive_{names[1]}",
                         *(f"{score}_{name}" for score in BOUNDARY_SCORES for name in names)])
        for a, b in pairs:
            for key in keys:
                x, y = a["labels"][key], b["labels"][key]
                difference = None if x["dice"] is None or y["dice"] is None else y["dice"] - x["dice"]
                boundary = [record.get(score) for score in BOUNDARY_SCORES for record in (x, y)]
                writer.writerow([a["case"], a.get("class") or "", key,
                                 *("" if v is None else v for v in (x["dice"], y["dice"], difference,
                                                                    x["false_positive"], y["false_positive"],
                                                                    *boundary))])


def compare_evaluations(eval_a: str | Path | dict, eval_b: str | Path | dict, out_dir: str | Path,
                        names: tuple[str, str] = ("A", "B"), overwrite: bool = False,
                        plots: bool = True, allow_different_references: bool = False) -> dict[str, Any]:
    """Paired comparison of two evaluations; writes comparison.json, per_case_paired.csv,
    report.md and plots/. Returns the content of comparison.json.

    For all cases and for each class of cases.json, per label key: Dice, IoU and NSD paired
    statistics over cases whose reference has the label, HD95 over the cases where both runs
    have it, and the false-positive (false-negative) rates over the reference-empty (non-empty)
    cases, all as B - A.

    Refuses evaluations of different reference sets, datasets or splits (see the module
    docstring) unless ``allow_different_references``.
    """
    names = (str(names[0]), str(names[1]))
    if names[0] == names[1]:
        raise EvaluationError(f"the two runs need different names, got {names[0]!r} twice")
    out_dir = Path(out_dir)
    check_output_dir(out_dir, "compare", COMPARE_OUTPUTS, overwrite,
                     {"first evaluation": _folder_of(eval_a), "second evaluation": _folder_of(eval_b)})
    (a, source_a), (b, source_b) = load_evaluation(eval_a), load_evaluation(eval_b)
    differences = reference_differences(a, b, names)
    if differences and not allow_different_references:
        raise EvaluationError(f"{source_a} and {source_b} were not evaluated on the same references: "
                              f"{'; '.join(differences)}; pass --allow-different-references to compare the shared "
                              "cases anyway")
    common, only_a, only_b = _common_cases(a, b, names)
    keys, not_compared = _label_keys(a, b, names)
    by_case_a = {c["case"]: c for c in a["cases"]}
    by_case_b = {c["case"]: c for c in b["cases"]}
    pairs = [(by_case_a[case], by_case_b[case]) for case in common]
    if not allow_different_references:
        _check_same_references(pairs, [key for key in keys if key != FOREGROUND])
    min_sizes = (a["settings"]["min_size"], b["settings"]["min_size"])
    if min_sizes[0] != min_sizes[1]:
        warnings.warn(f"the runs used different --min-size ({min_sizes[0]} vs {min_sizes[1]}); "
                      "false-positive flags are compared as each run computed them")
    boundary_scores, boundary_note = _boundary_scores(a, b, names)
    scores = SCORES + boundary_scores
    if boundary_note:
        warnings.warn(boundary_note)
    classes: dict[str, list[tuple[dict, dict]]] = {}
    if any(x.get("class") or y.get("class") for x, y in pairs):
        for pair in pairs:
            classes.setdefault(pair[0].get("class") or pair[1].get("class") or UNKNOWN_CLASS, []).append(pair)
    result = {
        "format": COMPARISON_FORMAT,
        "names": list(names),
        "sources": {names[0]: source_a, names[1]: source_b},
        "difference": f"{names[1]} - {names[0]}",
        "label_keys": keys,
        "labels_not_compared": not_compared,
        "different_references": differences,
        "label_names": {key: a["label_names"].get(key, key) for key in keys},
        "n_cases_compared": len(common),
        "only_in": {names[0]: only_a, names[1]: only_b},
        "missing_predictions": {names[0]: a["missing_predictions"], names[1]: b["missing_predictions"]},
        "min_size": {names[0]: min_sizes[0], names[1]: min_sizes[1]},
        "scores": list(scores),
        "boundary_note": boundary_note,
        "overall": _group_statistics(pairs, keys, scores),
        "per_class": {name: _group_statistics(classes[name], keys, scores) for name in sorted(classes)},
        "provenance": run_record(files={f"evaluation {names[0]}": _metrics_file(source_a),
                                        f"evaluation {names[1]}": _metrics_file(source_b)}),
        "evaluations_provenance": {names[0]: a.get("provenance"), names[1]: b.get("provenance")},
    }
    from pu_nnunet.evaluation.report.compare_report import write_compare_report

    check_output_dir(out_dir, "compare", COMPARE_OUTPUTS, overwrite, {})
    with replaced_outputs(out_dir, COMPARE_OUTPUTS) as work:
        write_json(work / COMPARISON_FILE, result)
        write_json(work / RUN_RECORD_FILE, {**result["provenance"], "evaluations": result["evaluations_provenance"]})
        _write_paired_csv(pairs, keys, names, work / PAIRED_CSV_FILE)
        write_compare_report(result, pairs, work, plots=plots)
    return result


def _metrics_file(source: str) -> str | None:
    return None if source == IN_MEMORY else source


def _folder_of(source: str | Path | dict) -> Path | None:
    """The folder of an evaluation given as folder or metrics.json (None for one in memory)."""
    if isinstance(source, dict):
        return None
    path = Path(source)
    return path if path.is_dir() else path.parent
