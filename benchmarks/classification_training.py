"""One training run of bench_classification.py and what is measured on it.

A run is (network, exponent init, lr, weight decay, seed): SGD with the paper's momentum and
step decay, trained on the fit split for a fixed number of epochs (the same number of steps for
every network), then scored on the validation split (to choose lr and weight decay), on the
test split clean, on the test split with Poisson noise, and on the noisy test split after the
BatchNorm statistics were re-estimated on noisy training images (train-time BN statistics
describe clean inputs; re-estimating them separates "the features break under noise" from "the
normalisation is off under noise").
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

from classification_data import ClassificationData, poisson_noise
from pu_nnunet.architectures import PURE_NAMES, create_classifier

MOMENTUM = 0.9  # the paper's SGD
LR_DECAY_AT, LR_DECAY_FACTOR = (0.5, 0.75), 0.1  # the paper's epochs 80 and 120 of 160
CROP_PADDING = 4  # He et al.'s CIFAR augmentation
EVAL_BATCH = 512


@dataclass(frozen=True)
class RunConfig:
    model: str
    exponent_init_a: float  # ignored by the ResNets
    lr: float
    weight_decay: float
    seed: int

    def key(self) -> str:
        a = f" a={self.exponent_init_a:g}" if self.model in PURE_NAMES else ""
        return f"{self.model}{a} lr={self.lr:g} wd={self.weight_decay:g} seed={self.seed}"


def augment_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crops of the zero-padded images and random horizontal flips, per image."""
    n, _, h, w = images.shape
    padded = F.pad(images, (CROP_PADDING,) * 4)
    offsets = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=generator).tolist()
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    out[flips] = out[flips].flip(-1)
    return out


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize: Callable) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), EVAL_BATCH):
            logits = model(normalize(images[start:start + EVAL_BATCH]))
            correct += (logits.argmax(1) == labels[start:start + EVAL_BATCH]).sum().item()
    return correct / len(images)


def reestimate_batchnorm(model: nn.Module, images: torch.Tensor, normalize: Callable, batch_size: int) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running mean/var are the plain average over ``images``
    (momentum None = cumulative average, so the result does not depend on the batch order)."""
    model = copy.deepcopy(model)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(normalize(images[start:start + batch_size]))
    model.eval()
    return model


def build(config: RunConfig, data: ClassificationData) -> nn.Module:
    options = dict(exponent_init_a=config.exponent_init_a) if config.model in PURE_NAMES else {}
    return create_classifier(config.model, num_classes=len(data.class_names), in_channels=data.in_channels,
                             pu_form="paper", **options)


def train_and_evaluate(config: RunConfig, data: ClassificationData, noisy_tests: Dict[float, torch.Tensor],
                       noise_seed: int, epochs: int, batch_size: int, augment: str) -> dict:
    torch.manual_seed(config.seed)
    model = build(config, data)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=MOMENTUM,
                                weight_decay=config.weight_decay)
    milestones = sorted({max(1, int(f * epochs)) for f in LR_DECAY_AT})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, LR_DECAY_FACTOR)
    mean = data.train_images.mean(dim=(0, 2, 3), keepdim=True)
    sd = data.train_images.std(dim=(0, 2, 3), keepdim=True)

    def normalize(x):
        return (x - mean) / sd

    generator = torch.Generator().manual_seed(config.seed)
    epoch_seconds, epoch_losses, steps, diverged = [], [], 0, False
    for _ in range(epochs):
        model.train()
        start, loss_sum = time.perf_counter(), 0.0
        order = torch.randperm(len(data.train_images), generator=generator)
        for batch_start in range(0, len(order), batch_size):
            index = order[batch_start:batch_start + batch_size]
            images = data.train_images[index]
            if augment == "crop-flip":
                images = augment_crop_flip(images, generator)
            loss = F.cross_entropy(model(normalize(images)), data.train_labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            loss_sum += loss.item() * len(index)
        scheduler.step()
        epoch_seconds.append(time.perf_counter() - start)
        epoch_losses.append(loss_sum / len(order))
        if not math.isfinite(epoch_losses[-1]):
            diverged = True  # reported as it is; the accuracies below are then those of a broken model
            break
    clean = accuracy(model, data.test_images, data.test_labels, normalize)
    # the reference of the re-estimated drops: statistics re-estimated the same way on clean images,
    # so the drop measures the noise, not stale running averages of a short schedule
    clean_bn = accuracy(reestimate_batchnorm(model, data.train_images, normalize, batch_size),
                        data.test_images, data.test_labels, normalize)
    noisy, noisy_bn = {}, {}
    for peak, images in noisy_tests.items():
        noisy[str(peak)] = accuracy(model, images, data.test_labels, normalize)
        # training images with noise of the same peak, never the test images (their own noise seed)
        noisy_train = poisson_noise(data.train_images, peak, noise_seed + 1)
        adapted = reestimate_batchnorm(model, noisy_train, normalize, batch_size)
        noisy_bn[str(peak)] = accuracy(adapted, images, data.test_labels, normalize)

    def drop(values, reference):
        return {p: (reference - a) / reference if reference > 0 else float("nan") for p, a in values.items()}

    return dict(key=config.key(), model=config.model, exponent_init_a=config.exponent_init_a, lr=config.lr,
                weight_decay=config.weight_decay, seed=config.seed, steps=steps,
                val_accuracy=accuracy(model, data.val_images, data.val_labels, normalize),
                clean_accuracy=clean, noisy_accuracy=noisy, relative_drop=drop(noisy, clean),
                clean_accuracy_bn_reestimated=clean_bn, noisy_accuracy_bn_reestimated=noisy_bn,
                relative_drop_bn_reestimated=drop(noisy_bn, clean_bn),
                epoch_seconds=epoch_seconds, train_loss=epoch_losses, diverged=diverged)
