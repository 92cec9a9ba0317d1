"""Builders shared by the tests: params.yaml files, tiny images, image folders and archives."""

import contextlib
import gzip
import hashlib
import io
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tlpipe import testing
from tlpipe.config import load_config
from tlpipe.errors import UserError

REPO = Path(__file__).resolve().parents[1]
COLORS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def write_params(directory: Path, base: Path = REPO / "params.yaml", **overrides) -> Path:
    """Write directory/params.yaml: `base` with overrides (tlpipe.testing.params_with)."""
    return testing.write_params(directory / "params.yaml", testing.params_with(base, **overrides))


def config_error(directory: Path, **overrides) -> str:
    """The error load_config gives for directory/params.yaml written with write_params(**overrides)."""
    path = write_params(directory, **overrides)
    try:
        load_config(path)
    except UserError as error:
        return str(error)
    raise AssertionError(f"params.yaml with {overrides} loaded without an error")


def png_bytes(seed: int, size: int = 8) -> bytes:
    """A PNG of random RGB noise: distinct content (and sha256) for each seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_image_folder(root: Path, counts: dict[str, int], size: int = 8, first_seed: int = 0) -> list[str]:
    """root/<class>/img_<n>.png for each class; returns the created paths relative to root (posix)."""
    created, seed = [], first_seed
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            name = f"{label}/img_{seed:05d}.png"
            (root / name).write_bytes(png_bytes(seed, size))
            created.append(name)
            seed += 1
    return created


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root as {relative posix path: bytes}."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def sha256_hex(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tar(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None, mode: str = "w:gz") -> Path:
    """A tar archive holding `files` ({entry name: content}) and `symlinks` ({entry name: target}). The same
    arguments give the same bytes: gzip's header would otherwise stamp the current second into it."""
    with contextlib.ExitStack() as stack:
        if mode == "w:gz":
            fileobj = stack.enter_context(gzip.GzipFile(path, "wb", mtime=0))
            tar = stack.enter_context(tarfile.open(fileobj=fileobj, mode="w"))
        else:
            tar = stack.enter_context(tarfile.open(path, mode))
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def make_zip(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    """A zip archive holding `files` and `symlinks` (stored the Unix way: mode bits in external_attr)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(zipfile.ZipInfo(name), content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, target)
    return path


def color_image(color: tuple[int, int, int], seed: int, size: int = 32) -> Image.Image:
    """A noisy image of one dominant colour: distinct bytes per seed, easy to tell apart per class."""
    noise = np.random.default_rng(seed).integers(-40, 40, (size, size, 3))
    return Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8))


def write_color_archive(path: Path, per_class: int) -> Path:
    """A .tar.gz image folder dataset (one top-level folder) of 3 colour classes."""
    files = {}
    for class_index, (name, color) in enumerate(COLORS.items()):
        for index in range(per_class):
            buffer = io.BytesIO()
            color_image(color, seed=class_index * 10_000 + index).save(buffer, format="PNG")
            files[f"colors/{name}/{index:03d}.png"] = buffer.getvalue()
    return make_tar(path, files)


def png_declaring_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height pixels: a decompression bomb's header, a few bytes long."""
    data = bytearray(png_bytes(seed=0, size=1))
    # After the 8-byte signature: the IHDR chunk's length, type, then width and height, and its CRC at 29.
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def orientation_exif(orientation: int) -> Image.Exif:
    """EXIF data whose Orientation tag asks viewers to turn the stored image (6: 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def write_conversion_cases(folder: Path) -> dict[str, list[str]]:
    """One small image per conversion tlpipe.images.decode_rgb makes, written into folder;
    returns {file name: the conversion notes decode_rgb gives for it}."""
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([10, 20, 30, 200, 100, 50])
    cases = {
        "gray.png": (Image.new("L", (8, 8), 77), {}, ["grayscale to RGB"]),
        "bilevel.png": (Image.new("1", (8, 8), 1), {}, ["black-and-white to RGB"]),
        "palette.png": (palette, {}, ["palette to RGB"]),
        "palette_transparent.png": (palette, {"transparency": 0}, ["palette composited on white"]),
        "rgba.png": (Image.new("RGBA", (8, 8), (10, 20, 30, 128)), {}, ["RGBA composited on white"]),
        "gray_alpha.png": (Image.new("LA", (8, 8), (90, 128)), {}, ["LA composited on white"]),
        "cmyk.jpg": (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), {}, ["CMYK to RGB"]),
        "gray16.png": (Image.fromarray(np.full((8, 8), 40_000, dtype=np.uint16)), {}, ["16-bit scaled to 8-bit", "grayscale to RGB"]),
        "rotated.png": (Image.new("RGB", (8, 4), (0, 0, 255)), {"exif": orientation_exif(6)}, ["EXIF orientation applied"]),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (image, options, _) in cases.items():
        image.save(folder / name, **options)
    return {name: notes for name, (_, _, notes) in cases.items()}


def write_split_dataset(root: Path, per_split: dict[str, int], size: int = 32) -> pd.DataFrame:
    """Colour-class images under root/data/raw and the manifest the split stage would write for them,
    root/data/split/manifest.csv, with per_split[split] images of each class in each split."""
    rows = []
    for class_index, (label, color) in enumerate(COLORS.items()):
        (root / "data/raw" / label).mkdir(parents=True, exist_ok=True)
        for split, count in per_split.items():
            for index in range(count):
                path = f"{label}/{split}_{index:03d}.png"
                color_image(color, seed=class_index * 10_000 + len(rows), size=size).save(root / "data/raw" / path)
                rows.append({"path": path, "label": label, "split": split, "sha256": sha256_hex(root / "data/raw" / path)})
    manifest = pd.DataFrame(rows)
    (root / "data/split").mkdir(parents=True, exist_ok=True)
    manifest.to_csv(root / "data/split/manifest.csv", index=False)
    return manifest
