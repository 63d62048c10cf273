"""The study report's sections on Dice protocols and published numbers.

Per trainer, the foreground Dice of each run under the four averaging protocols of
:mod:`pu_nnunet.evaluation.metrics.protocols` (mean ± sd over runs), with the published PU-UNet
value beside each protocol (the paper does not state its protocol), and the published
false-positive rates on BUSI's normal images beside the measured ones.
"""

from __future__ import annotations

from typing import Any, Optional

from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.protocols import DICE_PROTOCOLS, PROTOCOL_DEFINITIONS, PROTOCOL_TITLES
from pu_nnunet.evaluation.published import PROTOCOL_NOT_STATED, PUBLISHED_SOURCE
from pu_nnunet.evaluation.report.markdown import mean_sd, table


def protocol_rows(summary: dict[str, Any], published: Optional[dict[str, Any]], short_name) -> list[list[str]]:
    """Per trainer, foreground Dice (mean ± sd over runs) under each protocol, paper beside each."""
    rows = []
    for trainer, entry in summary["per_trainer"].items():
        values = (entry.get("dice_protocols") or {}).get(FOREGROUND)
        if values is None:
            continue
        cells = [mean_sd(values[name]) for name in DICE_PROTOCOLS]
        if published is not None:
            cells = [f"{cell} (paper {published['dice']:.3f})" for cell in cells]
        rows.append([short_name(trainer), *cells])
    return rows


def protocol_section(summary: dict[str, Any], short_name) -> list[str]:
    published = summary["published"]
    rows = protocol_rows(summary, published, short_name)
    if not rows:
        return []
    lines = ["## Foreground Dice under the four averaging protocols", "",
             "Mean ± sd over runs of each run's value" + (f"; in brackets the value {PUBLISHED_SOURCE} reports for "
                                                          "this dataset" if published else "") + ".", "",
             table(["trainer", *(PROTOCOL_TITLES[name] for name in DICE_PROTOCOLS)], rows), ""]
    lines += [f"- {PROTOCOL_TITLES[name]}: {PROTOCOL_DEFINITIONS[name]}." for name in DICE_PROTOCOLS]
    if published:
        lines.append(f"- {PROTOCOL_NOT_STATED}")
    return lines + [""]


def published_fpr_section(summary: dict[str, Any], short_name) -> list[str]:
    published = summary["published"]
    if not published or "normal_fpr_baseline" not in published:
        return []
    rows = [[short_name(trainer), mean_sd(entry["per_class_foreground_fpr"].get("normal", {"mean": None}))]
            for trainer, entry in summary["per_trainer"].items()]
    return ["## Published false-positive rates on normal images beside the measured ones", "",
            f"{PUBLISHED_SOURCE} reports a false-positive rate on normal images of "
            f"{published['normal_fpr_baseline']:.3f} for the matched residual U-Net against "
            f"{published['normal_fpr_pu']:.0f} for PU-UNet (their training schedule and split).", "",
            table(["trainer", "FPR on normal images (measured, mean ± sd over runs)"], rows), ""]
