"""The per-cut heads (actors/heads.py): one Head per cut of the run, its bytes what the encoder produces, and a
replayed head's work the recorded bytes without running the model."""

from __future__ import annotations

import pytest

from actors.heads import Heads
from testbed.base import codec
from testbed.config.loading import load_topology

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    from tests.conftest import MINIMAL

    path = tmp_path_factory.mktemp("heads") / "topo.yaml"
    path.write_text(MINIMAL)
    topo = load_topology(path, ["strategies=[butterfly, cloud_only, device_only]"])
    h = Heads(topo, 0)
    h.build(with_full_model=False)
    return h


@pytest.mark.slow  # builds and calibrates the model
def test_one_head_per_cut_of_the_run_with_its_encoded_bytes(heads):
    assert set(heads.by_cut) == set(heads.cuts) >= {"layer2+butterfly", "cloud_only", "device_only"}
    for cut, head in heads.by_cut.items():
        assert head.cut == cut
        _, head_s, _, payload, header = heads.work(cut, heads.frames[0])
        if cut == "device_only":  # answers on the device: nothing goes up
            assert head.bytes_up == 0 and payload == b"" and 0 <= header["top1"] < 1000
            continue
        assert abs(head.bytes_up - len(payload)) <= 0.2 * len(payload)  # median of the calibration runs
        if cut == "cloud_only":
            assert head.model is None and head.host_ms == 0 and head_s == 0 and payload[:2] == b"\xff\xd8"  # a JPEG
        else:  # the cut's feature map, encoded as its codec says
            assert head.host_ms > 0 and header["codec"]
            x = codec.decode_tensor(header["codec"], payload)
            assert x.shape[0] == heads.topo.model.butterfly_channels
    assert heads.calibration.keys() == {c for c, h in heads.by_cut.items() if h.model is not None}


@pytest.mark.slow  # builds and calibrates the model
def test_a_replayed_head_gives_the_recorded_bytes_without_the_model(heads):
    heads.record_replays()
    head = heads.by_cut["layer2+butterfly"]
    assert len(head.replayed) == len(heads.frames)
    model, head.model = head.model, None  # the model is gone: a real run of this head would fail
    try:
        with pytest.raises(TypeError):
            heads.work("layer2+butterfly", heads.frames[0])
        for _, head_s, enc_s, payload, header in head.replayed:  # each frame's recorded times and bytes
            assert head_s > 0 and enc_s > 0 and len(payload) > 1_000 and header["codec"]
    finally:
        head.model = model
    for i in (0, 1):  # the same frame run for real now: the bytes a replay sends are the real ones
        assert heads.work("layer2+butterfly", heads.frames[i])[3] == head.replayed[i][3]
    assert head.replayed[0][3] != head.replayed[1][3]  # and they are each frame's own
