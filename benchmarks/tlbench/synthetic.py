"""A synthetic image-folder dataset: 10 classes, a shape (5 kinds) in a colour family (2) on grey noise."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross", "ring")
PALETTES = {"warm": ((150, 255), (40, 160), (0, 80)), "cool": ((0, 80), (60, 180), (150, 255))}  # (R, G, B) ranges


def generate_dataset(root: Path, count: int, size: int, seed: int) -> Path:
    """root/<shape>_<palette>/<n>.jpg: a random shape of one colour family on coloured noise, 10 classes."""
    rng = np.random.default_rng(seed)
    classes = [(shape, palette) for shape in SHAPES for palette in PALETTES]
    for label in classes:
        (root / "_".join(label)).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        shape, palette = classes[index % len(classes)]
        # Background: grey with faint colour blobs (a 4x4 random image scaled up) and pixel noise.
        blobs = Image.fromarray(rng.integers(80, 176, (4, 4, 3), dtype=np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 20, (size, size, 3))
        image = Image.fromarray(np.clip(np.asarray(blobs) + noise, 0, 255).astype(np.uint8))
        color = tuple(int(rng.integers(low, high)) for low, high in PALETTES[palette])
        _draw_shape(ImageDraw.Draw(image), shape, color, size, rng)
        image.save(root / f"{shape}_{palette}" / f"{index:06d}.jpg", quality=90)
    return root


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, color: tuple, size: int, rng: np.random.Generator) -> None:
    radius = rng.uniform(size / 5, size / 2.5)
    x, y = rng.uniform(radius, size - radius, 2)
    box = (x - radius, y - radius, x + radius, y + radius)
    width = max(1, round(radius / 3))
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=color)
    elif shape == "cross":
        draw.line([(x - radius, y), (x + radius, y)], fill=color, width=width)
        draw.line([(x, y - radius), (x, y + radius)], fill=color, width=width)
    else:  # ring
        draw.ellipse(box, outline=color, width=width)
