"""PURe20 vs its matched ResNet20 on a real image-classification data set, with the paper's recipe.

The PURe paper (Li, Jaekel, Dellen, arXiv 2505.04397) trains on CIFAR-10: SGD, batch 128,
momentum 0.9, weight decay 1e-3, lr 0.01 for PURe and 0.1 for the ResNets, 160 epochs, lr x0.1
at epochs 80 and 120. This script keeps that recipe with fewer epochs (lr x0.1 at 50 % and 75 %
of them) on data available offline:

- default: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), upsampled
  bilinearly to 32x32, one grey channel, a fixed stratified 80/20 train/test split;
- ``--data FOLDER``: any ImageFolder-style tree (``FOLDER/<class>/<image>``, or ``FOLDER/train``
  and ``FOLDER/test`` holding class folders), e.g. CIFAR-10 or Galaxy10 DECaLS exported as PNG.

Per model and seed: test accuracy after the last epoch (no model selection on the test set),
accuracy on the test set with signal-dependent Poisson noise (pixel x in [0, 1] -> Poisson(peak
x) / peak, the same noisy images for every model) and the relative drop (clean - noisy) / clean
(the paper's Galaxy10 robustness measure), parameters, training seconds per epoch. Inputs are
standardised per channel with the training set's mean and sd. Augmentation: none for the digits
(a flipped digit is another digit); for folders, 4-pixel zero-pad random crops and horizontal
flips as in He et al.'s CIFAR recipe (``--augment`` overrides).

    python benchmarks/bench_classification.py                     # digits, 8 epochs, 3 seeds: ~15 min on 2 busy cores
    python benchmarks/bench_classification.py --data ~/cifar10_png --epochs 160 --threads 8 \\
        --output benchmarks/results/classification_cifar10.json

Needs scikit-learn for the digits: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pu_layer import RESULTS_DIR, machine_info, write_json  # noqa: E402
from classification_data import (ClassificationData, load_digits_data, load_image_folder,  # noqa: E402
                                 poisson_noise)

from pu_nnunet.architectures import CLASSIFIER_NAMES, PURE_NAMES, create_classifier  # noqa: E402

# the paper's CIFAR-10 recipe
PAPER_LR = {"pure": 0.01, "resnet": 0.1}
MOMENTUM, WEIGHT_DECAY, BATCH_SIZE = 0.9, 1e-3, 128
LR_DECAY_AT, LR_DECAY_FACTOR = (0.5, 0.75), 0.1  # epochs 80 and 120 of 160
CROP_PADDING = 4  # He et al.'s CIFAR augmentation
EVAL_BATCH = 512
# photons at full intensity: mild, medium and strong shot noise
DEFAULT_POISSON_PEAKS = (64.0, 16.0, 4.0)
NOISE_SEED = 1234  # one noisy test set, shared by every model and seed


def augment_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crops of the zero-padded images and random horizontal flips, per image."""
    n, _, h, w = images.shape
    padded = F.pad(images, (CROP_PADDING,) * 4)
    offsets = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=generator).tolist()
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    out[flips] = out[flips].flip(-1)
    return out


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), EVAL_BATCH):
            logits = model(normalize(images[start:start + EVAL_BATCH]))
            correct += (logits.argmax(1) == labels[start:start + EVAL_BATCH]).sum().item()
    return correct / len(images)


