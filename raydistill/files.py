"""Files a run writes, reads back and deletes, done so that a kill, a full disk or a wrong path
cannot leave a half-written file or delete something raydistill did not make.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json` and
  :func:`atomic_output` (for writers that want a path): the data goes to a temporary file in
  the same directory, is flushed to disk, and replaces the target in one ``os.replace``. A
  reader sees the old file or the new one, never a truncated one.
* :func:`read_json` / :func:`read_yaml`: a damaged file is a one-line :class:`JobError` naming
  it, not a parser traceback.
* :func:`remove_owned_dir`: deletes a directory only when it is empty or holds one of
  raydistill's marker files; anything else (a user's folder, ``/``) is refused in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from raydistill.config import JobError, yaml_error_line


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on a clean exit it is fsynced and moved
    onto ``path`` atomically, on an exception it is deleted and ``path`` is left untouched::

        with atomic_output(out) as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`); returns the path."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, data: Any, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobError(f"{what} {path} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"{what} {path} cannot be read ({exc})") from None


def read_json(path: Path | str, what: str = "file") -> Any:
    """The JSON in ``path``; a missing, unreadable or damaged (e.g. truncated) file is a
    one-line :class:`JobError` naming it. ``what`` says what the file is ("run history")."""
    path = Path(path)
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobError(
            f"{what} {path} is damaged (not valid JSON: {exc}); a killed or interrupted write? "
            "Rerun the command that writes it"
        ) from None


def read_yaml(path: Path | str, what: str = "file") -> Any:
    """The YAML in ``path`` (``safe_load``: plain data only), errors as :func:`read_json`."""
    path = Path(path)
    text = _read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        why = yaml_error_line(exc)
        raise JobError(f"{what} {path} is damaged (not valid YAML: {why})") from None


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def owns_dir(
    path: Path | str, markers: Sequence[str], is_marker: Callable[[Path], bool] = _plain_file
) -> bool:
    """Whether ``path`` is a real directory (not a symlink) that holds one of ``markers``
    (file names directly inside it) for which ``is_marker`` holds."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    return any(is_marker(path / name) for name in markers)


def check_owned_dir(
    path: Path | str,
    markers: Sequence[str],
    what: str,
    is_marker: Callable[[Path], bool] = _plain_file,
) -> None:
    """Refuse (one-line :class:`JobError`) unless ``path`` is absent, an empty directory or a
    directory raydistill made (see :func:`owns_dir`); a symlink is refused too."""
    path = Path(path)
    if path.is_symlink():
        raise JobError(
            f"{what} {path} is a symlink: raydistill does not delete through it (remove the "
            "link yourself, or point the job at a real directory)"
        )
    if not path.exists():
        return
    if not path.is_dir():
        raise JobError(f"{what} {path} is not a directory: refusing to delete it")
    if owns_dir(path, markers, is_marker):
        return
    if next(path.iterdir(), None) is None:
        return
    names = " or ".join(markers)
    raise JobError(
        f"{what} {path} was not made by raydistill (it is not empty and has no {names}): "
        "refusing to delete it; point the job at a directory of its own or remove it yourself"
    )


def remove_owned_dir(
    path: Path | str,
    markers: Sequence[str],
    what: str,
    is_marker: Callable[[Path], bool] = _plain_file,
) -> bool:
    """Delete the directory ``path`` if raydistill made it: it is empty, or holds one of
    ``markers`` (e.g. ``["job.yaml"]`` for a run directory), each a plain file directly inside
    it that ``is_marker`` accepts. Anything else, a symlink included, is refused with a one-line
    :class:`JobError` naming ``what`` and the path; nothing is deleted. Symlinks inside the
    directory are removed as links, never followed. Returns whether something was deleted
    (False: it did not exist)."""
    path = Path(path)
    check_owned_dir(path, markers, what, is_marker)
    if not path.exists():
        return False
    shutil.rmtree(path)
    return True


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
