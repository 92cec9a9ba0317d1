"""tlpipe.data.images: every kind of input file decodes to upright 8-bit RGB."""

import warnings

import numpy as np
import pytest
from PIL import Image

from builders import orientation_exif, png_bytes, png_declaring_size, write_conversion_cases
from tlpipe.data.images import TooManyPixels, decode_rgb, load_rgb, open_rgb


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
    stored.save(tmp_path / "rotated.png", exif=orientation_exif(6))

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


def test_decode_rgb_names_each_conversion(tmp_path):
    expected = write_conversion_cases(tmp_path)

    notes = {name: decode_rgb(tmp_path / name)[1] for name in expected}

    assert notes == expected


def test_upright_rgb_needs_no_conversion(tmp_path):
    (tmp_path / "rgb.png").write_bytes(png_bytes(seed=1))

    image, notes = decode_rgb(tmp_path / "rgb.png")

    assert image.mode == "RGB"
    assert notes == []


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_declaring_size(50_000, 50_000))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail the test
        with pytest.raises(TooManyPixels) as error:
            decode_rgb(tmp_path / "bomb.png", max_pixels=89_478_485)

    assert error.value.size == (50_000, 50_000)


def test_an_image_of_exactly_max_pixels_is_decoded(tmp_path):
    Image.new("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "square.png")

    image, _ = decode_rgb(tmp_path / "square.png", max_pixels=256)

    assert image.size == (16, 16)
    with pytest.raises(TooManyPixels):
        decode_rgb(tmp_path / "square.png", max_pixels=255)
