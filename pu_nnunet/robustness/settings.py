"""The settings of a robustness sweep, one parser and one check for ``pu-nnunet robustness`` and
``study run --robustness`` (as study.json holds them).

``{"strengths": {corruption: [s1, s2, ...]}, "seed": 0, "mirroring": true, "keep_inputs": false}``:
the corruptions and their strengths (:mod:`pu_nnunet.robustness.corruptions`: names, defaults,
ranges), the noise seed, whether the sweep predicts with mirroring (test-time augmentation; on by
default) and whether the corrupted images are kept. In a study the sweep is not part of the
study's identity (the trainings do not depend on it): adding it to a study that has none only adds
work, while changing or removing it would replace results already made, so that needs
``--reconfigure``. ``keep_inputs`` changes no result and may change freely.
"""

from __future__ import annotations

from typing import Any, Optional

from pu_nnunet.robustness.corruptions import CORRUPTIONS, parse_strengths, seed_problem, strength_problem
from pu_nnunet.robustness.errors import RobustnessError

FIELDS = ("strengths", "seed", "mirroring", "keep_inputs")
# what keeps the sweep's results: the fields without keep_inputs
MEASURED_FIELDS = ("strengths", "seed", "mirroring")
DEFAULT_SEED = 0  # the same noise for every run unless asked otherwise
# the [robustness] table of a TOML study file: the flags' names without "robustness-"
TOML_KEYS = ("corruptions", "strengths", "seed", "mirroring", "keep_inputs")


def sweep_settings(corruptions: Optional[list[str]] = None, strengths: Optional[list[str]] = None,
                   seed: Optional[int] = None, mirroring: bool = True, keep_inputs: bool = False,
                   option: str = "--robustness-strengths", seed_option: str = "--robustness-seed") -> dict[str, Any]:
    """The settings from the flags' values: ``corruptions`` (default all), ``strengths`` as
    ``CORRUPTION=S1,S2`` overrides of the default strengths (``option`` and ``seed_option`` name
    the flags in errors)."""
    seed = DEFAULT_SEED if seed is None else seed
    if seed_problem(seed):
        raise RobustnessError(f"{seed_option}: {seed_problem(seed)}")
    parsed = parse_strengths(list(corruptions or CORRUPTIONS), list(strengths or []), option)
    settings = {"strengths": {name: list(values) for name, values in parsed.items()},
                "seed": seed, "mirroring": mirroring, "keep_inputs": keep_inputs}
    check_settings(settings)
    return settings


def settings_from_toml(value: Any, path: str) -> Optional[dict[str, Any]]:
    """``robustness = true`` (the defaults), ``false``, or a ``[robustness]`` table."""
    if isinstance(value, bool):
        return sweep_settings() if value else None
    if not isinstance(value, dict):
        raise RobustnessError(f"{path}: robustness must be true, false or a table, got {value!r}")
    unknown = sorted(set(value) - set(TOML_KEYS))
    if unknown:
        raise RobustnessError(f"{path}: unknown key(s) {unknown} in [robustness]; known: {list(TOML_KEYS)}")
    strengths = value.get("strengths", {})
    if not isinstance(strengths, dict) or not all(isinstance(v, list) for v in strengths.values()):
        raise RobustnessError(f"{path}: robustness.strengths must be a table of lists, e.g. {{ gaussian = [0.05, 0.1] }}")
    overrides = [f"{name}={','.join(str(s) for s in values)}" for name, values in strengths.items()]
    return sweep_settings(value.get("corruptions") or list(strengths) or None, overrides, value.get("seed"),
                          value.get("mirroring", True), value.get("keep_inputs", False),
                          option=f"{path}: robustness.strengths", seed_option=f"{path}: robustness.seed")


def check_settings(settings: Any) -> None:
    """Settings read from study.json: the fields, known corruptions, strengths each corruption takes."""
    if not isinstance(settings, dict) or sorted(settings) != sorted(FIELDS):
        raise RobustnessError(f"robustness settings need the keys {list(FIELDS)}, got {settings!r}")
    strengths = settings["strengths"]
    if not isinstance(strengths, dict) or not strengths:
        raise RobustnessError(f"robustness strengths must name at least one corruption, got {strengths!r}")
    for name, values in strengths.items():
        if name not in CORRUPTIONS:
            raise RobustnessError(f"robustness: unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
        if not isinstance(values, list) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise RobustnessError(f"robustness: the strengths of {name} must be a list of numbers, got {values!r}")
        for strength in values:
            problem = strength_problem(name, strength)
            if problem:
                raise RobustnessError(f"robustness: {problem}")
    if seed_problem(settings["seed"]):
        raise RobustnessError(f"robustness: {seed_problem(settings['seed'])}")
    for key in ("mirroring", "keep_inputs"):
        if not isinstance(settings[key], bool):
            raise RobustnessError(f"robustness {key} must be true or false, got {settings[key]!r}")


def measured(settings: dict[str, Any]) -> dict[str, Any]:
    """What a sweep's results depend on (two sweeps with the same are the same sweep)."""
    return {key: settings[key] for key in MEASURED_FIELDS}


def contradictions(stored: Optional[dict], requested: Optional[dict]) -> list[str]:
    """Changing or removing a stored sweep (not adding one) contradicts the stored study."""
    if stored is None or (requested is not None and measured(stored) == measured(requested)):
        return []
    return [f"robustness: stored {measured(stored)}, requested {'none' if requested is None else measured(requested)}"]
