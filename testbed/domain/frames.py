"""Input frames: real photographs, cropped and resized like camera frames.

By default the photo that ships with matplotlib (`grace_hopper.jpg`, a real
portrait) is used, since nothing can be downloaded; a topology may name an
image folder instead. Each frame is a seeded random crop + flip of a source
image, so JPEG sizes and feature maps vary per request as they would with a
real camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def builtin_photo() -> Path:
    import matplotlib  # matplotlib: only when a figure is drawn

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def source_images(image_dir: str | None) -> list[Path]:
    if image_dir is None:
        return [builtin_photo()]
    paths = sorted(p for p in Path(image_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {image_dir}")
    return paths


def make_frames(image_dir: str | None, size: int, count: int, seed: int) -> list[np.ndarray]:
    """`count` size x size RGB uint8 frames from the source images."""
    rng = np.random.default_rng(seed)
    images = [Image.open(p).convert("RGB") for p in source_images(image_dir)]
    frames = []
    for i in range(count):
        img = images[i % len(images)]
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = img.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        frames.append(np.asarray(crop, dtype=np.uint8))
    return frames
