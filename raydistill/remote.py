"""A run directory on object storage (``output.storage_path: s3://...``, ``gs://...`` or any
pyarrow filesystem URI).

A run on a URI still works in a local directory, its *working copy* under
``RAYDISTILL_REMOTE_CACHE`` (default ``~/.cache/raydistill/remote-runs``), so that every part of
raydistill that reads or writes a run directory is unchanged. The URI is the run's truth: a
command first replaces the working copy with what the URI holds (:meth:`RemoteRun.pull`), and
the files it makes are uploaded as they are made (:meth:`RemoteRun.sync`): each checkpoint, each
stage's fingerprint, history and weights, and at the end the summary, report and exports. A
driver killed on one machine resumes on another from the last checkpoint uploaded.
Why this design: docs/running.md, "Runs on object storage".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydistill.config import JobError
from raydistill.config.storage import hide_secrets, is_uri, run_uri, working_copy
from raydistill.files import atomic_output

if TYPE_CHECKING:
    from raydistill.config import JobConfig

KEY = "output.storage_path"
_CHUNK = 1 << 20


def _first_line(exc: BaseException) -> str:
    """A storage error in one line, in the user's terms where it is a known one."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if missing := re.search(
        r"[Bb]ucket '([^']+)' not found|in bucket '([^']+)'.*NO_SUCH_BUCKET|NoSuchBucket", line
    ):
        bucket = missing.group(1) or missing.group(2)
        name = f" '{bucket}'" if bucket else ""
        return f"the bucket{name} does not exist (create it first)"
    if re.search(
        r"ACCESS_DENIED|AccessDenied|INVALID_ACCESS_KEY_ID|InvalidAccessKeyId|SIGNATURE_DOES_NOT_MATCH|SignatureDoesNotMatch|EXPIRED_TOKEN",
        line,
    ):
        code = re.search(r"AWS Error (\w+)", line)
        why = f" ({code.group(1)})" if code else ""
        return f"access denied{why}: check the credentials and the bucket's permissions"
    return line


