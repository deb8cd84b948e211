"""The cut catalogue from the traced graph: exactly the valid cuts, head then tail equal to the network."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.densenet import _DenseBlock
from torchvision.models.resnet import BasicBlock

from testbed.model.arch import arch_problem, build_network
from testbed.model.cut_catalogue import build_catalogue, cumulative_ms, split_at
from testbed.model.split_model import build_split_model

SIZE = 64


def _exact_on_every_cut(net: nn.Module, names: list[str] | None = None) -> list[str]:
    """The cuts whose head then tail differs from the network at all (float32, no codec)."""
    cat = build_catalogue(net, SIZE)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x)
        wrong = []
        for name in names if names is not None else cat.names():
            head, tail = split_at(cat, name)
            if not torch.equal(tail(head(x)), ref):
                wrong.append(name)
    return wrong


def test_a_chain_has_a_cut_after_every_layer():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(2 * 60 * 60, 5))
    cat = build_catalogue(net, SIZE)
    assert cat.method == "fx" and cat.names() == ["0", "1", "2", "3"]
    assert [c.shape for c in cat.cuts] == [(4, 62, 62), (4, 62, 62), (2, 60, 60), (2 * 60 * 60,)]
    assert cat.get("2").float32_bytes == 2 * 60 * 60 * 4
    assert cat.natural_bottlenecks() == ["3"]  # 2x60x60 < 3x64x64; flatten only reshapes the conv's output
    assert _exact_on_every_cut(net) == []


def test_no_cut_inside_a_resnet_block():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), BasicBlock(8, 8), BasicBlock(8, 8), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 3))
    cat = build_catalogue(net, SIZE)
    # a block's add reads the block's input: nothing between a block's input and its add is a cut
    assert cat.names() == ["0", "1.add", "1", "2.add", "2", "3", "4"]
    assert _exact_on_every_cut(net) == []


def test_no_cut_inside_a_densenet_block():
    block = _DenseBlock(num_layers=3, num_input_features=8, bn_size=2, growth_rate=4, drop_rate=0.0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(20, 3))
    cat = build_catalogue(net, SIZE)
    # every dense layer reads every earlier feature map; only the block's final concatenation is a cut
    assert cat.names() == ["0", "1", "2", "3"]
    assert cat.get("1").shape == (20, 62, 62)
    assert _exact_on_every_cut(net) == []


def test_full_node_names_are_aliases():
    cat = build_catalogue(build_network("resnet18", 10, SIZE).eval(), SIZE)
    assert cat.get("layer1.1.relu_1").name == "layer1"
    assert cat.get("layer1.1").name == "layer1"
    assert cat.get("layer9") is None


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self, chained: bool = True):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.c = nn.Linear(4, 2)
        self.chained = chained

    def forward(self, x):
        y = self.a(x)
        if y.sum() > 0:
            y = y * 1.0
        out = self.c(self.b(y))
        return out if self.chained else out + 1


def test_untraceable_models_fall_back_to_top_level_children_and_say_so():
    cat = build_catalogue(_Branchy().eval(), SIZE)
    assert cat.method == "children" and cat.names() == ["a", "b"] and "could not trace" in cat.note
    assert _exact_on_every_cut(_Branchy().eval()) == []
    not_chained = build_catalogue(_Branchy(chained=False).eval(), SIZE)
    assert not_chained.names() == [] and "no cut is offered" in not_chained.note


SMALL = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf"]
LARGE = ["resnet50", "mobilenet_v3_large", "efficientnet_v2_s", "densenet121", "vgg16", "convnext_tiny", "vit_b_16"]


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.parametrize("arch", SMALL)
def test_head_then_tail_is_exact_at_every_cut_of_small_models(arch):
    torch.manual_seed(0)
    net = build_network(arch, 10, SIZE).eval()
    assert len(build_catalogue(net, SIZE).cuts) > 10
    assert _exact_on_every_cut(net) == []


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.parametrize("arch", LARGE)
def test_head_then_tail_is_exact_at_a_sample_of_cuts_of_larger_models(arch):
    torch.manual_seed(0)
    net = build_network(arch, 10, SIZE).eval()
    names = build_catalogue(net, SIZE).names()
    assert len(names) >= 5
    sample = sorted(set(names[:: max(1, len(names) // 6)] + [names[-1]]), key=names.index)
    assert _exact_on_every_cut(net, sample) == []


def test_the_b_series_and_close_names():
    assert all(arch_problem(f"efficientnet_b{i}") is None for i in range(8))
    problem = arch_problem("efficientnet_b9")
    assert problem is not None and "close names: efficientnet_b" in problem
    assert "does not import" in arch_problem("no_such_pkg.mod:build")
    assert "has no callable" in arch_problem("tests.user_model:nothing")
    assert arch_problem("tests.user_model:build") is None
    with pytest.raises(TypeError, match="not an nn.Module"):
        build_network("tests.user_model:not_a_module", 3, SIZE)


def test_cumulative_timing_grows_along_the_graph():
    net = build_network("mobilenet_v3_small", 10, SIZE).eval()
    cat = build_catalogue(net, SIZE)
    upto, total = cumulative_ms(cat, torch.zeros(1, 3, SIZE, SIZE), runs=2)
    values = [upto[n] for n in cat.names()]
    assert set(upto) == set(cat.names()) and values == sorted(values) and 0 < values[-1] <= total
    assert cat.total_flops > cat.cuts[-1].flops_before > cat.cuts[0].flops_before > 0


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.parametrize(("arch", "split"), [("efficientnet_b0", "features.3"), ("vit_b_16", "encoder.layers"),
                                             ("tests.user_model:build", "stem")])
def test_butterfly_at_any_cut(arch, split):
    sm = build_split_model(None, 0, split, 4, SIZE, num_classes=7, arch=arch)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        reduced = sm.device_part()(x)
        assert reduced.shape[1 if reduced.dim() == 4 else -1] == 4
        assert sm.cloud_part()(reduced).shape == (2, 7)
        torch.testing.assert_close(sm.tail(sm.head(x)), sm.full(x), rtol=0, atol=0)
    assert sm.num_classes == 7 and sm.channels == sm.catalogue.get(split).channels
