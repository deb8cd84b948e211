"""ResNet-50 cut at a named point, with a butterfly unit at the cut.

The butterfly unit (Eshratifar et al., "Towards Collaborative Intelligence
Friendly Architectures for Deep Learning", ISQED 2019) is a reduction
conv(C->c) + BN + ReLU that runs on the device after the head, and a
restoration conv(c->C) + BN + ReLU that runs in the cloud before the tail.
Weights come from a local file when the topology names one: a plain ResNet-50
state_dict, or a split checkpoint written by `run.py train` (backbone and
butterfly unit, any number of classes). Nothing is downloaded, so the default
is a seeded random init (timing and bytes are real; accuracy needs trained
weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torchvision.models import resnet50

if TYPE_CHECKING:
    import numpy as np

SPLIT_POINTS = ("layer1", "layer2", "layer3", "layer4")
CHECKPOINT_FORMAT = "splitbed.split_model.v1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(flat state_dict, metadata) from a plain ResNet-50 state_dict or a split checkpoint.

    A plain state_dict gets `backbone.` prefixes and empty metadata, so both kinds load one way.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj["state_dict"], dict(obj["meta"])
    if not isinstance(obj, dict) or "fc.weight" not in obj:
        raise ValueError(f"{path}: neither a ResNet-50 state_dict nor a splitbed checkpoint")
    return {f"backbone.{k}": v for k, v in obj.items()}, {}


def save_checkpoint(sm: SplitModel, path: str | Path, **meta: Any) -> None:
    """The whole split model (backbone + butterfly) and what is needed to rebuild it."""
    meta = {"split": sm.split, "channels": sm.channels, "reduced_channels": sm.reduced_channels,
            "num_classes": sm.num_classes, **meta}
    torch.save({"format": CHECKPOINT_FORMAT, "meta": meta, "state_dict": sm.as_module().state_dict()}, path)


def _backbone(state: dict[str, torch.Tensor] | None, seed: int, num_classes: int) -> nn.Module:
    torch.manual_seed(seed)
    if state is not None:  # the checkpoint's classifier decides the class count
        num_classes = state["backbone.fc.weight"].shape[0]
    net = resnet50(weights=None, num_classes=num_classes)
    if state is not None:
        net.load_state_dict(_part(state, "backbone"))
    return net.eval()


def _part(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    return {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}


def build_backbone(weights: str | None, seed: int, num_classes: int = 1000) -> nn.Module:
    """The unsplit network; `num_classes` applies to a random init only."""
    return _backbone(load_weights(weights)[0] if weights else None, seed, num_classes)


def stages(net: Any) -> list[tuple[str, nn.Module]]:
    """The backbone as an ordered list of named stages; a cut follows one of them."""
    return [
        ("stem", nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)),
        ("layer1", net.layer1),
        ("layer2", net.layer2),
        ("layer3", net.layer3),
        ("layer4", net.layer4),
        ("classifier", nn.Sequential(net.avgpool, nn.Flatten(1), net.fc)),
    ]


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@dataclass
class SplitModel:
    """The four pieces a split deployment needs, plus the whole network."""

    head: nn.Module  # stem .. split point (device)
    reduction: nn.Module  # butterfly, device side
    restoration: nn.Module  # butterfly, cloud side
    tail: nn.Module  # after the split point .. classifier (cloud)
    full: nn.Module  # unsplit network (cloud_only in the cloud, device_only on the device)
    split: str
    channels: int  # C at the cut
    reduced_channels: int  # c
    meta: dict[str, Any] = field(default_factory=dict)  # a split checkpoint's metadata (accuracy, classes)

    @property
    def num_classes(self) -> int:
        fc = self.full.fc
        assert isinstance(fc, nn.Linear)
        return fc.out_features

    def as_module(self) -> nn.ModuleDict:
        """Every parameter once (head and tail are views into `full`): for training and state_dicts."""
        return nn.ModuleDict({"backbone": self.full, "reduction": self.reduction, "restoration": self.restoration})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Head, butterfly and tail in one graph (training; no codec in between)."""
        return self.tail(self.restoration(self.reduction(self.head(x))))

    def device_part(self) -> nn.Module:
        return nn.Sequential(self.head, self.reduction).eval()

    def cloud_part(self) -> nn.Module:
        return nn.Sequential(self.restoration, self.tail).eval()


