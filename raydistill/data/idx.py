"""Fashion-MNIST (and MNIST-style) idx files: 28x28 grayscale images with labels.

The idx format is a big-endian header (two zero bytes, a type code, the number of dimensions,
one uint32 per dimension) followed by the raw array. Files may be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from raydistill.data.arrays import LabelledArrays

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist/"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
INSTALL_HINT = (
    "install it with `apt-get install -y dataset-fashion-mnist` (scripts/setup-fashion-mnist.sh)"
    " or set data.path to a directory holding the four idx files"
)
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxError(ValueError):
    """An idx file that is missing or malformed; the message names the file."""


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one idx file (``.gz`` or plain), in its stored dtype and shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise IdxError(f"cannot read idx file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise IdxError(f"{path} is not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxError(
            f"{path}: header says {shape} ({expected} bytes) but {len(raw) - header} bytes follow"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise IdxError(f"Fashion-MNIST file {directory / (stem + '.gz')} not found: {INSTALL_HINT}")


def load_fashion_mnist(directory: str | Path | None = None) -> dict[str, LabelledArrays]:
    """The predefined ``train`` (60k) and ``test`` (10k) parts of Fashion-MNIST.

    Args:
        directory: holds ``train-images-idx3-ubyte.gz`` & co (``.gz`` or plain); default
            :data:`FASHION_MNIST_DIR`, where the Debian package ``dataset-fashion-mnist`` puts them.

    Returns:
        ``{"train", "test"}``: inputs float32 [N, 1, 28, 28] scaled to [0, 1], labels int64 [N]
        in range(10) (names in :data:`FASHION_MNIST_CLASSES`).
    """
    root = Path(directory or FASHION_MNIST_DIR).expanduser()
    parts = {}
    for part, (image_stem, label_stem) in FASHION_MNIST_FILES.items():
        image_file, label_file = _find(root, image_stem), _find(root, label_stem)
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3:
            raise IdxError(f"{image_file}: images must be [N, H, W], got {list(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise IdxError(
                f"{label_file}: {list(labels.shape)} labels for {len(images)} images in "
                f"{image_file.name}"
            )
        inputs = (images.astype(np.float32) / 255.0)[:, None]
        try:
            parts[part] = LabelledArrays(inputs, labels.astype(np.int64), num_classes=10)
        except ValueError as exc:
            raise IdxError(f"{label_file}: {exc}") from None
    return parts
