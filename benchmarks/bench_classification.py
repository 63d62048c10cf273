"""PURe20 vs its matched ResNet20 on a real image-classification data set, tuned fairly.

The PURe paper (Li, Jaekel, Dellen, arXiv 2505.04397) trains on CIFAR-10: SGD, batch 128,
momentum 0.9, weight decay 1e-3, lr 0.01 for PURe and 0.1 for the ResNets, 160 epochs, lr x0.1
at epochs 80 and 120. Comparing the two networks at their paper learning rates on a short
schedule compares learning rates as much as networks, so here both get:

- the same number of SGD steps (same epochs, batch size and training images);
- lr and weight decay chosen per network from the same grid (``--lr-grid`` x ``--wd-grid``) by
  accuracy on a validation split held out of the training images (seed ``--seeds[0]``); the
  test split is never used for a choice. The chosen setting ("tuned") and the paper's ("paper")
  are then each trained with every seed;
- every PURe network with each exponent initialisation of ``--exponent-init`` (Kaiming-uniform
  ``a``: 5 = the paper's "scaling factor 5" as read so far, sqrt(5) = PyTorch's default).

Data: by default scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes),
at their own 8x8 (``--image-size`` upsamples bilinearly), one grey channel, a fixed stratified
80/20 train/test split, then 20 % of train held out as validation; ``--data FOLDER``: any
ImageFolder-style tree (``FOLDER/<class>/<image>``, or ``FOLDER/train`` and ``FOLDER/test``).

Poisson protocol: a pixel x in [0, 1] becomes Poisson(peak x) / peak (mean x, variance x / peak;
"peak" = expected photons of a full-intensity pixel), clipped to [0, 1], not renormalised, then
standardised with the clean training mean and sd as every input is. One noisy test set per peak
(seed 1234), shared by every model and seed. The paper adds Poisson noise to Galaxy10 DECaLS
without giving a strength. Measured per run: clean test accuracy after the last epoch, noisy
test accuracy and relative drop (clean - noisy) / clean (the paper's measure), and the same
after re-estimating BatchNorm statistics on noisy training images of that peak (own noise
seed): a network whose drop vanishes there was thrown off by its normalisation, not its features.

    python benchmarks/bench_classification.py --threads 1     # digits 8x8, 8 epochs, 3 seeds
    python benchmarks/bench_classification.py --data ~/cifar10_png --image-size 32 --epochs 160 --threads 8 \\
        --output benchmarks/results/classification_cifar10.json

Finished runs are kept in OUTPUT.partial.json: an interrupted run resumes where it stopped.
Needs scikit-learn for the digits: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pu_layer import RESULTS_DIR, machine_info, write_json  # noqa: E402
from classification_data import (ClassificationData, load_digits_data, load_image_folder,  # noqa: E402
                                 poisson_noise, with_validation_split)
from classification_training import LR_DECAY_AT, LR_DECAY_FACTOR, MOMENTUM, RunConfig, build  # noqa: E402
from classification_training import train_and_evaluate  # noqa: E402

from pu_nnunet.architectures import CLASSIFIER_NAMES, PURE_NAMES  # noqa: E402

# the paper's CIFAR-10 recipe
PAPER_LR = {"pure": 0.01, "resnet": 0.1}
PAPER_WEIGHT_DECAY, BATCH_SIZE = 1e-3, 128
# the grid both networks are tuned on: the paper's two learning rates and one between them,
# the paper's weight decay and one ten times weaker
LR_GRID = (0.01, 0.03, 0.1)
WD_GRID = (1e-4, 1e-3)
# Kaiming-uniform a of the PU exponents: the paper's "scaling factor 5" and PyTorch's default
EXPONENT_INITS = (5.0, math.sqrt(5.0))
# photons at full intensity: mild, medium and strong shot noise
DEFAULT_POISSON_PEAKS = (64.0, 16.0, 4.0)
# the digits' own 8x8 (upsampling adds pixels, not information); CIFAR-10's 32x32 for folders
DIGITS_SIZE, FOLDER_IMAGE_SIZE = 8, 32
NOISE_SEED = 1234  # one noisy test set, shared by every model and seed
CHOICES = ("paper", "tuned")


def variants(models: List[str], exponent_inits: List[float]) -> List[tuple]:
    """(model, exponent init) pairs: every PURe network once per init, a ResNet once."""
    out = []
    for name in models:
        out += [(name, a) for a in exponent_inits] if name in PURE_NAMES else [(name, exponent_inits[0])]
    return out


def variant_name(model: str, a: float) -> str:
    return f"{model} (a={a:.3g})" if model in PURE_NAMES else model


def paper_config(model: str, a: float, seed: int) -> RunConfig:
    lr = PAPER_LR["pure"] if model in PURE_NAMES else PAPER_LR["resnet"]
    return RunConfig(model, a, lr, PAPER_WEIGHT_DECAY, seed)


def _mean_sd(values: List[float]) -> dict:
    return dict(mean=statistics.fmean(values), sd=statistics.stdev(values) if len(values) > 1 else 0.0, n=len(values))


def summarize(runs: List[dict], peaks) -> dict:
    return dict(clean_accuracy=_mean_sd([r["clean_accuracy"] for r in runs]),
                val_accuracy=_mean_sd([r["val_accuracy"] for r in runs]),
                clean_accuracy_bn_reestimated=_mean_sd([r["clean_accuracy_bn_reestimated"] for r in runs]),
                relative_drop={str(p): _mean_sd([r["relative_drop"][str(p)] for r in runs]) for p in peaks},
                relative_drop_bn_reestimated={str(p): _mean_sd([r["relative_drop_bn_reestimated"][str(p)]
                                                                for r in runs]) for p in peaks},
                seconds_per_epoch=_mean_sd([statistics.fmean(r["epoch_seconds"]) for r in runs]),
                seeds=[r["seed"] for r in runs], diverged_runs=sum(r["diverged"] for r in runs))


def format_table(results: dict, peaks) -> str:
    """A markdown table: one row per network, init and lr choice."""
    def pm(stat, scale=100.0):
        return f"{scale * stat['mean']:.1f} ± {scale * stat['sd']:.1f}"

    header = (["network", "lr choice", "lr", "wd", "seeds", "test acc %", "test acc %, BN re-est."]
              + [f"drop % peak {p:g}" for p in peaks] + [f"drop % peak {p:g}, BN re-est." for p in peaks])
    rows = [header, ["---"] * len(header)]
    for name, entry in results["variants"].items():
        for choice in CHOICES:
            if choice not in entry["choices"]:
                continue
            c = entry["choices"][choice]
            s = c["summary"]
            rows.append([name, choice, f"{c['lr']:g}", f"{c['weight_decay']:g}", str(len(s["seeds"])),
                         pm(s["clean_accuracy"]), pm(s["clean_accuracy_bn_reestimated"])] + [pm(s["relative_drop"][str(p)]) for p in peaks]
                        + [pm(s["relative_drop_bn_reestimated"][str(p)]) for p in peaks])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def format_selection(results: dict) -> str:
    rows = ["| network | " + " | ".join(f"lr {k}" for k in next(iter(results["variants"].values()))["grid"]) + " | chosen |"]
    rows.append("|" + " --- |" * (len(rows[0].split("|")) - 2))
    for name, entry in results["variants"].items():
        tuned = entry["choices"]["tuned"]
        rows.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in entry["grid"].values())
                    + f" | lr {tuned['lr']:g}, wd {tuned['weight_decay']:g} |")
    return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="ImageFolder-style folder; default: scikit-learn's digits")
    parser.add_argument("--models", nargs="+", default=["pure20", "resnet20"], choices=CLASSIFIER_NAMES)
    parser.add_argument("--exponent-init", type=float, nargs="+", default=list(EXPONENT_INITS),
                        help="Kaiming-uniform a of the PU exponents, one PURe variant each (default 5 and sqrt 5)")
    parser.add_argument("--epochs", type=int, default=8, help="lr x0.1 at 50%% and 75%% of them (default 8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="the first also trains the grid for the choice on the validation split")
    parser.add_argument("--lr-grid", type=float, nargs="+", default=list(LR_GRID))
    parser.add_argument("--wd-grid", type=float, nargs="+", default=list(WD_GRID))
    parser.add_argument("--val-fraction", type=float, default=0.2, help="of the training images, per class")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--image-size", type=int, default=None,
                        help="default: 8 for the digits (their own size), 32 for --data")
    parser.add_argument("--in-channels", type=int, choices=(1, 3), default=3, help="for --data (digits: 1)")
    parser.add_argument("--augment", choices=("none", "crop-flip"), default=None,
                        help="default: none for the digits, crop-flip for --data")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held out per class, fixed split")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--poisson-peaks", type=float, nargs="+", default=list(DEFAULT_POISSON_PEAKS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "classification.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error(f"--epochs and --batch-size must be positive, got {args.epochs} and {args.batch_size}")
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must lie in (0, 1), got {args.val_fraction}")
    if args.output.exists() and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    if args.augment is None:
        args.augment = "none" if args.data is None else "crop-flip"
    if args.image_size is None:
        args.image_size = DIGITS_SIZE if args.data is None else FOLDER_IMAGE_SIZE
    return args


def _settings(args, data: ClassificationData) -> dict:
    return dict(data=data.source, n_train=len(data.train_images), n_val=len(data.val_images),
                n_test=len(data.test_images), image_size=args.image_size, split_seed=args.split_seed,
                val_fraction=args.val_fraction, test_fraction=args.test_fraction, epochs=args.epochs,
                batch_size=args.batch_size, momentum=MOMENTUM, lr_grid=args.lr_grid, wd_grid=args.wd_grid,
                paper_lr=PAPER_LR, paper_weight_decay=PAPER_WEIGHT_DECAY, lr_decay_at_fraction=LR_DECAY_AT,
                lr_decay_factor=LR_DECAY_FACTOR, pu_form="paper", augment=args.augment,
                poisson_peaks=args.poisson_peaks, noise_seed=NOISE_SEED,
                poisson_protocol="x in [0,1] -> clip(Poisson(peak x) / peak, 0, 1), no renormalisation")


class RunStore:
    """Finished runs by key, saved after each run to OUTPUT.partial.json (resumed when its settings match)."""

    def __init__(self, path: Path, settings: dict, fresh: bool):
        self.path, self.settings, self.runs = path, settings, {}
        if path.exists() and not fresh:
            saved = json.loads(path.read_text())
            if saved.get("settings") != json.loads(json.dumps(settings)):
                raise SystemExit(f"{path}: saved runs have other settings; pass --overwrite to start over")
            self.runs = saved["runs"]
            print(f"resuming: {len(self.runs)} finished runs in {path}", flush=True)

    def get(self, config: RunConfig, run) -> dict:
        if config.key() not in self.runs:
            self.runs[config.key()] = run(config)
            write_json(self.path, dict(settings=self.settings, runs=self.runs))  # atomic
        return self.runs[config.key()]


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine_start = machine_info(torch.device("cpu"))
    if args.data is None:
        data = load_digits_data(args.image_size, args.test_fraction, args.split_seed)
    else:
        data = load_image_folder(args.data, args.image_size, args.in_channels, args.test_fraction, args.split_seed)
    data = with_validation_split(data, args.val_fraction, args.split_seed + 1)
    noisy_tests = {p: poisson_noise(data.test_images, p, NOISE_SEED) for p in args.poisson_peaks}
    steps = args.epochs * math.ceil(len(data.train_images) / args.batch_size)
    print(f"{data.source}: {len(data.train_images)} train / {len(data.val_images)} validation / "
          f"{len(data.test_images)} test images, {len(data.class_names)} classes, "
          f"{data.in_channels}x{args.image_size}x{args.image_size}; {args.epochs} epochs = {steps} steps, "
          f"seeds {args.seeds}, {torch.get_num_threads()} threads", flush=True)
    settings = _settings(args, data)
    store = RunStore(args.output.with_suffix(".partial.json"), settings, fresh=args.overwrite)

    def run(config: RunConfig) -> dict:
        result = train_and_evaluate(config, data, noisy_tests, NOISE_SEED, args.epochs, args.batch_size, args.augment)
        print(f"  {config.key()}: val {100 * result['val_accuracy']:.1f} %, test {100 * result['clean_accuracy']:.1f} %, "
              f"{statistics.fmean(result['epoch_seconds']):.1f} s/epoch, final train loss {result['train_loss'][-1]:.4f}"
              f"{' (diverged)' if result['diverged'] else ''}", flush=True)
        return result

    wall = time.perf_counter()
    pairs = variants(args.models, args.exponent_init)
    grid = [(lr, wd) for lr in args.lr_grid for wd in args.wd_grid]
    # 1. the choice: every grid point with the first seed, scored on validation only
    chosen, grid_scores = {}, {}
    for model, a in pairs:
        scores = {(lr, wd): store.get(RunConfig(model, a, lr, wd, args.seeds[0]), run)["val_accuracy"]
                  for lr, wd in grid}
        grid_scores[variant_name(model, a)] = {f"{lr:g}, wd {wd:g}": v for (lr, wd), v in scores.items()}
        chosen[(model, a)] = max(grid, key=lambda point: scores[point])  # ties: the first in grid order
    # 2. every seed at the chosen and at the paper's setting (seeds alternate models: load hits all alike)
    configs = {}
    for seed in args.seeds:
        for model, a in pairs:
            lr, wd = chosen[(model, a)]
            for choice, config in (("tuned", RunConfig(model, a, lr, wd, seed)), ("paper", paper_config(model, a, seed))):
                configs.setdefault((model, a, choice), []).append(store.get(config, run))

    variants_out = {}
    for model, a in pairs:
        entry = dict(model=model, exponent_init_a=a if model in PURE_NAMES else None,
                     parameters=sum(p.numel() for p in build(RunConfig(model, a, 0, 0, 0), data).parameters()),
                     grid=grid_scores[variant_name(model, a)], choices={})
        for choice in CHOICES:
            runs = configs[(model, a, choice)]
            entry["choices"][choice] = dict(lr=runs[0]["lr"], weight_decay=runs[0]["weight_decay"],
                                            summary=summarize(runs, args.poisson_peaks), runs=runs)
        variants_out[variant_name(model, a)] = entry
    results = dict(benchmark="bench_classification", settings=settings, steps_per_run=steps,
                   machine_start=machine_start, load_average_end=[round(v, 2) for v in os.getloadavg()],
                   wall_seconds=time.perf_counter() - wall, variants=variants_out)
    print("\nvalidation accuracy % of the grid (first seed):\n" + format_selection(results))
    print("\n" + format_table(results, args.poisson_peaks))
    # written last, all at once: an interrupted run leaves only the .partial.json it resumes from
    write_json(args.output, results)
    print(f"wrote {args.output} ({results['wall_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
