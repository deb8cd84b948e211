"""What a cloud replica accepts from a connection, checked before anything is decoded.

The ingress listens on a node's address, so any process that reaches the port can connect. Each replica
makes a random token when it is built; the driver hands it, with the address, to the run's device pools
and to nobody else (over Ray, never into the results). A connection's first frame must be a `hello` with
that token and a device id of this run, within HELLO_TIMEOUT_S; otherwise it is closed and counted. The
device's downlink is then taken from the run's configuration, never from the frame (a hello once set an MTU
of 0, a delay of 1e308 or a trace path naming any file on the replica's host).

After the hello, every frame is held against what this run's devices can send: a header within
MAX_HEADER_BYTES, a feature map of exactly the cut's shape and dtype whose zstd frame declares exactly that
many bytes (a 98 KB frame declaring 3 GB is refused unread), a JPEG of the run's input size (its header is
read, not its pixels), fault windows no more than the topology's faults. Bytes a connection has in flight
(received, not yet answered) are bounded: a peer that does not read its answers is closed. Every refusal
is counted by its reason (REASONS) in server_load.csv and summary.json.

Pure functions and a counter; no torch, no Ray.
"""

from __future__ import annotations

import hmac
import io
import math
import secrets
from dataclasses import dataclass
from typing import Any

import zstandard
from PIL import Image

TOKEN_BYTES = 16
HELLO_TIMEOUT_S = 10.0  # an idle connection that never says hello holds a socket, nothing more, this long
HELLO_MAX_BYTES = 4096  # the hello's header; it has no payload
MAX_HEADER_BYTES = 16 * 1024  # an infer header holds a request id, a cut name and the codec's metadata
ITEMSIZE = {"float32": 4, "float16": 2, "int8": 1}
REASONS = ("no_hello", "bad_token", "bad_hello", "garbage", "oversized", "unexpected_frame", "bad_codec",
           "shape", "zstd_size", "payload_size", "image", "faults", "in_flight")


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


class Refused(Exception):
    """A frame the replica will not serve; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def check_hello(header: dict[str, Any], token: str, devices: int) -> int:
    """The device id of a valid hello; Refused otherwise (the token is compared in constant time)."""
    if header.get("type") != "hello":
        raise Refused("no_hello", f"first frame is {str(header.get('type'))[:40]!r}, not hello")
    sent = header.get("token")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), token.encode()):
        raise Refused("bad_token", "hello without this run's token")
    device = header.get("device_id")
    if not isinstance(device, int) or isinstance(device, bool) or not 0 <= device < devices:
        raise Refused("bad_hello", f"device_id {str(device)[:40]!r} is not a device of this run (0..{devices - 1})")
    return device


@dataclass(frozen=True)
class FrameLimits:
    """What this run's devices send: one item's shape per feature cut, the JPEG side, the faults."""

    item_shapes: dict[str, tuple[int, ...]]  # feature cut -> (C, H, W)
    input_size: int
    max_fault_windows: int
    upload: str = "jpeg"  # model.cloud_only_upload: jpeg | png | raw

    @property
    def max_image_bytes(self) -> int:
        # more than a quality-100 JPEG, a PNG or the raw pixels of the input size take
        return 4 * self.input_size**2 + 65_536

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload any frame may carry (read_frame's limit, before the header is known)."""
        feature = max((math.prod(s) * 4 for s in self.item_shapes.values()), default=0)
        return max(feature + 65_536, self.max_image_bytes)

    @property
    def max_in_flight_bytes(self) -> int:
        """Per connection: received and not yet answered (a device has a handful of frames out at most)."""
        return max(8 << 20, 16 * self.max_payload_bytes)


def check_infer(header: dict[str, Any], payload: bytes, limits: FrameLimits) -> None:
    """Refused unless the frame is what a device of this run sends for its cut."""
    kind = header.get("kind")
    if kind == "cloud_only":
        check_image(payload, limits)
    elif kind in limits.item_shapes:
        check_tensor(header.get("codec"), payload, limits.item_shapes[kind])
    else:
        raise Refused("unexpected_frame", f"kind {str(kind)[:40]!r} is not a cut this replica serves")


