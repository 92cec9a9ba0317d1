"""Decoding image files into RGB arrays, the same way in every stage."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Pillow refuses images past this many pixels (decompression bombs); 89 MP is its own default.
Image.MAX_IMAGE_PIXELS = 89_478_485


def open_rgb(path: str | Path) -> Image.Image:
    """Decode an image file into an 8-bit RGB image, upright.

    Grayscale, palette, CMYK and 16-bit images are converted; transparency is
    composited on white (the usual background of product and scanned images).
    Raises OSError (or Pillow's DecompressionBombError) for a file that is not a
    readable image.
    """
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # Pillow's convert() clips 16-bit values to 255: scale them down instead.
            pixels = np.asarray(image, dtype=np.uint32)
            image = Image.fromarray((pixels >> 8).astype(np.uint8), mode="L")
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA"):
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            image = background
        return image.convert("RGB")


def load_rgb(path: str | Path, size: int) -> np.ndarray:
    """An image file as a uint8 array of shape (size, size, 3), squashed to a square."""
    image = open_rgb(path).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
