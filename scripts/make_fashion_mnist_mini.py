"""Build the embedded default dataset: data/samples/fashion-mnist-mini.tar.gz.

The archive is a small, class-balanced subset of the Fashion-MNIST TRAIN split
(Xiao, Rasul & Vollgraf, 2017), read from the IDX files installed by the Debian
package ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist/).

For each of the 10 classes, ``--per-class`` training images are drawn at random
(numpy Generator seeded with ``--seed``; indices sorted) and stored as 28x28
grayscale PNGs, in this layout::

    fashion-mnist-mini/
        t-shirt_top/00012.png   # file name = index in the train set, 5 digits
        trouser/...
        ...
        ankle_boot/...

The archive is byte-for-byte reproducible: sorted entries, mtime 0, uid/gid 0,
empty owner names, fixed modes, gzip header mtime 0 and no file name.

Licence of the data: MIT (Expat), Copyright (c) 2017 Zalando SE.
https://github.com/zalandoresearch/fashion-mnist

Usage:
    python scripts/make_fashion_mnist_mini.py [--source DIR] [--per-class N]
                                              [--seed S] [--out FILE]
"""

import argparse
import gzip
import io
import os
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = [
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
]
TOP_DIR = "fashion-mnist-mini"


def open_idx(source: Path, stem: str):
    """Open an IDX file, gzipped (<stem>.gz) or plain (<stem>)."""
    if (source / (stem + ".gz")).exists():
        return gzip.open(source / (stem + ".gz"), "rb")
    if (source / stem).exists():
        return open(source / stem, "rb")
    raise FileNotFoundError(f"neither {stem}.gz nor {stem} found in {source}")


def read_idx(source: Path, stem: str) -> np.ndarray:
    """Read an unsigned-byte IDX file into a numpy array."""
    with open_idx(source, stem) as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{stem}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a 28x28 uint8 array as a grayscale PNG, without metadata."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def tar_info(name: str, is_dir: bool, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir else 0o644
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
parser.add_argument("--per-class", type=int, default=200)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", type=Path, default=Path("data/samples/fashion-mnist-mini.tar.gz"))
args = parser.parse_args()

images = read_idx(args.source, "train-images-idx3-ubyte")
labels = read_idx(args.source, "train-labels-idx1-ubyte")
assert images.shape[1:] == (28, 28) and len(images) == len(labels)

# Pick the images: per_class per label, in label order, indices sorted.
rng = np.random.default_rng(args.seed)
entries = {TOP_DIR: None}  # archive path -> PNG bytes (None for a directory)
for label, class_name in enumerate(CLASS_NAMES):
    candidates = np.flatnonzero(labels == label)
    chosen = np.sort(rng.choice(candidates, size=args.per_class, replace=False))
    entries[f"{TOP_DIR}/{class_name}"] = None
    for index in chosen:
        entries[f"{TOP_DIR}/{class_name}/{index:05d}.png"] = png_bytes(images[index])

# Write the archive deterministically to a temporary file, then move it into place.
args.out.parent.mkdir(parents=True, exist_ok=True)
tmp_path = args.out.with_name(args.out.name + ".tmp")
with open(tmp_path, "wb") as raw:
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in sorted(entries):
                payload = entries[name]
                if payload is None:
                    tar.addfile(tar_info(name, is_dir=True))
                else:
                    tar.addfile(tar_info(name, is_dir=False, size=len(payload)), io.BytesIO(payload))
os.replace(tmp_path, args.out)

n_files = sum(payload is not None for payload in entries.values())
print(f"wrote {args.out}: {n_files} images, {args.out.stat().st_size} bytes")
