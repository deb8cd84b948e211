"""Labelled images for butterfly training, as uint8 RGB frames like the ones a device's camera gives the head.

Nothing can be downloaded here, so the built-in data set is one that ships inside a package:
scikit-learn's handwritten digits (1,797 real 8x8 grayscale scans, 10 classes), upsampled to the
training input size and replicated to three channels. Any other data comes from an ImageFolder
folder (one subfolder per class; `train/` and `val/` subfolders are used as given). Everything is
held in memory: this is for small data sets that fit a 2-core machine's training budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from testbed.config.schema import BUILTIN_DATASETS


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # N x H x W x 3 uint8
    labels: np.ndarray  # N int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ImageData:
    train: Split
    test: Split
    classes: list[str]


def load_data(data: str, input_size: int, seed: int, test_fraction: float = 0.2) -> ImageData:
    """A seeded, stratified train/test split of `data` at `input_size` x `input_size`."""
    if data == "digits":
        images, labels, classes = _digits(input_size)
    elif Path(data).is_dir() and (Path(data) / "train").is_dir() and (Path(data) / "val").is_dir():
        train, classes = _image_folder(Path(data) / "train", input_size)
        test, _ = _image_folder(Path(data) / "val", input_size)
        return ImageData(train, test, classes)
    elif Path(data).is_dir():
        (split, classes) = _image_folder(Path(data), input_size)
        images, labels = split.images, split.labels
    else:
        raise ValueError(f"unknown data {data!r}; allowed: an ImageFolder folder or {', '.join(BUILTIN_DATASETS)}")
    from sklearn.model_selection import train_test_split  # scikit-learn: only for the digits dataset

    tr_x, te_x, tr_y, te_y = train_test_split(images, labels, test_size=test_fraction, random_state=seed,
                                              stratify=labels)
    return ImageData(Split(tr_x, tr_y), Split(te_x, te_y), classes)


def _digits(input_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits  # scikit-learn: only for the digits dataset

    d = load_digits()
    gray = torch.from_numpy(d.images).float().div(16.0).unsqueeze(1)  # N x 1 x 8 x 8, ink in 0..16
    up = F.interpolate(gray, size=(input_size, input_size), mode="bilinear", align_corners=False)
    rgb = up.clamp(0, 1).mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1).permute(0, 2, 3, 1)
    return np.ascontiguousarray(rgb.numpy()), d.target.astype(np.int64), [str(c) for c in d.target_names]


def _image_folder(root: Path, input_size: int) -> tuple[Split, list[str]]:
    from torchvision import datasets, transforms  # torchvision: pulls in torch

    resize = transforms.Compose([transforms.Resize(input_size), transforms.CenterCrop(input_size)])
    folder = datasets.ImageFolder(str(root), transform=lambda img: np.asarray(resize(img.convert("RGB"))))
    if len(folder) == 0:
        raise ValueError(f"{root}: no images found")
    images, labels = zip(*(folder[i] for i in range(len(folder))), strict=True)
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64)), list(folder.classes)
