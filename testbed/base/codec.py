"""What goes on the wire: quantized feature tensors and JPEG images as real bytes.

A tensor is sent as raw little-endian float32, float16, or 8-bit affine
quantized values (uint8 storage with a per-tensor scale and zero point), then
optionally entropy-coded with zstd. The metadata needed to decode travels in
the frame header. The bytes on the wire are whatever these functions return,
counted where they are sent, never estimated.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import numpy as np
import zstandard
from PIL import Image

DTYPES = ("float32", "float16", "int8")
_local = threading.local()


def _zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    cache = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor


def encode_tensor(x: np.ndarray, dtype: str, zstd_level: int = 0) -> tuple[dict[str, Any], bytes]:
    """Encode a float tensor; returns (header metadata, payload bytes)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    meta: dict[str, Any] = {"shape": list(x.shape), "dtype": dtype, "zstd": zstd_level > 0}
    if dtype == "float32":
        raw = x.astype("<f4", copy=False).tobytes()
    elif dtype == "float16":
        raw = x.astype("<f2").tobytes()
    elif dtype == "int8":
        # The range always includes 0, so zero (half of a post-ReLU map) is exact.
        lo, hi = (min(float(x.min()), 0.0), max(float(x.max()), 0.0)) if x.size else (0.0, 0.0)
        scale = (hi - lo) / 255.0 or 1.0
        zero_point = int(round(-lo / scale))
        q = np.clip(np.rint(x / scale) + zero_point, 0, 255).astype(np.uint8)
        meta.update(scale=scale, zero_point=zero_point)
        raw = q.tobytes()
    else:
        raise ValueError(f"unknown codec dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    if zstd_level > 0:
        raw = _zstd_compressor(zstd_level).compress(raw)
    return meta, raw


def decode_tensor(meta: dict[str, Any], payload: bytes) -> np.ndarray:
    """Inverse of encode_tensor; returns float32."""
    raw = _zstd_decompressor().decompress(payload) if meta.get("zstd") else payload
    shape = tuple(int(s) for s in meta["shape"])
    dtype = meta["dtype"]
    if dtype == "float32":
        return np.frombuffer(raw, dtype="<f4").reshape(shape).copy()
    if dtype == "float16":
        return np.frombuffer(raw, dtype="<f2").reshape(shape).astype(np.float32)
    if dtype == "int8":
        q = np.frombuffer(raw, dtype=np.uint8).reshape(shape).astype(np.float32)
        return (q - float(meta["zero_point"])) * float(meta["scale"])
    raise ValueError(f"unknown codec dtype {dtype!r}; allowed: {', '.join(DTYPES)}")


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """HxWx3 uint8 RGB -> JPEG bytes (what a cloud-only client uploads)."""
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


IMAGE_UPLOADS = ("jpeg", "png", "raw")


def encode_image(rgb: np.ndarray, upload: str, jpeg_quality: int = 90) -> bytes:
    """What cloud_only uploads (`model.cloud_only_upload`): a JPEG, a lossless PNG, or the raw uint8 RGB pixels."""
    if upload == "jpeg":
        return encode_jpeg(rgb, jpeg_quality)
    if upload == "png":
        buf = io.BytesIO()
        Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
        return buf.getvalue()
    if upload == "raw":
        return np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    raise ValueError(f"unknown upload {upload!r}; allowed: {', '.join(IMAGE_UPLOADS)}")


def decode_image(data: bytes, upload: str, size: int) -> np.ndarray:
    """Inverse of encode_image; `size`: the square input size a raw upload has."""
    if upload == "raw":
        if len(data) != size * size * 3:
            raise ValueError(f"raw upload of {len(data)} bytes; expected {size}x{size}x3 = {size * size * 3}")
        return np.frombuffer(data, dtype=np.uint8).reshape(size, size, 3)
    if upload in ("jpeg", "png"):
        return decode_jpeg(data)  # PIL reads either format from its bytes
    raise ValueError(f"unknown upload {upload!r}; allowed: {', '.join(IMAGE_UPLOADS)}")
