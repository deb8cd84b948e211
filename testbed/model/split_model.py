"""A classifier (`model.arch`, testbed.model.arch) cut at a named point of its graph, with a butterfly unit at the cut.

Cuts and their head/tail come from the traced graph (testbed.model.cut_catalogue); ResNet-50's
`layer1`..`layer4` are module paths there.

The butterfly unit (Eshratifar et al., "Towards Collaborative Intelligence
Friendly Architectures for Deep Learning", ISQED 2019) is a reduction
conv(C->c) + BN + ReLU that runs on the device after the head, and a
restoration conv(c->C) + BN + ReLU that runs in the cloud before the tail.
Weights come from a local file when the topology names one: a plain state_dict
of the arch, or a split checkpoint written by `run.py train` (backbone and
butterfly unit, any number of classes). Nothing is downloaded, so the default
is a seeded random init (timing and bytes are real; accuracy needs trained
weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from testbed.model.arch import build_network
from testbed.model.cut_catalogue import Catalogue, Cut, build_catalogue, split_at

if TYPE_CHECKING:
    import numpy as np

CHECKPOINT_FORMAT = "splitbed.split_model.v1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(flat state_dict, metadata) from a plain state_dict of the arch or a split checkpoint.

    A plain state_dict gets `backbone.` prefixes and empty metadata, so both kinds load one way.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises unpickling, zip and OS errors alike
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ValueError(f"{path}: not a loadable state_dict or checkpoint ({type(e).__name__}: {first})") from None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj["state_dict"], dict(obj["meta"])
    if not isinstance(obj, dict) or not any(str(k).endswith(".weight") for k in obj):
        raise ValueError(f"{path}: neither a state_dict nor a splitbed checkpoint")
    return {f"backbone.{k}": v for k, v in obj.items()}, {}


def save_checkpoint(sm: SplitModel, path: str | Path, **meta: Any) -> None:
    """The whole split model (backbone + butterfly) and what is needed to rebuild it."""
    meta = {"arch": sm.arch, "split": sm.split, "channels": sm.channels, "reduced_channels": sm.reduced_channels,
            "num_classes": sm.num_classes, **meta}
    torch.save({"format": CHECKPOINT_FORMAT, "meta": meta, "state_dict": sm.as_module().state_dict()}, path)


def _backbone(state: dict[str, torch.Tensor] | None, seed: int, num_classes: int, arch: str = "resnet50",
              input_size: int = 224) -> nn.Module:
    torch.manual_seed(seed)
    if state is not None:  # the classifier decides the class count
        num_classes = _state_classes(state)
    net = build_network(arch, num_classes, input_size)
    if state is not None:
        net.load_state_dict(_part(state, "backbone"))
    return net.eval()


def _state_classes(state: dict[str, torch.Tensor]) -> int:
    """Classes of a backbone state_dict: the rows of its last weight (torchvision puts the classifier last)."""
    return int(next(v for k, v in reversed(state.items()) if k.startswith("backbone.") and k.endswith(".weight"))
               .shape[0])


def _part(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    return {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}


def build_backbone(weights: str | None, seed: int, num_classes: int = 1000, arch: str = "resnet50",
                   input_size: int = 224) -> nn.Module:
    """The unsplit network; `num_classes` applies to a random init only."""
    return _backbone(load_weights(weights)[0] if weights else None, seed, num_classes, arch, input_size)


def conv_bn_relu(c_in: int, c_out: int, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if relu else []))


class _LastDim(nn.Module):
    """Linear over the last dimension (tokens or vectors), optionally followed by ReLU."""

    def __init__(self, c_in: int, c_out: int, relu: bool):
        super().__init__()
        self.linear = nn.Linear(c_in, c_out)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return torch.relu(y) if self.relu else y


def butterfly_units(cut: Cut, reduced_channels: int) -> tuple[nn.Module, nn.Module]:
    """(reduction, restoration) sized from the cut's channels: 1x1 conv + BN + ReLU on a feature map, a linear
    map over the last dimension otherwise. The restoration ends in ReLU only where the cut's features are
    nonnegative (a ReLU output), so it can reproduce what the tail expects."""
    if len(cut.shape) == 3:
        return (conv_bn_relu(cut.channels, reduced_channels),
                conv_bn_relu(reduced_channels, cut.channels, relu=cut.nonnegative))
    return _LastDim(cut.channels, reduced_channels, True), _LastDim(reduced_channels, cut.channels, cut.nonnegative)


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
    catalogue: Catalogue | None = None  # every cut of `full` (head and tail of each come from it)
    num_classes: int = 1000
    arch: str = "resnet50"

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
                      input_size: int = 224, num_classes: int = 1000, arch: str = "resnet50") -> SplitModel:
    """Cut the backbone at `split` (a cut of its catalogue) and insert a butterfly unit of `reduced_channels`.

    A split checkpoint must match the arch, split and channel count asked for; its butterfly is loaded too.
    A plain state_dict leaves the butterfly at its seeded random init.
    """
    state, meta = load_weights(weights) if weights else (None, {})
    if meta and meta.get("arch", "resnet50") != arch:
        raise ValueError(f"{weights}: trained with {meta.get('arch', 'resnet50')}; the topology asks for {arch} "
                         "(set model.arch to match)")
    if meta and (meta["split"], meta["reduced_channels"]) != (split, reduced_channels):
        raise ValueError(f"{weights}: trained with a butterfly of {meta['reduced_channels']} channels at "
                         f"{meta['split']}; the topology asks for {reduced_channels} at {split} "
                         "(set model.split and model.butterfly_channels to match)")
    net = _backbone(state, seed, num_classes, arch, input_size)
    catalogue = build_catalogue(net, input_size)
    cut = catalogue.get(split)
    if cut is None:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(catalogue.names())}")
    head, tail = split_at(catalogue, split)
    torch.manual_seed(seed + 1)
    reduction, restoration = (m.eval() for m in butterfly_units(cut, reduced_channels))
    n_classes = num_classes if state is None else _state_classes(state)
    sm = SplitModel(head.eval(), reduction, restoration, tail.eval(), net, cut.name, cut.channels,
                    reduced_channels, meta, catalogue, int(n_classes), arch)
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
    """(device part, cloud part) of a cut (testbed.domain.split_policy); None where that side runs no network.

    Every part is a view into the one backbone: a pool or replica holds one model copy for all its cuts.
    """
    if cut == "cloud_only":
        return None, sm.full
    if cut == "device_only":
        return sm.full, None
    if cut == f"{sm.split}+butterfly":
        return sm.device_part(), sm.cloud_part()
    assert sm.catalogue is not None
    if sm.catalogue.get(cut) is None:
        raise ValueError(f"unknown cut {cut!r}")
    head, tail = split_at(sm.catalogue, cut)
    return head.eval(), tail.eval()


def catalogue_rows(cat: Catalogue) -> list[dict[str, Any]]:
    """The catalogue as plain rows (summary.json, the table): the input first, then each cut in graph order."""
    natural = set(cat.natural_bottlenecks())
    total = max(cat.total_flops, 1)
    rows: list[dict[str, Any]] = [{"cut": "input", "shape": list(cat.input_shape), "float32_bytes": cat.input_bytes,
                                   "flops_share": 0.0, "natural_bottleneck": False}]
    rows += [{"cut": c.name, "shape": list(c.shape), "float32_bytes": c.float32_bytes,
              "flops_share": round(c.flops_before / total, 4), "natural_bottleneck": c.name in natural}
             for c in cat.cuts]
    return rows


@torch.no_grad()
def split_catalogue(net: nn.Module, input_size: int = 224) -> list[dict[str, Any]]:
    """Every cut of the network with its output shape, float32 bytes, FLOPs share and bottleneck flag.

    Computed by tracing the model and running a tensor through it, not typed in.
    """
    return catalogue_rows(build_catalogue(net, input_size))


def preprocess(rgb_batch: Sequence[Any] | np.ndarray, device: str = "cpu") -> torch.Tensor:
    """HxWx3 uint8 arrays (a list, or one NxHxWx3 array) -> normalized NCHW float tensor."""

    x = torch.from_numpy(np.stack(list(rgb_batch))).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std