def check_tensor(meta: Any, payload: bytes, shape: tuple[int, ...]) -> None:
    """The codec metadata names the cut's shape and a known dtype; the bytes (declared by zstd) match it."""
    if not isinstance(meta, dict) or meta.get("dtype") not in ITEMSIZE:
        raise Refused("bad_codec", "codec metadata missing or dtype unknown")
    sent = meta.get("shape")
    if not isinstance(sent, list) or [int(s) if isinstance(s, int) else None for s in sent] != list(shape):
        raise Refused("shape", f"shape {str(sent)[:60]} is not the cut's {list(shape)}")
    if meta["dtype"] == "int8" and not all(isinstance(meta.get(k), int | float) and math.isfinite(meta[k])
                                           for k in ("scale", "zero_point")):
        raise Refused("bad_codec", "int8 without a finite scale and zero_point")
    expected = math.prod(shape) * ITEMSIZE[meta["dtype"]]
    if meta.get("zstd"):
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as e:
            raise Refused("zstd_size", f"not a zstd frame: {e}") from None
        if declared != expected:  # -1: unknown (the device's compressor always writes it)
            raise Refused("zstd_size", f"zstd frame declares {declared} bytes; the cut's map is {expected}")
    elif len(payload) != expected:
        raise Refused("payload_size", f"{len(payload)} bytes; the cut's map is {expected}")


def check_image(payload: bytes, limits: FrameLimits) -> None:
    """cloud_only's upload at the run's input size: raw pixels by length, a JPEG or PNG by its header (PIL reads
    the size without decoding)."""

    side = limits.input_size
    if limits.upload == "raw":
        if len(payload) != side * side * 3:
            raise Refused("payload_size", f"{len(payload)} bytes; a raw {side}x{side} RGB upload is {side * side * 3}")
        return
    if len(payload) > limits.max_image_bytes:
        raise Refused("payload_size", f"{len(payload)} bytes; allowed: {limits.max_image_bytes}")
    try:
        with Image.open(io.BytesIO(payload)) as img:
            size, fmt = img.size, img.format
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds on garbage
        raise Refused("image", f"not an image: {type(e).__name__}") from None
    want = limits.upload.upper()
    if fmt != want or size != (side, side):
        raise Refused("image", f"{fmt} {size[0]}x{size[1]}; allowed: a {want} of {side}x{side}")


def check_faults(header: dict[str, Any], limits: FrameLimits) -> list[tuple[float, float, float]]:
    """The windows of a faults frame: at most the topology's faults, each (start < end, factor in [0, 1])."""
    windows = header.get("windows")
    if not isinstance(windows, list) or len(windows) > limits.max_fault_windows:
        raise Refused("faults", f"{len(windows) if isinstance(windows, list) else 'no'} windows; allowed: at most "
                      f"{limits.max_fault_windows} (the topology's faults)")
    out = []
    for w in windows:
        try:
            a, b, f = (float(v) for v in w)
        except (TypeError, ValueError):
            raise Refused("faults", "a window is not (start, end, factor)") from None
        if not (math.isfinite(a) and math.isfinite(b) and a <= b and 0.0 <= f <= 1.0):
            raise Refused("faults", f"window ({a}, {b}, {f}) out of range")
        out.append((a, b, f))
    return out


class RefusalCounts:
    """Refused frames by reason, over the run and since the last load sample."""

    def __init__(self) -> None:
        self.total: dict[str, int] = {}
        self.window: dict[str, int] = {}

    def add(self, reason: str) -> None:
        self.total[reason] = self.total.get(reason, 0) + 1
        self.window[reason] = self.window.get(reason, 0) + 1

    def take_window(self) -> tuple[int, str]:
        """Refusals since the last call: how many, and by reason (`bad_token:2;image:5`, for a CSV cell)."""
        w, self.window = self.window, {}
        return sum(w.values()), ";".join(f"{k}:{v}" for k, v in sorted(w.items()))
