"""Length-prefixed frames on a TCP stream: fixed preamble, JSON header, payload.

    b"SPB1" | header_len:u32 | payload_len:u32 | header (UTF-8 JSON) | payload

The header carries control fields (request id, kind, codec metadata, cloud
timings); the payload carries the tensor or JPEG bytes. Frames that are
truncated, too large or not JSON raise ProtocolError so the server can close
that one connection and keep serving the others.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

MAGIC = b"SPB1"
PREAMBLE = struct.Struct("!4sII")
MAX_HEADER_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; `reason` counts it (testbed.domain.ingress.REASONS)."""

    def __init__(self, message: str, reason: str = "garbage"):
        super().__init__(message)
        self.reason = reason


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return PREAMBLE.pack(MAGIC, len(head), len(payload)) + head + payload


async def read_frame(reader: asyncio.StreamReader, max_header: int = MAX_HEADER_BYTES,
                     max_payload: int = MAX_PAYLOAD_BYTES) -> tuple[dict[str, Any], bytes, int]:
    """Read one frame; returns (header, payload, frame bytes). EOF before a frame -> EOFError. A frame
    declaring more than `max_header` / `max_payload` bytes is refused before any of it is read."""
    try:
        pre = await reader.readexactly(PREAMBLE.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise EOFError from None
        raise ProtocolError("truncated preamble") from None
    magic, hlen, plen = PREAMBLE.unpack(pre)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}")
    if hlen > max_header or plen > max_payload:
        raise ProtocolError(f"frame too large (header {hlen} B, payload {plen} B; allowed {max_header} B, "
                            f"{max_payload} B)", "oversized")
    try:
        head = await reader.readexactly(hlen)
        payload = await reader.readexactly(plen) if plen else b""
    except asyncio.IncompleteReadError:
        raise ProtocolError("truncated frame") from None
    try:
        header = json.loads(head)
    except (ValueError, RecursionError):  # RecursionError: a header nested thousands deep
        raise ProtocolError("header is not JSON") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    return header, payload, PREAMBLE.size + hlen + plen


# ------------------------------------------------------------ messages
# One constructor per message, so the two words on the wire stay apart: "type" is which message a header is
# (MESSAGE), "kind" is the cut an infer request runs at (CUT). The keys and their order are what goes out.
MESSAGE, CUT = "type", "kind"


def message_type(header: dict[str, Any]) -> Any:
    """Which message a frame is (hello, faults, phase, infer, result); None where it does not say."""
    return header.get(MESSAGE)


def hello_message(device_id: int, token: str) -> dict[str, Any]:
    """A connection's first frame: which device this is, and the replica's token."""
    return {MESSAGE: "hello", "device_id": device_id, "token": token}


def faults_message(windows: list[Any], boot_id: str, t_sent: float) -> dict[str, Any]:
    """A device's downlink fault windows for the cloud's shaper; `boot_id`/`t_sent` place them on its clock."""
    return {MESSAGE: "faults", "windows": windows, "boot_id": boot_id, "t_sent": t_sent}


def phase_message() -> dict[str, Any]:
    """A new phase starts: the cloud's traced downlink for this device starts over."""
    return {MESSAGE: "phase"}


def infer_message(request_id: int, cut: str, codec_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request: its payload is the device's output at `cut` (codec metadata for a tensor; none for a JPEG)."""
    head = {} if codec_meta is None else {"codec": codec_meta}
    return {**head, MESSAGE: "infer", "id": request_id, CUT: cut}


def request_cut(header: dict[str, Any]) -> str:
    """The cut an infer request runs at."""
    return str(header[CUT])


def ok_result(request_id: Any, top1: int, t_received: float, boot_id: str, queue_ms: float, cloud_ms: float,
              batch_size: int, replica: int) -> dict[str, Any]:
    """The answer to a served request (server_ms and queue_depth are added as it leaves: `sealed`)."""
    return {MESSAGE: "result", "id": request_id, "status": "ok", "top1": top1, "t_received": t_received,
            "boot_id": boot_id, "queue_ms": queue_ms, "cloud_ms": cloud_ms, "batch_size": batch_size,
            "replica": replica}


def rejected_result(request_id: Any, reason: str, replica: int) -> dict[str, Any]:
    """A request the cloud would not queue (its queue was full)."""
    return {MESSAGE: "result", "id": request_id, "status": "rejected", "reason": reason, "replica": replica}


def error_result(request_id: Any, reason: str, replica: int) -> dict[str, Any]:
    """A request the cloud refused or failed on; the device records the reason."""
    return {MESSAGE: "result", "id": request_id, "status": "error", "reason": reason, "replica": replica}


def sealed(result: dict[str, Any], server_ms: float, queue_depth: int) -> dict[str, Any]:
    """A result as it leaves: the time it spent in the server and the queue depth (for devices' balancers)."""
    return {**result, "server_ms": server_ms, "queue_depth": queue_depth}
