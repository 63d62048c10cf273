"""Published PU-UNet numbers, shown beside measured ones in evaluate's and the study's reports.

PU-UNet (arXiv 2606.20035) states one Dice per data set but not how it averaged it (per case,
with or without reference-empty cases, or pooled over all pixels); the reports therefore set
the published value beside every protocol's measured value instead of beside one of them.
"""

from __future__ import annotations

import re
from typing import Any, Optional

PUBLISHED_SOURCE = "PU-UNet (arXiv 2606.20035)"
# by the dataset name this package's converters write (DatasetXXX_<name>)
PUBLISHED = {
    "ISIC2018": {"dice": 0.942},
    "KvasirSEG": {"dice": 0.959},
    "BUSI": {"dice": 0.925, "normal_fpr_baseline": 0.077, "normal_fpr_pu": 0.0},
}
# the size of PU-UNet's false-positive claim (matched residual U-Net 0.077, PU-UNet 0 on BUSI's
# normal images): what a study's FPR comparison is powered for and tested against
PUBLISHED_NORMAL_FPR_DIFFERENCE = PUBLISHED["BUSI"]["normal_fpr_baseline"] - PUBLISHED["BUSI"]["normal_fpr_pu"]
PROTOCOL_NOT_STATED = (f"{PUBLISHED_SOURCE} does not state how its Dice is averaged, so it is shown beside each "
                       "protocol; only the matching protocol is comparable, and it is unknown which one that is.")
_DATASET_FOLDER = re.compile(r"Dataset\d{3}_(?P<name>.+)")


def published_for(dataset_folder_name: Optional[str]) -> Optional[dict[str, Any]]:
    """The published numbers of a dataset folder (``Dataset302_KvasirSEG``) or name, if any."""
    if not dataset_folder_name:
        return None
    match = _DATASET_FOLDER.fullmatch(dataset_folder_name)
    return PUBLISHED.get(match.group("name") if match else dataset_folder_name)
