"""Which encoder stages get product-unit blocks.

Stage 0 is the full-resolution stage; each later stage halves the resolution and (in nnU-Net's
plans) widens the features. PU-UNet reports PU blocks strongest in the "rich low-resolution
stages", so the default puts them in the deepest half of the encoder.
"""

from __future__ import annotations

import numbers
from typing import Sequence, Union

# named placements; explicit lists of stage indices are accepted too
PLACEMENTS = ("deepest_half", "shallowest_half", "all", "none")
DEFAULT_PLACEMENT = "deepest_half"

StageSpec = Union[str, Sequence[int]]


def per_stage(value, n_stages: int, name: str = "value") -> list:
    """One entry per stage: a list or tuple as it is (its length checked), anything else repeated
    (as ResidualEncoderUNet broadcasts an int ``n_blocks_per_stage``)."""
    if not isinstance(value, (list, tuple)):
        return [value] * n_stages
    if len(value) != n_stages:
        raise ValueError(f"{name} must have one entry per stage ({n_stages}), got {len(value)}: {list(value)}")
    return list(value)


def resolve_pu_stages(spec: StageSpec, n_stages: int) -> tuple[int, ...]:
    """Stage indices for a placement name or an explicit list, validated against n_stages.

    ``deepest_half``: the last n_stages // 2 stages (at least one);
    ``shallowest_half``: all the others, the high-resolution stages (the ablation);
    a list: stage indices, negative ones from the bottleneck (-1 = the deepest stage).
    """
    if isinstance(n_stages, bool) or not isinstance(n_stages, numbers.Integral) or n_stages < 1:
        raise ValueError(f"n_stages must be an int of at least 1, got {n_stages!r}")
    n_deep = max(1, n_stages // 2)
    if isinstance(spec, str):
        if spec == "deepest_half":
            return tuple(range(n_stages - n_deep, n_stages))
        if spec == "shallowest_half":
            return tuple(range(0, n_stages - n_deep))
        if spec == "all":
            return tuple(range(n_stages))
        if spec == "none":
            return ()
        raise ValueError(f"pu_stages must be one of {PLACEMENTS} or a list of stage indices, got {spec!r}")
    if not isinstance(spec, (list, tuple, range)):
        raise TypeError(f"pu_stages must be one of {PLACEMENTS} or a list of stage indices, got "
                        f"{type(spec).__name__} {spec!r}")
    not_indices = [s for s in spec if isinstance(s, bool) or not isinstance(s, numbers.Integral)]
    if not_indices:
        raise TypeError(f"pu_stages must list int stage indices, got {not_indices}")
    # negative indices count from the bottleneck, as Python's do: -1 is the deepest stage, so
    # "bottleneck only" is (-1,) whatever the plans' number of stages
    bad = [int(s) for s in spec if not -n_stages <= int(s) < n_stages]
    if bad:
        raise ValueError(f"pu_stages {bad} out of range for a network with {n_stages} stages "
                         f"(0..{n_stages - 1}, or -{n_stages}..-1 from the bottleneck)")
    return tuple(sorted({int(s) % n_stages for s in spec}))
