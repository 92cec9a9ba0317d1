"""The shift transform of the spatial-invariance measurement."""

import numpy as np
import pytest

from tlpipe.data.shifts import eighth_shifts, named_shifts, shift_image


def test_a_one_pixel_image_moves_where_expected():
    image = np.zeros((8, 8, 3), np.uint8)
    image[3, 4] = 255
    moved = shift_image(image, dx=2, dy=-1)
    assert moved.shape == image.shape
    assert list(zip(*np.nonzero(moved[..., 0]))) == [(2, 6)]


def test_the_border_is_replicated_from_the_edge():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)  # rows 0-3, 4-7, 8-11, 12-15
    right = shift_image(image, dx=1, dy=0)
    assert right[..., 0].tolist() == [[0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10], [12, 12, 13, 14]]
    up = shift_image(image, dx=0, dy=-2)
    assert up[..., 0].tolist() == [[8, 9, 10, 11], [12, 13, 14, 15], [12, 13, 14, 15], [12, 13, 14, 15]]


def test_eighth_shifts_and_too_large_shifts():
    assert eighth_shifts(64) == [(8, 0), (-8, 0), (0, 8), (0, -8)]
    assert named_shifts(4, 2) == {"right": (1, 0), "left": (-1, 0)}  # robustness.shifts of them, at least a pixel
    assert named_shifts(64, 0) == {}
    with pytest.raises(ValueError):
        shift_image(np.zeros((4, 4, 3)), dx=4, dy=0)
