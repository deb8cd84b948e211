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
