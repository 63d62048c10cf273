"""PU networks from plans alone: a plans file whose architecture is the PU residual-encoder U-Net.

nnU-Net builds every trainer's network from the plans (``get_network_from_plans``: the class named
by ``network_class_name``, called with ``arch_kwargs``, then ``network.apply(network.initialize)``).
So a copy of a plans file that names :class:`pu_nnunet.architectures.PUResidualEncoderUNet` with its
``pu_*`` options lets *any* trainer train the PU network with no subclass: the stock
``nnUNetTrainer``, nnU-Net's schedule variants (``nnUNetTrainer_250epochs``, ...) and users' own
trainers. The matched baseline's copy names nnU-Net's own ``ResidualEncoderUNet`` with the same
residual blocks (no pu-nnunet needed to load it). Both keep every configuration's
``data_identifier``, so they reuse the data ``nnUNetv2_plan_and_preprocess`` already wrote:

    pu-nnunet plans -d 218 -p nnUNetResEncUNetMPlans --pu-stages deepest_half -o nnUNetResEncUNetMPlans_PURe
    nnUNetv2_train 218 3d_fullres 0 -p nnUNetResEncUNetMPlans_PURe            # stock nnUNetTrainer
    nnUNetv2_train 218 3d_fullres 0 -p nnUNetResEncUNetMPlans_PUReBaseline    # the matched baseline

The networks equal those of ``nnUNetTrainerPURe`` (with the same options) and
``nnUNetTrainerPUReBaseline`` on the source plans, weight for weight at the same seed
(tests/trainers/test_pu_plans.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Union

from pu_nnunet.architectures.stage_selection import DEFAULT_PLACEMENT, resolve_pu_stages
from pu_nnunet.product_units import EXPONENT_INIT_A, LOG_INPUT_CLIP, LOG_OUTPUT_CLIP
from pu_nnunet.trainers.plans_to_network import residual_unet_plans_kwargs
from pu_nnunet.user_errors import UserInputError

PU_NETWORK_CLASS = "pu_nnunet.architectures.pu_residual_unet.PUResidualEncoderUNet"
RESENC_NETWORK_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
BASELINE_SUFFIX = "Baseline"


class PlansError(UserInputError):
    """A plans file that cannot become PU plans, or an output that would overwrite one."""


def pu_options(pu_stages: Union[str, list[int]] = DEFAULT_PLACEMENT, pu_positivity: str = "softplus",
               pu_log_input_clip: Optional[float] = LOG_INPUT_CLIP, pu_log_output_clip: Optional[float] = LOG_OUTPUT_CLIP,
               pu_nonlin_after_add: bool = True, pu_exponent_init_a: float = EXPONENT_INIT_A) -> dict[str, Any]:
    """The PU options as plans store them (JSON values; nnUNetTrainerPURe's defaults)."""
    return dict(pu_stages=pu_stages if isinstance(pu_stages, str) else list(pu_stages), pu_positivity=pu_positivity,
                pu_log_input_clip=pu_log_input_clip, pu_log_output_clip=pu_log_output_clip,
                pu_nonlin_after_add=pu_nonlin_after_add, pu_exponent_init_a=pu_exponent_init_a)


def _architecture(source: dict[str, Any], options: Optional[dict[str, Any]], where: str) -> dict[str, Any]:
    """One configuration's architecture entry for the PU network (options) or the baseline (None)."""
    try:
        kwargs = residual_unet_plans_kwargs(source["network_class_name"], source["arch_kwargs"])
    except (KeyError, TypeError, ValueError) as error:
        raise PlansError(f"{where}: {error}") from None
    if options is not None:
        try:  # a bad placement fails here, not in training
            resolve_pu_stages(options["pu_stages"], kwargs["n_stages"])
        except (TypeError, ValueError) as error:
            raise PlansError(f"{where}: {error}") from None
    return {"network_class_name": PU_NETWORK_CLASS if options is not None else RESENC_NETWORK_CLASS,
            "arch_kwargs": {**kwargs, **(options or {})},
            "_kw_requires_import": list(source.get("_kw_requires_import", []))}


def derived_plans(plans: dict[str, Any], name: str, options: Optional[dict[str, Any]], source: str) -> dict[str, Any]:
    """A copy of ``plans`` named ``name`` whose every configuration with an architecture builds the
    PU network (``options``) or the matched baseline (None); inheriting configurations keep
    inheriting, data identifiers stay."""
    derived = copy.deepcopy(plans)
    derived["plans_name"] = name
    configurations = derived.get("configurations")
    if not isinstance(configurations, dict) or not configurations:
        raise PlansError(f"{source}: no configurations; is it an nnU-Net plans file?")
    changed = 0
    for configuration, content in configurations.items():
        if isinstance(content, dict) and "architecture" in content:
            content["architecture"] = _architecture(content["architecture"], options,
                                                    f"{source}: configuration {configuration}")
            changed += 1
    if not changed:
        raise PlansError(f"{source}: no configuration holds an architecture")
    return derived


def write_pu_plans(preprocessed_dataset: Path, source_plans: str, name: str, options: dict[str, Any],
                   overwrite: bool = False) -> tuple[Path, Path]:
    """Writes ``NAME.json`` (PU) and ``NAME`` + "Baseline" ``.json`` beside ``SOURCE.json``; returns both."""
    from pu_nnunet.json_files import NNUNET_INDENT, write_json
    from pu_nnunet.user_files import read_user_json

    source = preprocessed_dataset / f"{source_plans}.json"
    plans = read_user_json(source, "nnU-Net plans", dict, PlansError, allow_nan=True)
    baseline_name = name + BASELINE_SUFFIX
    targets = {name: preprocessed_dataset / f"{name}.json", baseline_name: preprocessed_dataset / f"{baseline_name}.json"}
    if name == source_plans or baseline_name == source_plans:
        raise PlansError(f"{source}: -o {name} would replace the source plans; choose another name")
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not overwrite:
        raise PlansError(f"{existing[0]} exists; pass --overwrite to replace it or choose another -o name")
    contents = {name: derived_plans(plans, name, options, str(source)),
                baseline_name: derived_plans(plans, baseline_name, None, str(source))}
    for plans_name, content in contents.items():  # both checked before either is written
        write_json(targets[plans_name], content, indent=NNUNET_INDENT)
    return targets[name], targets[baseline_name]

