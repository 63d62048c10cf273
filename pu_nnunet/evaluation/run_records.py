"""Provenance of evaluate and compare, and the checks that two evaluations are comparable.

evaluate records :func:`pu_nnunet.provenance.run_record` (code, libraries, command line, device,
hashes of dataset.json, the plans and the split file, and the model record that
``pu-nnunet predict`` left in the prediction folder) in metrics.json and provenance.json, and
identifies its reference set by hashes (of the case list and of every reference file), so that
compare can tell two evaluations on different references, datasets or splits apart.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from pu_nnunet.evaluation.jsonio import read_json
from pu_nnunet.provenance import MODEL_RECORD_FILE, run_record

# nnUNetv2_predict copies the model's plans into its output folder under this name
PREDICTION_PLANS_FILE = "plans.json"
# the files of a run record whose hashes must agree for two evaluations to be compared
DEFINING_FILES = ("dataset.json", "split file")


def _text_sha256(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def reference_set(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The evaluated reference set: case count, a hash of the sorted case ids and one of the
    (case, reference file hash) pairs: equal hashes mean the same cases and the same files."""
    cases = sorted(r["case"] for r in records)
    hashes = {r["case"]: r.get("reference_sha256") for r in records}
    return {"n_cases": len(cases), "cases_sha256": _text_sha256(cases),
            "files_sha256": _text_sha256([f"{case} {hashes[case]}" for case in cases])}


def prediction_model_record(pred_dir: Path) -> dict | None:
    """The model record ``pu-nnunet predict`` wrote beside its predictions; None when absent."""
    path = pred_dir / MODEL_RECORD_FILE
    return read_json(path, "model record", dict) if path.is_file() else None


def evaluation_record(device: str, info: Any, pred_dir: Path, split_file: str | Path | None) -> dict[str, Any]:
    plans = pred_dir / PREDICTION_PLANS_FILE
    files = {"dataset.json": info.dataset_json_path, "plans": plans if plans.is_file() else None,
             "split file": split_file}
    return run_record(device=device, files=files, model=prediction_model_record(pred_dir))


def _file_hash(evaluation: Mapping, name: str) -> str | None:
    entry = ((evaluation.get("provenance") or {}).get("files") or {}).get(name)
    return entry.get("sha256") if entry else None


def reference_differences(a: Mapping, b: Mapping, names: tuple[str, str]) -> list[str]:
    """What makes two evaluations incomparable, one phrase each: different case sets, reference
    files, dataset.json or split file. Evaluations written before these records existed (no
    ``references``/``provenance``) are checked on what they have."""
    problems = []
    cases_a, cases_b = {c["case"] for c in a["cases"]}, {c["case"] for c in b["cases"]}
    if cases_a != cases_b:
        only_a, only_b = sorted(cases_a - cases_b), sorted(cases_b - cases_a)
        problems.append(f"different case sets ({len(only_a)} only in {names[0]}: {', '.join(only_a[:5])}; "
                        f"{len(only_b)} only in {names[1]}: {', '.join(only_b[:5])})")
    by_case_b = {c["case"]: c for c in b["cases"]}
    changed = [c["case"] for c in a["cases"] if c["case"] in by_case_b and c.get("reference_sha256")
               and by_case_b[c["case"]].get("reference_sha256")
               and c["reference_sha256"] != by_case_b[c["case"]]["reference_sha256"]]
    if changed:
        problems.append(f"different reference files for {len(changed)} case(s): {', '.join(changed[:5])}")
    if not (a.get("provenance") and b.get("provenance")):
        return problems  # an evaluation made before run records: only its cases can be checked
    for name in DEFINING_FILES:
        hash_a, hash_b = _file_hash(a, name), _file_hash(b, name)
        if (hash_a is None) != (hash_b is None) or hash_a != hash_b:
            problems.append(f"different {name} ({names[0]}: {_short(hash_a)}, {names[1]}: {_short(hash_b)})")
    return problems


def _short(digest: str | None) -> str:
    return "none" if digest is None else f"sha256 {digest[:12]}"
