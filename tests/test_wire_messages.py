"""Wire messages: one constructor each, the same bytes as the protocol has always carried."""

from __future__ import annotations

import asyncio

from testbed.base import wire
from testbed.base.wire import encode_frame, read_frame


def test_an_infer_request_keeps_the_message_type_and_the_cut_apart():
    header = wire.infer_message(7, "layer2+butterfly", {"dtype": "float16", "shape": [1, 2]})
    assert encode_frame(header, b"xy") == encode_frame(
        {"codec": {"dtype": "float16", "shape": [1, 2]}, "type": "infer", "id": 7, "kind": "layer2+butterfly"}, b"xy")
    assert wire.message_type(header) == "infer" and wire.request_cut(header) == "layer2+butterfly"
    assert "codec" not in wire.infer_message(8, "cloud_only")  # a JPEG carries no codec metadata


def test_a_result_leaves_with_its_server_time_and_queue_depth_last():
    ok = wire.sealed(wire.ok_result(3, 281, 10.5, "boot", 1.25, 8.0, 4, 1), 12.0, 2)
    assert list(ok) == ["type", "id", "status", "top1", "t_received", "boot_id", "queue_ms", "cloud_ms",
                        "batch_size", "replica", "server_ms", "queue_depth"]
    rejected = wire.sealed(wire.rejected_result(3, "queue_full (limit 1)", 0), 0.5, 1)
    assert rejected["status"] == "rejected" and list(rejected)[-2:] == ["server_ms", "queue_depth"]
    assert wire.error_result(3, "refused: x", 0) == {"type": "result", "id": 3, "status": "error",
                                                     "reason": "refused: x", "replica": 0}


def test_messages_survive_a_real_stream():
    async def go():
        reader = asyncio.StreamReader()
        for m in (wire.hello_message(4, "tok"), wire.faults_message([[1.0, 2.0, 0.5]], "b", 3.0), wire.phase_message()):
            reader.feed_data(encode_frame(m))
        reader.feed_eof()
        return [(await read_frame(reader))[0] for _ in range(3)]

    hello, faults, phase = asyncio.run(go())
    assert hello == {"type": "hello", "device_id": 4, "token": "tok"}
    assert faults["windows"] == [[1.0, 2.0, 0.5]] and wire.message_type(phase) == "phase"
