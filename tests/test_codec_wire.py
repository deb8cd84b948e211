"""Codec round trips and sizes; frames on a real stream, including malformed ones."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from testbed.base import codec
from testbed.base.wire import MAX_PAYLOAD_BYTES, ProtocolError, encode_frame, read_frame
from testbed.domain.frames import make_frames

SHAPE = (8, 28, 28)


@pytest.fixture
def feature():
    rng = np.random.default_rng(0)
    return np.maximum(rng.normal(0.5, 1.0, SHAPE), 0).astype(np.float32)  # post-ReLU-like


@pytest.mark.parametrize("dtype, bytes_per_value", [("float32", 4), ("float16", 2), ("int8", 1)])
def test_raw_sizes_are_what_goes_on_the_wire(feature, dtype, bytes_per_value):
    meta, payload = codec.encode_tensor(feature, dtype, zstd_level=0)
    assert len(payload) == feature.size * bytes_per_value
    assert meta["shape"] == list(SHAPE) and meta["zstd"] is False


def test_float32_round_trip_is_exact(feature):
    out = codec.decode_tensor(*codec.encode_tensor(feature, "float32", 3))
    assert out.dtype == np.float32 and np.array_equal(out, feature)


def test_float16_round_trip_within_half_precision(feature):
    out = codec.decode_tensor(*codec.encode_tensor(feature, "float16"))
    np.testing.assert_allclose(out, feature, rtol=1e-3, atol=1e-3)


def test_int8_round_trip_within_half_a_step(feature):
    meta, payload = codec.encode_tensor(feature, "int8")
    out = codec.decode_tensor(meta, payload)
    step = (feature.max() - feature.min()) / 255
    assert meta["scale"] == pytest.approx(step)
    assert np.max(np.abs(out - feature)) <= step / 2 + 1e-6


def test_int8_handles_negative_and_constant_tensors():
    x = np.linspace(-3, 5, 1000, dtype=np.float32).reshape(10, 100)
    out = codec.decode_tensor(*codec.encode_tensor(x, "int8"))
    assert np.max(np.abs(out - x)) <= 8 / 255 / 2 + 1e-6
    const = np.full((4, 4), 2.5, dtype=np.float32)
    np.testing.assert_allclose(codec.decode_tensor(*codec.encode_tensor(const, "int8")), const, atol=1e-6)


def test_zstd_shrinks_sparse_features_and_round_trips(feature):
    _, raw = codec.encode_tensor(feature, "int8", 0)
    meta, packed = codec.encode_tensor(feature, "int8", 3)
    assert len(packed) < len(raw)  # about half the values are zero after the ReLU
    np.testing.assert_array_equal(codec.decode_tensor(meta, packed),
                                  codec.decode_tensor(*codec.encode_tensor(feature, "int8", 0)))


def test_unknown_dtype_is_refused(feature):
    with pytest.raises(ValueError, match="allowed: float32, float16, int8"):
        codec.encode_tensor(feature, "int4")


def test_jpeg_of_a_real_photo_round_trips_with_realistic_size():
    frame = make_frames(None, 224, 1, seed=0)[0]
    data = codec.encode_jpeg(frame, 90)
    assert data[:2] == b"\xff\xd8"  # JPEG SOI marker
    assert 5_000 < len(data) < 60_000  # a real 224x224 photo, not noise and not flat
    back = codec.decode_jpeg(data)
    assert back.shape == (224, 224, 3)
    assert np.mean(np.abs(back.astype(int) - frame.astype(int))) < 6


def _reader_with(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_frame_round_trip_counts_every_byte():
    async def go():
        frame = encode_frame({"type": "infer", "id": 3}, b"abc" * 100)
        header, payload, nbytes = await read_frame(_reader_with(frame))
        assert header == {"type": "infer", "id": 3} and payload == b"abc" * 100
        assert nbytes == len(frame)
        with pytest.raises(EOFError):
            await read_frame(_reader_with(b""))

    asyncio.run(go())


@pytest.mark.parametrize("data, says", [
    (b"XXXX" + struct.pack("!II", 2, 0) + b"{}", "bad magic"),
    (encode_frame({"a": 1}, b"12345")[:-2], "truncated frame"),
    (b"SPB1\x00", "truncated preamble"),
    (b"SPB1" + struct.pack("!II", 2, MAX_PAYLOAD_BYTES + 1) + b"{}", "too large"),
    (b"SPB1" + struct.pack("!II", 3, 0) + b"{x}", "not JSON"),
    (b"SPB1" + struct.pack("!II", 2, 0) + b"[]", "not a JSON object"),
])
def test_malformed_frames_raise_protocol_error(data, says):
    async def go():
        with pytest.raises(ProtocolError, match=says):
            await read_frame(_reader_with(data))

    asyncio.run(go())
