"""The training loop and the evaluation behind `run.py train`.

Evaluation sends the feature map at the cut through the same codec the devices use
(`testbed.base.codec`), one frame at a time as on the wire, so the accuracy and the bytes
in the trade-off table belong to the same payloads an experiment would send.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from testbed.base import codec
from testbed.model.split_model import SplitModel, preprocess


@dataclass(frozen=True)
class Budget:
    epochs: int
    batch_size: int
    lr: float
    max_steps_per_epoch: int | None = None
    seed: int = 0
    shift_px: int = 0  # random translation of each training image, up to this many pixels each way


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None,
                      temperature: float, weight: float) -> torch.Tensor:
    """(1 - weight) * CE + weight * T^2 * KL(teacher || student) at temperature T (Hinton et al., 2015).

    T^2 keeps the soft-target gradients on the scale of the hard-label ones as T changes.
    """
    ce = F.cross_entropy(logits, labels)
    if teacher_logits is None or weight == 0:
        return ce
    kl = F.kl_div(F.log_softmax(logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                  reduction="batchmean", log_target=True)
    return (1 - weight) * ce + weight * temperature**2 * kl


def train(forward: Callable[[torch.Tensor], torch.Tensor], params: Iterable[nn.Parameter], x: torch.Tensor,
          y: torch.Tensor, budget: Budget, teacher: nn.Module | None = None, temperature: float = 4.0,
          distill_weight: float = 0.0, log: Callable[[str], None] | None = None) -> list[float]:
    """Adam with a cosine learning-rate decay over the whole budget; returns the loss of every step.

    The caller puts the modules in train or eval mode (a frozen backbone keeps its BatchNorm statistics).
    The last incomplete batch of an epoch is dropped: BatchNorm cannot train on a single sample.
    """
    batch = min(budget.batch_size, len(y))
    per_epoch = len(y) // batch
    if budget.max_steps_per_epoch:
        per_epoch = min(per_epoch, budget.max_steps_per_epoch)
    total = per_epoch * budget.epochs
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.Adam(params, lr=budget.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    gen = torch.Generator().manual_seed(budget.seed)
    losses: list[float] = []
    for epoch in range(budget.epochs):
        order = torch.randperm(len(y), generator=gen)
        for step in range(per_epoch):
            idx = order[step * batch:(step + 1) * batch]
            xb, yb = random_shift(x[idx], budget.shift_px, gen), y[idx]
            teacher_logits = None
            if teacher is not None and distill_weight > 0:
                with torch.no_grad():
                    teacher_logits = teacher(xb)
            loss = distillation_loss(forward(xb), yb, teacher_logits, temperature, distill_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        if log:
            log(f"  epoch {epoch + 1}/{budget.epochs}: mean loss {np.mean(losses[-per_epoch:]):.4f}")
    return losses


def random_shift(x: torch.Tensor, px: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `px` pixels (edges replicated): a small data set otherwise overfits fast."""
    if px == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (px, px, px, px), mode="replicate")
    dx, dy = torch.randint(0, 2 * px + 1, (2, n), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 frames -> the normalized input the devices feed the head (`model.preprocess`)."""
    return preprocess(images), torch.from_numpy(labels)


@dataclass(frozen=True)
class Score:
    top1: float  # fraction correct
    bytes_per_request: float  # mean payload bytes of one frame's feature map


@torch.no_grad()
def evaluate_split(sm: SplitModel, x: torch.Tensor, y: torch.Tensor, dtype: str, zstd_level: int,
                   batch_size: int = 256) -> Score:
    """Accuracy with every frame's reduced feature map encoded and decoded as a device would send it."""
    device, cloud = sm.device_part(), sm.cloud_part()
    correct, nbytes = 0, 0
    for i in range(0, len(y), batch_size):
        features = device(x[i:i + batch_size]).numpy()
        decoded = []
        for f in features:  # one request per frame, as on the wire
            meta, payload = codec.encode_tensor(f, dtype, zstd_level)
            nbytes += len(payload)
            decoded.append(codec.decode_tensor(meta, payload))
        logits = cloud(torch.from_numpy(np.stack(decoded)))
        correct += int((logits.argmax(dim=1) == y[i:i + batch_size]).sum())
    return Score(correct / len(y), nbytes / len(y))


@torch.no_grad()
def evaluate_full(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 of the unsplit network on already preprocessed input."""
    net.eval()
    correct = sum(int((net(x[i:i + batch_size]).argmax(dim=1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
    return correct / len(y)


@torch.no_grad()
def evaluate_jpeg(net: nn.Module, images: np.ndarray, y: torch.Tensor, quality: int) -> Score:
    """Top-1 of the unsplit network on frames sent as JPEG, as cloud-only devices upload them."""
    payloads = [codec.encode_jpeg(img, quality) for img in images]
    x = preprocess([codec.decode_jpeg(p) for p in payloads])
    return Score(evaluate_full(net, x, y), sum(map(len, payloads)) / len(payloads))
