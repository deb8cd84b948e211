"""A user's own model, built by import path in the tests (`model.arch: tests.user_model:build`)."""

from __future__ import annotations

from torch import nn


class TwoBranch(nn.Module):
    """A stem, a block with a skip connection, then a classifier: a small DAG."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.branch(x)
        return self.fc(self.pool(x).flatten(1))


def build(num_classes: int) -> nn.Module:
    return TwoBranch(num_classes)


def not_a_module(num_classes: int) -> str:
    return "a string"