def train_and_evaluate(name: str, data: ClassificationData, noisy_tests: Dict[float, torch.Tensor], seed: int,
                       args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    model = create_classifier(name, num_classes=len(data.class_names), in_channels=data.in_channels,
                              pu_form=args.pu_form)
    lr = args.lr_pure if name in PURE_NAMES else args.lr_resnet
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=args.weight_decay)
    milestones = sorted({max(1, int(f * args.epochs)) for f in LR_DECAY_AT})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, LR_DECAY_FACTOR)
    mean = data.train_images.mean(dim=(0, 2, 3), keepdim=True)
    sd = data.train_images.std(dim=(0, 2, 3), keepdim=True)

    def normalize(x):
        return (x - mean) / sd

    generator = torch.Generator().manual_seed(seed)
    epoch_seconds, epoch_losses, diverged = [], [], False
    for _ in range(args.epochs):
        model.train()
        start, loss_sum = time.perf_counter(), 0.0
        order = torch.randperm(len(data.train_images), generator=generator)
        for batch_start in range(0, len(order), args.batch_size):
            index = order[batch_start:batch_start + args.batch_size]
            images = data.train_images[index]
            if args.augment == "crop-flip":
                images = augment_crop_flip(images, generator)
            loss = F.cross_entropy(model(normalize(images)), data.train_labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
        scheduler.step()
        epoch_seconds.append(time.perf_counter() - start)
        epoch_losses.append(loss_sum / len(order))
        if not math.isfinite(epoch_losses[-1]):
            diverged = True  # reported as it is; accuracies below are then those of a broken model
            break
    clean = accuracy(model, data.test_images, data.test_labels, normalize)
    noisy = {peak: accuracy(model, images, data.test_labels, normalize) for peak, images in noisy_tests.items()}
    return dict(seed=seed, lr=lr, clean_accuracy=clean, noisy_accuracy={str(p): a for p, a in noisy.items()},
                relative_drop={str(p): (clean - a) / clean if clean > 0 else float("nan") for p, a in noisy.items()},
                epoch_seconds=epoch_seconds, train_loss=epoch_losses, diverged=diverged)


def _mean_sd(values: List[float]) -> dict:
    return dict(mean=statistics.fmean(values), sd=statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: List[dict], peaks) -> dict:
    return dict(clean_accuracy=_mean_sd([r["clean_accuracy"] for r in runs]),
                noisy_accuracy={str(p): _mean_sd([r["noisy_accuracy"][str(p)] for r in runs]) for p in peaks},
                relative_drop={str(p): _mean_sd([r["relative_drop"][str(p)] for r in runs]) for p in peaks},
                seconds_per_epoch=_mean_sd([statistics.fmean(r["epoch_seconds"]) for r in runs]),
                diverged_runs=sum(r["diverged"] for r in runs))


def format_table(results: dict, peaks) -> str:
    def pm(stat, scale=100.0):
        return f"{scale * stat['mean']:.2f} +- {scale * stat['sd']:.2f}"

    header = ["model", "params", "lr", "test acc %"] + [f"drop % (peak {p:g})" for p in peaks] + ["s/epoch"]
    rows = [header]
    for name, entry in results["models"].items():
        s = entry["summary"]
        rows.append([name, f"{entry['parameters']:,}", f"{entry['lr']:g}", pm(s["clean_accuracy"])]
                    + [pm(s["relative_drop"][str(p)]) for p in peaks] + [pm(s["seconds_per_epoch"], 1.0)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="ImageFolder-style folder; default: scikit-learn's digits")
    parser.add_argument("--models", nargs="+", default=["pure20", "resnet20"], choices=CLASSIFIER_NAMES)
    parser.add_argument("--epochs", type=int, default=8, help="lr x0.1 at 50%% and 75%% of them (default 8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--lr-pure", type=float, default=PAPER_LR["pure"])
    parser.add_argument("--lr-resnet", type=float, default=PAPER_LR["resnet"])
    parser.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY)
    parser.add_argument("--pu-form", choices=("paper", "stable"), default="paper")
    parser.add_argument("--image-size", type=int, default=32)
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
    if args.output.exists() and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    if args.augment is None:
        args.augment = "none" if args.data is None else "crop-flip"
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine_start = machine_info(torch.device("cpu"))
    if args.data is None:
        data = load_digits_data(args.image_size, args.test_fraction, args.split_seed)
    else:
        data = load_image_folder(args.data, args.image_size, args.in_channels, args.test_fraction, args.split_seed)
    noisy_tests = {p: poisson_noise(data.test_images, p, NOISE_SEED) for p in args.poisson_peaks}
    print(f"{data.source}: {len(data.train_images)} train / {len(data.test_images)} test images, "
          f"{len(data.class_names)} classes, {data.in_channels}x{args.image_size}x{args.image_size}; "
          f"{args.epochs} epochs, seeds {args.seeds}, {torch.get_num_threads()} threads", flush=True)

    runs: Dict[str, List[dict]] = {name: [] for name in args.models}
    wall = time.perf_counter()
    for seed in args.seeds:
        for name in args.models:  # models alternate within a seed, so load changes hit all alike
            run = train_and_evaluate(name, data, noisy_tests, seed, args)
            runs[name].append(run)
            print(f"  {name} seed {seed}: test acc {100 * run['clean_accuracy']:.2f} %, "
                  f"{statistics.fmean(run['epoch_seconds']):.1f} s/epoch, final train loss "
                  f"{run['train_loss'][-1]:.4f}{' (diverged)' if run['diverged'] else ''}", flush=True)

    models = {}
    for name in args.models:
        model = create_classifier(name, num_classes=len(data.class_names), in_channels=data.in_channels,
                                  pu_form=args.pu_form)
        models[name] = dict(parameters=sum(p.numel() for p in model.parameters()), lr=runs[name][0]["lr"],
                            summary=summarize(runs[name], args.poisson_peaks), runs=runs[name])
    results = dict(
        benchmark="bench_classification", data=dict(source=data.source, classes=data.class_names,
                                                    n_train=len(data.train_images), n_test=len(data.test_images),
                                                    in_channels=data.in_channels, image_size=args.image_size,
                                                    test_fraction=args.test_fraction, split_seed=args.split_seed),
        settings=dict(epochs=args.epochs, seeds=args.seeds, batch_size=args.batch_size, momentum=MOMENTUM,
                      weight_decay=args.weight_decay, lr_decay_at_fraction=LR_DECAY_AT,
                      lr_decay_factor=LR_DECAY_FACTOR, pu_form=args.pu_form, augment=args.augment,
                      poisson_peaks=args.poisson_peaks, noise_seed=NOISE_SEED),
        machine_start=machine_start, load_average_end=[round(v, 2) for v in os.getloadavg()],
        wall_seconds=time.perf_counter() - wall, models=models)
    print(format_table(results, args.poisson_peaks))
    pure = [n for n in args.models if n in PURE_NAMES]
    for name in pure:
        twin = "resnet" + name[len("pure"):]
        if twin in models:
            a, b = models[name]["summary"], models[twin]["summary"]
            print(f"{name} - {twin}: test acc {100 * (a['clean_accuracy']['mean'] - b['clean_accuracy']['mean']):+.2f} "
                  f"points; time per epoch x{a['seconds_per_epoch']['mean'] / b['seconds_per_epoch']['mean']:.2f}")
    # written last, all at once: an interrupted run leaves no partial file
    tmp = args.output.with_suffix(".json.tmp")
    write_json(tmp, results)
    tmp.replace(args.output)
    print(f"wrote {args.output} ({results['wall_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
