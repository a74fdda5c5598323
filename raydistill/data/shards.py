"""WebDataset-style tar shards: samples listed from the tar headers, members read by offset.

A shard is a plain (uncompressed) tar whose members are grouped into samples by key, as
WebDataset writes them: ``n0001.jpg`` and ``n0001.cls`` are one sample, key ``n0001`` (the
member's path up to the first dot of its file name), holding an image (any suffix of
:data:`~raydistill.data.listing.IMAGE_SUFFIXES`) and its integer class (``.cls``, text).

The plan reads each shard's headers (seeking past the image bytes) and the few bytes of each
``.cls`` member, and keeps every image's byte range; a read task then reads one image as one
ranged read of its shard, so a shard's samples can land in different splits and read tasks like
an image folder's files, on any pyarrow filesystem.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from raydistill.config import JobError
from raydistill.data.listing import IMAGE_SUFFIXES, Listed, open_file

SHARD_SUFFIXES = (".tar",)
LABEL_SUFFIX = ".cls"


@dataclass(frozen=True)
class Sample:
    """One sample of a shard: its key (shard key + sample key, unique in the source), where
    its image's bytes are in the shard, and its class."""

    key: str
    offset: int
    size: int
    label: int


def sample_key(member: str) -> tuple[str, str]:
    """``(key, extension)`` of a member name, WebDataset's way: ``a/b.seg.png`` ->
    ``("a/b", "seg.png")``."""
    path = PurePosixPath(member)
    stem, _, ext = path.name.partition(".")
    return str(path.with_name(stem)), ext.lower()


def read_samples(root: str, shard: Listed) -> list[Sample]:
    """The samples of one shard in member order; a sample without an image or without a
    readable ``.cls`` is named."""
    images: dict[str, tuple[int, int]] = {}
    labels: dict[str, int] = {}
    order: list[str] = []
    try:
        with open_file(root, shard.path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = sample_key(member.name)
                if key not in images and key not in labels:
                    order.append(key)
                if f".{ext}" in IMAGE_SUFFIXES and key not in images:
                    images[key] = (member.offset_data, member.size)
                elif f".{ext}" == LABEL_SUFFIX:
                    handle = tar.extractfile(member)
                    text = handle.read().decode("utf-8", "replace").strip() if handle else ""
                    try:
                        labels[key] = int(text)
                    except ValueError:
                        raise JobError(
                            f"data: {shard.key}: {member.name} holds '{text[:20]}', not an "
                            "integer class"
                        ) from None
    except tarfile.TarError as exc:
        raise JobError(f"data: cannot read {shard.key} as a tar shard: {exc}") from None
    samples = []
    for key in order:
        if key not in images or key not in labels:
            lacks = "an image" if key not in images else f"a {LABEL_SUFFIX} class"
            raise JobError(f"data: sample '{key}' of {shard.key} has no {lacks}")
        samples.append(Sample(f"{shard.key}/{key}", *images[key], labels[key]))
    return samples


def member_bytes(root: str, shard_path: str, offset: int, size: int) -> bytes:
    """One member's bytes: a ranged read of its shard."""
    with open_file(root, shard_path) as f:
        f.seek(offset)
        return f.read(size)
