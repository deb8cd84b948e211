"""The split model: cuts, catalogue, butterfly shapes, local weights."""

from __future__ import annotations

import pytest
import torch

from testbed.config.schema import RESNET50_CHANNELS
from testbed.domain.frames import make_frames
from testbed.model.split_model import build_backbone, build_split_model, preprocess, split_catalogue


@pytest.fixture(scope="module")
def split_model():
    return build_split_model(None, seed=0, split="layer2", reduced_channels=8)


def test_catalogue_is_computed_from_the_model():
    rows = split_catalogue(build_backbone(None, 0), 224)
    by_cut = {r["cut"]: r for r in rows}
    names = [r["cut"] for r in rows]
    # the stem's layers, then each bottleneck block (a skip crosses every point inside one), then pool and flatten
    assert names[:5] == ["input", "conv1", "bn1", "relu", "maxpool"]
    assert [n for n in names if n.startswith("layer") and "." not in n] == ["layer1", "layer2", "layer3", "layer4"]
    assert names[-2:] == ["avgpool", "flatten"]
    assert by_cut["layer2"]["shape"] == [512, 28, 28]
    assert by_cut["layer2"]["float32_bytes"] == 512 * 28 * 28 * 4
    for cut, channels in RESNET50_CHANNELS.items():  # the config's table agrees with the model
        assert by_cut[cut]["shape"][0] == channels


@torch.no_grad()
def test_head_then_tail_is_the_whole_network(split_model):
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(split_model.tail(split_model.head(x)), split_model.full(x))


@torch.no_grad()
def test_butterfly_reduces_then_restores_channels(split_model):
    x = preprocess(make_frames(None, 224, 2, seed=1))
    reduced = split_model.device_part()(x)
    assert reduced.shape == (2, 8, 28, 28)
    assert reduced.min() >= 0  # BN + ReLU
    assert split_model.cloud_part()(reduced).shape == (2, 1000)


def test_random_init_is_seeded():
    a = build_backbone(None, seed=3).fc.weight
    b = build_backbone(None, seed=3).fc.weight
    c = build_backbone(None, seed=4).fc.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_weights_load_from_a_local_file(tmp_path):
    net = build_backbone(None, seed=11)
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    loaded = build_backbone(str(path), seed=0)
    assert torch.equal(loaded.conv1.weight, net.conv1.weight)


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="allowed: conv1, bn1, relu, maxpool, layer1.0.add, layer1.0, "):
        build_split_model(None, 0, "layer5", 8)