class RemoteRun:
    """A run at ``uri`` and its local working copy ``local``.

    It remembers every file it downloaded or uploaded (by local size and modification time),
    so :meth:`sync` uploads only what changed and deletes on the URI only files it knows of
    that are gone here (an old checkpoint, a stage retrained): files another writer put there
    (Ray Train's, for a multi-worker stage) are left alone.
    """

    def __init__(self, uri: str, local: Path | None = None, key: str = KEY) -> None:
        self.full_uri = uri.rstrip("/")  # opened, never printed (it may hold a secret)
        self.uri = hide_secrets(self.full_uri)
        self.local = Path(local) if local is not None else working_copy(uri)
        self.key = key
        self._known: dict[str, tuple[int, int]] = {}
        self._fs: Any = None
        self._base = ""

    def __repr__(self) -> str:
        return f"RemoteRun({self.uri!r}, local={str(self.local)!r})"

    @property
    def fs(self) -> Any:
        """The pyarrow filesystem of the URI (opened on first use)."""
        if self._fs is None:
            import pyarrow.fs as pafs

            try:
                self._fs, base = pafs.FileSystem.from_uri(self.full_uri)
            except Exception as exc:  # unknown scheme, bad bucket name, missing credentials
                raise JobError(f"{self.key}: cannot open {self.uri}: {_first_line(exc)}") from None
            self._base = base.rstrip("/")
        return self._fs

    @property
    def base(self) -> str:
        """The run's path on :attr:`fs`."""
        self.fs  # noqa: B018 (opens it)
        return self._base

    def _remote(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def check_writable(self) -> None:
        """Write and delete a small object at the URI: a missing bucket, bad credentials or
        no write permission end here in one line, before anything is trained."""
        probe = self._remote(f".raydistill-write-check-{uuid.uuid4().hex[:12]}")
        try:
            self._make_parent(probe)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"raydistill write check\n")
            self.fs.delete_file(probe)
        except OSError as exc:
            raise JobError(f"{self.key}: cannot write to {self.uri}: {_first_line(exc)}") from None

    def _listing(self) -> list[tuple[str, int]]:
        """Every file under the run's path: (path relative to it, size)."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.base, recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise JobError(f"{self.key}: cannot list {self.uri}: {_first_line(exc)}") from None
        prefix = self.base + "/"
        return sorted(
            (i.path.removeprefix(prefix), int(i.size or 0))
            for i in infos
            if i.type == pafs.FileType.File and i.path.startswith(prefix)
        )

    def holds_run(self) -> bool:
        """Whether the URI holds a run raydistill wrote (its ``job.yaml``)."""
        import pyarrow.fs as pafs

        from raydistill.rundir import JOB_FILE

        try:
            return self.fs.get_file_info(self._remote(JOB_FILE)).type == pafs.FileType.File
        except OSError as exc:
            raise JobError(f"{self.key}: cannot read {self.uri}: {_first_line(exc)}") from None

    def pull(self, skip: Callable[[str], bool] | None = None) -> int:
        """Replace the working copy with the files at the URI (those ``skip`` passes over,
        given the relative path, stay behind); returns how many were downloaded."""
        listing = self._listing()
        if self.local.exists():
            shutil.rmtree(self.local)
        self.local.mkdir(parents=True, exist_ok=True)
        self._known.clear()
        count = 0
        for relative, _ in listing:
            if skip is not None and skip(relative):
                continue
            target = self.local / relative
            try:
                with self.fs.open_input_stream(self._remote(relative)) as src:
                    with atomic_output(target) as tmp, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
            except OSError as exc:
                raise JobError(
                    f"{self.key}: cannot read {self.uri}/{relative}: {_first_line(exc)}"
                ) from None
            self._remember(relative)
            count += 1
        return count

    def pull_for_reading(self) -> int:
        """:meth:`pull` without what report, export and evaluate never read (checkpoints,
        the teacher cache, TensorBoard events)."""
        return self.pull(skip=_skip_for_reading)

    def _remember(self, relative: str) -> None:
        stat = (self.local / relative).stat()
        self._known[relative] = (stat.st_mtime_ns, stat.st_size)

    def sync(self, under: str = "") -> int:
        """Upload the working copy's new or changed files (those under ``under``, a relative
        directory or file: all by default) and delete on the URI the files this object knows
        of that are gone here; returns how many were uploaded. Half-written temporary files
        (``atomic_output``'s) are not uploaded."""
        root = self.local / under if under else self.local
        present: set[str] = set()
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        uploaded = 0
        for path in files:
            relative = path.relative_to(self.local).as_posix()
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                continue
            present.add(relative)
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed while listing (a checkpoint past keep)
                present.discard(relative)
                continue
            if self._known.get(relative) == (stat.st_mtime_ns, stat.st_size):
                continue
            self._upload(path, relative)
            self._known[relative] = (stat.st_mtime_ns, stat.st_size)
            uploaded += 1
        prefix = f"{under.rstrip('/')}/" if under and not root.is_file() else under
        for relative in [r for r in self._known if r.startswith(prefix) and r not in present]:
            if not (self.local / relative).exists():
                self._delete(relative)
                del self._known[relative]
        return uploaded

    def push(self, *relatives: str) -> int:
        """Upload these files or directories of the working copy (no deletions)."""
        uploaded = 0
        for relative in relatives:
            path = self.local / relative
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for file in files:
                rel = file.relative_to(self.local).as_posix()
                self._upload(file, rel)
                self._remember(rel)
                uploaded += 1
        return uploaded

    def _make_parent(self, target: str) -> None:
        # object stores have no directories (create_dir would add empty marker objects)
        if self.fs.type_name not in ("s3", "gcs"):
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)

    def _upload(self, path: Path, relative: str) -> None:
        target = self._remote(relative)
        try:
            self._make_parent(target)
            with open(path, "rb") as src, self.fs.open_output_stream(target) as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        except OSError as exc:
            raise JobError(
                f"{self.key}: cannot write {self.uri}/{relative}: {_first_line(exc)}"
            ) from None

    def _delete(self, relative: str) -> None:
        try:
            self.fs.delete_file(self._remote(relative))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise JobError(
                f"{self.key}: cannot delete {self.uri}/{relative}: {_first_line(exc)}"
            ) from None

    def remove_all(self) -> None:
        """Delete the run at the URI (``--fresh``) and the working copy."""
        try:
            self.fs.delete_dir_contents(self.base, missing_dir_ok=True)
        except OSError as exc:
            raise JobError(f"{self.key}: cannot delete {self.uri}: {_first_line(exc)}") from None
        if self.local.exists():
            shutil.rmtree(self.local)
        self._known.clear()