def build_split_model(weights: str | None, seed: int, split: str, reduced_channels: int,
                      input_size: int = 224, num_classes: int = 1000) -> SplitModel:
    """Cut the backbone at `split` and insert a butterfly unit of `reduced_channels`.

    A split checkpoint must match the split and channel count asked for; its butterfly is loaded too.
    A plain state_dict leaves the butterfly at its seeded random init.
    """
    if split not in SPLIT_POINTS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLIT_POINTS)}")
    state, meta = load_weights(weights) if weights else (None, {})
    if meta and (meta["split"], meta["reduced_channels"]) != (split, reduced_channels):
        raise ValueError(f"{weights}: trained with a butterfly of {meta['reduced_channels']} channels at "
                         f"{meta['split']}; the topology asks for {reduced_channels} at {split} "
                         "(set model.split and model.butterfly_channels to match)")
    net = _backbone(state, seed, num_classes)
    named = stages(net)
    cut = [n for n, _ in named].index(split) + 1
    head = nn.Sequential(*[m for _, m in named[:cut]])
    tail = nn.Sequential(*[m for _, m in named[cut:]])
    channels = _out_shape(head, input_size)[1]
    torch.manual_seed(seed + 1)
    reduction = conv_bn_relu(channels, reduced_channels).eval()
    restoration = conv_bn_relu(reduced_channels, channels).eval()
    sm = SplitModel(head.eval(), reduction, restoration, tail.eval(), net, split, channels, reduced_channels,
                    meta)
    if meta and state is not None:  # a split checkpoint carries the butterfly unit's weights
        reduction.load_state_dict(_part(state, "reduction"))
        restoration.load_state_dict(_part(state, "restoration"))
    return sm


def accuracy_by_cut(meta: dict[str, Any], dtype: str) -> dict[str, float]:
    """Held-out top-1 of each cut, as `run.py train` measured it for this checkpoint (empty without one).

    The butterfly and raw-split figures are those of the run's codec dtype (zstd is lossless)."""
    def of_dtype(by_codec: dict[str, float]) -> float | None:
        return next((v for k, v in by_codec.items() if k.split("+")[0] == dtype), None)

    ref = meta.get("reference_accuracy") or {}
    found = {"cloud_only": ref.get("cloud_only"), "device_only": ref.get("device_only"),
             meta.get("split", "?"): of_dtype(ref.get("split") or {}),
             f"{meta.get('split')}+butterfly": of_dtype(meta.get("accuracy") or {})}
    return {cut: float(v) for cut, v in found.items() if v is not None}


def cut_parts(sm: SplitModel, cut: str) -> tuple[nn.Module | None, nn.Module | None]:
    """(device part, cloud part) of a cut (testbed.split_policy); None where that side runs no network.

    Every part is a view into the one backbone: a pool or replica holds one model copy for all its cuts.
    """
    if cut == "cloud_only":
        return None, sm.full
    if cut == "device_only":
        return sm.full, None
    if cut == f"{sm.split}+butterfly":
        return sm.device_part(), sm.cloud_part()
    named = stages(sm.full)
    names = [n for n, _ in named]
    if cut not in SPLIT_POINTS:
        raise ValueError(f"unknown cut {cut!r}")
    k = names.index(cut) + 1
    return nn.Sequential(*[m for _, m in named[:k]]).eval(), nn.Sequential(*[m for _, m in named[k:]]).eval()


@torch.no_grad()
def _out_shape(module: nn.Module, input_size: int) -> tuple[int, ...]:
    return tuple(module(torch.zeros(1, 3, input_size, input_size)).shape)


@torch.no_grad()
def split_catalogue(net: nn.Module, input_size: int = 224) -> list[dict[str, Any]]:
    """Every candidate cut of the backbone with its output shape and float32 bytes.

    Computed by running a tensor through the model, not typed in.
    """
    x = torch.zeros(1, 3, input_size, input_size)
    rows = [{"cut": "input", "shape": list(x.shape[1:]), "float32_bytes": x[0].numel() * 4}]
    for name, module in stages(net):
        x = module(x)
        rows.append({"cut": name, "shape": list(x.shape[1:]), "float32_bytes": x[0].numel() * 4})
    return rows


def preprocess(rgb_batch: Sequence[Any] | np.ndarray, device: str = "cpu") -> torch.Tensor:
    """HxWx3 uint8 arrays (a list, or one NxHxWx3 array) -> normalized NCHW float tensor."""
    import numpy as np

    x = torch.from_numpy(np.stack(list(rgb_batch))).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std
