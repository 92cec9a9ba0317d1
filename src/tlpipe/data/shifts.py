"""Shifted copies of an image, for measuring spatial invariance: the content moves by whole pixels
and the border it leaves is filled by replicating the edge (numpy's "edge" padding), so no
artificial black band tells the trunk where the shift happened."""

import numpy as np


def shift_image(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`image` (H, W, channels) moved right by dx and down by dy pixels (negative: left, up), same size."""
    height, width = image.shape[:2]
    if abs(dx) >= width or abs(dy) >= height:
        raise ValueError(f"shift ({dx}, {dy}) is not smaller than the image ({width}×{height})")
    padded = np.pad(image, ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0)), mode="edge")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[top:top + height, left:left + width]


SHIFT_NAMES = ("right", "left", "down", "up")


def shift_pixels(size: int) -> int:
    """1/8 of the image size, at least one pixel: how far each shift moves the image."""
    return max(size // 8, 1)


def eighth_shifts(size: int) -> list[tuple[int, int]]:
    """(dx, dy) of ±1/8 of the image size, horizontally and vertically."""
    step = shift_pixels(size)
    return [(step, 0), (-step, 0), (0, step), (0, -step)]


def named_shifts(size: int, count: int) -> dict[str, tuple[int, int]]:
    """The first `count` (robustness.shifts) of the shifts right, left, down and up by 1/8 of the image size, by name."""
    return dict(zip(SHIFT_NAMES, eighth_shifts(size)[:count]))
