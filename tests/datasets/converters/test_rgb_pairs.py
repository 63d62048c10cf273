"""The (RGB image, mask) pair job: an unknown mask format raises, under python -O too."""

from pathlib import Path

import pytest

from pu_nnunet.datasets.converters.rgb_pairs import pair_job


def test_pair_job_keeps_the_mask_format():
    job = pair_job("case_1", "Tr", Path("a.jpg"), Path("a_mask.png"), "png")
    assert job.sources == ("a.jpg", "a_mask.png") and job.extra == {"mask_format": "png"}


@pytest.mark.parametrize("mask_format", ["PNG", "jpg", ""])
def test_pair_job_refuses_unknown_mask_formats(mask_format):
    with pytest.raises(ValueError, match=f"mask_format must be one of \\('png', 'jpeg'\\), got '{mask_format}'"):
        pair_job("case_1", "Tr", Path("a.jpg"), Path("a_mask.png"), mask_format)
