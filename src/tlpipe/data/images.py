"""Decoding image files into RGB arrays, the same way in every stage."""

from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from tlpipe.errors import UserError, os_error_line

# The pixel limit is dataset.max_pixels, which the split stage checks from each file's
# header (decode_rgb's max_pixels) and reports as a skip; features decodes only the
# files split accepted. Pillow's own global check would warn or raise instead.
Image.MAX_IMAGE_PIXELS = None

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
ALPHA_MODES = ("RGBA", "LA", "PA")
MODE_NAMES = {"1": "black-and-white", "L": "grayscale", "P": "palette", "PA": "palette"}
# EXIF orientations that ImageOps.exif_transpose turns upright (1 is upright already).
TRANSPOSED_ORIENTATIONS = range(2, 9)


class TooManyPixels(Exception):
    """An image whose header declares more pixels than allowed: a decompression bomb."""

    def __init__(self, size: tuple[int, int]):
        super().__init__(f"{size[0]}x{size[1]} pixels")
        self.size = size


def decode_rgb(path: str | Path, max_pixels: int | None = None) -> tuple[Image.Image, list[str]]:
    """Decode an image file into an 8-bit RGB image, upright, and say how it was converted.

    Returns the image and one note per conversion it needed ("grayscale to RGB",
    "RGBA composited on white", "16-bit scaled to 8-bit", "CMYK to RGB", "EXIF
    orientation applied"); an RGB image stored upright needs none. Transparency is
    composited on white (the usual background of product and scanned images).
    Raises TooManyPixels, before decoding, for an image of more than max_pixels pixels,
    and OSError for a file that is not a readable image.
    """
    notes = []
    with Image.open(path) as image:  # reads the header only
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise TooManyPixels(image.size)
        if image.getexif().get(ExifTags.Base.Orientation, 1) in TRANSPOSED_ORIENTATIONS:
            notes.append("EXIF orientation applied")
        image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        # Pillow's convert() clips 16-bit values to 255: scale them down instead.
        pixels = np.asarray(image, dtype=np.uint32)
        image = Image.fromarray((pixels >> 8).astype(np.uint8), mode="L")
        notes.append("16-bit scaled to 8-bit")
    mode_name = MODE_NAMES.get(image.mode, image.mode)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
        notes.append(f"{mode_name} composited on white")
    if image.mode != "RGB":
        image = image.convert("RGB")
        notes.append(f"{mode_name} to RGB")
    return image, notes


def open_rgb(path: str | Path) -> Image.Image:
    """An image file as an 8-bit RGB image, upright (see decode_rgb)."""
    return decode_rgb(path)[0]


def load_rgb(path: str | Path, size: int) -> np.ndarray:
    """An image file as a uint8 array of shape (size, size, 3), squashed to a square."""
    image = open_rgb(path).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_listed_rgb(path: Path, size: int) -> np.ndarray:
    """load_rgb for an image the manifest lists: one that no longer decodes (changed since the
    split stage read it) or cannot be read is a UserError naming it."""
    try:
        return load_rgb(path, size)
    except Exception as error:  # Pillow raises OSError, ValueError, SyntaxError... for a bad file
        if isinstance(error, OSError) and error.errno is not None:  # the system's: permissions, I/O
            raise UserError(os_error_line(error)) from None
        raise UserError(f"{path}: no longer a readable image ({type(error).__name__}); it changed since "
                        "the split stage read it: restore it with dvc repro -f fetch, then run dvc repro again") from None
