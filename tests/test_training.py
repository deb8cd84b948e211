"""Butterfly training: data, the loop, checkpoints that experiments load, codec-aware evaluation, `run.py train`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology
from testbed.model.split_model import accuracy_by_cut, build_split_model, save_checkpoint
from testbed.train.datasets import load_data
from testbed.train.tradeoff import set_scope
from testbed.train.training import Budget, distillation_loss, evaluate_split, random_shift, to_tensors, train

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "topologies" / "train_digits.yaml"
SIZE = 32


@pytest.fixture(scope="module")
def digits():
    data = load_data("digits", SIZE, seed=0)
    return to_tensors(data.train.images, data.train.labels), to_tensors(data.test.images, data.test.labels)


@pytest.fixture(scope="module")
def trained(digits):
    """A split model with a 4-channel butterfly after a few real training steps, and their losses."""
    (x, y), _ = digits
    sm = build_split_model(None, 0, "layer2", 4, SIZE, num_classes=10)
    set_scope(sm, "all")
    losses = train(sm.forward, sm.as_module().parameters(), x, y, Budget(1, 64, 1e-3, max_steps_per_epoch=20))
    sm.as_module().eval()
    return sm, losses


def test_digits_are_real_stratified_rgb_frames():
    data = load_data("digits", SIZE, seed=0)
    assert data.train.images.shape == (1437, SIZE, SIZE, 3) and data.train.images.dtype == np.uint8
    assert len(data.test) == 360 and data.classes == [str(i) for i in range(10)]
    assert np.array_equal(np.bincount(data.test.labels) >= 35, np.ones(10, bool))  # every class held out
    assert np.array_equal(data.train.images[..., 0], data.train.images[..., 2])  # grayscale replicated
    again = load_data("digits", SIZE, seed=0)
    assert np.array_equal(again.test.labels, data.test.labels)  # the split is seeded


def test_image_folder_is_read_per_class(tmp_path):
    for cls, value in (("cat", 30), ("dog", 220)):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((40, 50, 3), value, np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_data(str(tmp_path), SIZE, seed=1, test_fraction=0.4)
    assert data.classes == ["cat", "dog"] and (len(data.train), len(data.test)) == (6, 4)
    assert data.test.images.shape[1:] == (SIZE, SIZE, 3)
    for images, labels in ((data.train.images, data.train.labels), (data.test.images, data.test.labels)):
        assert np.array_equal(images[:, 0, 0, 0], np.where(labels == 0, 30, 220))


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_training_reduces_the_loss_on_real_digits(trained):
    _, losses = trained
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])  # from random init, 1.8 against 3.0 here


def test_random_shift_translates_each_image_by_at_most_px():
    x, gen = torch.randn(6, 3, 8, 8), torch.Generator().manual_seed(0)
    assert random_shift(x, 0, gen) is x
    out = random_shift(x, 2, gen)
    assert out.shape == x.shape
    for i in range(len(x)):  # the centre of each output is the input moved by some (dy, dx) within 2 px
        assert any(torch.equal(out[i, :, 2:6, 2:6], x[i, :, 2 - dy:6 - dy, 2 - dx:6 - dx])
                   for dy in range(-2, 3) for dx in range(-2, 3))
    assert not all(torch.equal(out[i], x[i]) for i in range(len(x)))


def test_distillation_loss_mixes_cross_entropy_and_soft_targets():
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    ce = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(distillation_loss(logits, labels, None, 4.0, 0.5), ce)
    torch.testing.assert_close(distillation_loss(logits, labels, logits, 4.0, 0.3), 0.7 * ce)  # KL(p||p) = 0
    assert distillation_loss(logits, labels, -logits, 4.0, 0.3) > 0.7 * ce


def test_frozen_backbone_trains_only_the_butterfly(digits):
    (x, y), _ = digits
    sm = build_split_model(None, 0, "layer2", 4, SIZE, num_classes=10)
    before = {k: v.clone() for k, v in sm.as_module().state_dict().items()}
    set_scope(sm, "butterfly")
    train(sm.forward, sm.as_module().parameters(), x, y, Budget(1, 16, 1e-3, max_steps_per_epoch=2))
    after = sm.as_module().state_dict()
    changed = {k.split(".")[0] for k, v in after.items() if not torch.equal(v, before[k])}
    assert changed == {"reduction", "restoration"}


@torch.no_grad()
def test_checkpoint_loads_with_the_same_outputs(trained, digits, tmp_path):
    sm, _ = trained
    _, (x_test, _) = digits
    path = tmp_path / "ckpt.pt"
    save_checkpoint(sm, path, input_size=SIZE, accuracy={"float32": 0.5})
    loaded = build_split_model(str(path), seed=123, split="layer2", reduced_channels=4, input_size=SIZE)
    assert loaded.num_classes == 10
    x = x_test[:16]
    torch.testing.assert_close(loaded.cloud_part()(loaded.device_part()(x)), sm.cloud_part()(sm.device_part()(x)),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="4 channels at layer2; the topology asks for 8 at layer2"):
        build_split_model(str(path), 0, "layer2", 8, SIZE)


@torch.no_grad()
def test_an_experiment_loads_the_checkpoint_through_model_weights(trained, digits, tmp_path):
    sm, _ = trained
    _, (x_test, _) = digits
    path = tmp_path / "ckpt.pt"
    save_checkpoint(sm, path)
    topo = load_topology(TOPOLOGY, [f"model.weights={path}", "model.butterfly_channels=4"])
    m = topo.model
    # what the device pools and cloud replicas call
    run = build_split_model(m.weights, m.seed, m.split, m.butterfly_channels, m.input_size)
    x = x_test[:16]
    top1 = run.cloud_part()(run.device_part()(x)).argmax(dim=1)
    assert torch.equal(top1, sm.cloud_part()(sm.device_part()(x)).argmax(dim=1))
    assert int(top1.max()) < 10  # classes from the trained head, not ImageNet's 1000


def test_codec_round_trip_keeps_float32_exact_and_int8_smaller(trained, digits):
    sm, _ = trained
    _, (x_test, y_test) = digits
    x, y = x_test[:64], y_test[:64]
    with torch.no_grad():
        plain_top1 = float((sm.forward(x).argmax(dim=1) == y).float().mean())
    f32 = evaluate_split(sm, x, y, "float32", zstd_level=0)
    i8 = evaluate_split(sm, x, y, "int8", zstd_level=0)
    feature_values = 4 * (SIZE // 8) ** 2  # 4 channels at layer2, stride 8
    assert f32.top1 == plain_top1
    assert f32.bytes_per_request == feature_values * 4
    assert i8.bytes_per_request == feature_values < f32.bytes_per_request


@pytest.mark.parametrize(("override", "path", "message"), [
    ("train.distill_weight=2", "train.distill_weight", "less than or equal to 1"),
    ("train.channels=[4, 512]", "train.channels[1]", "below the 512 channels at split layer2"),
    ("train.codecs=[int4]", "train.codecs[0]", "'float32', 'float16' or 'int8'"),
    ("train.data=no_such_folder", "train.data", "no such folder; allowed: an ImageFolder folder"),
    ("train.data=" + "x" * 300, "train.data", "not a usable path: File name too long"),
    ('train.data="a\\0b"', "train.data", "built-in data set: digits"),
    ("train.batch_size=1", "train.batch_size", "greater than or equal to 2"),
    ("train.epoch=3", "train.epoch", "unknown key; allowed keys here: data,"),
])
def test_invalid_train_section_names_the_key(override, path, message):
    with pytest.raises(ConfigError) as err:
        load_topology(TOPOLOGY, [override])
    text = str(err.value)
    assert f"{TOPOLOGY}: {path}: " in text and message in text


@pytest.mark.slow
def test_run_train_writes_the_table_and_loadable_checkpoints(tmp_path, capsys):
    from testbed.cli import main

    out = tmp_path / "train"
    small = ["train.epochs=1", "train.finetune_epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16",
             "train.test_fraction=0.05", "train.channels=[2]", "train.codecs=[float32, int8]"]
    assert main(["train", str(TOPOLOGY), "--out", str(out), *[a for s in small for a in ("--set", s)]]) == 0
    rows = list(csv.DictReader((out / "accuracy.csv").open()))
    assert [(r["variant"], r["channels"], r["codec"]) for r in rows] == [
        ("unsplit", "3", "raw"), ("unsplit", "3", "jpeg90"),
        ("split", "512", "float32+zstd3"), ("split", "512", "int8+zstd3"),
        ("butterfly", "2", "float32+zstd3"), ("butterfly", "2", "int8+zstd3")]
    assert all(0 <= float(r["top1"]) <= 1 for r in rows)
    assert float(rows[-1]["bytes_per_request"]) < float(rows[-2]["bytes_per_request"])
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "unsplit.pt").exists()
    assert "butterfly         2  int8+zstd3" in capsys.readouterr().out
    sm = build_split_model(str(out / "butterfly_layer2_c2.pt"), 0, "layer2", 2, SIZE)
    assert sm.num_classes == 10
    top1 = {(r["variant"], r["codec"]): float(r["top1"]) for r in rows}
    assert accuracy_by_cut(sm.meta, "int8") == pytest.approx({  # what a run's reproduction table shows
        "device_only": top1[("unsplit", "raw")], "cloud_only": top1[("unsplit", "jpeg90")],
        "layer2": top1[("split", "int8+zstd3")], "layer2+butterfly": top1[("butterfly", "int8+zstd3")]}, abs=1e-4)


@pytest.mark.slow
def test_run_train_at_a_cut_of_another_model(tmp_path):
    """`run.py train` at any cut of any model: MobileNetV3-small at features.4 (40 channels), then the checkpoint
    loads back with its arch, cut and butterfly."""
    from testbed.cli import main

    out = tmp_path / "train"
    small = ["model.arch=mobilenet_v3_small", "model.split=features.4", "train.epochs=1", "train.finetune_epochs=1",
             "train.max_steps_per_epoch=2", "train.batch_size=16", "train.test_fraction=0.05", "train.channels=[4]",
             "train.codecs=[int8]"]
    assert main(["train", str(TOPOLOGY), "--out", str(out), *[a for s in small for a in ("--set", s)]]) == 0
    rows = list(csv.DictReader((out / "accuracy.csv").open()))
    assert [(r["variant"], r["channels"]) for r in rows] == [("unsplit", "3"), ("unsplit", "3"), ("split", "40"),
                                                             ("butterfly", "4")]
    path = str(out / "butterfly_features.4_c4.pt")
    sm = build_split_model(path, 0, "features.4", 4, SIZE, arch="mobilenet_v3_small")
    assert sm.num_classes == 10 and sm.meta["arch"] == "mobilenet_v3_small"
    with pytest.raises(ValueError, match="trained with mobilenet_v3_small"):
        build_split_model(path, 0, "features.4", 4, SIZE, arch="resnet50")
