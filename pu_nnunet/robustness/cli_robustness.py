"""``pu-nnunet robustness``: Dice and false positives of trained models under image corruptions."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from pu_nnunet.devices import add_device_argument
from pu_nnunet.robustness.corruptions import CORRUPTIONS, DEFAULT_STRENGTHS

# a --model NAME: it names a folder under OUT_DIR/runs
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+.-]*")

HELP = ("Predict held-out cases of trained models under corruptions (Poisson, Gaussian, bias field, gamma, "
        "resolution) at several strengths; Dice and false-positive rates per trainer, paired against a baseline.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", nargs="+", required=True, metavar="NAME=MODEL_DIR",
                        help="trained model folders (nnUNet_results/DatasetX/<trainer>__<plans>__<config>); repeat "
                             "a NAME for repeats of one trainer (repeat k pairs with repeat k of the baseline)")
    parser.add_argument("-i", "--images", required=True, metavar="IMAGES_DIR",
                        help="held-out images, NIfTI (e.g. nnUNet_raw/DatasetX/imagesTs); read, never written")
    parser.add_argument("-r", "--labels", required=True, metavar="LABELS_DIR", help="their references (labelsTs)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                        help="report folder; corrupted images are written here (inputs/), never to nnUNet_raw")
    parser.add_argument("--baseline", metavar="NAME", help="the NAME the others are paired with "
                                                           "(default: the one NAME containing 'Baseline')")
    parser.add_argument("--meta", metavar="cases.json", help="case classes for per-class results "
                                                             "(default: cases.json beside LABELS_DIR when present)")
    parser.add_argument("--corruptions", nargs="+", choices=tuple(CORRUPTIONS), default=list(CORRUPTIONS))
    parser.add_argument("--strengths", nargs="+", default=[], metavar="CORRUPTION=S1,S2",
                        help="override strengths, e.g. poisson=1000,100,10 (defaults: "
                             + "; ".join(f"{k} {','.join(f'{v:g}' for v in vs)}" for k, vs in DEFAULT_STRENGTHS.items())
                             + ")")
    parser.add_argument("--seed", type=int, default=0, help="noise seed; the same seed gives the same images")
    parser.add_argument("-f", "--folds", nargs="+", metavar="F", help="folds to ensemble (default: every fold_N)")
    add_device_argument(parser, "where the networks run")
    parser.add_argument("--disable_tta", action="store_true", help="no mirroring (as pu-nnunet predict)")
    parser.add_argument("--keep-inputs", action="store_true", help="keep the corrupted images in OUT_DIR/inputs")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished or different sweep in OUT_DIR")


def parse_models(values: list[str]):
    from pu_nnunet.robustness.errors import RobustnessError
    from pu_nnunet.robustness.sweep import ModelRun

    runs, counts = [], {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise RobustnessError(f"--model {value}: expected NAME=MODEL_DIR")
        if not MODEL_NAME.fullmatch(name):
            # NAME becomes a folder name under OUT_DIR/runs: no separators, no "..", no hidden names
            raise RobustnessError(f"--model {value}: NAME {name!r} must be letters, digits, '_', '-', '+' or '.', "
                                  "starting with a letter or digit")
        runs.append(ModelRun(name, counts.get(name, 0), Path(folder)))
        counts[name] = counts.get(name, 0) + 1
    if len(set(counts.values())) > 1:
        raise RobustnessError(f"--model: every NAME needs the same number of runs to pair repeats, got {counts}")
    _check_distinct_folders(runs)
    return runs


def _check_distinct_folders(runs) -> None:
    """One folder twice under one NAME would count one training as two repeats: refused. Under
    two NAMEs it pairs a model with itself (every difference zero, a check of the sweep itself):
    allowed, with a warning."""
    import warnings

    from pu_nnunet.robustness.errors import RobustnessError

    seen = {}
    for run in runs:
        folder = run.folder.resolve()
        if folder in seen and seen[folder].name == run.name:
            raise RobustnessError(f"--model: {run.folder} is given twice as {run.name}; repeats must be separate "
                                  "trainings")
        if folder in seen:
            warnings.warn(f"--model: {run.folder} is both {seen[folder].name} and {run.name}; their differences "
                          "are zero by construction")
        seen.setdefault(folder, run)


def choose_baseline(names: list[str], baseline: str | None) -> str | None:
    """The NAME the others pair with: ``--baseline``, else the one NAME containing 'baseline'; a
    sweep of several NAMEs without one is refused (its paired section would be empty)."""
    from pu_nnunet.robustness.errors import RobustnessError

    if baseline is not None:
        if baseline not in names:
            raise RobustnessError(f"--baseline {baseline}: not a NAME of --model ({', '.join(names)})")
        return baseline
    candidates = [name for name in names if "baseline" in name.lower()]
    if len(candidates) == 1 or len(names) == 1:
        return candidates[0] if candidates else None
    found = f"several NAMEs contain 'baseline' ({', '.join(candidates)})" if candidates else \
        "no NAME contains 'baseline'"
    raise RobustnessError(f"--baseline: {found}; pass --baseline NAME to choose the one the others pair with")


def check_paired_folds(models, folders: dict, baseline: str | None) -> None:
    """Paired models (repeat k of each NAME and of the baseline) must ensemble the same folds, or
    the difference mixes the trainer with the number of folds."""
    from pu_nnunet.robustness.errors import RobustnessError

    if baseline is None:
        return
    reference = {m.index: m for m in models if m.name == baseline}
    for model in models:
        other = reference[model.index]
        if folders[model.label].folds != folders[other.label].folds:
            raise RobustnessError(
                f"--model {model.name}={model.folder}: folds {list(folders[model.label].folds)}, but its pair "
                f"{other.name}={other.folder} has folds {list(folders[other.label].folds)}; pass -f to choose the "
                "same folds")


def output_paths(args: argparse.Namespace) -> list:
    """What this command writes (OUT_DIR): one run at a time (pu_nnunet/cli.py locks it)."""
    return [args.output]


def run(args: argparse.Namespace) -> int:
    from pu_nnunet.inference.model_folder import inspect_model_folder
    from pu_nnunet.provenance import RUN_RECORD_FILE, model_record, run_record, short_form
    from pu_nnunet.robustness import corruptions as corruption_module
    from pu_nnunet.robustness.errors import RobustnessError
    from pu_nnunet.robustness.settings import sweep_settings
    from pu_nnunet.robustness.report import PLOT_FILE, report_markdown, summarize
    from pu_nnunet.robustness.summary import plot_dice_vs_strength
    from pu_nnunet.robustness.sweep import (INPUTS_DIR, MODELS_FILE, RESULT_FILE, SETTINGS_FILE, _image_files,
                                            check_output_folder, check_resumed_models, conditions_of,
                                            run_predictions)
    from pu_nnunet.json_files import write_json

    models = parse_models(args.model)
    names = list(dict.fromkeys(m.name for m in models))
    baseline = choose_baseline(names, args.baseline)
    # the one parser and check of a sweep's settings, as study run --robustness
    sweep = sweep_settings(args.corruptions, args.strengths, args.seed, mirroring=not args.disable_tta,
                           keep_inputs=args.keep_inputs, option="--strengths", seed_option="--seed")
    strengths = sweep["strengths"]
    images, labels, out = Path(args.images), Path(args.labels), Path(args.output)
    _image_files(images)
    if not labels.is_dir():
        raise RobustnessError(f"{labels}: labels folder not found")
    meta = Path(args.meta) if args.meta else (labels.parent / "cases.json")
    if args.meta and not meta.is_file():
        raise RobustnessError(f"{meta}: cases.json not found")
    meta = meta if meta.is_file() else None
    folders = {m.label: inspect_model_folder(m.folder, args.folds) for m in models}
    check_paired_folds(models, folders, baseline)
    channel = next(iter(folders.values())).channel_names.get("0", "")
    intensity = corruption_module.intensity_model(channel)
    settings = {"models": {m.label: str(m.folder.resolve()) for m in models}, "images": str(images.resolve()),
                "labels": str(labels.resolve()), "meta": str(meta.resolve()) if meta else None,
                "strengths": strengths, "seed": sweep["seed"], "folds": args.folds,
                "mirroring": sweep["mirroring"], "baseline": baseline, "intensity_model": intensity.name,
                "corruption_notes": "\n\n".join(corruption_module.__doc__.strip().split("\n\n")[1:])}
    records = {m.label: model_record(m.folder, folders[m.label].folds, folders[m.label].checkpoint) for m in models}
    check_output_folder(out, settings, args.overwrite)
    check_resumed_models(out, records)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SETTINGS_FILE, settings)
    write_json(out / MODELS_FILE, records)
    conditions = conditions_of(strengths)
    print(f"{len(models)} model(s) x {len(conditions)} conditions x {len(_image_files(images))} cases -> {out}",
          flush=True)
    metrics = run_predictions(models, images, labels, out, conditions, sweep["seed"], args.folds, args.device,
                              sweep["mirroring"], meta, channel, lambda line: print(line, flush=True))
    summary = summarize(models, conditions, metrics, baseline, out)
    plot_dice_vs_strength(summary, out / "plots" / PLOT_FILE)
    # several models: run_record's `model` holds one, so each run's record goes under "models"
    record = run_record(device=args.device, files={"meta": meta} if meta else {})
    record["models"] = records
    write_json(out / RUN_RECORD_FILE, record)
    model_lines = [f"- {label}: {r['trainer']} ({r['plans']}, {r['configuration']}), "
                   + ", ".join(f"fold {fold} sha256 {(digest or 'missing')[:12]}"
                               for fold, digest in r["checkpoint_sha256"].items())
                   for label, r in record["models"].items()]
    (out / "report.md").write_text(report_markdown(summary, settings, short_form(record) + model_lines))
    write_json(out / RESULT_FILE, {**summary, "settings": settings})  # last: its presence marks a finished sweep
    if not args.keep_inputs:
        shutil.rmtree(out / INPUTS_DIR, ignore_errors=True)
    print(f"wrote {out / 'report.md'}, {out / RESULT_FILE}, {out / 'plots' / PLOT_FILE}")
    return 0
