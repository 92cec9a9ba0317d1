"""tlpipe.images: every kind of input file decodes to upright 8-bit RGB."""

import numpy as np
import pytest
from PIL import Image

from builders import png_bytes
from tlpipe.images import load_rgb, open_rgb


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    gray = np.array([[0, 50], [128, 255]], dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")

    image = open_rgb(tmp_path / "gray.png")

    assert image.mode == "RGB"
    pixels = np.asarray(image)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[:, :, channel], gray)


def test_rgba_transparent_pixels_become_white(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (10, 20, 30, 0))  # fully transparent: its color must not show
    rgba.save(tmp_path / "rgba.png")

    pixels = np.asarray(open_rgb(tmp_path / "rgba.png"))

    assert pixels.shape == (1, 2, 3)
    assert pixels[0, 0].tolist() == [10, 20, 30]
    assert pixels[0, 1].tolist() == [255, 255, 255]


def test_palette_transparency_becomes_white(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50])
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # palette index 0 is transparent
    palette.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"

    pixels = np.asarray(open_rgb(tmp_path / "palette.png"))

    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() == [200, 100, 50]


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [((0, 0, 0, 0), (255, 255, 255)), ((0, 255, 255, 0), (255, 0, 0)), ((0, 0, 0, 255), (0, 0, 0))],
)
def test_cmyk_jpeg_becomes_rgb(tmp_path, cmyk, rgb):
    Image.new("CMYK", (16, 16), cmyk).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"

    image = open_rgb(tmp_path / "cmyk.jpg")

    assert image.mode == "RGB"
    center = np.asarray(image)[8, 8].astype(int)
    assert np.abs(center - np.array(rgb)).max() <= 3  # JPEG is lossy, but a flat color survives


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[65535, 256], [255, 0], [32768, 511]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode in ("I;16", "I")

    pixels = np.asarray(open_rgb(tmp_path / "gray16.png"))

    assert pixels.dtype == np.uint8
    expected = np.array([[255, 1], [0, 0], [128, 1]], dtype=np.uint8)  # value >> 8
    for channel in range(3):
        np.testing.assert_array_equal(pixels[:, :, channel], expected)


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (4, 2), (0, 0, 255))
    stored.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(tmp_path / "rotated.png", exif=exif)

    image = open_rgb(tmp_path / "rotated.png")

    assert image.size == (2, 4)
    pixels = np.asarray(image)
    # The stored top-left corner ends up top-right once rotated clockwise.
    assert pixels[0, 1].tolist() == [255, 0, 0]
    assert (pixels[:, :, 0] == 255).sum() == 1


def test_load_rgb_gives_square_uint8_array(tmp_path):
    Image.new("RGB", (10, 6), (1, 2, 3)).save(tmp_path / "wide.png")

    array = load_rgb(tmp_path / "wide.png", 32)

    assert array.dtype == np.uint8
    assert array.shape == (32, 32, 3)
    assert array[16, 16].tolist() == [1, 2, 3]


def test_load_rgb_converts_grayscale_to_three_channels(tmp_path):
    Image.new("L", (5, 5), 77).save(tmp_path / "gray.png")

    array = load_rgb(tmp_path / "gray.png", 8)

    assert array.shape == (8, 8, 3)
    assert (array == 77).all()


def test_truncated_png_raises(tmp_path):
    data = png_bytes(seed=1, size=32)
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])

    with pytest.raises(OSError):
        open_rgb(tmp_path / "truncated.png")


def test_text_file_raises(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image\n")

    with pytest.raises(OSError):  # PIL.UnidentifiedImageError is an OSError
        open_rgb(tmp_path / "notes.txt")