_OPEN: dict[str, RemoteRun] = {}


def remote_run(job: JobConfig) -> RemoteRun | None:
    """The job's run on its storage URI (one object per process and URI, so that every caller
    shares what has been uploaded); None for a local ``output.storage_path``."""
    storage = str(job.output.storage_path)
    if not is_uri(storage):
        return None
    uri = run_uri(storage, job.name)
    if uri not in _OPEN:
        _OPEN[uri] = RemoteRun(uri)
    return _OPEN[uri]


def open_run(job: JobConfig, fresh: bool = False) -> RemoteRun | None:
    """Before a command that writes the run: check the URI is writable (one line if not),
    then, unless ``fresh``, fetch what it holds into the working copy (a resumed run continues
    from it). None for a local run."""
    remote = remote_run(job)
    if remote is None:
        return None
    remote.check_writable()
    if not fresh:
        remote.pull()
    return remote


def sync(job: JobConfig, under: str = "") -> None:
    """Upload what changed in the job's working copy (under ``under``); nothing for a local
    run."""
    remote = remote_run(job)
    if remote is not None:
        remote.sync(under)


def _skip_for_reading(relative: str) -> bool:
    """Files report and export never read: checkpoints, the teacher cache, TensorBoard."""
    from raydistill.rundir import CHECKPOINT_GLOB, TEACHER_CACHE_DIR, TENSORBOARD_DIR

    parts = relative.split("/")
    if parts[0] in (TEACHER_CACHE_DIR, TENSORBOARD_DIR):
        return True
    # <stage>/checkpoint_*/...
    return len(parts) > 2 and parts[1].startswith(CHECKPOINT_GLOB.rstrip("*"))


def fetch_run(run: str) -> tuple[Path, RemoteRun | None]:
    """A run directory argument (``raydistill report``/``export``): a local path as it is, or
    a run at a URI fetched into its working copy (without checkpoints and the teacher cache)."""
    if not is_uri(run):
        return Path(run), None
    remote = RemoteRun(run, key="run")
    if not remote.holds_run():
        raise JobError(f"{run}: not a run directory (no job.yaml there; run raydistill train)")
    remote.pull_for_reading()
    return remote.local, remote


def ray_job_working_dir() -> str | None:
    """The ``working_dir`` of the Ray job this process is the entrypoint of (``ray job submit
    --working-dir``), read from the job config Ray's job supervisor hands the entrypoint;
    None outside such a job."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None
    working_dir = runtime_env.get("working_dir")
    return str(working_dir) if working_dir else None


def temporary_output_warning(job: JobConfig) -> str | None:
    """One line when a Ray job uploaded with a working_dir writes its run under a relative
    ``output.storage_path``: that path lies in the Ray session's temporary copy of the
    working_dir, which Ray deletes with the session."""
    storage = str(job.output.storage_path)
    if is_uri(storage) or Path(storage).expanduser().is_absolute():
        return None
    if ray_job_working_dir() is None:
        return None
    return (
        f"warning: {KEY} {storage!r} is relative and this Ray job runs in Ray's temporary copy "
        f"of its working_dir: the results stay in the Ray session's temporary directory, at "
        f"{job.run_dir} (give an absolute path or an s3:// URI to keep them)"
    )
