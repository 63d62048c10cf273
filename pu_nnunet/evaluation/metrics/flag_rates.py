"""Image-level flag rates (false positives on reference-empty images) when several runs score the
same images: the images are the sample, the runs repeated measurements of each.

Runs pooled for ``compare`` carry their run in the case id (``case|fold_F|repeat_R`` from a
study, ``case|run_K`` from a robustness sweep; :func:`split_run_tag`). A flag seen on 10 normal
images in each of 3 runs is 30 flags of 10 images, not 30 independent images:

- :func:`flag_rate`: the share of image-runs flagged, per run, and across runs an exact
  (Clopper-Pearson) interval with the images as the sample (n = images, k = flagged image-runs /
  runs). Each image's share of flagged runs is a [0, 1] variable whose variance is at most
  p (1 - p), so the interval holds whatever the correlation between the runs of an image (it is
  the binomial one when the runs agree on every image, conservative when they disagree);
- :func:`clustered_paired_test`: the paired difference of two trainers, per image the count of
  runs B flags minus the count A flags, tested by a sign flip per image (swapping A and B on an
  image flips its difference); with one run this is McNemar's exact test.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from pu_nnunet.evaluation.metrics.protocols import RATE_CONFIDENCE

# the run tag that run_pooling.pooled_evaluation and robustness.sweep.pooled append to a case id
RUN_TAG = re.compile(r"\|(?P<tag>fold_\d+\|repeat_\d+|run_\d+)$")


def split_run_tag(case_id: str) -> tuple[str, Optional[str]]:
    """(image id, run tag or None) of a case id."""
    match = RUN_TAG.search(case_id)
    return (case_id, None) if match is None else (case_id[:match.start()], match["tag"])


def _clopper_pearson(hits: float, total: int, confidence: float) -> tuple[float, float]:
    """Exact binomial interval, beta quantiles, for a possibly non-integer count of hits."""
    from scipy.stats import beta

    tail = (1 - confidence) / 2
    low = 0.0 if hits <= 0 else float(beta.ppf(tail, hits, total - hits + 1))
    high = 1.0 if hits >= total else float(beta.ppf(1 - tail, hits + 1, total - hits))
    return low, high


def flag_rate(case_ids: Sequence[str], flags: Sequence[bool], confidence: float = RATE_CONFIDENCE) -> dict[str, Any]:
    """Flag counts and rates of the cases (ids possibly run-tagged): overall, per run, per image,
    with the image-level exact interval of the module docstring."""
    images: dict[str, list[bool]] = {}
    runs: dict[Optional[str], list[bool]] = {}
    for case_id, flag in zip(case_ids, flags):
        image, run = split_run_tag(case_id)
        images.setdefault(image, []).append(bool(flag))
        runs.setdefault(run, []).append(bool(flag))
    n, hits = len(case_ids), int(sum(bool(f) for f in flags))
    result: dict[str, Any] = {"false_positive_cases": hits, "n_reference_empty": n, "rate": hits / n if n else None,
                              "n_images": len(images), "n_runs": len(runs), "ci_low": None, "ci_high": None,
                              "images_flagged_every_run": sum(all(v) for v in images.values()),
                              "images_flagged_some_runs": sum(any(v) and not all(v) for v in images.values()),
                              "images_never_flagged": sum(not any(v) for v in images.values()),
                              "per_run": [{"run": run, "false_positive_cases": sum(v), "n_reference_empty": len(v),
                                           "rate": sum(v) / len(v)} for run, v in runs.items()]}
    if n:
        result["ci_low"], result["ci_high"] = _clopper_pearson(hits / n * len(images), len(images), confidence)
    return result


def clustered_paired_test(case_ids: Sequence[str], a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """Per run McNemar's exact test, and across runs the sign-flip test of the per-image
    differences (runs B flags minus runs A flags)."""
    from scipy.stats import binomtest

    from pu_nnunet.evaluation.metrics.run_stats import sign_flip_test

    per_image: dict[str, int] = {}
    per_run: dict[Optional[str], list[int]] = {}
    for case_id, x, y in zip(case_ids, a, b):
        image, run = split_run_tag(case_id)
        per_image[image] = per_image.get(image, 0) + int(bool(y)) - int(bool(x))
        counts = per_run.setdefault(run, [0, 0, 0])
        counts[0] += 1
        counts[1] += int(bool(x) and not bool(y))
        counts[2] += int(bool(y) and not bool(x))
    differences = [d for d in per_image.values() if d != 0]
    test = sign_flip_test(differences) if differences else None
    return {"n_images": len(per_image), "n_runs": len(per_run),
            "images_more_a": sum(d < 0 for d in per_image.values()),
            "images_more_b": sum(d > 0 for d in per_image.values()),
            "clustered_p": None if test is None else test["p"],
            "clustered_p_method": None if test is None else test["method"],
            "per_run": [{"run": run, "n": n, "only_a": only_a, "only_b": only_b,
                         "mcnemar_p": float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else None}
                        for run, (n, only_a, only_b) in per_run.items()]}


def rate_text(rate: dict[str, Any]) -> str:
    """'1.0000 (30/30; 10 images x 3 runs) [0.6915, 1.0000]' (the interval's sample: the images)."""
    from pu_nnunet.evaluation.report.markdown import number

    if not rate["n_reference_empty"]:
        return "n/a"
    runs = f"; {rate['n_images']} images x {rate['n_runs']} runs" if rate["n_runs"] > 1 else ""
    return (f"{number(rate['rate'])} ({rate['false_positive_cases']}/{rate['n_reference_empty']}{runs}) "
            f"[{number(rate['ci_low'])}, {number(rate['ci_high'])}]")


PAIRED_FLAG_HEADER = ("empty cases", "only baseline / only trainer", "p (McNemar; runs pooled: per-image sign flip, "
                      "McNemar per run)")


def paired_flag_cells(flags: dict[str, Any]) -> list[str]:
    """Cells of PAIRED_FLAG_HEADER for a paired_flags result: one run, McNemar; several runs
    pooled, the images as the sample (images with more flags under A / under B, the sign-flip p over
    images) and McNemar within each run."""
    from pu_nnunet.evaluation.report.markdown import p_value

    clustered = flags.get("clustered")
    if not clustered:
        return [str(flags["n"]), f"{flags['only_a']}/{flags['only_b']}", p_value(flags["mcnemar_p"])]
    per_run = ", ".join(p_value(run["mcnemar_p"]) for run in clustered["per_run"])
    return [f"{clustered['n_images']} images x {clustered['n_runs']} runs",
            f"{clustered['images_more_a']}/{clustered['images_more_b']} images",
            f"{p_value(clustered['clustered_p'])} (per run {per_run})"]
