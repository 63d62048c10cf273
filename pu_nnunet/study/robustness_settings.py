"""The settings of a study's robustness sweep (``study run --robustness``), as study.json holds them.

``{"strengths": {corruption: [s1, s2, ...]}, "seed": 0, "mirroring": true, "keep_inputs": false}``:
the corruptions and strengths of ``pu-nnunet robustness`` (same names, defaults and checks), the
noise seed, whether the sweep predicts with mirroring (test-time augmentation; on by default, as
``pu-nnunet robustness``) and whether the corrupted images are kept. The sweep is not part of a
study's identity (the trainings do not depend on it): adding it to a study that has none only adds
work, while changing or removing it would replace results already made, so that needs
``--reconfigure``. ``keep_inputs`` changes no result and may change freely.
"""

from __future__ import annotations

from typing import Any, Optional

from pu_nnunet.study.errors import StudyError

FIELDS = ("strengths", "seed", "mirroring", "keep_inputs")
# what keeps the sweep's results: the fields without keep_inputs
MEASURED_FIELDS = ("strengths", "seed", "mirroring")
DEFAULT_SEED = 0  # pu-nnunet robustness's default
# the [robustness] table of a TOML study file: the flags' names without "robustness-"
TOML_KEYS = ("corruptions", "strengths", "seed", "mirroring", "keep_inputs")


def sweep_settings(corruptions: Optional[list[str]] = None, strengths: Optional[list[str]] = None,
                   seed: Optional[int] = None, mirroring: bool = True, keep_inputs: bool = False,
                   option: str = "--robustness-strengths") -> dict[str, Any]:
    """The settings from the flags' values: ``corruptions`` (default all), ``strengths`` as
    ``CORRUPTION=S1,S2`` overrides of pu-nnunet robustness's defaults."""
    from pu_nnunet.robustness import CORRUPTIONS
    from pu_nnunet.robustness.corruptions import parse_strengths
    from pu_nnunet.robustness.errors import RobustnessError

    try:
        parsed = parse_strengths(list(corruptions or CORRUPTIONS), list(strengths or []), option)
    except RobustnessError as error:
        raise StudyError(str(error)) from None
    settings = {"strengths": {name: list(values) for name, values in parsed.items()},
                "seed": DEFAULT_SEED if seed is None else seed, "mirroring": mirroring, "keep_inputs": keep_inputs}
    check_settings(settings)
    return settings


def settings_from_toml(value: Any, path: str) -> Optional[dict[str, Any]]:
    """``robustness = true`` (the defaults), ``false``, or a ``[robustness]`` table."""
    if isinstance(value, bool):
        return sweep_settings() if value else None
    if not isinstance(value, dict):
        raise StudyError(f"{path}: robustness must be true, false or a table, got {value!r}")
    unknown = sorted(set(value) - set(TOML_KEYS))
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {unknown} in [robustness]; known: {list(TOML_KEYS)}")
    strengths = value.get("strengths", {})
    if not isinstance(strengths, dict) or not all(isinstance(v, list) for v in strengths.values()):
        raise StudyError(f"{path}: robustness.strengths must be a table of lists, e.g. {{ gaussian = [0.05, 0.1] }}")
    overrides = [f"{name}={','.join(str(s) for s in values)}" for name, values in strengths.items()]
    return sweep_settings(value.get("corruptions") or list(strengths) or None, overrides, value.get("seed"),
                          value.get("mirroring", True), value.get("keep_inputs", False),
                          option=f"{path}: robustness.strengths")


def check_settings(settings: Any) -> None:
    """Settings read from study.json: the fields, known corruptions, strengths each corruption takes."""
    from pu_nnunet.robustness import CORRUPTIONS
    from pu_nnunet.robustness.corruptions import seed_problem, strength_problem

    if not isinstance(settings, dict) or sorted(settings) != sorted(FIELDS):
        raise StudyError(f"robustness settings need the keys {list(FIELDS)}, got {settings!r}")
    strengths = settings["strengths"]
    if not isinstance(strengths, dict) or not strengths:
        raise StudyError(f"robustness strengths must name at least one corruption, got {strengths!r}")
    for name, values in strengths.items():
        if name not in CORRUPTIONS:
            raise StudyError(f"robustness: unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
        if not isinstance(values, list) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise StudyError(f"robustness: the strengths of {name} must be a list of numbers, got {values!r}")
        for strength in values:
            problem = strength_problem(name, strength)
            if problem:
                raise StudyError(f"robustness: {problem}")
    if seed_problem(settings["seed"]):
        raise StudyError(f"robustness: {seed_problem(settings['seed'])}")
    for key in ("mirroring", "keep_inputs"):
        if not isinstance(settings[key], bool):
            raise StudyError(f"robustness {key} must be true or false, got {settings[key]!r}")


def measured(settings: dict[str, Any]) -> dict[str, Any]:
    """What a sweep's results depend on (two sweeps with the same are the same sweep)."""
    return {key: settings[key] for key in MEASURED_FIELDS}


def contradictions(stored: Optional[dict], requested: Optional[dict]) -> list[str]:
    """Changing or removing a stored sweep (not adding one) contradicts the stored study."""
    if stored is None or (requested is not None and measured(stored) == measured(requested)):
        return []
    return [f"robustness: stored {measured(stored)}, requested {'none' if requested is None else measured(requested)}"]
