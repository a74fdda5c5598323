"""Listing a file source without reading its rows: files on any pyarrow filesystem, Parquet
footers, image folders. What the driver holds of a source is this listing: paths, sizes and
row-group sizes, never the rows."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from raydistill.config import JobError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TABLE_SUFFIXES = {
    "parquet": (".parquet", ".pq"),
    "jsonl": (".jsonl", ".json", ".ndjson"),
    "csv": (".csv",),
}


@dataclass(frozen=True)
class Listed:
    """One file of a source: its full path on its filesystem, its key (the path relative to
    the source root, posix) and its size in bytes."""

    path: str
    key: str
    size: int


@functools.lru_cache(maxsize=16)
def filesystem(root: str) -> tuple[object, str]:
    """``(pyarrow filesystem, path on it)`` for a local path or any filesystem URI (``s3://``,
    ``gs://``, ``file://``); cached per process, as every read task opens files through it."""
    import pyarrow.fs as pafs

    if "://" in root:
        try:
            fs, path = pafs.FileSystem.from_uri(root)
        except Exception as exc:  # unknown scheme, bad bucket name, missing credentials
            raise JobError(f"data.path: cannot open {root}: {str(exc).splitlines()[0]}") from None
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())


def list_files(root: str, suffixes: tuple[str, ...], what: str = "data.path") -> list[Listed]:
    """The files under ``root`` (itself, when it is a file) whose names end with ``suffixes``,
    sorted by key; hidden files and folders (``.name``) are skipped."""
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    try:
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            raise JobError(f"{what}: not found: {root}")
        if info.type == pafs.FileType.File:
            return [Listed(base, PurePosixPath(base).name, int(info.size or 0))]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except OSError as exc:
        raise JobError(f"{what}: cannot list {root}: {str(exc).splitlines()[0]}") from None
    files = []
    for entry in infos:
        if entry.type != pafs.FileType.File:
            continue
        key = PurePosixPath(entry.path).relative_to(PurePosixPath(base)).as_posix()
        if any(part.startswith((".", "_")) for part in key.split("/")):
            continue  # .DS_Store, _SUCCESS, a writer's temporary files
        if key.lower().endswith(suffixes):
            files.append(Listed(entry.path, key, int(entry.size or 0)))
    return sorted(files, key=lambda f: f.key)


def open_file(root: str, path: str):
    """A readable file of ``root``'s filesystem, errors naming the file."""
    fs, _ = filesystem(root)
    try:
        return fs.open_input_file(path)
    except OSError as exc:
        raise JobError(f"data: cannot read {path}: {str(exc).splitlines()[0]}") from None


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: the unit a read task reads."""

    path: str
    key: str
    group: int
    first_row: int
    rows: int


def parquet_row_groups(
    root: str, files: list[Listed], columns: list[str], label: str | None = None
) -> list[RowGroup]:
    """Every row group of ``files``, from their footers; a file that lacks one of ``columns``
    or holds non-integer labels (``label``, default ``columns[1]``) is refused here, before
    any row is read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups = []
    for file in files:
        try:
            meta = pq.ParquetFile(open_file(root, file.path))
        except (OSError, pa.ArrowInvalid) as exc:
            raise JobError(f"data: cannot read {file.path} as Parquet: {exc}") from None
        schema = meta.schema_arrow
        for column in columns:
            if column not in schema.names:
                raise JobError(
                    f"data: column '{column}' not in {file.path} (columns: {schema.names})"
                )
        label = label or columns[1]
        label_type = schema.field(label).type
        if not pa.types.is_integer(label_type):
            raise JobError(
                f"data: labels in {file.path} (column '{label}') must be integers, got {label_type}"
            )
        first = 0
        for g in range(meta.metadata.num_row_groups):
            rows = meta.metadata.row_group(g).num_rows
            groups.append(RowGroup(file.path, file.key, g, first, rows))
            first += rows
    return groups


def image_classes(root: str) -> list[str]:
    """The sorted class folder names of ``root/<class>/<image>``."""
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    try:
        entries = fs.get_file_info(pafs.FileSelector(base, recursive=False))
    except FileNotFoundError:
        raise JobError(f"data.path: not found: {root}") from None
    except OSError as exc:
        raise JobError(f"data.path: cannot list {root}: {str(exc).splitlines()[0]}") from None
    names = sorted(
        PurePosixPath(e.path).name
        for e in entries
        if e.type == pafs.FileType.Directory and not PurePosixPath(e.path).name.startswith(".")
    )
    if not names:
        raise JobError(f"data.path: {root} has no class folders")
    return names
